"""Parallel workers (MLServer's `parallel_workers`) in process, no HTTP: what the hop to a worker process costs.

Two custom models: `echo` (no work: the round trip alone) and `spin` (pure-Python work holding the GIL for
about `--spin-ms`: the case worker processes exist for). Each is driven by C concurrent asyncio submitters
in the server's event loop, in process (`parallel_workers: 0`) and with 1 and 2 worker processes; with
`--busy-loop` a task keeps the loop busy with 0.3 ms slices of Python, as a server's HTTP parsing does.
Reports calls/s, p50 and p99. Run:
    .venv/bin/python benchmarks/parallel_bench.py [--concurrency 1,8,32] [--seconds 3] [--workers 0,1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import textwrap
import time
from pathlib import Path

from loops import event_loop

_MODEL = """
import time
from gpuserve import Model


class Echo(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        return {"predictions": payload["instances"]}


class Spin(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        end = time.perf_counter() + SPIN_S
        while time.perf_counter() < end:  # the GIL held for the whole call, as pure-Python work holds it
            pass
        return {"predictions": payload["instances"]}
"""


def _repository(root: Path, kind: str, workers: int, spin_ms: float):
    from gpuserve import ModelRepository
    from gpuserve.repository import DiskRepository

    folder = root / f"{kind}-{workers}"
    folder.mkdir(parents=True)
    (folder / "bench_model.py").write_text(textwrap.dedent(_MODEL).replace("SPIN_S", repr(spin_ms / 1000)))
    (folder / "model-settings.json").write_text(json.dumps(
        {"name": folder.name, "implementation": f"bench_model.{kind.capitalize()}", "parallel_workers": workers}))
    return DiskRepository(folder).populate(ModelRepository()).get_model(folder.name)


async def _busy(stop: float) -> None:
    while time.perf_counter() < stop:
        end = time.perf_counter() + 0.0003
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)


async def _drive(model, concurrency: int, seconds: float, busy: bool):
    from gpuserve.model import InferenceVerb

    body = {"instances": [[0.5] * 16]}
    await model(body, None, InferenceVerb.PREDICT)  # warm-up
    stop = time.perf_counter() + seconds
    latencies = []

    async def submitter():
        while time.perf_counter() < stop:
            start = time.perf_counter()
            await model(body, None, InferenceVerb.PREDICT)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(concurrency)), *([_busy(stop)] if busy else []))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return len(latencies) / elapsed, latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--models", default="echo,spin")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--spin-ms", type=float, default=1.0)
    parser.add_argument("--busy-loop", action="store_true")
    args = parser.parse_args()
    loop_name, run = event_loop("auto")
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {loop_name}, spin {args.spin_ms} ms, "
          f"busy loop: {args.busy_loop}")
    print("| model | workers | clients | calls/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as root:
        for kind in args.models.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                model = _repository(Path(root), kind, workers, args.spin_ms)
                model.load()
                try:
                    for concurrency in (int(c) for c in args.concurrency.split(",")):
                        rate, p50, p99 = run(_drive(model, concurrency, args.seconds, args.busy_loop))
                        print(f"| {kind} | {workers} | {concurrency} | {rate:,.0f} | {p50:.3f} | {p99:.3f} |",
                              flush=True)
                finally:
                    model.stop()


if __name__ == "__main__":
    main()
