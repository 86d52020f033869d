"""Where a served torch request's time goes on a GPU (issue 5/6 diagnosis, run by verify_all.sh).

The first lent GPU (2026-12-04, H200) showed the served torch path at batch 1 at 0.18-0.34 of the direct
call while CUDA-graph replay, with the same engine around it, reached 0.78. Its first answer: a copy and
a compute stream per thread cost 390 us a call against 220 for one stream (TorchBackend now uses one);
and the engine added 100 us around a one-thread backend but 430-580 around a two-thread one. This
times, for the issue's 1024x3 MLP (torch.export) at batch 1 and 64, each way of running one batch, alone
on one thread and through the engine (Scheduler + Instance, one client), with one or two threads:
  direct           x.to(dev) -> module -> .cpu()  (what a user writes)
  sync             TorchBackend(overlap=False).run: pageable copies on the default stream
  stream           TorchBackend.run: one stream per thread, pinned outputs
  stream_pageable  the same, outputs copied back with .cpu() (pageable, synchronous)
  graphs           TorchBackend(cuda_graphs=True).run
through the engine both with the lone-client rule (the batch runs on the loop's thread, the default since
session 6) and without it (two thread hand-offs), and a CPU-side profile of `stream` at batch 1. With the
LIFO hand-off, `*_2t` should cost what `*_1t` does at one client. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import sys

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import export_torch, torch_mlp  # noqa: E402  (benchmarks/ is on the path)

from gpuserve.backends.torch import TorchBackend
from gpuserve.engine.batcher import BatchingConfig, Scheduler
from gpuserve.engine.instance import Instance
from gpuserve.engine.staging import StagingPool
from gpuserve.backends.cuda import pinned_allocator


class Variant(TorchBackend):
    """TorchBackend run one of the ways under test, on `threads` engine threads."""

    def __init__(self, path, how, threads):
        super().__init__(str(path), device="cuda:0", overlap=how != "sync", cuda_graphs=how == "graphs",
                         graph_batch_sizes=[1, 64] if how == "graphs" else ())
        self.how, self.max_concurrency = how, threads

    def unload(self):  # each variant serves several schedulers in turn; the process frees it at exit
        pass

    def run(self, inputs, output_names=None):
        if self.how != "stream_pageable":
            return super().run(inputs, output_names)
        with torch.inference_mode():
            stream = self._stream()
            with torch.cuda.stream(stream):
                arg = torch.from_numpy(np.ascontiguousarray(inputs["input"])).to(self.torch_device,
                                                                                 non_blocking=True)
                return {"output__0": self.module(arg).cpu().numpy()}


def interleaved_us(calls, seconds, rounds=5):
    """us a call of each of `calls` ({name: fn}), as the median of `rounds` short runs taken in turn (A, B,
    C, A, B, C, ...): measured one after another, identical calls differed by 50 % on the H200 (session 8:
    sync_1t 195 vs sync_2t 305 us), so variants are compared in alternation."""
    for call in calls.values():
        for _ in range(20):
            call()
    torch.cuda.synchronize()
    runs = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / rounds:
                call()
                n += 1
            runs[name].append((time.perf_counter() - start) / n * 1e6)
    return {name: round(statistics.median(values), 1) for name, values in runs.items()}


async def engine_us(backend, x, seconds, pinned, inline=True):
    pool = StagingPool(pinned_allocator()) if pinned else StagingPool()
    alone = BatchingConfig.inline_alone_below_s if inline else 0  # 0: a lone client's batches go to a thread
    config = BatchingConfig(max_batch_size=64, inline_alone_below_s=alone)
    scheduler = Scheduler("diag", [Instance(backend, "diag-0", pool)], config)
    for _ in range(20):
        await scheduler.submit({"input": x})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        await scheduler.submit({"input": x})
        n += 1
    elapsed = time.perf_counter() - start
    await scheduler.stop()
    return round(elapsed / n * 1e6, 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=0.4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_torch(torch_mlp(1024), 1024, Path(tmp) / "model.pt2")
        direct_module = torch.export.load(str(path)).module().to("cuda:0")
        variants = {f"{how}_{threads}t": Variant(path, how, threads)
                    for how in ("sync", "stream", "stream_pageable", "graphs") for threads in (1, 2)}
        for rows in (1, 64):
            x = np.random.default_rng(rows).normal(size=(rows, 1024)).astype(np.float32)
            with torch.inference_mode():
                want = direct_module(torch.from_numpy(x).cuda()).cpu().numpy()

                def direct():
                    return direct_module(torch.from_numpy(x).to("cuda:0")).cpu().numpy()

            calls = {"direct": direct}
            for how, backend in variants.items():
                got = backend.run({"input": x})["output__0"]
                assert np.allclose(got, want, rtol=1e-3, atol=1e-3), how
                calls[how] = (lambda b: lambda: b.run({"input": x}))(backend)
            with torch.inference_mode():
                row = {"rows": rows, "alone_us": interleaved_us(calls, args.seconds * 3)}
            for key, inline in (("engine_one_client_us", True), ("engine_one_client_no_inline_us", False)):
                runs = {how: [] for how in variants}
                for _ in range(3):  # in turn, as above
                    for how, backend in variants.items():
                        runs[how].append(asyncio.run(engine_us(backend, x, args.seconds / 3, pinned=True,
                                                               inline=inline)))
                row[key] = {how: round(statistics.median(values), 1) for how, values in runs.items()}
            print(json.dumps(row), flush=True)
            report["rows"].append(row)
        x = np.random.default_rng(0).normal(size=(1, 1024)).astype(np.float32)
        overlap = variants["stream_2t"]
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(200):
                overlap.run({"input": x})
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)
        print(table, flush=True)
        report["profile_overlap_b1"] = table
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
