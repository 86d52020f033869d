"""Per-framework benchmark (issue 6): rows/s of the served model, in process, vs the framework's own call.

For every framework installed here (ONNX Runtime, TorchScript, torch.export, TensorFlow, scikit-learn, XGBoost
and LightGBM when importable) and each batch size B, it measures
  direct:  the framework's own call on B rows (session.run, module(x), estimator.predict, ...),
  direct_fast (scikit-learn forests, XGBoost, LightGBM): the call gpuserve serves through (a NumPy walk
           of all trees, gpuserve/classic_forest.py; XGBoost's and LightGBM's C APIs, classic_fast.py), with
           ratio_fast_c* against it, so a faster served API cannot flatter the ratio,
  served:  V2 requests of B rows through gpuserve's DataPlane.infer -> Model -> engine (Scheduler,
           Instance, backend) -> response, in process (no transport), at concurrency 1 and 4.
Engine-backed models get max_batch_size = B, so the engine runs exactly the batches the direct call
runs: the ratio is gpuserve's overhead, not a batching gain. Rounds alternate direct and served and
the medians are reported, since other processes share the machine. The served path runs on the loop
`gpuserve start` serves on (uvloop when installed; `--loop asyncio` for the standard one).
    .venv/bin/python benchmarks/backend_bench.py [--batches 1,16,64] [--seconds 1.5] [--rounds 3] [--loop asyncio]
    python3 benchmarks/backend_bench.py --device cuda   # on a GPU: ONNX CUDA EP, torch, TensorRT
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loops import event_loop  # noqa: E402  (benchmarks/ is on the path)
from models import export_torch, mlp_onnx, torch_mlp  # noqa: E402

FEATURES, HIDDEN, OUT = 1024, 1024, 1024  # issue 5's MLP (benchmarks/models.py mlp_onnx), 3 layers


def _settings(name: str, implementation: str, uri: Path, batch: int, device: str, parameters=None, **extra):
    from gpuserve.settings import ModelSettings

    fields = {"name": name, "implementation": implementation, "device": device,
              "parameters": {"uri": str(uri), "extra": parameters or {}}}
    fields["max_batch_size"] = batch  # 1: every request runs alone, so no batching gain hides in the ratio
    fields.update(extra)
    return ModelSettings(**fields)


def frameworks(folder: Path, device: str, only: Sequence[str] = ()) -> Dict[str, dict]:
    """name -> {make(batch) -> loaded gpuserve model, direct(x) -> None, input name}; `only` limits them."""
    found: Dict[str, dict] = {}
    from gpuserve.runtimes import TorchModel

    def wanted(*names):
        return not only or any(n in only for n in names)

    if importlib.util.find_spec("onnxruntime") and wanted("onnxruntime"):
        found.update(_onnx(folder, device))
    if importlib.util.find_spec("torch") and wanted("torchscript", "torch.export", "torch.export+graphs"):
        import torch

        net = torch_mlp(FEATURES)  # FEATURES = HIDDEN = OUT
        scripted = folder / "model.pt"
        torch.jit.script(net).save(str(scripted))
        exported = export_torch(net, FEATURES, folder / "model.pt2")
        tdev = torch.device(device)
        script_module = torch.jit.load(str(scripted), map_location=tdev).eval()
        export_module = torch.export.load(str(exported)).module().to(tdev)
        declared = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, FEATURES]}],
                    "outputs": [{"name": "output__0", "datatype": "FP32", "shape": [-1, OUT]}]}

        def direct(module):
            def call(x):
                with torch.inference_mode():
                    out = module(torch.from_numpy(x).to(tdev))
                    return out.cpu().numpy()  # the served path returns host arrays too
            return call

        found["torchscript"] = {"make": lambda b: TorchModel("ts", _settings("ts", "torch", scripted, b, device,
                                                                             **declared)),
                                "direct": direct(script_module), "input": "input", "note": f"torch {torch.__version__}"}
        found["torch.export"] = {"make": lambda b: TorchModel("pt2", _settings("pt2", "torch", exported, b, device)),
                                 "direct": direct(export_module), "input": "input",
                                 "note": f"torch {torch.__version__}"}
        if device.startswith("cuda"):  # served with CUDA graphs at powers of two up to B; direct stays eager
            found["torch.export+graphs"] = {
                "make": lambda b: TorchModel("pt2g", _settings("pt2g", "torch", exported, b, device,
                                                               parameters={"cuda_graphs": True})),
                "direct": direct(export_module), "input": "input", "note": "served with cuda_graphs: true"}
    if importlib.util.find_spec("tensorflow") and wanted("tensorflow"):
        found.update(_tensorflow(folder, device))
    if device == "cpu" and wanted("scikit-learn", "xgboost", "fil-xgboost", "lightgbm"):
        found.update(_classic(folder))
    if device.startswith("cuda") and importlib.util.find_spec("tensorrt") and wanted("tensorrt"):
        found.update(_tensorrt(folder, device))
    return {name: spec for name, spec in found.items() if wanted(name)}


def _onnx(folder: Path, device: str) -> Dict[str, dict]:
    import onnxruntime as ort

    from gpuserve.backends.onnx import OnnxBackend
    from gpuserve.runtimes import OnnxModel

    if device.startswith("cuda") and "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"onnxruntime {ort.__version__} has no CUDA provider here (needs onnxruntime-gpu): skipped", flush=True)
        return {}
    path = mlp_onnx(folder / "mlp.onnx", width=HIDDEN, layers=3, in_features=FEATURES)
    own = OnnxBackend(str(path), device=device)  # the same session options the served model gets
    session = own.session
    spec = {"make": lambda b: OnnxModel("onnx", _settings("onnx", "onnx", path, b, device)),
            "direct": lambda x: session.run(None, {"input": x}), "input": "input",
            "note": f"providers {session.get_providers()[0]}, onnxruntime {ort.__version__}"}
    if own.device != "cpu":  # on CUDA: session.run (host in, host out) vs our IOBinding run
        spec["direct_iobinding"] = lambda x: own.run({"input": x})
    return {"onnxruntime": spec}


def _tensorflow(folder: Path, device: str) -> Dict[str, dict]:
    """The same 3-layer MLP as a SavedModel (weights from the ONNX MLP's generator: same shapes, not the same
    numbers); direct = its serving_default signature called under the device the served model runs on."""
    import tensorflow as tf

    from gpuserve.backends.tensorflow import placement
    from gpuserve.runtimes_tensorflow import TensorFlowModel

    rng = np.random.default_rng(0)

    class MLP(tf.Module):
        def __init__(self):
            super().__init__()
            sizes = [FEATURES, HIDDEN, HIDDEN, OUT]
            self.weights = [tf.Variable((rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32))
                            for a, b in zip(sizes, sizes[1:])]

        @tf.function(input_signature=[tf.TensorSpec([None, FEATURES], tf.float32, name="input")])
        def serve(self, x):
            for i, weight in enumerate(self.weights):
                x = x @ weight
                if i < len(self.weights) - 1:
                    x = tf.nn.relu(x)
            return {"output": x}

    mlp = MLP()
    path = folder / "tf_mlp"
    tf.saved_model.save(mlp, str(path), signatures={"serving_default": mlp.serve})
    place, _, _ = placement(tf, device)
    with tf.device(place):
        signature = tf.saved_model.load(str(path)).signatures["serving_default"]

    def direct(x):
        with tf.device(place):
            return signature(input=tf.constant(x))["output"].numpy()  # host arrays, as served

    return {"tensorflow": {"make": lambda b: TensorFlowModel("tf", _settings("tf", "tensorflow", path, b, device)),
                           "direct": direct, "input": "input",
                           "note": f"SavedModel serving_default on {place}, tensorflow {tf.__version__}"}}


def _classic(folder: Path) -> Dict[str, dict]:
    found: Dict[str, dict] = {}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, FEATURES)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) > 0).astype(np.int64)
    if importlib.util.find_spec("sklearn"):
        import joblib
        import sklearn
        from sklearn.ensemble import RandomForestClassifier

        from gpuserve.classic_forest import ForestPredictor
        from gpuserve.runtimes_classic import SKLearnModel

        forest = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0, n_jobs=1).fit(x, y)
        joblib.dump(forest, folder / "model.joblib")
        found["scikit-learn"] = {
            "make": lambda b: SKLearnModel("skl", _settings("skl", "sklearn", folder / "model.joblib", b, "cpu")),
            "direct": forest.predict, "input": "input",
            "direct_fast": lambda x, fast=ForestPredictor.for_estimator(forest): fast.run("predict", x),
            "note": f"RandomForestClassifier(50 trees, depth 8), scikit-learn {sklearn.__version__}; direct_fast = "
                    "the NumPy walk gpuserve serves through (gpuserve/classic_forest.py)"}
    if importlib.util.find_spec("xgboost"):
        import xgboost

        from gpuserve.classic_fast import XGBoostPredictor
        from gpuserve.runtimes_classic import XGBoostModel

        booster = xgboost.XGBClassifier(n_estimators=50, max_depth=6, nthread=1).fit(x, y)
        booster.save_model(str(folder / "model.json"))
        labels = XGBoostPredictor(booster).predict  # the C call the served path makes (gpuserve/classic_fast.py)
        assert np.array_equal(labels(x[:64]), booster.predict(x[:64]))
        found["xgboost"] = {
            "make": lambda b: XGBoostModel("xgb", _settings("xgb", "xgboost", folder / "model.json", b, "cpu")),
            "direct": booster.predict, "direct_fast": labels, "input": "input",
            "note": f"xgboost {xgboost.__version__}; direct_fast = the C API calls gpuserve serves through "
                    "(gpuserve/classic_fast.py XGBoostPredictor)"}
        found["fil-xgboost"] = _fil(folder, booster, labels)
    if importlib.util.find_spec("lightgbm"):
        import lightgbm

        from gpuserve.classic_fast import LightGBMPredictor
        from gpuserve.runtimes_classic import LightGBMModel

        booster = lightgbm.train({"objective": "binary", "verbose": -1, "num_threads": 1},
                                 lightgbm.Dataset(x, y), num_boost_round=50)
        booster.save_model(str(folder / "model.txt"))
        found["lightgbm"] = {
            "make": lambda b: LightGBMModel("lgb", _settings("lgb", "lightgbm", folder / "model.txt", b, "cpu")),
            "direct": booster.predict, "direct_fast": LightGBMPredictor(booster).predict, "input": "input",
            "note": f"lightgbm {lightgbm.__version__}; direct_fast = the C API calls gpuserve serves through "
                    "(gpuserve/classic_fast.py LightGBMPredictor)"}
    return found


def _fil(folder: Path, booster, labels) -> dict:
    """The same XGBoost classifier as a Triton FIL-backend model (config.pbtxt + 1/xgboost.json), answering
    FIL's class index: the direct call is XGBoost's own predict, direct_fast the C call it is served by."""
    from gpuserve.settings import ModelSettings
    from gpuserve.triton_config import parse_pbtxt, settings_from_config
    from gpuserve.triton_fil import FilModel

    where = folder / "fil"
    (where / "1").mkdir(parents=True)
    booster.save_model(str(where / "1" / "xgboost.json"))
    text = (f'backend: "fil" max_batch_size: 1 input [ {{ name: "input__0" data_type: TYPE_FP32 dims: [ {FEATURES} ] }} ] '
            'output [ { name: "output__0" data_type: TYPE_FP32 dims: [ 1 ] } ] instance_group [ { kind: KIND_CPU } ] '
            'parameters [ { key: "model_type" value: { string_value: "xgboost_json" } }, '
            '{ key: "output_class" value: { string_value: "true" } } ]')
    config = dict(parse_pbtxt(text), name="fil")

    def make(batch):
        settings = settings_from_config(where, config, 1)
        settings.update(max_batch_size=batch, triton_max_batch_size=max(batch, 1))
        return FilModel("fil", ModelSettings(**settings, folder=str(where)))

    return {"make": make, "direct": booster.predict, "direct_fast": labels, "input": "input__0",
            "note": "the xgboost model above served as a Triton FIL-backend model (gpuserve/triton_fil.py)"}


def _tensorrt(folder: Path, device: str) -> Dict[str, dict]:
    from gpuserve.backends.tensorrt import TensorRTBackend, build_engine
    from gpuserve.runtimes import TensorRTModel

    onnx_path = mlp_onnx(folder / "trt.onnx", width=HIDDEN, layers=3, in_features=FEATURES)
    plan = build_engine(onnx_path, folder / "model.plan", {"input": ((1, FEATURES), (64, FEATURES), (1024, FEATURES))})
    own = TensorRTBackend(str(plan), device=device)
    return {"tensorrt": {"make": lambda b: TensorRTModel("trt", _settings("trt", "tensorrt", plan, b, device)),
                         "direct": lambda x: own.run({"input": x}), "input": "input",
                         "note": "engine built here from the ONNX MLP; direct = TensorRTBackend.run"}}


def rate(call: Callable[[], object], rows: int, seconds: float) -> float:
    call()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        done += rows
    return done / (time.perf_counter() - start)


def _direct_thread(model) -> Callable:
    """Where the direct calls run: on a classic model's own thread once it has one, else here.

    XGBoost and LightGBM use OpenMP teams, and a process where two threads have started one runs every
    team's calls ~2x slower (gpuserve/classic_fast.py). A user's program calls from one thread; the served
    model starts its teams on its own thread, so the direct calls share that thread rather than start a
    second team here and slow both down."""
    thread = getattr(model, "_thread", None)
    if thread is None:
        return lambda fn, *args: fn(*args)
    return lambda fn, *args: thread.submit(fn, *args).result()


async def served_rate(plane, name: str, input_name: str, x: np.ndarray, concurrency: int, seconds: float) -> float:
    from gpuserve.types import InferRequest

    def request():
        return InferRequest.from_numpy(name, {input_name: x})

    await plane.infer(request())
    stop, done = time.perf_counter() + seconds, [0]

    async def client():
        while time.perf_counter() < stop:
            await plane.infer(request())
            done[0] += x.shape[0]

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done[0] / (time.perf_counter() - start)


async def bench(args) -> List[dict]:
    from gpuserve.dataplane import DataPlane
    from gpuserve.model_repository import ModelRepository, stop_model

    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        only = [name for name in args.only.split(",") if name]
        for framework, spec in frameworks(Path(tmp), args.device, only).items():
            for batch in args.batches:
                model = spec["make"](batch)
                model.load()
                repository = ModelRepository()
                repository.update(model)
                plane = DataPlane(repository)
                plane.started = True
                x = np.random.default_rng(batch).normal(size=(batch, FEATURES)).astype(np.float32)
                from gpuserve.types import InferRequest

                await plane.infer(InferRequest.from_numpy(model.name, {spec["input"]: x}))  # its thread, if any
                runs: Dict[str, List[float]] = {}
                for _ in range(args.rounds):
                    where = _direct_thread(model)
                    runs.setdefault("direct", []).append(where(rate, lambda: spec["direct"](x), batch, args.seconds))
                    for extra in ("direct_iobinding", "direct_fast"):
                        if extra in spec:
                            runs.setdefault(extra, []).append(where(rate, lambda: spec[extra](x), batch,
                                                                    args.seconds))
                    for c in args.concurrency:
                        runs.setdefault(f"served_c{c}", []).append(
                            await served_rate(plane, model.name, spec["input"], x, c, args.seconds))
                medians = {k: round(statistics.median(v), 1) for k, v in runs.items()}
                row = {"framework": framework, "batch": batch, **medians,
                       **{f"ratio_c{c}": round(medians[f"served_c{c}"] / medians["direct"], 3)
                          for c in args.concurrency},
                       **{f"ratio_fast_c{c}": round(medians[f"served_c{c}"] / medians["direct_fast"], 3)
                          for c in args.concurrency if "direct_fast" in medians},
                       "note": spec["note"]}
                print(json.dumps(row), flush=True)
                rows_out.append(row)
                await stop_model(model)  # as unloading does: adaptive batcher, engine, then the model
    return rows_out


def ort_cpu_iobinding(rounds: int) -> None:
    """Why the CPU path keeps session.run: IOBinding (host input, host output) against it, us per call."""
    import onnxruntime as ort

    from models import small_mlp_onnx

    with tempfile.TemporaryDirectory() as tmp:
        models = {"small 64-256-10": (small_mlp_onnx(Path(tmp) / "s.onnx"), 64),
                  "mlp 1024x3": (mlp_onnx(Path(tmp) / "m.onnx"), 1024)}
        for name, (path, features) in models.items():
            options = ort.SessionOptions()
            options.intra_op_num_threads = 2
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for rows in (1, 64):
                x = np.random.default_rng(0).normal(size=(rows, features)).astype(np.float32)

                def plain():
                    return session.run(["output"], {"input": x})[0]

                def bound():
                    binding = session.io_binding()
                    binding.bind_cpu_input("input", x)
                    binding.bind_output("output", "cpu")
                    session.run_with_iobinding(binding)
                    return binding.copy_outputs_to_cpu()[0]

                assert np.allclose(plain(), bound())
                calls = 2000 if features == 64 else (300 if rows == 1 else 40)
                times: Dict[str, List[float]] = {"session.run": [], "iobinding": []}
                for _ in range(rounds):
                    for label, fn in (("session.run", plain), ("iobinding", bound)):
                        start = time.perf_counter()
                        for _ in range(calls):
                            fn()
                        times[label].append((time.perf_counter() - start) / calls * 1e6)
                print(json.dumps({"model": name, "rows": rows, **{k: round(statistics.median(v), 1)
                                                                  for k, v in times.items()}, "unit": "us/call"}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,16,64", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--concurrency", default="1,4", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated frameworks")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--ort-cpu-iobinding", action="store_true", help="only compare IOBinding with session.run")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="event loop of the served path; auto: uvloop when installed, as the server")
    args = parser.parse_args()
    if args.ort_cpu_iobinding:
        ort_cpu_iobinding(max(args.rounds, 5))
        return
    run(args)


def run(args) -> dict:
    loop_name, runner = event_loop(getattr(args, "loop", "auto"))
    rows = runner(bench(args))
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": args.device,
              "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
              "model": f"MLP {FEATURES}-{HIDDEN}-{HIDDEN}-{OUT} (ONNX/torch/TensorRT); tree ensembles (classic)",
              "event_loop": loop_name,
              "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
