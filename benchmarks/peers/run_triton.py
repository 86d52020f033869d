"""Triton (tritonserver 2.51 from nvidia-pytriton 0.7.0, Python backend + onnxruntime, dynamic batching,
max_batch_size 64) under the same sweep and generator as gpuserve; rows merged into the CSV.

    bash benchmarks/peers/setup.sh triton
    .peers/bench/bin/python benchmarks/peers/run_triton.py [--seconds 5 --concurrency 1,8,32,64 ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402
from harness import PEERS_DIR, Launch, ServerProcess, free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
SUPPORTED = ("v2-json", "v2-binary", "grpc")
PYTHON = PEERS_DIR / "triton" / "bin" / "python"


def available():
    if not (PEERS_DIR / "triton" / ".complete").exists():
        return "no venv: run bash benchmarks/peers/setup.sh triton"
    return None


def launch(paths, work) -> Launch:
    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [str(PYTHON), str(HERE / "triton_server.py"), "--http-port", str(http), "--grpc-port", str(grpc),
           "--metrics-port", str(metrics)]
    for name, path in paths.items():
        cmd += ["--model", f"{name}={path}"]
    base = f"http://127.0.0.1:{http}"
    process = ServerProcess("triton", cmd, work / "server.log").start()
    return Launch(process, base, [f"{base}/v2/health/ready"] + [f"{base}/v2/models/{n}/ready" for n in paths],
                  grpc_url=f"grpc://127.0.0.1:{grpc}")


SERVERS = {"triton": launch}

if __name__ == "__main__":
    sys.exit(harness.peer_main(["triton"], SERVERS, SUPPORTED, available, __doc__))
