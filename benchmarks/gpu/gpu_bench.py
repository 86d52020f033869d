"""GPU engine benchmark (issue 5): a copy-heavy and a compute-heavy torch model, 64 concurrent
batch-1 submitters, comparing
  (a) the engine with pinned staging and two streams-per-thread workers (copies overlap compute),
  (b) the engine with synchronous pageable copies (one thread, plain .to()/.cpu()),
  (c) the offline batched limit: the backend called directly at the batch sizes the engine formed.
Run by verify_all.sh on a lent GPU; prints and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gpuserve.backends.cuda import pinned_allocator
from gpuserve.backends.torch import TorchBackend
from gpuserve.engine.batcher import BatchingConfig, Scheduler
from gpuserve.engine.instance import Instance
from gpuserve.engine.staging import StagingPool


def export(net: torch.nn.Module, features: int, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(net.eval(), (torch.zeros(2, features),), dynamic_shapes={"input": {0: batch}})
    torch.export.save(program, str(path))
    return path


def models(folder: Path):
    torch.manual_seed(0)
    copy_heavy = torch.nn.Sequential(torch.nn.Linear(3 * 224 * 224, 16))  # 600 KB in per row, little math
    compute_heavy = torch.nn.Sequential(*[m for _ in range(4) for m in (torch.nn.Linear(4096, 4096), torch.nn.ReLU())])
    return {"copy_heavy": (export(copy_heavy, 3 * 224 * 224, folder / "copy.pt2"), 3 * 224 * 224),
            "compute_heavy": (export(compute_heavy, 4096, folder / "compute.pt2"), 4096)}


async def engine_rate(scheduler, features, concurrency, seconds):
    x = np.random.default_rng(0).normal(size=(1, features)).astype(np.float32)
    await scheduler.submit({"input": x})
    scheduler.batches_formed.clear()
    stop, done = time.perf_counter() + seconds, [0]

    async def client():
        while time.perf_counter() < stop:
            await scheduler.submit({"input": x})
            done[0] += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    rate = done[0] / (time.perf_counter() - start)
    formed = dict(scheduler.batches_formed)
    await scheduler.stop()
    return rate, formed


def direct_rate(backend, features, rows, seconds, pinned):
    x = np.random.default_rng(0).normal(size=(rows, features)).astype(np.float32)
    if pinned:
        x = torch.from_numpy(x).pin_memory().numpy()
    backend.run({"input": x})
    torch.cuda.synchronize()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        backend.run({"input": x})
        done += rows
    return done / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(0),
              "torch": torch.__version__, "concurrency": args.concurrency, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, features) in models(Path(tmp)).items():
            row = {}
            for mode in ("overlap", "sync_pageable"):
                overlap = mode == "overlap"
                backend = TorchBackend(str(path), device="cuda:0", overlap=overlap)
                pool = StagingPool(pinned_allocator()) if overlap else StagingPool()
                scheduler = Scheduler(name, [Instance(backend, name, pool)], BatchingConfig(max_batch_size=args.max_batch))
                rate, formed = asyncio.run(engine_rate(scheduler, features, args.concurrency, args.seconds))
                row[f"engine_{mode}_rows_s"] = round(rate, 1)
                row[f"batches_{mode}"] = {str(k): v for k, v in sorted(formed.items())}
                if overlap:
                    formed_overlap = formed
            backend = TorchBackend(str(path), device="cuda:0", overlap=True)
            top = max(formed_overlap, key=lambda k: formed_overlap[k] * k)
            row["limit_rows_s_at_batch"] = top
            row["limit_rows_s"] = round(direct_rate(backend, features, top, args.seconds / 2, pinned=True), 1)
            row["overlap_vs_sync"] = round(row["engine_overlap_rows_s"] / row["engine_sync_pageable_rows_s"], 2)
            row["overlap_vs_limit"] = round(row["engine_overlap_rows_s"] / row["limit_rows_s"], 3)
            report["models"][name] = row
            print(name, json.dumps(row), flush=True)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
