"""In-process engine benchmark (issue 5): many concurrent batch-1 submitters against a heavy MLP.

Reports rows/s for (a) direct backend calls at batch 1, (b) direct calls at exactly the batch sizes
the engine formed (the limit), (c) the engine. Run:
    .venv/bin/python benchmarks/engine_bench.py [--concurrency 64] [--seconds 10]
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = mlp_onnx(Path(tmp) / "mlp.onnx", width=args.width, in_features=args.width)
        threads = cpu_threads()
        backend = OnnxBackend(str(path), intra_op_threads=threads, allow_spinning=args.spin)
        batch1 = direct_rows_per_s(backend, 1, args.seconds, args.width)
        per_instance = max(threads // args.instances, 1)
        pool = StagingPool()
        instances = [Instance(OnnxBackend(str(path), intra_op_threads=per_instance, allow_spinning=args.spin),
                              f"mlp-{i}", pool, slots=args.slots) for i in range(args.instances)]
        scheduler = Scheduler("mlp", instances, BatchingConfig(max_batch_size=args.max_batch))

        async def run_engine():
            rate = await engine_rows_per_s(scheduler, args.concurrency, args.seconds, args.width)
            formed = dict(scheduler.batches_formed)
            stats = scheduler.stats.as_dict()
            await scheduler.stop()
            return rate, formed, stats

        engine, formed, stats = asyncio.run(run_engine())
        # The limit: the same batch sizes, called directly, weighted by how often the engine formed each.
        total_rows = sum(size * n for size, n in formed.items())
        seconds_needed = 0.0
        per_size = {}
        for size, n in sorted(formed.items()):
            if size * n < total_rows * 0.01:
                continue  # rare sizes change nothing; skip measuring them
            per_size[size] = direct_rows_per_s(backend, size, max(args.seconds / 4, 1.0), args.width)
            seconds_needed += size * n / per_size[size]
        covered = sum(size * n for size, n in formed.items() if size in per_size)
        limit = covered / seconds_needed
    mean_batch = total_rows / max(sum(formed.values()), 1)
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {threads} cores", "model":
        f"MLP {args.width}x3 (ONNX Runtime CPU, {threads} threads)", "concurrency": args.concurrency,
        "direct_batch1_rows_s": round(batch1, 1), "direct_at_engine_batches_rows_s": round(limit, 1),
        "engine_rows_s": round(engine, 1), "engine_vs_limit": round(engine / limit, 3),
        "engine_vs_batch1": round(engine / batch1, 2), "mean_batch": round(mean_batch, 1),
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
