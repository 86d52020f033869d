"""TensorFlow Serving's gRPC API against the V2 gRPC API on one gpuserve, under perf_analyzer (the real binary,
`--service-kind tfserving` and `-i grpc`): what a TFServing user's client costs against a Triton user's on the
same models, both with perf_analyzer's synchronous clients (a thread each; its TFServing client has no other
mode), each point beside the in-process direct call at batch 1 (one client's ceiling).

Models: `small` (ONNX MLP 64 -> 256 -> 10, request overhead dominates) and `tfdense` (a TensorFlow SavedModel of
the same shape), both batching (max_batch_size 64, dynamic batching). The server is started from the launch line.

    cd benchmarks && ../.venv/bin/python tfserving_bench.py [--concurrency 1,8,32] [--seconds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import harness
import loadgen
from backend_bench import rate
from models import dense_onnx

SIZES = (64, 256, 10)
ONNX_CONFIG = 'platform: "onnxruntime_onnx"\nmax_batch_size: 64\ndynamic_batching { }\n'
TF_CONFIG = 'platform: "tensorflow_savedmodel"\nmax_batch_size: 64\ndynamic_batching { }\n'


def dense_savedmodel(path: Path, sizes=SIZES, seed: int = 0):
    """The TensorFlow twin of models.dense_onnx: input `input` [batch, sizes[0]], output `output`."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    weights = [tf.constant((rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32))
               for a, b in zip(sizes[:-1], sizes[1:])]

    class Dense(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, sizes[0]], tf.float32, name="input")])
        def serve(self, x):
            for i, w in enumerate(weights):
                x = x @ w
                if i < len(weights) - 1:
                    x = tf.nn.relu(x)
            return {"output": x}

    module = Dense()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return module


def direct_rows_per_second(call, seconds: float = 1.0) -> float:
    row = np.random.default_rng(0).normal(size=(1, SIZES[0])).astype(np.float32)
    for _ in range(20):
        call(row)
    return rate(lambda: call(row), 1, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--models", default="small,tfdense")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",") if c]
    models = [m for m in args.models.split(",") if m]
    if not loadgen.perf_analyzer_path():
        print("perf_analyzer is not installed (bash scripts/install_perf_analyzer.sh)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        limits = {}
        if "small" in models:
            path = dense_onnx(root / "small" / "1" / "model.onnx", SIZES)
            (root / "small" / "config.pbtxt").write_text(ONNX_CONFIG)
            session = harness.ort_session(path)
            limits["small"] = direct_rows_per_second(lambda row: session.run(None, {"input": row}))
        if "tfdense" in models:
            module = dense_savedmodel(root / "tfdense" / "1" / "model.savedmodel")
            (root / "tfdense" / "config.pbtxt").write_text(TF_CONFIG)
            import tensorflow as tf

            limits["tfdense"] = direct_rows_per_second(lambda row: module.serve(tf.constant(row)))
        http, grpc_port, metrics = harness.free_port(), harness.free_port(), harness.free_port()
        server = harness.ServerProcess("gpuserve", [harness.gpuserve_bin(), "start", str(root), "--http-port",
                                                    str(http), "--grpc-port", str(grpc_port), "--metrics-port",
                                                    str(metrics)], Path(tmp) / "server.log").start()
        try:
            server.wait_ready([f"http://127.0.0.1:{http}/v2/models/{m}/ready" for m in models])
            print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {harness.machine()}")
            print("| model | clients | V2 gRPC req/s | TFServing gRPC req/s | TFServing / V2 | p50 ms V2 / TFS | "
                  "direct batch 1 rows/s |")
            print("|---|---:|---:|---:|---:|---|---:|")
            for model in models:
                for c in levels:
                    url = f"grpc://127.0.0.1:{grpc_port}"
                    v2 = loadgen.run_perf_analyzer(url, model, "grpc", c, args.seconds, sync=True)
                    tfs = loadgen.run_perf_analyzer(url, model, "tfserving", c, args.seconds, sync=True)
                    failed = [r.error_sample for r in (v2, tfs) if r.errors]
                    ratio = tfs.rps / v2.rps if v2.rps else float("nan")
                    print(f"| {model} | {c} | {v2.rps:,.0f} | {tfs.rps:,.0f} | {ratio:.2f} | {v2.p50_ms:.2f} / "
                          f"{tfs.p50_ms:.2f} | {limits[model]:,.0f} |" + (f" failed: {failed}" if failed else ""),
                          flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
