"""KServe ModelServer (kserve.Model subclass calling onnxruntime, kserve_server.py) under the same sweep
and generator as gpuserve; rows merged into the CSV.

    bash benchmarks/peers/setup.sh kserve
    .peers/bench/bin/python benchmarks/peers/run_kserve.py [--protocols v2-json,v1,v2-binary ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402
from harness import PEERS_DIR, Launch, ServerProcess, free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
SUPPORTED = ("v2-json", "v2-binary", "v1")
PYTHON = PEERS_DIR / "kserve" / "bin" / "python"


def available():
    if not (PEERS_DIR / "kserve" / ".complete").exists():
        return "no venv: run bash benchmarks/peers/setup.sh kserve"
    return None


def launch(paths, work) -> Launch:
    http, grpc = free_port(), free_port()
    cmd = [str(PYTHON), str(HERE / "kserve_server.py"), "--http_port", str(http), "--grpc_port", str(grpc)]
    for name, path in paths.items():
        cmd += ["--model", f"{name}={path}"]
    base = f"http://127.0.0.1:{http}"
    process = ServerProcess("kserve", cmd, work / "server.log").start()
    return Launch(process, base, [f"{base}/v2/health/ready"] + [f"{base}/v2/models/{n}/ready" for n in paths])


SERVERS = {"kserve": launch}

if __name__ == "__main__":
    sys.exit(harness.peer_main(["kserve"], SERVERS, SUPPORTED, available, __doc__))
