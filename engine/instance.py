"""A model instance: one backend session and one thread that runs its batches in order.

The thread stages the batch (one copy per request into a pooled buffer), runs the backend, checks
the row count of every output and slices the results per request. Results reach the event loop
through the executor future, one wake-up per batch.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import numpy as np

from gpuserve.engine.job import Job
from gpuserve.engine.split import split_rows, whole
from gpuserve.engine.staging import StagingPool, gather
from gpuserve.engine.stats import ModelStats
from gpuserve.kernels.ragged import pack
from gpuserve.kernels.stage import NO_KERNELS, KernelStage, batch_reductions


class Instance:
    def __init__(self, backend, name: str, pool: Optional[StagingPool] = None, stats: Optional[ModelStats] = None,
                 slots: int = 2, stage: Optional[KernelStage] = None):
        self.backend = backend
        # Kernels between staging and the backend (preprocessing, ragged padding, top-k); with none
        # configured it only acts for batches whose requests asked for top-k.
        self.stage = stage if stage is not None else NO_KERNELS.bind(backend)
        self.name = name
        self.pool = pool if pool is not None else StagingPool()
        self.stats = stats
        self.slots = slots
        # CPU backends: one thread runs batches in order, with `slots` batches queued on it so the next
        # one is staged the moment the current one finishes. GPU backends run two threads, each with
        # its own streams, so one batch's copies overlap the other's compute.
        threads = max(int(getattr(backend, "max_concurrency", 1)), 1)
        # The batcher may run a quick batch on its own thread when the model is idle (batcher.py);
        # only for CPU backends, whose calls hold no device stream state per thread.
        self.on_cpu = str(getattr(backend, "device", "")) == "cpu"
        self.seconds_per_row = 0.0  # moving average of the backend call per row; 0 until the first batch
        self.slots = max(slots, threads)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"gpuserve-{name}")

    def run(self, jobs: List[Job], batched: bool, outputs: Optional[Sequence[str]]) -> List[object]:
        """Per job, its outputs or the exception it alone caused.

        When a batch of several requests fails, each is retried alone, so one bad request fails
        itself and not the requests it happened to share a batch with.
        """
        try:
            return self._run(jobs, batched, outputs)
        except Exception as exc:
            if len(jobs) == 1:
                return [exc]
        results: List[object] = []
        for job in jobs:
            try:
                results.extend(self._run([job], batched, outputs))
            except Exception as exc:
                results.append(exc)
        return results

    def _run(self, jobs: List[Job], batched: bool, outputs: Optional[Sequence[str]]) -> List[Dict[str, np.ndarray]]:
        t0 = time.perf_counter_ns()
        leases = []
        ragged = self.stage.ragged_inputs
        if len(jobs) == 1 and not ragged:
            arrays = jobs[0].arrays
        else:
            arrays = {}
            for name in jobs[0].arrays:
                parts = [job.arrays[name] for job in jobs]
                array, lease = pack(parts, self.pool) if name in ragged else gather(self.pool, parts)
                arrays[name] = array
                if lease is not None:
                    leases.append(lease)
        reductions = batch_reductions(jobs)
        t1 = time.perf_counter_ns()
        try:
            if self.stage.active or reductions:
                results = self.stage.run(arrays, outputs, reductions, batched)
            else:
                results = self.backend.run(arrays, outputs)
        finally:
            for lease in leases:
                lease.release()
        t2 = time.perf_counter_ns()
        per_row = (t2 - t1) / 1e9 / max(sum(job.rows for job in jobs), 1)
        self.seconds_per_row = per_row if not self.seconds_per_row else 0.8 * self.seconds_per_row + 0.2 * per_row
        if batched:
            per_job = split_rows(results, [job.rows for job in jobs], self.name)
        else:
            per_job = [whole(results)]
        t3 = time.perf_counter_ns()
        if self.stats is not None:
            rows = sum(job.rows for job in jobs) if batched else 1
            self.stats.record_batch(rows, len(jobs), t1 - t0, t2 - t1, t3 - t2)
        return per_job

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        unload = getattr(self.backend, "unload", None)
        if unload is not None:
            unload()
        self.pool.clear()
