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

import harness  # noqa: E402
import loadgen  # noqa: E402
from harness import ServerProcess, free_port, gpuserve_bin  # noqa: E402

SCRIPT = '''

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
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = work / "lin_model.py"
        script.write_text(SCRIPT)
        limit = direct_rate(script)
        for _ in range(args.rounds):
            for server in servers:
                process = start(server, script, work)
                try:
                    target = loadgen.Target(f"{process.base}/v1/models/lin:predict", body=BODY,
                                            headers={"Content-Type": "application/json"})
                    status, answer = loadgen.check_target(target)
                    if status != 200 or len(json.loads(answer)["predictions"][0]) != 10:
                        raise RuntimeError(f"{server}: {status} {answer[:200]!r}")
                    loadgen.run("builtin", target, 8, 1.0, warmup=0.3)
                    for c in concurrency:
                        result = loadgen.run("builtin", target, c, args.seconds, warmup=0.5)
                        print(f"{server:>16} " + result.line(), file=sys.stderr, flush=True)
                        results.setdefault((server, c), []).append(result)
                finally:
                    process.stop()
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} | {harness.machine()} | builtin generator, {args.seconds:g} s a "
          f"point, {args.rounds} rounds (best shown) | `python benchmarks/peers/kserve_hooks_bench.py "
          f"{' '.join(sys.argv[1:])}`\n")
    print(f"In-process limit (predict called directly): {limit:,.0f} calls/s\n")
    print("| server | clients | req/s (best) | req/s (each round) | p50 ms | p99 ms |\n|---|---:|---:|---|---:|---:|")
    for server in servers:
        for c in concurrency:
            rounds = results[(server, c)]
            best = max(rounds, key=lambda r: r.rps)
            print(f"| {server} | {c} | {best.rps:,.0f} | {' / '.join(f'{r.rps:,.0f}' for r in rounds)} | "
                  f"{best.p50_ms:.2f} | {best.p99_ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
