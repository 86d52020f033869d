"""MLServer's Alibi-Detect runtime (mlserver 1.7.1 + mlserver-alibi-detect 1.6.1, whose runtime.py is 1.7.1's)
against gpuserve's (gpuserve/runtimes_alibi_detect.py) on one folder of detectors saved here: the same V2
requests (REST, and gRPC ModelInfer) to both, status, body and the x-seldon-alibi-* headers side by side
(values rounded to 5 digits, error bodies compared by their keys). Not a test; run by hand after

    python3 -m venv .peers/mlserver-ad
    .peers/mlserver-ad/bin/pip install mlserver==1.7.1 uvloop==0.21.0 "dill<0.4" catalogue toml tqdm \
        "transformers<5" numba scikit-learn scipy matplotlib
    .peers/mlserver-ad/bin/pip install --no-deps mlserver-alibi-detect==1.6.1 alibi-detect==0.13.0

    .venv/bin/python benchmarks/peers/alibi_detect_conformance.py   # a venv with gpuserve[alibi-detect]

(alibi-detect 0.13.0 pins numpy<2, pandas<3, numba<0.60: installed without its pins both sides run it on
numpy 2 and pandas 3, where the drift detectors used here work.) Each server gets its own copy of the folder,
as an online detector writes its state into it.

Last run 2026-12-07 (no GPU; this session's machine): 26 cases, 7 differ, one in an answer. The same: metadata,
KSDrift (batch and feature drift), a `pd` request, TabularDrift with batch_size 3 (two empty answers, then the
batch's, then empty again), ChiSquareDrift on INT64, CVMDriftOnline one row and 12 rows over REST (None values as
BYTES nulls; its thresholds left out, see RANDOM_AT_LOAD), two inputs and a wrong width (400), an unknown
predict_parameters keyword (500), gRPC answers with the x-seldon-alibi-* metadata and a wrong width
(INVALID_ARGUMENT), the seldon_model_drift metric's sums, the online state folder written. Differ: an online
detector's answer over gRPC, whose None values MLServer cannot put in bytes_contents (the call fails, INTERNAL),
where gpuserve answers with each None as the bytes b"None" (gRPC has no null); and on purpose (gpuserve's rules
for every model) a repository load whose runtime refuses its settings is a 500 with `{"error"}` (MLServer: 500
with a plain-text traceback), one whose detector folder is broken a 500 (MLServer 400: its runtime's
MLServerError); a model that failed to load answers 503 on ready and infer (MLServer forgot it: 404).
Not compared here: MLServer writes NaN as the token NaN, gpuserve as null (README "JSON null").
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers.mlserver_conformance import call_json, free_ports, start, stop, wait_until_ready  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MLSERVER = ROOT / ".peers" / "mlserver-ad" / "bin" / "mlserver"
GPUSERVE = Path(sys.executable).parent / "gpuserve"
RUNTIME = "mlserver_alibi_detect.AlibiDetectRuntime"
READY = ["ks", "ks-feature", "tab-batch", "chi", "cvm", "ks-badparam"]
LATER = ["ks-badsetting", "broken"]


def build(root: Path, later: Path) -> None:
    """The detectors that load in `root`; in `later` the two whose load fails, moved in once the servers are up
    and loaded through the repository API (a model that fails at start-up stops MLServer 1.7.1 whole)."""
    from alibi_detect.cd import ChiSquareDrift, CVMDriftOnline, KSDrift, TabularDrift
    from alibi_detect.saving import save_detector

    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    mixed = np.c_[x[:, :2], rng.integers(0, 3, (100, 1))].astype(np.float32)
    models = {
        "ks": (KSDrift(x, p_val=0.05), {}),
        "ks-feature": (KSDrift(x, p_val=0.05), {"predict_parameters": {"drift_type": "feature"}}),
        "tab-batch": (TabularDrift(mixed, p_val=0.05, categories_per_feature={2: None}), {"batch_size": 3}),
        "chi": (ChiSquareDrift(rng.integers(0, 4, (100, 2)), p_val=0.05), {}),
        "cvm": (CVMDriftOnline(x, ert=50, window_sizes=[10], verbose=False), {"state_save_freq": 5}),
        "ks-badparam": (KSDrift(x, p_val=0.05), {"predict_parameters": {"no_such_keyword": 1}}),
        "ks-badsetting": (KSDrift(x, p_val=0.05), {"batch_sz": 3}),
    }
    for name, (detector, extra) in models.items():
        folder = root / name if name in READY else later / name
        save_detector(detector, str(folder / "detector"))
        settings = {"name": name, "implementation": RUNTIME, "parameters": {"uri": "./detector", "extra": extra}}
        (folder / "model-settings.json").write_text(json.dumps(settings))
    broken = later / "broken"
    (broken / "detector").mkdir(parents=True)
    (broken / "detector" / "config.toml").write_text("name = 'KSDrift'\nnot toml [[[\n")
    (broken / "model-settings.json").write_text(json.dumps({"name": "broken", "implementation": RUNTIME,
                                                            "parameters": {"uri": "./detector"}}))


def tensor(rows, datatype="FP32", name="x"):
    rows = np.asarray(rows)
    return {"name": name, "shape": list(rows.shape), "datatype": datatype, "data": rows.ravel().tolist()}


def cases():
    rng = np.random.default_rng(4)
    shifted = (rng.normal(size=(20, 3)) + 1).round(4)
    mixed = np.c_[shifted[:, :2], rng.integers(0, 3, (20, 1))]
    one = {"inputs": [tensor(shifted[:5])]}
    out = [("metadata ks", "GET", "/v2/models/ks", None)]
    out += [("ks", "POST", "/v2/models/ks/infer", one),
            ("ks-feature", "POST", "/v2/models/ks-feature/infer", one),
            ("ks pandas content type", "POST", "/v2/models/ks/infer",
             {"parameters": {"content_type": "pd"},
              "inputs": [tensor(shifted[:5, i], name=f"c{i}") for i in range(3)]})]
    out += [(f"tab-batch #{i + 1}", "POST", "/v2/models/tab-batch/infer",
             {"inputs": [tensor(mixed[2 * i:2 * i + 2])]}) for i in range(4)]
    out += [("chi INT64", "POST", "/v2/models/chi/infer",
             {"inputs": [tensor(rng.integers(0, 4, (6, 2)), "INT64")]})]
    out += [("cvm one row", "POST", "/v2/models/cvm/infer", {"inputs": [tensor(shifted[:1])]}),
            ("cvm 12 rows", "POST", "/v2/models/cvm/infer", {"inputs": [tensor(shifted[1:13])]})]
    out += [(f"load {name}", "POST", f"/v2/repository/models/{name}/load", {}) for name in LATER]
    out += [("ks two inputs", "POST", "/v2/models/ks/infer",
             {"inputs": [tensor(shifted[:2]), tensor(shifted[:2], name="y")]}),
            ("ks wrong width", "POST", "/v2/models/ks/infer", {"inputs": [tensor(shifted[:5, :2])]}),
            ("ks-badparam", "POST", "/v2/models/ks-badparam/infer", one),
            ("ks-badsetting", "POST", "/v2/models/ks-badsetting/infer", one),
            ("broken", "POST", "/v2/models/broken/infer", one),
            ("ready ks-badsetting", "GET", "/v2/models/ks-badsetting/ready", None),
            ("ready broken", "GET", "/v2/models/broken/ready", None),
            ("ks after the refusals", "POST", "/v2/models/ks/infer", one)]
    return out


# An online detector's thresholds are simulated afresh by each load_detector (at random), so its `threshold`
# and the `is_drift` they decide differ between any two loads, even in one server: compared without them.
RANDOM_AT_LOAD = {"cvm": ("threshold", "is_drift")}


def rounded(values):
    """5 digits; NaN (MLServer writes the token NaN, gpuserve null: README "JSON null") as one word."""
    return ["NaN" if v != v else v for v in np.round(np.asarray(values, dtype=float), 5).tolist()]


def comparable(status, body, headers):
    if isinstance(body, dict) and "outputs" in body:
        body = {k: v for k, v in body.items() if k != "id"}
        body["outputs"] = [o for o in body["outputs"] if o["name"] not in RANDOM_AT_LOAD.get(body["model_name"], ())]
        body["outputs"] = [{k: (rounded(v) if k == "data" and o.get("datatype") != "BYTES" else v)
                            for k, v in o.items()} for o in body["outputs"]]
    elif isinstance(body, dict) and set(body) <= {"error", "detail"}:
        body = {"error keys": sorted(body)}
    return {"status": status, "body": body, "headers": headers}


def grpc_infer(port, model, rows):
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    rows = np.asarray(rows, dtype=np.float32)
    request = service_pb2.ModelInferRequest(model_name=model)
    given = request.inputs.add(name="x", datatype="FP32", shape=list(rows.shape))
    given.contents.fp32_contents.extend(rows.ravel().tolist())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            answer, call_ = stub.ModelInfer.with_call(request, timeout=60)
        except grpc.RpcError as exc:
            return {"code": exc.code().name}
    outputs = []
    raw = list(answer.raw_output_contents)
    for index, out in enumerate(answer.outputs):
        contents = out.contents
        if out.datatype == "BYTES":
            values = [repr(v) for v in contents.bytes_contents] or (repr(raw[index]) if raw else [])
        else:
            values = rounded(list(contents.int64_contents or contents.fp32_contents or contents.fp64_contents)
                             or (np.frombuffer(raw[index], {"INT64": np.int64, "FP32": np.float32,
                                                             "FP64": np.float64}[out.datatype]) if raw else []))
        outputs.append({"name": out.name, "datatype": out.datatype, "shape": list(out.shape), "data": values})
    parameters = {k: str(v).strip() for k, v in answer.parameters.items()}
    metadata = dict(call_.initial_metadata() or ()) | dict(call_.trailing_metadata() or ())
    return {"outputs": outputs, "parameters": parameters,
            "metadata": {k: v for k, v in metadata.items() if k.startswith("x-seldon")}}


def drift_metric(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    return sorted(line for line in text.splitlines() if line.startswith("seldon_model_drift_sum"))


def main() -> int:
    if not MLSERVER.exists():
        raise SystemExit(f"no {MLSERVER}: see this file's docstring")
    work = Path(tempfile.mkdtemp(prefix="alibi-conf-"))
    build(work / "built", work / "later")
    answers, procs = {}, {}
    try:
        for name in ("mlserver", "gpuserve"):
            repo = work / name / "models"
            shutil.copytree(work / "built", repo)
            (repo / "settings.json").write_text("{}")  # MLServer's default parallel worker: where its
            # custom metrics show (with parallel_workers 0, MLServer 1.7.1 exposes no seldon_model_drift)
            ports = free_ports(3)
            procs[name] = start(name, repo, ports, work / f"{name}.log", MLSERVER)
            wait_until_ready(ports[0], procs[name], [f"/v2/models/{m}/ready" for m in READY])
            for later in LATER:
                shutil.copytree(work / "later" / later, repo / later)
            answers[name] = {label: comparable(*call_json(ports[0], method, path, body))
                             for label, method, path, body in cases()}
            rows = np.random.default_rng(4).normal(size=(5, 3)) + 1
            answers[name]["grpc ks-feature"] = grpc_infer(ports[1], "ks-feature", rows)
            answers[name]["grpc ks wrong width"] = grpc_infer(ports[1], "ks", rows[:, :2])
            online = grpc_infer(ports[1], "cvm", rows[:2])  # None values: BYTES over gRPC
            for output in online.get("outputs", []):
                if output["name"] in RANDOM_AT_LOAD["cvm"]:
                    output["data"] = "(random at load)"
            answers[name]["grpc cvm 2 rows"] = online
            answers[name]["metric seldon_model_drift"] = drift_metric(ports[2])
            answers[name]["cvm state written"] = sorted(p.name for p in (repo / "cvm" / "detector").iterdir())
            stop(procs.pop(name))
    finally:
        for proc in procs.values():
            stop(proc)
    (work / "answers.json").write_text(json.dumps(answers, indent=1))
    differ = 0
    for label in answers["mlserver"]:
        a, b = answers["mlserver"][label], answers["gpuserve"][label]
        same = a == b
        differ += not same
        print(f"{'same  ' if same else 'DIFFER'} {label}")
        if not same:
            print(f"    mlserver: {json.dumps(a)[:1500]}\n    gpuserve: {json.dumps(b)[:1500]}")
    print(f"\n{len(answers['mlserver'])} cases, {differ} differ (logs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
