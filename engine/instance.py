"""A model instance: one backend session and the thread(s) that run its batches.

A thread stages the batch (one copy per request into a pooled buffer), runs the backend, checks
the row count of every output and slices the results per request. Results reach the event loop
through one callback per batch (`submit`'s `done`, which the batcher makes a single
`call_soon_threadsafe`), not through an executor future chained to an asyncio future.

With several threads (GPU backends run two, so one batch copies while the other computes), a batch
goes to the thread that went idle last, as LIFO thread pools do (folly's LifoSem): under light load
one thread takes every batch and its core stays awake, while the others sleep until the load needs
them. A FIFO hand-off alternates the threads, so each wakes from a longer sleep: on a lent H200
(2026-12-04, one client) two FIFO threads cost 100-400 us a request more than one thread (graph
replay 454 vs 226 us, eager 840-915 vs 737-784). Only multi-thread instances (torch on a GPU) are
affected; on the 2-vCPU development VM a spinning stand-in backend ran one-client requests 8 % faster
with FIFO threads than with one, so the GPU gain is the H200's one-vs-two-thread measurement, to be
confirmed by benchmarks/gpu/torch_path_costs.py (two threads should now cost what one does).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from gpuserve.engine.job import TRACING, Job
from gpuserve.engine.split import split_rows, whole
from gpuserve.engine.staging import StagingPool, gather
from gpuserve.engine.stats import ModelStats
from gpuserve.errors import escaped
from gpuserve.kernels.ragged import pack
from gpuserve.kernels.stage import NO_KERNELS, KernelStage, batch_reductions

logger = logging.getLogger("gpuserve.engine")

# What a job answered before its turn gets back from the batch (its future is done: nobody reads it)
SKIPPED = RuntimeError("not run: the request was answered before its turn")


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
        # its own stream, so one batch's copies overlap the other's compute.
        threads = max(int(getattr(backend, "max_concurrency", 1)), 1)
        # The batcher may run a quick batch on its own thread when the model is idle (batcher.py): a CPU
        # backend's, and a lone client's on a device backend whose calls may come from any thread
        # (`runs_on_any_thread`: torch keeps a stream per thread), sparing it two thread wake-ups.
        self.on_cpu = str(getattr(backend, "device", "")) == "cpu"
        self.any_thread = self.on_cpu or bool(getattr(backend, "runs_on_any_thread", False))
        self.seconds_per_row = 0.0  # moving average of the backend call per row; 0 until the first batch
        self.slots = max(slots, threads)
        self.threads = threads
        # A request-level backend (Triton Python models) takes the jobs themselves: each request keeps its
        # own arrays and gets its own answer or error, with no staging, splitting or retry alone.
        self._run_requests = getattr(backend, "run_requests", None)
        # Idle threads' inboxes, the last to go idle on top; batches no idle thread could take wait in
        # the backlog for the next thread that finishes. Both under `_lock`.
        self._idle: List["queue.SimpleQueue"] = []
        self._backlog: "collections.deque" = collections.deque()
        self._lock = threading.Lock()
        self._workers: List[threading.Thread] = []
        self._inboxes: List["queue.SimpleQueue"] = []
        self._retired: set = set()
        self._start_lock = threading.Lock()
        # With Triton's rate limiter on: this instance's place with it (engine/rate_limiter.py)
        self.ticket = None

    # the instance's threads -------------------------------------------------------------------------
    def submit(self, jobs: List[Job], batched: bool, outputs: Optional[Sequence[str]],
               done: Callable[[Optional[List[object]], Optional[BaseException]], None],
               started: Optional[Callable[[], None]] = None) -> None:
        """Run the batch on one of this instance's threads; that thread then calls `done(results, None)`
        (results as `run` returns them) or `done(None, error)`; `started`, when given, just before the run."""
        if len(self._workers) < self.threads:
            self._start_workers()
        item = (jobs, batched, outputs, done, started)
        with self._lock:
            if not self._idle:
                self._backlog.append(item)
                return
            inbox = self._idle.pop()
        inbox.put(item)

    def _start_workers(self) -> None:
        with self._start_lock:
            while len(self._workers) < self.threads:
                inbox: "queue.SimpleQueue" = queue.SimpleQueue()
                thread = threading.Thread(target=self._serve, args=(inbox,),
                                          name=f"gpuserve-{self.name}_{len(self._workers)}", daemon=True)
                with self._lock:
                    self._idle.insert(0, inbox)  # the first thread started is the first one used
                self._inboxes.append(inbox)
                self._workers.append(thread)
                thread.start()

    def _serve(self, inbox: "queue.SimpleQueue") -> None:
        get = inbox.get
        item = get()
        while item is not None:
            jobs, batched, outputs, done, started = item
            item = None
            try:
                if started is not None:
                    started()
                results, error = self.run(jobs, batched, outputs), None
            except BaseException as exc:  # noqa: BLE001 - handed to the loop, which decides
                results, error = None, exc
            jobs = None
            # Idle before answering: the answer lets the caller send its next request, which should find
            # this thread (awake) on top of the stack, not only the one that slept.
            with self._lock:
                if self._backlog:
                    item = self._backlog.popleft()
                elif inbox in self._retired:  # closed while this batch ran: nothing is left for it
                    inbox = None
                else:
                    self._idle.append(inbox)
            done(results, error)
            results = error = done = None
            if inbox is None:
                return
            if item is None:
                item = get()

    def run(self, jobs: List[Job], batched: bool, outputs: Optional[Sequence[str]]) -> List[object]:
        """Per job, its outputs or the exception it alone caused.

        When a batch of several requests fails, each is retried alone, so one bad request fails
        itself and not the requests it happened to share a batch with.
        """
        answered = False  # a job answered while it waited its turn (timed out, cancelled) is skipped
        for job in jobs:  # started before the check: a job the loop then finds started is not failed
            job.started = True
            if job.future is not None and job.future.done():  # (a job without a future is a test's own)
                answered = True
        if answered:
            skipped = [job.future is not None and job.future.done() for job in jobs]
            live = [job for job, skip in zip(jobs, skipped) if not skip]
            answers = iter(self.run(live, batched, outputs) if live else ())
            return [SKIPPED if skip else next(answers) for skip in skipped]
        if self.stats is not None:  # queued until now: waiting behind this instance's running batch included
            now = time.monotonic()
            self.stats.record_queue([int((now - job.arrival) * 1e9) for job in jobs])
        try:
            return self._run(jobs, batched, outputs)
        except Exception as exc:
            if len(jobs) == 1 or self._run_requests is not None:  # whole requests never run twice
                return [exc for _ in jobs]
        except BaseException as exc:  # sys.exit() and the like in model code: these requests' 500, never the loop's
            return [escaped(exc) for _ in jobs]
        results: List[object] = []
        for job in jobs:
            try:
                results.extend(self._run([job], batched, outputs))
            except Exception as exc:
                results.append(exc)
        return results

    def run_alone(self, job: Job, batched: bool, outputs: Optional[Sequence[str]]):
        """`run([job], ...)` for a lone request run inline (batcher.py's _run_now): (its outputs or its error, and
        (queue ns, input ns, infer ns, output ns) when its statistics are left to the caller to record in one
        call, else None). Request-level backends and traced requests keep `run`'s own recording."""
        if self.stats is None or self._run_requests is not None or TRACING.on:
            return self.run([job], batched, outputs)[0], None
        job.started = True
        queue_ns = int((time.monotonic() - job.arrival) * 1e9)
        spent: list = []
        try:
            result = self._run([job], batched, outputs, spent)[0]
        except Exception as exc:
            self.stats.record_queue([queue_ns])
            return exc, None
        except BaseException as exc:  # sys.exit() and the like in model code: this request's 500, never the loop's
            self.stats.record_queue([queue_ns])
            return escaped(exc), None
        return result, (queue_ns, *spent)

    def _run(self, jobs: List[Job], batched: bool, outputs: Optional[Sequence[str]],
             spent: Optional[list] = None) -> List[Dict[str, np.ndarray]]:
        """The batch's results per job; its statistics recorded here, or its three durations put in `spent`."""
        t0 = time.perf_counter_ns()
        if self._run_requests is not None:
            held = _hold_traces(jobs) if TRACING.on else ()
            try:
                return self._run_whole(jobs, t0)
            finally:
                for trace in held:
                    trace.release()
        leases = []
        stage = self.stage
        ragged = stage.ragged_inputs
        counts, total, reducing = [], 0, False  # (one pass: most batches are one request)
        for job in jobs:
            counts.append(job.rows)
            total += job.rows
            reducing = reducing or bool(job.reduce)
        if len(jobs) == 1 and not ragged:
            arrays = jobs[0].arrays
        else:
            arrays = {}
            for name in jobs[0].arrays:
                parts = [job.arrays[name] for job in jobs]
                array, lease = pack(parts, self.pool) if name in ragged else gather(self.pool, parts, total)
                arrays[name] = array
                if lease is not None:
                    leases.append(lease)
        reductions = batch_reductions(jobs) if reducing else None
        t1 = time.perf_counter_ns()
        try:
            if reductions or stage.active:
                results = stage.run(arrays, outputs, reductions or {}, batched)
            else:
                results = self.backend.run(arrays, outputs)
        finally:
            for lease in leases:
                lease.release()
        t2 = time.perf_counter_ns()
        self._observe((t2 - t1) / 1e9 / max(total, 1))
        if batched:
            per_job = split_rows(results, counts, self.name)
        else:
            per_job = [whole(results)]
        t3 = time.perf_counter_ns()
        if spent is not None:
            spent += (t1 - t0, t2 - t1, t3 - t2)
        elif self.stats is not None:
            self.stats.record_batch(total if batched else 1, len(jobs), t1 - t0, t2 - t1, t3 - t2)
        if TRACING.on:
            _stamp_jobs(jobs, t0, t1, t2, t3)
        return per_job

    def _observe(self, per_row: float) -> None:
        """The moving average of the backend's time per row that decides which batches may run inline."""
        self.seconds_per_row = per_row if not self.seconds_per_row else 0.8 * self.seconds_per_row + 0.2 * per_row

    def _run_whole(self, jobs: List[Job], t0: int) -> List[object]:
        """Whole requests handed to the backend's own execute (a Python model's)."""
        results = self._run_requests(jobs)
        elapsed, rows = time.perf_counter_ns() - t0, sum(job.rows for job in jobs)
        self._observe(elapsed / 1e9 / max(rows, 1))
        if self.stats is not None:  # as Triton: inferences are the requests that succeeded
            done = sum(job.rows for job, result in zip(jobs, results)
                       if not isinstance(result, BaseException) or getattr(result, "counts_as_success", False))
            if done:
                self.stats.record_batch(done, len(jobs), 0, elapsed, 0)
            else:
                self.stats.record_failed_execution()
        if TRACING.on:
            _stamp_jobs(jobs, t0, t0, t0 + elapsed, t0 + elapsed)
        return results

    def close(self) -> None:
        """Stop the threads (batches already queued on them still run and are answered), then unload."""
        with self._start_lock:
            workers, self._workers = self._workers, []
            with self._lock:  # busy threads drain the backlog, then see they are retired; idle ones stop now
                idle, self._idle = self._idle, []
                self._retired.update(self._inboxes)
                self._inboxes = []
            for inbox in idle:
                inbox.put(None)
        timeout = getattr(self.backend, "close_timeout_s", None)
        for thread in workers:
            thread.join(timeout)
            if thread.is_alive():  # a call that never returns: unloading under it is not safe, leave both
                logger.warning("instance %s: a call is still running after %.1f s; its thread is left behind",
                               self.name, timeout)
                self.pool.clear()
                return
        unload = getattr(self.backend, "unload", None)
        if unload is not None:
            unload()
        self.pool.clear()


def _hold_traces(jobs) -> list:
    """The traced jobs' traces, held until their compute span is stamped: a decoupled model's final
    response may end a trace while its execute still runs."""
    held = [job.trace for job in jobs if getattr(job, "trace", None) is not None and hasattr(job.trace, "hold")]
    for trace in held:
        trace.hold()
    return held


def _stamp_jobs(jobs, start: int, input_end: int, output_start: int, end: int) -> None:
    """The traced jobs' compute span, from the batch's own clock readings (perf_counter_ns is
    CLOCK_MONOTONIC, the traces' clock)."""
    for job in jobs:
        trace = getattr(job, "trace", None)  # set by the batcher on traced requests' jobs only
        if trace is not None:
            trace.stamp("COMPUTE_START", start)
            trace.stamp("COMPUTE_INPUT_END", input_end)
            trace.stamp("COMPUTE_OUTPUT_START", output_start)
            trace.stamp("COMPUTE_END", end)


async def on_daemon_thread(function: Callable, *args) -> None:
    """`function(*args)` awaited from the loop, run off the loop's executor: an unload that never returns (a
    Python model's finalize waiting on threads that died) must not keep the process from exiting once the exit
    timeout gave up on it, as the end of asyncio.run joins every executor thread."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle(exc: Optional[BaseException]) -> None:
        if done.done():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(None)

    def run() -> None:
        failure = None
        try:
            function(*args)
        except BaseException as exc:
            failure = exc
        try:
            loop.call_soon_threadsafe(settle, failure)
        except RuntimeError:  # the loop has closed: nobody waits any more
            pass

    threading.Thread(target=run, name="gpuserve-model-stop", daemon=True).start()
    await done
