"""MLServer 1.7.1 (custom runtime mlserver_runtime.OnnxRuntime calling onnxruntime) twice: adaptive
batching on (`mlserver`: max_batch_size 64, max_batch_time MLSERVER_BATCH_TIME, default 0.002 s) and off
(`mlserver-nobatch`). Default parallel_workers (1 inference worker process). Same sweep and generator as
gpuserve; rows merged into the CSV.

    bash benchmarks/peers/setup.sh mlserver
    .peers/bench/bin/python benchmarks/peers/run_mlserver.py [--seconds 5 --concurrency 1,8,32,64 ...]
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402
from harness import PEERS_DIR, Launch, ServerProcess, free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
SUPPORTED = ("v2-json",)
VENV = PEERS_DIR / "mlserver"
BATCH_TIME = float(os.environ.get("MLSERVER_BATCH_TIME", "0.002"))


def available():
    if not (VENV / ".complete").exists():
        return "no venv: run bash benchmarks/peers/setup.sh mlserver"
    return None


def launcher(batching: bool, name: str):
    def launch(paths, work) -> Launch:
        repo = work / "repo"
        http, grpc, metrics = free_port(), free_port(), free_port()
        repo.mkdir(parents=True, exist_ok=True)
        (repo / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics,
            "debug": False}, indent=2))
        for model, path in paths.items():
            settings = {"name": model, "implementation": "mlserver_runtime.OnnxRuntime",
                        "parameters": {"uri": str(path)}}
            if batching:
                settings.update(max_batch_size=64, max_batch_time=BATCH_TIME)
            (repo / model).mkdir(exist_ok=True)
            (repo / model / "model-settings.json").write_text(json.dumps(settings, indent=2))
        env = {"PYTHONPATH": str(HERE), "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '')}"}
        process = ServerProcess(name, [str(VENV / "bin" / "mlserver"), "start", str(repo)], work / "server.log",
                                env=env).start()
        base = f"http://127.0.0.1:{http}"
        return Launch(process, base, [f"{base}/v2/health/ready"] + [f"{base}/v2/models/{n}/ready" for n in paths])

    return launch


SERVERS = {"mlserver": launcher(True, "mlserver"), "mlserver-nobatch": launcher(False, "mlserver-nobatch")}

if __name__ == "__main__":
    sys.exit(harness.peer_main(list(SERVERS), SERVERS, SUPPORTED, available, __doc__))
