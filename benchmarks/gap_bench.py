"""How much slower a framework's own call gets when something runs between two calls (issue 6).

A served request puts decode, model, engine and encode (~25-30 us of Python) between two backend calls;
a direct-call benchmark runs them back to back. On a VM the framework's worker threads go to sleep in the
gap and the vCPU they wake on may have halted, so the call itself slows down. This measures exactly that,
with nothing of gpuserve in the loop: the batch-B call of the issue-5 MLP after a busy-wait gap of G us on
the calling thread (or after touching 8 MB, which evicts the caches).
    .venv/bin/python benchmarks/gap_bench.py [--framework onnxruntime|torchscript] [--batches 1,16]
        [--gaps 0,20,60,150] [--calls 1500] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import mlp_onnx  # noqa: E402  (benchmarks/ is on the path)

WIDTH = 1024


def onnx_call(folder: Path, threads: int):
    from gpuserve.backends.onnx import OnnxBackend  # the session options the server uses (spinning off)

    session = OnnxBackend(str(mlp_onnx(folder / "mlp.onnx", width=WIDTH, layers=3, in_features=WIDTH)),
                          intra_op_threads=threads).session
    return lambda x: session.run(None, {"input": x})


def torchscript_call(folder: Path, threads: int):
    import torch

    from backend_bench import _torch_net  # the issue-5 MLP as backend_bench serves it

    torch.set_num_threads(threads)
    module = torch.jit.script(_torch_net())

    def call(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return call


def mean_call_us(call, x: np.ndarray, gap_s: float, calls: int, evict: np.ndarray = None) -> float:
    for _ in range(20):
        call(x)
    total = 0
    for _ in range(calls):
        if evict is not None:
            evict.sum()
        elif gap_s:
            start = time.perf_counter()
            while time.perf_counter() - start < gap_s:
                pass
        t0 = time.perf_counter_ns()
        call(x)
        total += time.perf_counter_ns() - t0
    return total / calls / 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", choices=("onnxruntime", "torchscript"), default="onnxruntime")
    parser.add_argument("--batches", default="1,16", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--gaps", default="0,20,60,150", type=lambda s: [float(v) for v in s.split(",")])
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        call = (onnx_call if args.framework == "onnxruntime" else torchscript_call)(Path(tmp), args.threads)
        evict = np.ones(1 << 20)  # 8 MB of float64
        print(f"{args.framework}, MLP {WIDTH}x3, {args.threads} threads; mean us per call", flush=True)
        for batch in args.batches:
            x = np.random.default_rng(batch).normal(size=(batch, WIDTH)).astype(np.float32)
            for round_ in range(args.rounds):
                cells = [f"gap {g:g} us: {mean_call_us(call, x, g / 1e6, args.calls):.1f}" for g in args.gaps]
                cells.append(f"8 MB touched: {mean_call_us(call, x, 0, args.calls, evict):.1f}")
                print(f"B={batch} round {round_ + 1}: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
