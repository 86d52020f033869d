"""The response cache under a load generator's repeated request: the issue-5 MLP (1024x3, ONNX Runtime)
served with and without `response_cache { enable: true }`, by gpuserve and by Triton (pytriton's
tritonserver 2.51 with `--cache-config local,size=...`, when its venv is there), one after another on the
same machine with the same generator and body. hey, vegeta and perf_analyzer send one body over and over,
so every request after the first is a hit: this measures the cache's path, not the model's.

    .venv/bin/python benchmarks/cache_bench.py [--concurrency 1,8,64] [--seconds 4] [--protocol v2-binary|v2-json|grpc]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import loadgen  # noqa: E402
from models import mlp_onnx  # noqa: E402
from peers import run_triton  # noqa: E402

CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [ {{ name: "input" data_type: TYPE_FP32 dims: [ 1024 ] }} ]
output [ {{ name: "output" data_type: TYPE_FP32 dims: [ 1024 ] }} ]
dynamic_batching {{ }}
{cache}"""


def gpuserve_launch(root: Path, work: Path) -> harness.Launch:
    http, grpc, metrics = harness.free_port(), harness.free_port(), harness.free_port()
    cmd = [harness.gpuserve_bin(), "start", str(root), "--http-port", str(http), "--grpc-port", str(grpc),
           "--metrics-port", str(metrics)]
    process = harness.ServerProcess("gpuserve", cmd, work / "gpuserve.log").start()
    base = f"http://127.0.0.1:{http}"
    return harness.Launch(process, base, [f"{base}/v2/models/{n}/ready" for n in ("mlp", "mlp_cached")],
                          grpc_url=f"grpc://127.0.0.1:{grpc}")


def triton_launch(model: Path, work: Path) -> harness.Launch:
    http, grpc, metrics = harness.free_port(), harness.free_port(), harness.free_port()
    cmd = [str(run_triton.PYTHON), str(run_triton.HERE / "triton_server.py"), "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--model", f"mlp={model}",
           "--model", f"mlp_cached={model}", "--cached", "mlp_cached"]
    process = harness.ServerProcess("triton", cmd, work / "triton.log").start()
    base = f"http://127.0.0.1:{http}"
    return harness.Launch(process, base, [f"{base}/v2/health/ready"] +
                          [f"{base}/v2/models/{n}/ready" for n in ("mlp", "mlp_cached")],
                          grpc_url=f"grpc://127.0.0.1:{grpc}")


def measure(launch: harness.Launch, server: str, args) -> list:
    rows = []
    with launch.process:
        launch.process.wait_ready(launch.ready_urls)
        for model in ("mlp", "mlp_cached"):
            base = launch.grpc_url if args.protocol == "grpc" else launch.base_url
            target = loadgen.make_target(base, model, args.protocol, "input", [1, 1024])
            status, body = loadgen.check_target(target)
            if status != 200:
                raise RuntimeError(f"{server} {model}: {status} {body[:200]!r}")
            for c in args.concurrency:
                result = loadgen.run(args.generator, target, c, args.seconds, args.warmup)
                rows.append({"server": server, "model": model, "c": c, "rps": round(result.rps, 1),
                             "p50_ms": round(result.p50_ms, 3), "p99_ms": round(result.p99_ms, 3),
                             "errors": result.errors})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", default="1,8,64", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--protocol", choices=("v2-json", "v2-binary", "grpc"), default="v2-binary")
    parser.add_argument("--generator", default="builtin")
    parser.add_argument("--servers", default="gpuserve,triton")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = mlp_onnx(work / "mlp.onnx")
        root = work / "repo"
        for name, cache in (("mlp", ""), ("mlp_cached", "response_cache { enable: true }\n")):
            (root / name / "1").mkdir(parents=True)
            (root / name / "1" / "model.onnx").write_bytes(model.read_bytes())
            (root / name / "config.pbtxt").write_text(CONFIG.format(name=name, cache=cache))
        servers = args.servers.split(",")
        if "gpuserve" in servers:
            rows += measure(gpuserve_launch(root, work), "gpuserve", args)
        if "triton" in servers:
            missing = run_triton.available()
            if missing:
                print(f"triton skipped: {missing}", flush=True)
            else:
                rows += measure(triton_launch(model, work), "triton", args)
    print("\n| server | model | " + " | ".join(f"c={c} req/s (p99 ms)" for c in args.concurrency) + " |")
    print("|---|---|" + "---:|" * len(args.concurrency))
    for server in dict.fromkeys(r["server"] for r in rows):
        for model in ("mlp", "mlp_cached"):
            cells = [f"{r['rps']:,.0f} ({r['p99_ms']:.2f})" for r in rows if r["server"] == server and r["model"] == model]
            print(f"| {server} | {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
