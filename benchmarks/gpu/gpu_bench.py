"""GPU engine benchmark (issue 5): a copy-heavy and a compute-heavy torch model, 64 concurrent
batch-1 submitters, comparing
  (a) the engine with pinned staging and two workers, each with its own stream (copies overlap compute),
  (b) the engine with synchronous pageable copies (one thread, plain .to()/.cpu()),
  (c) the offline batched limit: the backend called directly at the batch sizes the engine formed.
For (a) and (b) a short window runs under the torch profiler (CUDA activity only): the time the GPU spent
in host<->device copies, in kernels, and in both at once, from the trace's own intervals, is the proof
that copies hide behind compute (b's overlap should be ~0); the same for the backend alone, fed pinned
batches by two threads (what the streams can do when the host keeps up).
Run by verify_all.sh on a lent GPU; prints and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import sys

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import export_torch  # noqa: E402  (benchmarks/ is on the path)

from gpuserve.backends.cuda import pinned_allocator
from gpuserve.backends.torch import TorchBackend
from gpuserve.engine.batcher import BatchingConfig, Scheduler
from gpuserve.engine.instance import Instance
from gpuserve.engine.staging import StagingPool


def models(folder: Path):
    torch.manual_seed(0)
    copy_heavy = torch.nn.Sequential(torch.nn.Linear(3 * 224 * 224, 16))  # 600 KB in per row, little math
    compute_heavy = torch.nn.Sequential(*[m for _ in range(4) for m in (torch.nn.Linear(4096, 4096), torch.nn.ReLU())])
    return {"copy_heavy": (export_torch(copy_heavy, 3 * 224 * 224, folder / "copy.pt2"), 3 * 224 * 224),
            "compute_heavy": (export_torch(compute_heavy, 4096, folder / "compute.pt2"), 4096)}


def _union(intervals):
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _overlap(a, b):
    total, j = 0.0, 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            total += min(end, b[k][1]) - max(start, b[k][0])
            k += 1
    return total


def trace_overlap(prof) -> dict:
    """GPU busy time in copies, in kernels and in both, from the profiler's chrome trace (microseconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text()).get("traceEvents", [])
    spans = {"gpu_memcpy": [], "kernel": []}
    for event in events:
        if event.get("cat") in spans and "dur" in event:
            spans[event["cat"]].append((float(event["ts"]), float(event["ts"]) + float(event["dur"])))
    copies, kernels = _union(spans["gpu_memcpy"]), _union(spans["kernel"])
    copy_us, kernel_us = sum(e - s for s, e in copies), sum(e - s for s, e in kernels)
    both = _overlap(copies, kernels)
    return {"copy_us": round(copy_us), "kernel_us": round(kernel_us), "both_us": round(both),
            "copies": len(spans["gpu_memcpy"]), "kernels": len(spans["kernel"]),
            "copy_hidden_fraction": round(both / copy_us, 3) if copy_us else None}


async def engine_rate(scheduler, features, concurrency, seconds, profile_seconds=0.0):
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
    overlap = None
    if profile_seconds:
        from torch.profiler import ProfilerActivity, profile

        stop = time.perf_counter() + profile_seconds
        try:
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                await asyncio.gather(*(client() for _ in range(concurrency)))
                torch.cuda.synchronize()
            overlap = trace_overlap(prof)
        except Exception as exc:  # the rates above still stand; say why the proof is missing
            overlap = {"error": f"{type(exc).__name__}: {exc}"}
    await scheduler.stop()
    return rate, formed, overlap


def two_thread_overlap(backend, features, rows, seconds):
    """The backend alone, fed pinned batches by two threads as the engine's two workers would be, under
    the profiler: do its copy and compute streams overlap when the host keeps up? (rows/s, trace)."""
    import threading

    from torch.profiler import ProfilerActivity, profile

    x = torch.from_numpy(np.random.default_rng(1).normal(size=(rows, features)).astype(np.float32)).pin_memory()
    x = x.numpy()
    backend.run({"input": x})
    done, stop = [0, 0], time.perf_counter() + seconds

    def worker(slot):
        while time.perf_counter() < stop:
            backend.run({"input": x})
            done[slot] += rows

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            torch.cuda.synchronize()
            rate = sum(done) / (time.perf_counter() - start)
        return round(rate, 1), trace_overlap(prof)
    except Exception as exc:
        return None, {"error": f"{type(exc).__name__}: {exc}"}


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
    parser.add_argument("--profile-seconds", type=float, default=0.5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(0),
              "torch": torch.__version__, "concurrency": args.concurrency, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, features) in models(Path(tmp)).items():
            row = {}
            # overlap_switch_500us: the same engine with the interpreter's GIL switch interval at 0.5 ms instead
            # of 5: a worker thread back from a GPU wait needs the GIL while the loop runs Python for 64
            # clients, and may wait out the interval (a hypothesis for the engine's 0.3 of the limit).
            for mode in ("overlap", "sync_pageable", "overlap_switch_500us"):
                overlap = mode != "sync_pageable"
                backend = TorchBackend(str(path), device="cuda:0", overlap=overlap)
                pool = StagingPool(pinned_allocator()) if overlap else StagingPool()
                scheduler = Scheduler(name, [Instance(backend, name, pool)], BatchingConfig(max_batch_size=args.max_batch))
                default_switch = sys.getswitchinterval()
                if mode == "overlap_switch_500us":
                    sys.setswitchinterval(0.0005)
                try:
                    rate, formed, profiled = asyncio.run(engine_rate(scheduler, features, args.concurrency,
                                                                     args.seconds, args.profile_seconds))
                finally:
                    sys.setswitchinterval(default_switch)
                row[f"engine_{mode}_rows_s"] = round(rate, 1)
                row[f"profile_{mode}"] = profiled
                row[f"batches_{mode}"] = {str(k): v for k, v in sorted(formed.items())}
                if mode == "overlap":
                    formed_overlap = formed
            backend = TorchBackend(str(path), device="cuda:0", overlap=True)
            top = max(formed_overlap, key=lambda k: formed_overlap[k] * k)
            row["limit_rows_s_at_batch"] = top
            row["limit_rows_s"] = round(direct_rate(backend, features, top, args.seconds / 2, pinned=True), 1)
            row["two_threads_rows_s"], row["profile_two_threads"] = two_thread_overlap(backend, features, top,
                                                                                     args.profile_seconds)
            row["overlap_vs_sync"] = round(row["engine_overlap_rows_s"] / row["engine_sync_pageable_rows_s"], 2)
            row["overlap_vs_limit"] = round(row["engine_overlap_rows_s"] / row["limit_rows_s"], 3)
            row["switch_500us_vs_5ms"] = round(row["engine_overlap_switch_500us_rows_s"] / row["engine_overlap_rows_s"], 2)
            report["models"][name] = row
            print(name, json.dumps(row), flush=True)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
