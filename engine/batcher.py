"""The dynamic batcher: one scheduling loop per model version over its instances.

Work-conserving: the loop first waits for an idle instance slot, then for work, then takes every
queued request that can share the batch. While all instances are busy, requests accumulate, so
batches grow exactly when the device is the bottleneck and an idle device never waits on a timer.
`max_queue_delay_s` (MLServer's max_batch_time, Triton's max_queue_delay_microseconds) opts into
waiting for a fuller batch; `preferred_batch_sizes` trims a batch to the largest preferred size.

A batch for an idle CPU model that should take under `inline_below_s` (its rows times the model's
recent time per row; 100 us by default) runs on the loop's own thread: handing it to the instance
thread and back costs two thread wake-ups (60-100 us on the virtual machines measured) and more loop
time than such a batch itself. Heavier batches always go to the instance thread: run on the loop,
they would keep the next requests from being read meanwhile and cost the overlap of the two cores
(measured: a 160 us MLP run inline lost 15-30% over gRPC at 64 clients). The exception is a lone
client: when the batch holds every request of the model and recent submits found hardly any other
outstanding (a moving average under 1.5), the loop has nothing else to do meanwhile, and batches up
to `inline_alone_below_s` (2 ms) run inline too, sparing a lone client the two wake-ups. gRPC needs
care: grpc.aio hands the loop one request per turn, so while a batch runs inline the next request is
never submitted, every client looks lone, and batches stop forming (measured: -30% at 64 clients).
Its servicer therefore clears `LONE_INLINE_OK` for its requests, and such a request that arrives less than
`LONE_GAP_S` after the model's last answer (a queue behind the one just run, not a client that waited
for its reply and sent again) turns the rule off for a second. A lone gRPC client's next request comes
a round trip after its answer (~0.9 ms here), so it keeps the rule (mlp over gRPC at one client:
+6-20 % in three alternating pairs; at 64 clients batches still form, mean 4.6-6.4).
The lone-client rule also covers device backends whose calls may come from any thread (torch on a
GPU keeps one stream per thread): on a lent H200 the engine added 100-300 us a batch-1 request at one
client around the instance thread's call (benchmarks/RESULTS.md, session 6); not yet measured inline.

A backend whose calls hold the GIL throughout (a Python model's execute doing Python work) gains nothing
from its thread: while it runs the loop cannot run either, and the two hand-offs cost wake-ups and GIL
transfers. `inline_holding_gil_below_s` lets its batches up to that long run inline once batches on the
thread show it: no request for the model arrived while any of the last few ran (arrivals need the loop, the
loop needs the GIL). One such batch in WATCH_EVERY still goes to the thread, so a call that releases the GIL
(NumPy on large arrays, I/O) while requests keep coming is seen and goes back there. Measured with a small
Python model (python_backend_bench's tiny, 32 gRPC clients, three alternating pairs): 6.4-7.0k -> 7.9-8.3k
calls/s; over HTTP, and with its NumPy-heavy model, no change beyond noise.

A request that would form such an inline batch alone (nothing queued, nothing outstanding, the loop
waiting for work on an idle instance) skips the queue: it runs in its caller's task at once, saving the
batcher's turn and the queue. Until the loop's next turn (a callback marks it) no other task's request
runs that way: the rest of a burst that arrived in one turn queues, counts toward the load with it, and
batches after it. An in-process caller that submits back to back (the same task) runs so again, then
yields a turn, so it cannot starve the others. The request itself no longer yields a turn before it
returns (each did, to hold off the rest of its burst), which saves a lone client a loop turn a request:
in process 1-3 % fewer instructions (callgrind, backend_bench's MLP with its backend call stubbed, within
the spread between runs); over HTTP at one client 8 of 11 alternating pairs faster, median +17 %, on a
noisy VM (benchmarks/RESULTS.md, session 23).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from gpuserve.errors import ModelNotReady
from gpuserve.engine.instance import SKIPPED, Instance, on_daemon_thread
from gpuserve.engine.job import TRACING, Job, describe
from gpuserve.engine.queue import BatchQueue
from gpuserve.engine.slots import InstanceSlots
from gpuserve.engine.stats import FIRST_RESPONSE, ModelStats

logger = logging.getLogger("gpuserve.engine")

# A transport whose requests may not count as a lone client's clears this in their context.
LONE_INLINE_OK: "contextvars.ContextVar[bool]" = contextvars.ContextVar("gpuserve_lone_inline_ok", default=True)
LONE_BLOCKED_S = 1.0  # how long one such request keeps the lone-client rule off
LONE_GAP_S = 0.0002  # a request that arrives sooner than this after the last answer was waiting behind it
WATCH_FIRST = 4  # batches watched on the instance thread before any may run inline for holding the GIL
WATCH_EVERY = 16  # of the batches that could run inline for holding the GIL, one in this many is watched


@dataclass(frozen=True)
class QueuePolicy:
    """One priority level's queue (Triton's ModelQueuePolicy)."""

    max_queue_size: int = 0  # 0: unbounded
    default_timeout_s: Optional[float] = None
    allow_timeout_override: bool = True  # a request's own timeout may shorten default_timeout_s (or set one)
    delay: bool = False  # timeout_action DELAY: a timed-out request waits behind its level instead of failing


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 0  # rows; 0 or 1: every request runs alone
    preferred_batch_sizes: Tuple[int, ...] = ()
    max_queue_delay_s: float = 0.0
    priority_levels: int = 1
    default_priority_level: int = 0
    max_queue_size: int = 0  # 0: unbounded
    default_timeout_s: Optional[float] = None
    allow_timeout_override: bool = True
    # Per priority level (Triton's priority_queue_policy over its default_queue_policy); empty: the three
    # fields above hold for the whole queue.
    queue_policies: Tuple[QueuePolicy, ...] = ()
    ragged_inputs: Tuple[str, ...] = ()  # may differ along axis 1 within a batch (kernels.ragged)
    # Triton's allow_ragged_batch: a ragged input's whole shape may differ (the backend takes whole requests)
    ragged_any_shape: bool = False
    triton_errors: bool = False  # queue timeouts and a full queue answer in Triton's words (config.pbtxt models)
    inline_below_s: float = 0.0001  # CPU batches this quick may run on the loop thread when idle; 0: never
    inline_alone_below_s: float = 0.002  # the same for a lone client's batches (see the module's docstring)
    # batches up to this long whose calls hold the GIL (see the module's docstring) may run inline too; 0: never
    inline_holding_gil_below_s: float = 0.0
    start_after: int = 0  # Triton's TRITONSERVER_DELAY_SCHEDULER: no batch until this many requests are queued

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 1

    @property
    def target(self) -> int:
        return max(self.preferred_batch_sizes) if self.preferred_batch_sizes else self.max_batch_size


class Scheduler:
    def __init__(self, name: str, instances: List[Instance], config: BatchingConfig,
                 stats: Optional[ModelStats] = None, batch_dim: bool = True):
        self.name = name
        self.instances = instances
        self.config = config
        self.stats = stats or ModelStats(name)
        for instance in instances:
            if instance.stats is None:
                instance.stats = self.stats
        # Inputs carry a leading batch dimension (Triton's max_batch_size > 0); batching needs it.
        self.batch_dim = batch_dim
        self.queue: Optional[BatchQueue] = None
        self._idle: Optional[InstanceSlots] = None  # which instance takes the next batch
        self._task: Optional[asyncio.Task] = None
        self._loop_ref: Optional[asyncio.AbstractEventLoop] = None
        self._inflight: Dict[asyncio.Future, List[Job]] = {}  # a future per batch on an instance thread
        self.batches_formed: Dict[int, int] = {}
        self._outstanding = 0  # requests submitted and not yet answered
        self._load = 0.0  # moving average of _outstanding as each submit found it
        self._lone_blocked_until = 0.0  # monotonic time; see LONE_INLINE_OK
        self._last_answer = 0.0  # monotonic time the last batch was answered
        self._holding: Optional[Instance] = None  # the idle instance the loop holds while it waits for work
        self._turn_pending = False  # a request ran in its caller's task and the loop has not turned since
        self._turn_task: Optional[asyncio.Task] = None  # that caller's task
        # Whether the loop could run while batches ran on the instance thread (inline_holding_gil_below_s):
        # requests submitted so far, and a moving average of "some arrived during a batch" over such batches
        self._submits = 0
        self._loop_ran = 1.0
        self._watched = 0
        self._inline_since_watch = 0

    # lifecycle ----------------------------------------------------------------------------------
    _stopped = False
    _forming: Sequence[Job] = ()

    def start(self) -> None:
        """Bind to the running loop; called lazily by the first submit as well."""
        policies = self.config.queue_policies
        self.queue = BatchQueue(self.config.priority_levels, 0 if policies else self.config.max_queue_size,
                                [p.max_queue_size for p in policies], [p.delay for p in policies])
        # as Triton: a request that timed out in the queue is a failure, reason REJECTED
        self.queue.on_expired = lambda job, now: self.stats.record_request(False, int((now - job.arrival) * 1e9),
                                                                           "REJECTED")
        self.queue.triton_errors = self.config.triton_errors
        self.queue.staged = self._staged_jobs
        self._idle = InstanceSlots(self.instances)
        self._loop_ref = asyncio.get_running_loop()
        self._holding = None
        self._task = self._loop_ref.create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        self._stopped = True  # for good: a request that found the model before its unload is refused, not queued
        await cancel_and_wait(self._task)
        self._task = None
        if self.queue is not None:
            unloaded = ModelNotReady(self.name, "the model is being unloaded")
            self.queue.fail_all(unloaded)
            # and those the loop had taken for a batch still growing (max_queue_delay) when it was stopped
            for job in self._forming:
                if not job.future.done():
                    job.future.set_exception(unloaded)
            self._forming = ()
        if self._inflight:
            # Wait for running batches; a backend may bound the wait (user code that never returns must not
            # hang an unload or the server's shutdown): its requests then fail, and its thread is left behind.
            limits = [t for t in (getattr(i.backend, "close_timeout_s", None) for i in self.instances) if t]
            limit = min(limits) if limits else None
            _, stuck = await asyncio.wait(list(self._inflight), timeout=limit)
            for done in stuck:
                batch = self._inflight.pop(done, ())
                logger.warning("model %s: a batch of %d request(s) still running after %.1f s; unloading without "
                               "it", self.name, len(batch), limit)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(ModelNotReady(self.name, "it was unloaded while this request ran"))
        for instance in self.instances:
            await on_daemon_thread(instance.close)

    def _staged_jobs(self) -> List[Job]:
        """Jobs handed to an instance that has not begun them (queued behind its running batch)."""
        return [job for batch in self._inflight.values() for job in batch if not job.started]

    async def add_instance(self, instance: Instance) -> None:
        """Serve with one more instance from now on (Triton's instance update on a reload)."""
        self.instances.append(instance)
        if self._idle is not None:
            self._idle.add(instance)

    async def retire_instance(self, instance: Instance) -> None:
        """Hand `instance` no more batches; close it (its backend unloads) once the batches it runs are
        answered. Requests waiting in the queue go to the instances that stay."""
        self.instances.remove(instance)
        if self._idle is not None:
            await self._idle.retire(instance)
        await asyncio.to_thread(instance.close)

    # requests -----------------------------------------------------------------------------------
    async def submit(self, arrays: Dict[str, np.ndarray], priority: Optional[int] = None,
                     timeout_s: Optional[float] = None, outputs: Optional[Sequence[str]] = None,
                     reduce: Optional[Dict[str, int]] = None, context: Optional[dict] = None) -> Dict[str, np.ndarray]:
        """Queue one request and wait for its outputs (sliced to its own rows; a `reduce`d output comes
        back as a kernels.topk.TopK of its rows). `context` rides on the job for request-level backends."""
        if self._task is None:
            if self._stopped:  # (start() would make a queue and a loop no instance serves: it never answered)
                raise ModelNotReady(self.name, "the model is being unloaded")
            self.start()
        cfg = self.config
        if priority is None:
            level = cfg.default_priority_level
        else:
            level = priority
            if not 0 <= level < max(cfg.priority_levels, 1):  # as Triton: out of range means the default level
                level = cfg.default_priority_level
        if cfg.queue_policies:
            policy = cfg.queue_policies[min(level, len(cfg.queue_policies) - 1)]
            if timeout_s is None or not policy.allow_timeout_override:
                timeout_s = policy.default_timeout_s
            elif policy.default_timeout_s and timeout_s > policy.default_timeout_s:
                timeout_s = policy.default_timeout_s  # as Triton: a request may shorten it, never lengthen it
        elif timeout_s is None or not cfg.allow_timeout_override:
            timeout_s = cfg.default_timeout_s
        elif cfg.default_timeout_s and timeout_s > cfg.default_timeout_s:
            timeout_s = cfg.default_timeout_s
        batch_dim = self.batch_dim
        rows, key = describe(arrays, batch_dim, cfg.max_batch_size > 1 and batch_dim, cfg.ragged_inputs,
                             cfg.ragged_any_shape)
        job = Job(arrays, rows, key, self._loop_ref.create_future(), level, None, outputs, context, reduce)
        self._submits += 1
        if TRACING.on:
            trace = job.trace = TRACING.current.get()
            if trace is not None:
                trace.stamp("QUEUE_START")
        if timeout_s:
            job.deadline = job.arrival + timeout_s
        if not LONE_INLINE_OK.get() and job.arrival - self._last_answer < LONE_GAP_S:
            self._lone_blocked_until = job.arrival + LONE_BLOCKED_S
        # A lone client's request may skip the queue and the batcher's turn (see _run_now). One ran so this turn
        # from another task: this one came with it in a burst, and queues (counted with it below)
        burst = self._turn_pending and asyncio.current_task() is not self._turn_task
        alone = self._holding is not None and not self._outstanding and not self.queue.size and job.deadline is None \
            and not burst
        if not alone:
            self.queue.put(job)
            if timeout_s and not self.queue.delays(job):  # answered at its deadline even if nothing scans
                timer = self._loop_ref.call_later(timeout_s, self.queue.expire, job)
                job.future.add_done_callback(lambda _, timer=timer: timer.cancel())
        self._outstanding += 1
        self._load += 0.1 * (self._outstanding + burst - self._load)
        try:
            if alone:
                if self._load < 1.5 and self._inline(self._holding, [job]):
                    return await self._run_now(job)
                self.queue.put(job)
            return await job.future
        except asyncio.CancelledError:
            # its caller went away (a client's disconnect, cancel or deadline) before the request ran: it is
            # skipped, and counted as the failure Triton names CANCELED (a running one finishes and counts). One
            # an instance has begun meanwhile is counted when its batch completes (_complete), on this thread too
            if not job.started and job.future.cancelled():
                self._count_cancelled(job)
            raise
        finally:
            self._outstanding -= 1

    # the loop -----------------------------------------------------------------------------------
    async def _loop(self) -> None:
        cfg = self.config
        batched = cfg.batched and self.batch_dim
        while self.queue.size < cfg.start_after:  # once, before the first batch (a test hook in Triton)
            await self.queue.wait_for_more(None)
        while True:
            instance = await self._idle.get()
            # A lone request may skip the queue (_run_now) only where nothing would hold it: with a
            # max_queue_delay it waits for company as any first request does (Triton's dynamic batcher).
            ticket = instance.ticket
            self._holding = instance if not cfg.max_queue_delay_s and ticket is None else None
            first = await self.queue.get()
            self._holding = None
            batch = self._forming = [first]  # out of the queue, not yet handed over: stop() answers these
            if ticket is not None:  # Triton's rate limiter: the batch grows while it waits its turn
                await ticket.acquire()
            if batched:
                limit = max(cfg.max_batch_size, first.rows)
                batch += self.queue.take_matching(first.key, limit - first.rows)
                if cfg.max_queue_delay_s > 0:
                    await self._wait_for_more(batch, first, limit)
                    if not batch:  # every request it held timed out meanwhile
                        self._idle.put_nowait(instance)
                        if ticket is not None:
                            ticket.release(self._restage())
                        continue
                if cfg.preferred_batch_sizes:
                    self._trim_to_preferred(batch)
            self._forming = ()
            if self._inline(instance, batch):
                self._run_inline(instance, batch, batched)
            else:
                self._dispatch(instance, batch, batched)
            # not kept while this waits for the next request: a 1 GB request's arrays stayed until then
            first = batch = None

    async def _wait_for_more(self, batch: List[Job], first: Job, limit: int) -> None:
        """Let the batch grow until `max_queue_delay` after its first request, as Triton's dynamic batcher
        does: it goes at once when its requests (in order) make up a preferred size, or the largest. A held
        request that times out meanwhile leaves the batch at its deadline: failed (REJECT, by
        BatchQueue.expire) or put behind its level (DELAY), so the others may still form a preferred size."""
        deadline = first.arrival + self.config.max_queue_delay_s
        rows = sum(job.rows for job in batch)
        target = min(self.config.target, limit)
        self.queue.held = batch
        try:
            # As Triton's dynamic batcher, the held batch also goes once the next queued request cannot
            # join it (another shape, or past the largest preferred size or max_batch_size): waiting on
            # could not grow it, and held the first requests for the whole delay (qa/L0_batcher
            # test_multi_batch_gt_max_preferred, test_multi_batch_not_preferred_different_shape).
            while rows < target and not self.queue.size and not self._preferred_prefix(_in_queue_order(batch)):
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0:
                    break
                soonest = min((job.deadline for job in batch if job.deadline is not None), default=None)
                if soonest is not None:
                    remaining = min(remaining, max(soonest - now, 0.0))
                arrived = await self.queue.wait_for_more(remaining)
                if soonest is not None and time.monotonic() >= soonest:
                    batch[:] = self.queue.settle_held(batch)
                    rows = sum(job.rows for job in batch)
                    if not batch:
                        return
                if arrived or soonest is not None:
                    more = self.queue.take_matching(first.key, target - rows)
                    batch += more
                    rows += sum(job.rows for job in more)
        finally:
            self.queue.held = ()

    def _restage(self) -> bool:
        """Whether a rate-limited instance that just finished should wait for its next turn at once (as
        Triton's does while its model has requests queued). Only for a model of one instance: the loop's
        next batch then surely goes to it, while with several the loop might wait on another instance's
        turn and leave this one's unused, holding resources nobody takes."""
        return len(self.instances) == 1 and bool(self.queue.size)

    def _preferred_prefix(self, batch: List[Job]) -> int:
        """How many of the batch's first requests make up the largest preferred size they can; where none
        does, those before the one that takes it past the largest preferred size, as Triton's batcher cuts
        (0: neither, the batch never passes it)."""
        sizes = self.config.preferred_batch_sizes
        if not sizes:
            return 0
        largest = max(sizes)
        best, rows = 0, 0
        for count, job in enumerate(batch):
            if count and rows + job.rows > largest:
                return best or count
            rows += job.rows
            if rows in sizes:
                best = count + 1
        return best

    def _trim_to_preferred(self, batch: List[Job]) -> None:
        """Cut the batch to its preferred prefix (above); the rest goes back to the head of the queue. Once
        its oldest request has waited out max_queue_delay, as Triton's, the batch goes whole: a queue filled
        past the largest preferred size then runs up to max_batch_size (qa/L0_batcher
        test_multi_batch_delayed_use_max_batch), and before then its first requests go without the one
        that would pass that size (test_multi_batch_delayed_sum_gt_max_preferred: 3 then 4 of [2, 6])."""
        rows = sum(job.rows for job in batch)
        if rows in self.config.preferred_batch_sizes:
            return
        delay = self.config.max_queue_delay_s
        if delay > 0 and time.monotonic() - min(job.arrival for job in batch) >= delay:
            return
        batch[:] = _in_queue_order(batch)
        kept = self._preferred_prefix(batch)
        if kept:
            self.queue.push_front(batch[kept:])
            del batch[kept:]

    def _inline(self, instance: Instance, batch: List[Job]) -> bool:
        """Nothing running for this model, a CPU instance, and this batch predicted to be quick; or a lone
        client's batch on any instance whose backend may be called from this thread (the module's
        docstring says why)."""
        cfg = self.config
        limit = cfg.inline_below_s
        if limit <= 0 or self._inflight or not instance.any_thread or not instance.seconds_per_row:
            return False
        cost = instance.seconds_per_row * _rows(batch)
        if cost < limit and instance.on_cpu:  # a device call waits on the device: only a lone client's
            return True
        if instance.on_cpu and cost < cfg.inline_holding_gil_below_s and self._holds_gil():
            return True
        return (cost < cfg.inline_alone_below_s and self._load < 1.5 and len(batch) == self._outstanding
                and batch[0].arrival >= self._lone_blocked_until)

    def _holds_gil(self) -> bool:
        """Whether this model's calls keep the loop from running anyway: no request arrived while any of the
        last few batches ran on the instance thread. Every WATCH_EVERY-th such batch still goes to the thread,
        so a call that starts releasing the GIL (or a load that starts arriving meanwhile) is seen."""
        if self._watched < WATCH_FIRST or self._loop_ran >= 0.2:
            return False
        self._inline_since_watch += 1
        if self._inline_since_watch >= WATCH_EVERY:
            self._inline_since_watch = 0
            return False
        return True

    def _watch(self, arrived: bool) -> None:
        """After a batch on the instance thread (on that thread): whether requests arrived while it ran."""
        self._loop_ran += 0.25 * ((1.0 if arrived else 0.0) - self._loop_ran)
        self._watched += 1

    async def _run_now(self, job: Job) -> Dict[str, np.ndarray]:
        """Run a lone request on the idle instance the loop holds while it waits for work, here in the
        caller's task: the batch the loop would form is this job alone and `_inline` would run it on this
        thread anyway, so queueing it would only cost the loop's turn. The loop never sees the job.
        Until the loop turns, other tasks' requests queue (the rest of a burst batches); its own caller
        submitting again at once runs so again, then yields a turn for the others."""
        rows = job.rows  # (_started for a batch of this job alone)
        formed = self.batches_formed
        formed[rows] = formed.get(rows, 0) + 1
        outputs = None if job.outputs is None else list(dict.fromkeys(job.outputs))
        batched = self.config.batched and self.batch_dim
        instance = self._holding
        if instance.stats is self.stats:  # (one record for the instance's counts and the request's)
            result, spent = instance.run_alone(job, batched, outputs)
        else:
            result, spent = instance.run([job], batched, outputs)[0], None
        if spent is None or isinstance(result, BaseException) or FIRST_RESPONSE.on:
            if spent is not None:  # (its queue wait, as `run` records it; the rest as every batch's)
                self.stats.record_queue([spent[0]])
                self.stats.record_batch(rows if batched else 1, 1, *spent[1:])
            self._complete([job], [result], None)
        else:  # succeeded: its statistics in one call, its answer as _complete gives it
            now = self._last_answer = time.monotonic()
            self.stats.record_alone(spent[0], rows if batched else 1, *spent[1:], int((now - job.arrival) * 1e9))
            wanted = job.outputs
            job.future.set_result(result if wanted is None or len(wanted) == len(result)
                                  else {name: result[name] for name in wanted})
        if self._turn_pending:  # its caller submitted again at once: one turn for everyone else
            await asyncio.sleep(0)
        else:
            self._turn_pending, self._turn_task = True, asyncio.current_task()
            self._loop_ref.call_soon(self._turned)
        return job.future.result()

    def _turned(self) -> None:
        self._turn_pending, self._turn_task = False, None

    def _started(self, batch: List[Job]) -> Optional[Sequence[str]]:
        rows = _rows(batch)  # (queue time is recorded when the instance starts the batch)
        self.batches_formed[rows] = self.batches_formed.get(rows, 0) + 1
        return _union_outputs(batch)

    def _run_inline(self, instance: Instance, batch: List[Job], batched: bool) -> None:
        outputs = self._started(batch)
        try:
            results = instance.run(batch, batched, outputs)  # per-job errors come back as results
        finally:
            self._idle.put_nowait(instance)
            if instance.ticket is not None:
                instance.ticket.release(self._restage())
        self._complete(batch, results, None)

    def _dispatch(self, instance: Instance, batch: List[Job], batched: bool) -> None:
        """Hand the batch to the instance's thread; its answer comes back as one loop callback."""
        outputs = self._started(batch)
        loop = self._loop_ref
        done = loop.create_future()  # what stop() waits on while the batch runs
        self._inflight[done] = batch
        watch = self.config.inline_holding_gil_below_s > 0
        seen = [0]

        def started() -> None:  # on the instance thread, as the batch starts
            seen[0] = self._submits

        def answer(results: Optional[List[object]], error: Optional[BaseException]) -> None:
            # On the instance thread. A closed loop means the model was torn down without stop().
            if watch:
                self._watch(self._submits != seen[0])
            try:
                loop.call_soon_threadsafe(self._finish, instance, batch, done, results, error)
            except RuntimeError:
                pass

        try:
            instance.submit(batch, batched, outputs, answer, started if watch else None)
        except BaseException as exc:  # e.g. no thread could be started: answer the batch, not hang it
            self._finish(instance, batch, done, None, exc)

    def _finish(self, instance: Instance, batch: List[Job], done: asyncio.Future,
                results: Optional[List[object]], error: Optional[BaseException]) -> None:
        self._inflight.pop(done, None)
        if not done.done():  # stop() may have given up waiting (cancelled) meanwhile
            done.set_result(None)
        self._idle.put_nowait(instance)
        if instance.ticket is not None:
            instance.ticket.release(self._restage())
        self._complete(batch, results, error)

    def _count_cancelled(self, job: Job) -> None:
        if not job.cancel_counted:
            job.cancel_counted = True
            self.stats.record_request(False, int((time.monotonic() - job.arrival) * 1e9), "CANCELED")

    def _complete(self, batch: List[Job], results: Optional[List[object]], error: Optional[BaseException]) -> None:
        now = self._last_answer = time.monotonic()
        if error is not None:
            if not isinstance(error, Exception):
                raise error
            logger.warning("batch of %d request(s) for %s failed: %s", len(batch), self.name, error)
            self.stats.record_requests([], [int((now - job.arrival) * 1e9) for job in batch])
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        ok: List[int] = []
        failed: List[int] = []
        for job, result in zip(batch, results):
            future = job.future
            if result is SKIPPED:  # answered (and counted) before its turn: BatchQueue.expire, cancellation
                if future.cancelled():  # its caller left as the instance took it up: counted here, once
                    self._count_cancelled(job)
                continue
            if isinstance(result, BaseException):
                # a request-level backend's error answer may count as a success (Triton's Python models)
                (ok if getattr(result, "counts_as_success", False) else failed).append(int((now - job.arrival) * 1e9))
                if not future.done():
                    future.set_exception(result)
                continue
            ok.append(int((now - job.arrival) * 1e9))
            if not future.done():
                wanted = job.outputs
                future.set_result(result if wanted is None or len(wanted) == len(result)
                                  else {name: result[name] for name in wanted})
        self.stats.record_requests(ok, failed)
        if FIRST_RESPONSE.on:  # a request answering through its own stream times its first response there
            self.stats.record_first_responses(int((now - job.arrival) * 1e9) for job, result in zip(batch, results)
                                              if result is not SKIPPED and not _own_stream(job))


def _own_stream(job: Job) -> bool:
    """The request answers through a stream of its own (a decoupled model's), which times its first response."""
    context = job.parameters
    return isinstance(context, dict) and getattr(context.get("stream"), "times_first_response", False)


def _in_queue_order(batch: List[Job]) -> List[Job]:
    """The batch as the queue orders its jobs (Triton's batcher looks at a growing batch so): a later
    request of a higher priority level before lower ones, one delayed by its timeout after the rest of
    its level; arrival order otherwise. Most batches are one level, already in order."""
    head = batch[0]
    if all(job.priority == head.priority and job.delayed == head.delayed for job in batch):
        return batch
    return sorted(batch, key=lambda job: (job.priority, job.delayed))


async def cancel_and_wait(task: Optional[asyncio.Task]) -> None:
    """Stop a background loop task and wait until it has unwound. The cancel is sent again until the task
    has ended: code inside it may swallow one (asyncio.wait_for on Python 3.11; see engine/queue.py
    wait_set), and an unload must not wait on a loop that runs on."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()


def _rows(batch: List[Job]) -> int:
    """The batch's rows; most batches on a lightly loaded model are one request, which this spares a
    generator."""
    if len(batch) == 1:
        return batch[0].rows
    return sum(job.rows for job in batch)


def _union_outputs(batch: List[Job]) -> Optional[List[str]]:
    names: List[str] = []
    for job in batch:
        if job.outputs is None:
            return None
        for name in job.outputs:
            if name not in names:
                names.append(name)
    return names


