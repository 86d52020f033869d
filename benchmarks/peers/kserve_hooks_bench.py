"""A KServe user's script, unchanged, under real KServe and under gpuserve: a `kserve.Model` subclass with a sync
`predict` (a [1, 64] x [64, 10] NumPy product, ~40 us), `ModelServer().start([...])`. gpuserve runs it with
`gpuserve run SCRIPT` twice: as it comes (a quick sync hook moves onto the event loop, gpuserve/hook_placement.py)
and with SYNC_HOOKS_ON_LOOP=false (the script then pins every call to a thread, as gpuserve did before). The same
closed-loop generator (benchmarks/loadgen.py's builtin) at each concurrency, V1 `POST /v1/models/lin:predict`,
servers in turn, `--rounds` times; beside them the in-process limit (the predict called directly). A benchmark,
not a test.

    bash benchmarks/peers/setup.sh kserve
    .venv/bin/python benchmarks/peers/kserve_hooks_bench.py [--concurrency 1,8,32] [--seconds 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import closed_loop  # noqa: E402
import harness  # noqa: E402
from harness import ServerProcess, free_port, gpuserve_bin  # noqa: E402

SCRIPT = '''
import os

import numpy as np
from kserve import Model, ModelServer


class Lin(Model):
    def __init__(self, name):
        super().__init__(name)
        self.weights = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)
        if os.environ.get("SYNC_HOOKS_ON_LOOP") == "false":
            self.sync_hooks_on_loop = False  # gpuserve's knob (KServe has no such attribute and ignores it)
        self.load()

    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        rows = np.asarray(payload["instances"], dtype=np.float32)
        return {"predictions": (rows @ self.weights).tolist()}


if __name__ == "__main__":
    ModelServer().start([Lin("lin")])
'''
BODY = json.dumps({"instances": [[round(0.01 * i, 2) for i in range(64)]]}).encode()


def direct_rate(script: Path, seconds: float = 2.0) -> float:
    """The script's predict called in this process (gpuserve's `kserve` alias stands in for KServe here)."""
    from gpuserve import import_alias

    import_alias.install("kserve", "gpuserve")
    namespace: dict = {"__name__": "bench_model"}
    exec(compile(script.read_text(), str(script), "exec"), namespace)
    model = namespace["Lin"]("lin")
    payload = json.loads(BODY)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict(payload)
        done += 1
    return done / (time.perf_counter() - start)


def start(server: str, script: Path, work: Path) -> ServerProcess:
    http, grpc = free_port(), free_port()
    flags = ["--http_port", str(http), "--grpc_port", str(grpc)]
    env = {"SYNC_HOOKS_ON_LOOP": "false"} if server == "gpuserve-thread" else {}
    if server == "kserve":
        cmd = [str(harness.ROOT / ".peers" / "kserve" / "bin" / "python"), str(script), *flags, "--enable_grpc",
               "false"]
    else:
        cmd = [gpuserve_bin(), "run", str(script), *flags]
    process = ServerProcess(server, cmd, work / f"{server}.log", env=env).start()
    process.base = f"http://127.0.0.1:{http}"
    process.wait_ready([f"{process.base}/v1/models/lin"], timeout=120)
    return process


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--servers", default="kserve,gpuserve,gpuserve-thread")
    args = parser.parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    servers = args.servers.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = work / "lin_model.py"
        script.write_text(SCRIPT)
        limit = direct_rate(script)
        results = closed_loop.measure(servers, lambda server: start(server, script, work), "/v1/models/lin:predict",
                                      BODY, lambda answer: len(json.loads(answer)["predictions"][0]) == 10,
                                      concurrency, args.seconds, args.rounds)
    closed_loop.report(results, servers, concurrency, args.seconds, args.rounds, "kserve_hooks_bench.py",
                       f"In-process limit (predict called directly): {limit:,.0f} calls/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
