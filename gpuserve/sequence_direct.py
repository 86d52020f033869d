"""Triton's Direct sequence batcher for model files and Python models: fixed batch slots, padded batches.

Each instance has max_batch_size slots (gpuserve/triton_sequence.py assigns a sequence one for its life).
A request waits in its slot's queue; the instance's batcher takes the front request of every slot, in slot
order, up to the highest slot with one, and fills the slots between that have none (or whose request's
shape differs from the batch's) with a null request: the first request's tensors with READY, START and
END false and CORRID 0, so every request keeps its row (a Python model's execute gets it as a request with
no correlation ID, flags or outputs asked for, whose response goes nowhere, as Triton's null request).
A request whose client left while it waited is dropped from its queue. With Triton's rate limiter, a
batch forms once its instance has taken its resources (engine/rate_limiter.py). The next batch is formed once this
one has run, from the state it left. Batch statistics count the whole batch; inference, queue and compute counts only
the real requests, as Triton's. `max_queue_delay_microseconds` holds a batch while fewer than
`minimum_slot_utilization` of the slots are ready; `TRITONSERVER_DELAY_SCHEDULER=N` (and
`TRITONSERVER_BACKLOG_DELAY_SCHEDULER=M`), a test hook of Triton's, keeps each batcher from starting until
N requests are queued over all instances (and M in the backlog).
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from typing import Any, Callable, Deque, Dict, List, Optional

import numpy as np

from gpuserve.engine.job import Job
from gpuserve.engine.queue import wait_set
from gpuserve.errors import ModelNotReady

NOT_READY = {"CONTROL_SEQUENCE_START": 0, "CONTROL_SEQUENCE_END": 0, "CONTROL_SEQUENCE_READY": 0}


class Entry:
    """One request in its slot's queue; `prepare` gives its full tensors when its batch forms, `finish`
    takes its outputs when that batch has run."""

    __slots__ = ("arrays", "prepare", "finish", "outputs", "future", "arrival", "shape_key", "ending", "parameters")

    def __init__(self, arrays, prepare, finish, outputs, future, ending: Optional[Callable[[], None]] = None,
                 parameters: Optional[dict] = None):
        self.arrays = arrays
        self.prepare: Callable[[], Dict[str, np.ndarray]] = prepare
        self.finish: Callable[[Dict[str, np.ndarray]], Any] = finish
        self.outputs = outputs
        self.future = future
        self.arrival = time.monotonic()
        self.shape_key = tuple((name, a.shape[1:]) for name, a in arrays.items())
        self.ending = ending  # an END request's: frees its slot as its batch forms (a backlog sequence may take it)
        self.parameters = parameters  # its job's, for a request-level backend (a Python model's request context)


class DirectBatches:
    """The Direct batchers of one model: one per engine instance."""

    def __init__(self, name: str, router, instances, stats, batching: Dict[str, Any], max_batch_size: int,
                 start_after: int):
        self.name = name
        self.router = router
        self.instances = instances
        self.stats = stats
        self.slots = max(1, max_batch_size)
        direct = batching.get("direct") or {}
        direct = direct[0] if isinstance(direct, list) and direct else direct
        direct = direct if isinstance(direct, dict) else {}
        self.delay_s = int(direct.get("max_queue_delay_microseconds", 0) or 0) / 1e6
        self.utilization = float(direct.get("minimum_slot_utilization", 0) or 0)
        self.start_after = start_after
        self.backlog_after = max(int(os.environ.get("TRITONSERVER_BACKLOG_DELAY_SCHEDULER", "0").strip() or 0), 0)
        self.queues: List[Dict[int, Deque[Entry]]] = [collections.defaultdict(collections.deque)
                                                      for _ in instances]
        self._wake: List[Optional[asyncio.Event]] = [None] * len(instances)
        self._tasks: List[asyncio.Task] = []
        self._closed = False
        self._seen = [0] * len(instances)  # per batcher: requests queued when it last looked while held
        self._running: List[List[Entry]] = [[] for _ in instances]  # per batcher: its batch's requests
        router.queued = self.queued  # pending requests, as Triton's metrics count them
        router.admitted = self.admit

    def add_instance(self, instance) -> None:
        """A new instance (a Python model's instance update in place) with slots and a batcher of its own."""
        index = len(self.instances)
        self.instances.append(instance)
        self.queues.append(collections.defaultdict(collections.deque))
        self._seen.append(0)
        self._running.append([])
        self._wake.append(None)
        if self._tasks:
            self._wake[index] = asyncio.Event()
            self._tasks.append(asyncio.get_running_loop().create_task(self._loop(index),
                                                                      name=f"direct-{self.name}-{index}"))

    def queued(self) -> int:
        return sum(len(q) for queues in self.queues for q in queues.values())

    async def run(self, instance: int, slot: int, entry: Entry):
        if self._closed:
            raise ModelNotReady(self.name, "the model is being unloaded")
        if not self._tasks:
            for index in range(len(self.instances)):
                self._wake[index] = asyncio.Event()
                self._tasks.append(asyncio.get_running_loop().create_task(self._loop(index),
                                                                          name=f"direct-{self.name}-{index}"))
        self.queues[instance][slot].append(entry)
        self._wake[instance].set()
        return await entry.future

    def admit(self, sequence) -> None:
        """A backlog sequence got a slot: its parked requests join the slot's queue at once (so the batch
        formed next takes the first), as Triton moves a backlog queue into the slot it frees."""
        if not sequence.parked:
            return
        if self._closed:  # freed by a closing model: its loops are gone, so its requests are answered here
            self._fail(sequence.unpark())
            return
        self.queues[sequence.instance][sequence.slot_index].extend(sequence.unpark())
        if self._wake[sequence.instance] is not None:
            self._wake[sequence.instance].set()

    def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        left = [entry for running in self._running for entry in running]
        for queues in self.queues:
            for queue in queues.values():
                left.extend(queue)
                queue.clear()
        for sequence in self.router.backlog:  # waiting for a slot that will not come: answered too
            left.extend(sequence.unpark())
            sequence.expired = True  # its wait for a slot ends
            if sequence.admitted is not None:
                sequence.admitted.set()
        self.router.backlog.clear()
        self._fail(left)  # a batch still running is not waited for: its requests are answered now

    def _fail(self, entries) -> None:
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(ModelNotReady(self.name, "the model is being unloaded"))

    def _held(self, index: int) -> bool:
        """TRITONSERVER_DELAY_SCHEDULER: too few requests queued yet (over every instance and the backlog).
        As Triton's, each batcher adds the counts the others last saw while they were held: one that has
        started keeps counting what it had then, so the others start too once their own requests are in."""
        self._seen[index] = sum(len(q) for q in self.queues[index].values())
        if sum(self._seen) < self.start_after:
            return True
        backlog = sum(sequence.waiting for sequence in self.router.backlog)
        return backlog < self.backlog_after

    async def _loop(self, index: int) -> None:
        wake, queues = self._wake[index], self.queues[index]
        held = self.start_after > 0 or self.backlog_after > 0
        while True:
            if held:
                if self._held(index):
                    await asyncio.sleep(0.01)
                    continue
                held = False
            ready = sorted(slot for slot, queue in queues.items() if queue)
            if not ready:
                wake.clear()
                await wake.wait()
                continue
            if self.delay_s > 0 and self.utilization > 0 and len(ready) / self.slots < self.utilization:
                waited = time.monotonic() - min(queues[slot][0].arrival for slot in ready)
                if waited < self.delay_s:
                    wake.clear()
                    await wait_set(wake, self.delay_s - waited)
                    if time.monotonic() - min(queues[slot][0].arrival for slot in ready) < self.delay_s:
                        continue
            ticket = getattr(self.instances[index], "ticket", None)
            if ticket is None:
                await self._run_batch(index, queues, ready[-1])
                continue
            await ticket.acquire()  # Triton's rate limiter: the batch forms once the instance has its turn
            try:
                ready = sorted(slot for slot, queue in queues.items() if queue)
                if ready:
                    await self._run_batch(index, queues, ready[-1])
            finally:
                ticket.release(any(queues.values()))

    async def _run_batch(self, index: int, queues, last: int) -> None:
        first: Optional[Entry] = None
        taken: List[Optional[Entry]] = []
        for slot in range(last + 1):
            queue = queues.get(slot)
            while queue and queue[0].future.done():  # its client left (cancelled) while it waited: dropped
                gone = queue.popleft()
                if gone.ending is not None:
                    gone.ending()
            entry = queue[0] if queue else None
            if entry is not None and first is not None and entry.shape_key != first.shape_key:
                entry = None  # another shape waits for a batch of its own; its slot is padded meanwhile
            if entry is not None:
                queue.popleft()
                first = first or entry
                if entry.ending is not None:
                    entry.ending()
            taken.append(entry)
        fulls: Dict[int, Dict[str, np.ndarray]] = {}
        for slot, entry in enumerate(taken):
            if entry is not None:
                try:
                    fulls[slot] = entry.prepare()
                except Exception as exc:  # noqa: BLE001 - its request fails alone
                    if not entry.future.done():
                        entry.future.set_exception(exc)
                    taken[slot] = None
        if not fulls:
            return
        while taken[-1] is None:  # a batch ends at its highest slot with a request
            taken.pop()
        model = next(iter(fulls.values()))
        loop = asyncio.get_running_loop()
        jobs, nulls = [], 0
        for slot, entry in enumerate(taken):
            if entry is None:  # a request-level backend knows it by its parameters: None
                arrays, future, parameters = self._null(model), None, None
                nulls += 1
            else:
                arrays, future, parameters = fulls[slot], loop.create_future(), entry.parameters
            job = Job(arrays, 1, (), future, parameters=parameters)
            if entry is not None:
                job.arrival = entry.arrival  # its queue time runs from its arrival in the slot's queue
            jobs.append(job)
        wanted = [e.outputs for e in taken if e is not None]
        outputs = None if any(o is None for o in wanted) else list(dict.fromkeys(n for o in wanted for n in o))
        done = loop.create_future()

        def answer(results, error):
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result((results, error)))

        self._running[index] = [entry for entry in taken if entry is not None]
        self.instances[index].submit(jobs, True, outputs, answer)
        try:
            results, error = await done
        finally:
            self._running[index] = []
        now = time.monotonic()
        if nulls:
            self.stats.forget_padding(nulls)
        ok, failed = [], []
        for entry, job, result in zip(taken, jobs, results or [None] * len(jobs)):
            if entry is None or entry.future.done():
                continue
            spent = int((now - entry.arrival) * 1e9)
            if error is not None or isinstance(result, BaseException):
                # a Python model's error response counts as a success, as the batcher counts it
                (ok if error is None and getattr(result, "counts_as_success", False) else failed).append(spent)
                entry.future.set_exception(error or result)
                continue
            try:
                entry.future.set_result(entry.finish(result))
                ok.append(spent)
            except Exception as exc:  # noqa: BLE001
                failed.append(spent)
                entry.future.set_exception(exc)
        self.stats.record_requests(ok, failed)

    def _null(self, model: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """A row that keeps a slot: the batch's first request's tensors, its controls not ready, CORRID 0."""
        arrays = dict(model)
        for control in self.router.controls:
            array = model.get(control.name)
            if array is None:
                continue
            value = NOT_READY.get(control.kind)
            if value is None:  # CORRID
                arrays[control.name] = np.zeros_like(array) if array.dtype != object else np.full_like(array, b"")
            else:
                arrays[control.name] = np.full_like(array, control.false_true[0])
        return arrays
