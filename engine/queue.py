"""A bounded queue per model version with priority levels and deadlines.

Level 0 is served first. Expired and cancelled jobs are removed whenever the queue is scanned, so
their work is never run; an expired job's caller gets DeadlineExceeded (504; a Triton-form model's
caller Triton's QueueTimeout, 503), never a half-run result. A job that would be rejected when it times
out is also answered at its deadline (`expire`, on a timer the scheduler sets), not only when the queue
is next scanned: while every instance is busy nothing scans it, and Triton answers such a request
promptly (its qa: queue_timeout_test). Each level may have its own policy (Triton's `priority_queue_policy`, else the
`default_queue_policy` for every level): a size bound, and what a timeout does. REJECT fails the job
as above; DELAY keeps it, behind every job of its level that has not timed out (in a second deque per
level, scanned right after the level's own), so it still runs before lower levels' jobs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable, Deque, List, Optional, Sequence

from gpuserve.errors import DeadlineExceeded, QueueFull, QueueTimeout
from gpuserve.engine.job import Job


def _fail(job: Job, exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)


class BatchQueue:
    def __init__(self, levels: int = 1, max_size: int = 0, level_sizes: Sequence[int] = (),
                 delayed: Sequence[bool] = ()):
        count = max(levels, 1)
        self.max_size = max_size  # 0 means unbounded (all levels together)
        self.level_sizes = tuple(level_sizes) if any(level_sizes) else ()  # per level, 0 unbounded
        # Where each level's jobs wait, and where its timed-out jobs wait when its policy delays them.
        if any(delayed):
            self.levels: List[Deque[Job]] = [deque() for _ in range(2 * count)]
            self._main = [2 * i for i in range(count)]
            self._delayed = [2 * i + 1 if i < len(delayed) and delayed[i] else None for i in range(count)]
        else:
            self.levels = [deque() for _ in range(count)]
            self._main = list(range(count))
            self._delayed = [None] * count
        self.size = 0
        self.expired = 0
        # Jobs the batcher took out but holds back while max_queue_delay lets their batch grow: still
        # waiting, so Triton counts them against max_queue_size and so does put()
        self.held: Sequence[Job] = ()
        # Jobs handed to a busy instance's second slot, not started: still waiting, so they count as well
        self.staged: Optional[Callable[[], List[Job]]] = None
        self._ready = asyncio.Event()
        self.on_expired = None  # called with each job that timed out here (the scheduler counts it as REJECTED)
        self.triton_errors = False  # Triton's words: QueueTimeout for a timed-out job, its queue-full sentence

    def __len__(self) -> int:
        return self.size

    def _staged(self) -> List[Job]:
        return self.staged() if self.staged is not None else []

    def pending(self) -> int:
        """Requests not yet begun: queued, held while their batch grows, or staged behind a busy instance
        (Triton's nv_inference_pending_request_count, and what max_queue_size bounds)."""
        return self.size + len(self.held) + len(self._staged())

    def put(self, job: Job) -> None:
        if self.max_size and self.pending() >= self.max_size:
            raise self._full(f"queue is full ({self.max_size} requests waiting); retry later")
        levels = self.levels
        if len(levels) == 1:
            levels[0].append(job)
        else:
            level = self._level(job)
            bound = self.level_sizes[level] if self.level_sizes else 0
            if bound and self._waiting(level) >= bound:
                raise self._full(f"queue of priority level {level + 1} is full ({bound} requests waiting); "
                                 "retry later")
            levels[self._main[level]].append(job)
        self.size += 1
        if not self._ready.is_set():
            self._ready.set()

    def _full(self, detail: str) -> QueueFull:
        if not self.triton_errors:
            return QueueFull(detail)
        refusal = QueueFull("Exceeds maximum queue size")
        refusal.request_scoped = True  # Triton's core writes the request's id first (gpuserve/triton_refusals.py)
        return refusal

    def _level(self, job: Job) -> int:
        return min(max(job.priority, 0), len(self._main) - 1)

    def _waiting(self, level: int) -> int:
        delayed = self._delayed[level]
        held = sum(1 for job in (*self.held, *self._staged()) if self._level(job) == level)
        return (len(self.levels[self._main[level]]) + (len(self.levels[delayed]) if delayed is not None else 0)
                + held)

    def _usable(self, job: Job, now: float) -> bool:
        """Whether a popped job runs now; one that timed out is failed, or delayed (put back, counted)."""
        if job.future.done():  # cancelled by its caller (client went away)
            return False
        if job.expired(now):
            delayed = self._delayed[self._level(job)]
            if delayed is not None:  # DELAY: behind its level's jobs that have not timed out
                job.deadline = None
                job.delayed = True
                self.levels[delayed].append(job)
                self.size += 1
                return False
            self._reject(job, now)
            return False
        return True

    def _reject(self, job: Job, now: float) -> None:
        self.expired += 1
        if self.on_expired is not None and not job.future.done():
            self.on_expired(job, now)
        _fail(job, QueueTimeout("Request timeout expired") if self.triton_errors else
              DeadlineExceeded("request timed out in the queue before it could run"))

    def settle_held(self, held: List[Job]) -> List[Job]:
        """The batcher's held jobs still to run: those answered meanwhile (rejected at their deadline,
        cancelled) leave, and those timed out under DELAY go behind their level's jobs."""
        now = time.monotonic()
        kept = []
        for job in held:
            if job.future.done():
                continue
            if job.expired(now) and not self._usable(job, now):  # failed, or back in the queue (DELAY)
                continue
            kept.append(job)
        return kept

    def delays(self, job: Job) -> bool:
        """Whether a timed-out `job` waits on (DELAY) rather than failing (REJECT)."""
        return self._delayed[self._level(job)] is not None

    def expire(self, job: Job) -> None:
        """At `job`'s deadline, unless it has started: it fails now (REJECT), leaving its level if it still
        waits there. One the batcher already took but has not started (held while its batch grows, or
        staged behind the batch its instance is running) fails too; the instance skips it (Instance.run),
        as Triton's batcher never hands a timed-out request to an instance."""
        if job.future.done() or job.started or self.delays(job):
            return
        try:
            self.levels[self._main[self._level(job)]].remove(job)
            self.size -= 1
        except ValueError:
            pass
        self._reject(job, max(time.monotonic(), job.deadline or 0.0))

    def pop_first(self) -> Optional[Job]:
        now = time.monotonic()
        for level in self.levels:
            while level:
                job = level.popleft()
                self.size -= 1
                if self._usable(job, now):
                    return job
        return None

    async def get(self) -> Job:
        while True:
            job = self.pop_first()
            if job is not None:
                return job
            self._ready.clear()
            await self._ready.wait()

    def take_matching(self, key, room: int) -> List[Job]:
        """Queued jobs with batching key `key`, by priority then arrival, up to `room` rows in all."""
        taken: List[Job] = []
        if room <= 0 or not self.size:
            return taken
        now = time.monotonic()
        for level in self.levels:
            if room <= 0:
                break
            skipped: Optional[List[Job]] = None
            popleft = level.popleft
            while level and room > 0:
                job = popleft()
                # _usable inlined: this loop runs once per queued request
                deadline = job.deadline
                if job.future.done() or (deadline is not None and now >= deadline):
                    self.size -= 1
                    self._usable(job, now)  # counts and fails an expired one
                elif job.key == key and job.rows <= room:
                    taken.append(job)
                    room -= job.rows
                    self.size -= 1
                elif skipped is None:
                    skipped = [job]
                else:
                    skipped.append(job)
            if skipped:
                level.extendleft(reversed(skipped))
        return taken

    def push_front(self, jobs: List[Job]) -> None:
        """Return jobs a batch could not take (preferred-size trimming) to the head of their level."""
        for job in reversed(jobs):
            level = self._level(job)
            where = self._delayed[level] if job.delayed and self._delayed[level] is not None else self._main[level]
            self.levels[where].appendleft(job)
            self.size += 1
        if jobs:
            self._ready.set()

    async def wait_for_more(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a new job; True if one arrived."""
        self._ready.clear()
        return await wait_set(self._ready, timeout)

    def fail_all(self, exc: BaseException) -> None:
        for level in self.levels:
            while level:
                _fail(level.popleft(), exc)
        self.size = 0


async def wait_set(event: asyncio.Event, timeout: Optional[float]) -> bool:
    """Wait up to `timeout` seconds (None: no limit) for `event`; True if it was set. Unlike a bare
    `asyncio.wait_for` on Python 3.11, a cancel that lands in the same loop turn as the event is not lost:
    wait_for returns the event then, and a batcher loop being stopped ran on, so its model's unload waited
    for ever (a reload under load hung)."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        return False
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
    return True
