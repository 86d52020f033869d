"""In-process engine benchmark (issue 5): many concurrent batch-1 submitters against a heavy MLP.

Reports rows/s for (a) direct backend calls at batch 1, (b) direct calls at exactly the batch sizes
the engine formed (the limit), (c) the engine. Run:
    .venv/bin/python benchmarks/engine_bench.py [--concurrency 64] [--seconds 4] [--rounds 3] [--max-batch 64]
        [--loop uvloop|asyncio]
The event loop defaults to the one `gpuserve start` serves on: uvloop when it is installed, else asyncio's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from gpuserve.backends.onnx import OnnxBackend, cpu_threads
from gpuserve.engine.batcher import BatchingConfig, Scheduler
from gpuserve.engine.instance import Instance
from gpuserve.engine.staging import StagingPool

from loops import event_loop
from models import mlp_onnx


def direct_rows_per_s(backend, rows: int, seconds: float, features: int) -> float:
    x = np.random.default_rng(0).normal(size=(rows, features)).astype(np.float32)
    backend.run({"input": x})
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        backend.run({"input": x})
        done += rows
    return done / (time.perf_counter() - start)


async def engine_rows_per_s(scheduler, concurrency: int, seconds: float, features: int):
    x = np.random.default_rng(1).normal(size=(1, features)).astype(np.float32)
    stop = time.perf_counter() + seconds
    counts = [0] * concurrency

    async def submitter(i):
        while time.perf_counter() < stop:
            await scheduler.submit({"input": x})
            counts[i] += 1

    await scheduler.submit({"input": x})  # warm-up
    scheduler.batches_formed.clear()
    start = time.perf_counter()
    await asyncio.gather(*(submitter(i) for i in range(concurrency)))
    return sum(counts) / (time.perf_counter() - start)


class NullBackend:
    """No compute: what the engine machinery alone can move (its own cost per row)."""

    device = "cpu"

    def run(self, inputs, output_names=None):
        return {"output": inputs["input"][:, :10].copy()}


def limit_rows_per_s(backend, formed: dict, seconds: float, features: int):
    """The same batch sizes called directly, weighted by how often the engine formed each."""
    total_rows = sum(size * n for size, n in formed.items())
    seconds_needed, per_size = 0.0, {}
    for size, n in sorted(formed.items()):
        if size * n < total_rows * 0.01:
            continue  # rare sizes change nothing; skip measuring them
        per_size[size] = direct_rows_per_s(backend, size, max(seconds / 4, 0.5), features)
        seconds_needed += size * n / per_size[size]
    covered = sum(size * n for size, n in formed.items() if size in per_size)
    return covered / seconds_needed, per_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--spin", action="store_true", help="let ONNX Runtime workers spin")
    parser.add_argument("--null", action="store_true", help="engine over a backend that computes nothing")
    parser.add_argument("--rounds", type=int, default=3, help="engine/batch-1/limit measured back to back, N times")
    parser.add_argument("--delay-us", type=float, default=0.0, help="max_queue_delay (0: work-conserving)")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="event loop; auto: uvloop when installed, as the server (server/model_server.py)")
    args = parser.parse_args()
    loop_name, runner = event_loop(args.loop)
    with tempfile.TemporaryDirectory() as tmp:
        path = mlp_onnx(Path(tmp) / "mlp.onnx", width=args.width, in_features=args.width)
        threads = cpu_threads()
        backend = OnnxBackend(str(path), intra_op_threads=threads, allow_spinning=args.spin)
        per_instance = max(threads // args.instances, 1)
        pool = StagingPool()
        make = (lambda: NullBackend()) if args.null else \
            (lambda: OnnxBackend(str(path), intra_op_threads=per_instance, allow_spinning=args.spin))
        instances = [Instance(make(), f"mlp-{i}", pool, slots=args.slots) for i in range(args.instances)]
        scheduler = Scheduler("mlp", instances, BatchingConfig(max_batch_size=args.max_batch,
                                                               max_queue_delay_s=args.delay_us / 1e6))

        async def run_rounds():
            # Each round measures the engine, batch 1 and the limit back to back, so load from other
            # processes hits all three alike; the ratios are medians over rounds.
            rounds = []
            for _ in range(args.rounds):
                rate = await engine_rows_per_s(scheduler, args.concurrency, args.seconds, args.width)
                formed = dict(scheduler.batches_formed)
                batch1 = direct_rows_per_s(backend, 1, max(args.seconds / 2, 0.5), args.width)
                limit, per_size = limit_rows_per_s(backend, formed, args.seconds, args.width)
                rounds.append((rate, batch1, limit, formed, per_size))
            stats = scheduler.stats.as_dict()
            await scheduler.stop()
            return rounds, stats

        rounds, stats = runner(run_rounds())
    engine, batch1, limit, formed, per_size = rounds[len(rounds) // 2]
    median = lambda values: float(np.median(values))  # noqa: E731
    total_rows = sum(size * n for size, n in formed.items())
    mean_batch = total_rows / max(sum(formed.values()), 1)
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {threads} cores", "model":
        f"MLP {args.width}x3 (ONNX Runtime CPU, {threads} threads)", "concurrency": args.concurrency,
        "max_batch": args.max_batch, "max_queue_delay_us": args.delay_us, "rounds": args.rounds,
        "event_loop": loop_name,
        "direct_batch1_rows_s": round(median([r[1] for r in rounds]), 1),
        "direct_at_engine_batches_rows_s": round(median([r[2] for r in rounds]), 1),
        "engine_rows_s": round(median([r[0] for r in rounds]), 1),
        "engine_vs_limit": round(median([r[0] / r[2] for r in rounds]), 3),
        "engine_vs_batch1": round(median([r[0] / r[1] for r in rounds]), 2),
        "per_round_engine_vs_limit": [round(r[0] / r[2], 3) for r in rounds],
        "mean_batch": round(mean_batch, 1),
        "batch_sizes": {str(k): v for k, v in sorted(formed.items())},
        "engine_us_per_batch": {k: round(stats["inference_stats"][k]["ns"] / max(stats["inference_stats"][k]["count"], 1)
                                          / 1e3, 1) for k in ("queue", "compute_input", "compute_infer", "compute_output")},
        "direct_us_per_batch": {str(k): round(k / v * 1e6, 1) for k, v in per_size.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
