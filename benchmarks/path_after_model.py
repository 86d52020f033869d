"""What gpuserve's in-process path costs a request right after a model call, against the same path alone.

backend_bench's batch-1 ratio (served / direct, issue 6's 0.9 goal) pays the served path once per request. Timed
alone, back to back, that path (InferRequest -> DataPlane.infer -> engine -> response, its backend call replaced
by a copy of a kept answer) takes ~19 us here; right after a real ONNX Runtime call it takes ~3x that, because the
call evicts the path's code and objects from the core's caches (a 1024-wide MLP streams 12 MB of weights through
them) and, on a VM, a core that waited is slower to come back. This measures the path after each kind of
preceding work, so a change to the path can be judged by what it costs where it runs, not only warm:
    none         the path back to back (warm caches)
    ort          a real session.run of backend_bench's MLP (1024 wide, 3 layers, 2 threads) at batch 1
    ort_1thread  the same on one intra-op thread (the caller's core does all the work)
    numpy        a 12 MB matrix-vector product on this thread (cache pollution alone, no other thread)
    sleep        time.sleep(200 us) (an idle core, nothing else)
    .venv/bin/python benchmarks/path_after_model.py [--rounds 25] [--slice 0.08]
Medians over alternating slices, so the VM's drift hits every kind alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backend_bench import FEATURES, HIDDEN, _settings  # noqa: E402  (benchmarks/ is on the path)
from loops import event_loop  # noqa: E402
from models import mlp_onnx  # noqa: E402


async def measure(rounds: int, slice_s: float) -> dict:
    from gpuserve.backends.onnx import OnnxBackend
    from gpuserve.dataplane import DataPlane
    from gpuserve.model_repository import ModelRepository, stop_model
    from gpuserve.runtimes import OnnxModel
    from gpuserve.types import InferRequest

    with tempfile.TemporaryDirectory() as tmp:
        path = mlp_onnx(Path(tmp) / "mlp.onnx", width=HIDDEN, layers=3, in_features=FEATURES)
        model = OnnxModel("onnx", _settings("onnx", "onnx", path, 1, "cpu"))
        model.load()
        repository = ModelRepository()
        repository.update(model)
        plane = DataPlane(repository)
        plane.started = True
        x = np.random.default_rng(1).normal(size=(1, FEATURES)).astype(np.float32)
        served = next(o for o in gc.get_objects() if isinstance(o, OnnxBackend))
        two, one = served.session, OnnxBackend(str(path), intra_op_threads=1).session
        kept = served.run({"input": x})
        served.run = lambda inputs, output_names=None: {k: v.copy() for k, v in kept.items()}
        weights = np.ones((3, HIDDEN, HIDDEN), np.float32)
        vector = np.ones(HIDDEN, np.float32)
        before = {"none": lambda: None, "ort": lambda: two.run(None, {"input": x}),
                  "ort_1thread": lambda: one.run(None, {"input": x}), "numpy": lambda: weights @ vector,
                  "sleep": lambda: time.sleep(0.0002)}
        await plane.infer(InferRequest.from_numpy("onnx", {"input": x}))
        clock = time.perf_counter_ns
        found = {name: ([], []) for name in before}
        for _ in range(rounds):
            for name, work in before.items():
                spent, path_ns = [], []
                end = time.perf_counter() + slice_s
                while time.perf_counter() < end:
                    t0 = clock()
                    work()
                    t1 = clock()
                    await plane.infer(InferRequest.from_numpy("onnx", {"input": x}))
                    path_ns.append(clock() - t1)
                    spent.append(t1 - t0)
                found[name][0].append(statistics.median(spent) / 1e3)
                found[name][1].append(statistics.median(path_ns) / 1e3)
        await stop_model(model)
    alone = statistics.median(found["none"][1])
    return {name: {"before_us": round(statistics.median(work), 1), "path_us": round(statistics.median(path), 1),
                   "path_vs_alone": round(statistics.median(path) / alone, 2)}
            for name, (work, path) in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--slice", type=float, default=0.08, help="seconds of each kind per round")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    args = parser.parse_args()
    loop_name, runner = event_loop(args.loop)
    result = {"date": time.strftime("%Y-%m-%d"), "event_loop": loop_name, "rounds": args.rounds,
              "after": runner(measure(args.rounds, args.slice))}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
