"""Real TorchServe 0.12 against gpuserve on ONE .mar: a TorchScript MLP (64 -> 256 -> ReLU -> 10) whose handler takes
a JSON list of 64 floats and answers the 10 outputs as a list, batchSize 8 / maxBatchDelay 5 ms in KServe's
config.properties, read by both. One server at a time, the same closed-loop generator (benchmarks/loadgen.py's
builtin, or --generator hey where installed) at each concurrency, POST /predictions/mlp. Torch runs one thread
in both (the handler sets it; OMP_NUM_THREADS=1). Also the in-process limit: the same handler's `handle` called
directly, one row a call and eight rows a call. A benchmark, not a test.

    bash benchmarks/peers/setup.sh torchserve
    .venv/bin/python benchmarks/peers/torchserve_bench.py [--concurrency 1,8,32] [--seconds 8] [--max-load 1.0]

Waits (up to --max-wait seconds) for the 1-minute load average to fall under --max-load before measuring, and says
the load it measured under. Prints a Markdown table with the date, machine and command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import types
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import harness  # noqa: E402
from backend_bench import rate  # noqa: E402
import loadgen  # noqa: E402
from harness import ServerProcess, free_port, gpuserve_bin  # noqa: E402
from run_torchserve import TorchServe, available, snapshot_properties  # noqa: E402

HANDLER = '''
import json, os
import torch


class MLPHandler:
    def initialize(self, context):
        torch.set_num_threads(1)
        folder = context.system_properties["model_dir"]
        self.model = torch.jit.load(os.path.join(folder, context.manifest["model"]["serializedFile"]))
        self.initialized = True

    def handle(self, data, context):
        rows = []
        for row in data:
            value = row.get("data") if row.get("data") is not None else row.get("body")
            rows.append(json.loads(value) if isinstance(value, (bytes, bytearray)) else value)
        with torch.inference_mode():
            return self.model(torch.tensor(rows, dtype=torch.float32)).tolist()
'''
BATCH, DELAY_MS = 8, 5


def build(root: Path, workers: int = 1) -> Path:
    import torch

    torch.manual_seed(0)
    model = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                                 torch.nn.Linear(256, 10)).eval())
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "model-store").mkdir(parents=True, exist_ok=True)
    model.save(str(root / "model.pt"))
    manifest = {"runtime": "python", "archiverVersion": "0.12.0", "model": {
        "modelName": "mlp", "serializedFile": "model.pt", "handler": "handler.py", "modelVersion": "1.0"}}
    with zipfile.ZipFile(root / "model-store" / "mlp.mar", "w") as zf:
        zf.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        zf.write(root / "model.pt", "model.pt")
        zf.writestr("handler.py", HANDLER)
    (root / "config" / "config.properties").write_text(
        snapshot_properties({"mlp": {"batchSize": BATCH, "maxBatchDelay": DELAY_MS, "minWorkers": workers,
                                     "maxWorkers": workers}}))
    return root


def direct_rates(root: Path, seconds: float = 3.0):
    """The handler's `handle` called in this process: (rows/s at 1 row a call, rows/s at BATCH rows a call)."""
    import torch

    work = root / "direct"
    with zipfile.ZipFile(root / "model-store" / "mlp.mar") as zf:
        zf.extractall(work)
    namespace: dict = {}
    exec(compile(HANDLER, "handler.py", "exec"), namespace)
    handler = namespace["MLPHandler"]()
    context = types.SimpleNamespace(system_properties={"model_dir": str(work)},
                                    manifest=json.loads((work / "MAR-INF" / "MANIFEST.json").read_text()))
    handler.initialize(context)
    row = [0.01 * i for i in range(64)]
    out = []
    for n in (1, BATCH):
        data = [{"body": row} for _ in range(n)]
        for _ in range(50):
            handler.handle(data, context)
        out.append(rate(lambda data=data: handler.handle(data, context), n, seconds))
    torch.set_num_threads(os.cpu_count() or 1)
    return out


_DEADLINE: list = []


def wait_quiet(max_load: float, max_wait: float) -> float:
    """Until the 1-minute load average is under max_load; max_wait seconds of waiting in all, then goes on."""
    if not _DEADLINE:
        _DEADLINE.append(time.monotonic() + max_wait)
    deadline = _DEADLINE[0]
    while True:
        load = os.getloadavg()[0]
        if load < max_load or time.monotonic() > deadline:
            return load
        print(f"load average {load:.2f} >= {max_load}: waiting", file=sys.stderr, flush=True)
        time.sleep(15)


def start_gpuserve(root: Path, work: Path):
    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [gpuserve_bin(), "start", str(root), "--http-port", str(http), "--grpc-port", str(grpc),
           "--metrics-port", str(metrics)]
    process = ServerProcess("gpuserve", cmd, work / "gpuserve.log", env={"OMP_NUM_THREADS": "1"}).start()
    base = f"http://127.0.0.1:{http}"
    process.wait_ready([f"{base}/v2/health/live", f"{base}/v2/models/mlp/ready"], timeout=180)
    return process, base


def sweep(name: str, base: str, concurrency, seconds: float, generator: str, max_load: float, max_wait: float):
    body = json.dumps([round(0.01 * i, 4) for i in range(64)]).encode()
    target = loadgen.Target(f"{base}/predictions/mlp", body=body, headers={"Content-Type": "application/json"})
    status, answer = loadgen.check_target(target)
    if status != 200 or len(json.loads(answer)) != 10:
        raise RuntimeError(f"{name}: {status} {answer[:200]!r}")
    rows = []
    loadgen.run(generator, target, 8, 2.0, warmup=0.5)  # warm both paths
    for c in concurrency:
        load = wait_quiet(max_load, max_wait)
        before = harness.batch_counts(base, "mlp") if name == "gpuserve" else None
        result = loadgen.run(generator, target, c, seconds, warmup=1.0)
        batches = "" if before is None else harness.format_batches(
            harness._diff(harness.batch_counts(base, "mlp"), before))
        print(f"{name:>10} load {load:.2f} " + result.line(), file=sys.stderr, flush=True)
        rows.append({"server": name, "concurrency": c, "rps": result.rps, "p50_ms": result.p50_ms,
                     "p99_ms": result.p99_ms, "errors": result.errors, "load": load, "batches": batches})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--generator", default="builtin", choices=loadgen.GENERATORS)
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--max-wait", type=float, default=900.0, help="seconds of waiting for quiet, in all")
    parser.add_argument("--servers", default="torchserve,gpuserve")
    parser.add_argument("--workers", type=int, default=1, help="minWorkers = maxWorkers of the model, in both")
    parser.add_argument("--json", type=Path, default=harness.RESULTS / "torchserve_bench.json")
    args = parser.parse_args(argv)
    reason = available()
    if reason and "torchserve" in args.servers:
        print(f"torchserve peer unavailable: {reason}", file=sys.stderr)
        return 2
    concurrency = [int(c) for c in args.concurrency.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="ts-bench-"))
    rows = []
    try:
        root = build(scratch / "store", args.workers)
        wait_quiet(args.max_load, args.max_wait)
        one, eight = direct_rates(root)
        rows += [{"server": "in-process handle, 1 row/call", "concurrency": "-", "rps": one},
                 {"server": f"in-process handle, {BATCH} rows/call", "concurrency": "-", "rps": eight}]
        for server in args.servers.split(","):
            if server == "torchserve":
                with TorchServe(root, scratch / "ts", ["mlp"], job_queue_size=1000) as ts:
                    rows += sweep(server, ts.inference, concurrency, args.seconds, args.generator, args.max_load,
                                  args.max_wait)
            else:
                process, base = start_gpuserve(root, scratch)
                try:
                    rows += sweep(server, base, concurrency, args.seconds, args.generator, args.max_load,
                                  args.max_wait)
                finally:
                    process.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} | {harness.machine()} | generator {args.generator}, "
          f"{args.seconds:g} s a point | `{' '.join([Path(sys.executable).name] + sys.argv)}`\n")
    print("| server | concurrency | req/s | p50 ms | p99 ms | errors | load avg | gpuserve batches (size:calls) |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["server"], r["concurrency"], f"{r['rps']:.0f}"] + [
            f"{r[k]:.2f}" if k in r else "" for k in ("p50_ms", "p99_ms")] + [
            str(r.get("errors", "")), f"{r['load']:.2f}" if "load" in r else "", r.get("batches", "")]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
