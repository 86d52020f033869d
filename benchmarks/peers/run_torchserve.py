"""Real TorchServe 0.12 (Java frontend + Python workers, from .peers/torchserve) on free ports, serving a model
store laid out as KServe's PyTorch runtime lays it out (STORE/config/config.properties + STORE/model-store/*.mar),
the layout `gpuserve start STORE` also serves. Used by torchserve_conformance.py and torchserve_bench.py.

    bash benchmarks/peers/setup.sh torchserve
    .venv/bin/python benchmarks/peers/run_torchserve.py STORE [--models a,b]   # start, wait, print ports, stop

The store's config.properties is read, not written: its lines (model_snapshot, models=, load_models, ...) are copied
into WORK/ts.properties with the ports, model_store and a few quiet-running keys replaced. The server runs
`torchserve --foreground` in its own process group, so stopping it (SIGTERM, then SIGKILL) takes the java frontend
and its Python workers together; leftover java of this server's group is killed by pid (harness.ServerProcess).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import PEERS_DIR, ServerProcess, free_port  # noqa: E402

VENV = PEERS_DIR / "torchserve"
BIN = VENV / "bin"
# keys this launcher owns; the store's own values for them are dropped
OWNED = ("inference_address", "management_address", "metrics_address", "grpc_inference_port",
         "grpc_management_port", "model_store", "disable_token_authorization", "enable_envvars_config",
         "install_py_dep_per_model", "disable_system_metrics", "number_of_netty_threads", "netty_client_threads",
         "default_workers_per_model")


def available() -> Optional[str]:
    if not (VENV / ".complete").exists():
        return "no venv: run bash benchmarks/peers/setup.sh torchserve"
    if not any(Path(d, "java").exists() for d in os.environ.get("PATH", "/usr/bin").split(os.pathsep)):
        return "no java on PATH (TorchServe's frontend is Java 11+)"
    return None


def _get(url: str, timeout: float = 2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None, b""


class TorchServe:
    """One TorchServe: `with TorchServe(store, work) as ts:` -> ts.inference / ts.management (base URLs),
    ts.grpc_inference / ts.grpc_management (host:port)."""

    def __init__(self, store: Path, work: Path, models: Iterable[str] = (), netty_threads: int = 2,
                 job_queue_size: Optional[int] = None):
        self.store, self.work = Path(store).resolve(), Path(work).resolve()
        self.models = list(models)
        self.ports = {k: free_port() for k in ("inference", "management", "metrics", "grpc_inference",
                                               "grpc_management")}
        self.netty_threads, self.job_queue_size = netty_threads, job_queue_size
        self.process: Optional[ServerProcess] = None

    @property
    def inference(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}"

    @property
    def management(self) -> str:
        return f"http://127.0.0.1:{self.ports['management']}"

    @property
    def grpc_inference(self) -> str:
        return f"127.0.0.1:{self.ports['grpc_inference']}"

    @property
    def grpc_management(self) -> str:
        return f"127.0.0.1:{self.ports['grpc_management']}"

    def properties(self) -> Path:
        source = self.store / "config" / "config.properties"
        lines = []
        if source.exists():
            for line in source.read_text().splitlines():
                key = line.split("=", 1)[0].strip()
                if key and key not in OWNED:
                    lines.append(line)
        p = self.ports
        lines += [f"inference_address=http://127.0.0.1:{p['inference']}",
                  f"management_address=http://127.0.0.1:{p['management']}",
                  f"metrics_address=http://127.0.0.1:{p['metrics']}",
                  f"grpc_inference_port={p['grpc_inference']}", f"grpc_management_port={p['grpc_management']}",
                  f"model_store={self.store / 'model-store'}", "disable_token_authorization=true",
                  "install_py_dep_per_model=false", "disable_system_metrics=true",
                  f"number_of_netty_threads={self.netty_threads}", f"netty_client_threads={self.netty_threads}",
                  "default_workers_per_model=1"]
        if self.job_queue_size:  # else the store's, or TorchServe's default 100 (a later line wins)
            lines.append(f"job_queue_size={self.job_queue_size}")
        self.work.mkdir(parents=True, exist_ok=True)
        path = self.work / "ts.properties"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 240.0) -> "TorchServe":
        config = self.properties()
        cmd = [str(BIN / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
               "--model-store", str(self.store / "model-store"), "--ts-config", str(config)]
        env = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}", "VIRTUAL_ENV": str(VENV),
               "LOG_LOCATION": str(self.work / "logs"), "METRICS_LOCATION": str(self.work / "logs"),
               "TS_DISABLE_SYSTEM_METRICS": "true", "OMP_NUM_THREADS": "1", "PYTHONNOUSERSITE": "1"}
        self.process = ServerProcess("torchserve", cmd, self.work / "torchserve.log", env=env, cwd=self.work).start()
        try:
            self.wait(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self, timeout: float) -> None:
        """Until /ping answers Healthy and every expected model has a READY worker."""
        deadline = time.monotonic() + timeout
        pending = ["ping"] + self.models
        while pending:
            if self.process.proc.poll() is not None:
                raise RuntimeError(f"torchserve exited with {self.process.proc.returncode}:\n{self.process.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"torchserve: {pending[0]} not ready after {timeout:.0f} s:\n"
                                   f"{self.process.log_tail()}")
            head = pending[0]
            if head == "ping":
                status, body = _get(f"{self.inference}/ping")
                ok = status == 200 and b"Healthy" in body
            else:
                status, body = _get(f"{self.management}/models/{head}")
                try:
                    ok = status == 200 and any(w.get("status") == "READY" for w in json.loads(body)[0]["workers"])
                except (ValueError, KeyError, IndexError, TypeError):
                    ok = False
            if ok:
                pending.pop(0)
            else:
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=20.0)
            self.process = None

    def __enter__(self) -> "TorchServe":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def snapshot_properties(models: Dict[str, dict]) -> str:
    """KServe's config.properties lines for MODELS {name: {"marName", "batchSize", "maxBatchDelay", ...}}."""
    snapshot = {"name": "startup.cfg", "modelCount": len(models), "models": {}}
    for name, options in models.items():
        version = options.pop("version", "1.0")
        snapshot["models"][name] = {version: {"defaultVersion": True, "marName": f"{name}.mar", "minWorkers": 1,
                                              "maxWorkers": 1, "batchSize": 1, "maxBatchDelay": 100,
                                              "responseTimeout": 120, **options}}
    return ("inference_address=http://0.0.0.0:8085\nmanagement_address=http://0.0.0.0:8085\n"
            "model_store=/mnt/models/model-store\nload_models=all\n"
            f"model_snapshot={json.dumps(snapshot)}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--models", default="", help="comma-separated names to wait for")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    reason = available()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    work = args.work or Path(__file__).resolve().parents[1] / "results" / "torchserve"
    with TorchServe(args.store, work, [m for m in args.models.split(",") if m]) as ts:
        print(json.dumps(ts.ports))
        print(_get(f"{ts.inference}/ping")[1].decode())
        print(_get(f"{ts.management}/models")[1].decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
