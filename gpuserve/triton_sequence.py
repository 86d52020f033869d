"""Triton's sequence batcher for stateful Python models (`sequence_batching` in config.pbtxt).

A sequence is the requests carrying one correlation ID (`sequence_id`), opened by `sequence_start` and
closed by `sequence_end`. As Triton guarantees, all of a sequence's requests run on the instance it was
given at its start, one at a time and in order, so the instance may keep state per correlation ID;
different sequences share batches. The control inputs the config declares (START, END, READY, CORRID)
are added to every request as the tensors the model reads. A sequence idle for longer than
`max_sequence_idle_microseconds` (default 1 s) is released; its next request then needs START again.
With the Oldest strategy's `max_candidate_sequences`, an instance batches at most that many sequences; a
sequence started while all are taken waits in a backlog (its requests are held) until one ends or idles out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import numpy as np

from gpuserve.engine.queue import wait_set
from gpuserve.errors import InvalidInput, InvalidSettings, QueueTimeout, RequestCancelled
from gpuserve.triton_pb_utils import TRITON_STRING_TO_NUMPY

EXPIRED = "timeout of the corresponding sequence has been expired"  # Triton's words
KINDS = ("CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_END", "CONTROL_SEQUENCE_READY", "CONTROL_SEQUENCE_CORRID")
CORRID_TYPES = ("TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING")  # Triton's sequence batcher


def as_list(value) -> list:
    """The text-format parser gives a lone repeated message as a dict."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


@dataclass
class Control:
    name: str
    kind: str
    false_true: Tuple[Any, Any] = (0, 1)
    dtype: Any = np.int32


@dataclass
class Sequence:
    instance: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    pending: int = 0  # requests of this sequence submitted or waiting for their turn
    states: Dict[str, Any] = field(default_factory=dict)  # implicit state by input name (gpuserve/sequence_state.py)
    cancelled: bool = False
    waiting: int = 0  # requests waiting here for the previous one to finish (still pending, for metrics)
    # Oldest's max_candidate_sequences: a sequence started while every slot is taken waits in the backlog;
    # `admit` is then the router's wait for a slot, None once it has one (or when slots are unlimited)
    admit: Optional[Callable[["Sequence"], Awaitable[None]]] = None
    admitted: Optional[asyncio.Event] = None
    slot: bool = False
    slot_index: int = 0  # which of its instance's slots (the batch row the Direct batcher gives it)
    parked: list = field(default_factory=list)  # a backlog sequence's requests for the Direct batcher
    expires: Optional[float] = None  # in the backlog: the soonest of its requests' timeouts (monotonic time)
    expired: bool = False

    async def park(self, entry):
        """A backlog sequence's request waits here, parked, until a slot frees (DirectBatches.admit moves it
        to the slot's queue) or the sequence is answered; meanwhile `admit` releases idle slots."""
        self.parked.append(entry)
        self.waiting += 1
        reaper = asyncio.ensure_future(self.admit(self))
        try:
            return await entry.future
        finally:
            reaper.cancel()

    def unpark(self) -> list:
        """Its parked requests, taken out (no longer counted as waiting here): to run, or to be answered."""
        parked = list(self.parked)
        self.waiting -= len(parked)
        self.parked.clear()
        return parked

    @contextlib.asynccontextmanager
    async def turn(self):
        """The sequence's next request runs inside, after the previous one. As Triton's sequence batcher:
        cancelling a request that waits here cancels the sequence, and its other waiting requests are
        answered CANCELLED instead of running (qa's L0_request_cancellation scheduler_test)."""
        self.waiting += 1
        try:
            # in arrival order first, then (the first in line) the backlog's wait for a slot: a request that
            # came after the sequence got its slot took the free lock ahead of those still waking from that
            # wait (an END ran before its sequence's START, and the slot was never freed)
            await self.lock.acquire()
        except asyncio.CancelledError:
            self.cancelled = True
            self.waiting -= 1
            raise
        try:
            try:
                if self.admit is not None:
                    await self.admit(self)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
            finally:
                self.waiting -= 1
            if self.expired:
                raise QueueTimeout(EXPIRED)
            if self.cancelled:
                raise RequestCancelled("Request cancelled: its sequence was cancelled")
            yield
        finally:
            self.lock.release()


def parse_controls(model: str, batching: Dict[str, Any]) -> List[Control]:
    controls = []
    for entry in as_list(batching.get("control_input")):
        for control in as_list(entry.get("control")):
            kind = str(control.get("kind", ""))
            if kind not in KINDS:
                raise InvalidSettings(f"model '{model}': control input '{entry.get('name')}' has unknown kind '{kind}'")
            if kind == "CONTROL_SEQUENCE_CORRID":
                datatype = str(control.get("data_type", "TYPE_UINT64"))
                if datatype not in CORRID_TYPES:
                    raise InvalidSettings(f"model '{model}': unexpected control data type, expected TYPE_UINT64, "
                                          f"TYPE_INT64, TYPE_UINT32, TYPE_INT32, or TYPE_STRING for "
                                          f"CONTROL_SEQUENCE_CORRID '{entry.get('name')}', got {datatype}")
                controls.append(Control(str(entry["name"]), kind, (None, None), TRITON_STRING_TO_NUMPY[datatype]))
                continue
            for key, dtype in (("int32_false_true", np.int32), ("fp32_false_true", np.float32),
                               ("bool_false_true", np.bool_)):
                values = as_list(control.get(key))
                if values:
                    if len(values) != 2:
                        raise InvalidSettings(f"model '{model}': control '{entry.get('name')}' {key} needs two values")
                    controls.append(Control(str(entry["name"]), kind, (values[0], values[1]), dtype))
                    break
            else:
                raise InvalidSettings(f"model '{model}': control '{entry.get('name')}' gives no false/true values")
    return controls


def check_sequence_id(value: Any) -> None:
    """A request's `sequence_id` as Triton's frontends parse it for any model: an unsigned 64-bit integer or a
    string (Triton answers others "Unable to parse 'sequence_id'" with a 500; a client's value, so a 400 here).
    A model without sequence batching ignores a good one."""
    if isinstance(value, str) or isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 64:
        return
    raise InvalidInput(f"request parameter 'sequence_id' must be an unsigned 64-bit integer or a string, got {value!r}")


def correlation_id(model: str, parameters: Dict[str, Any]):
    value = parameters.get("sequence_id")
    if value in (None, 0, "") or isinstance(value, bool):
        raise InvalidInput(f"inference request to model '{model}' must specify a non-zero or non-empty "
                           "correlation ID")
    check_sequence_id(value)  # (the data plane checked it already for a request that came through it)
    return value


class SequenceRouter:
    """Which instance a request runs on, the control tensors it gets, and one-at-a-time per sequence."""

    def __init__(self, model: str, batching: Dict[str, Any], instances: int, batch_dim: bool,
                 max_batch_size: Optional[int] = None):
        self.model = model
        self.controls = parse_controls(model, batching)
        # (name, datatype in Triton's words) of the CORRID control, whose type a request's ID must match
        self.corrid = next(((c.name, "BYTES" if c.dtype is np.object_ else np.dtype(c.dtype).name.upper())
                            for c in self.controls if c.kind == "CONTROL_SEQUENCE_CORRID"), None)
        idle_us = int(batching.get("max_sequence_idle_microseconds", 0) or 0)
        self.idle_s = (idle_us or 1_000_000) / 1e6
        self.instances = instances
        self.batch_dim = batch_dim
        self.active: Dict[Any, Sequence] = {}
        # iterative sequence batching: a request may be rescheduled by its model, and one without a
        # correlation ID gets the next of the scheduler's own (from 1, as Triton numbers them)
        self.iterative = batching.get("iterative_sequence") in (True, "true")
        self._ids = 0
        # Sequence slots per instance: Oldest's max_candidate_sequences, else (Direct, or Oldest without it)
        # one per row of a batch, max(1, max_batch_size), as Triton's; a sequence holds its slot until it ends
        # or idles out, and one started while every slot is taken waits in a backlog. 0: no limit (a caller
        # that gives no max_batch_size)
        oldest = batching.get("oldest")
        candidates = int(oldest.get("max_candidate_sequences", 0) or 0) if isinstance(oldest, dict) else 0
        self.slots = candidates or (max(1, int(max_batch_size)) if max_batch_size is not None else 0)
        self.holding: Dict[int, int] = {}  # per instance: sequences with a slot
        self.used: Dict[int, set] = {}  # per instance: the slot indices held
        self.queued: Optional[Callable[[], int]] = None  # requests in Direct slot queues (sequence_direct.py)
        self.admitted: Optional[Callable[[Sequence], None]] = None  # a backlog sequence got a slot: its requests move
        self.backlog: List[Sequence] = []
        self.running: Dict[int, int] = {}  # per instance: requests between open() and close()
        # Instances leaving (an instance update on reload): no new sequence starts there, and the callback
        # runs once none of their sequences is left, as Triton keeps a removed instance until then
        self.closed: Dict[int, Callable[[], None]] = {}

    def waiting(self) -> int:
        """Requests queued behind their sequence's running one: Triton's sequence batcher counts them
        in nv_inference_pending_request_count."""
        queued = self.queued() if self.queued is not None else 0
        return queued + sum(sequence.waiting for sequence in list(self.active.values()))

    def add_instance(self) -> int:
        """One more instance for new sequences; its index."""
        self.instances += 1
        return self.instances - 1

    def retire(self, index: int, when_free: Callable[[], None]) -> None:
        self.closed[index] = when_free
        self._free_closed()

    def _free_closed(self) -> None:
        if not self.closed:
            return
        busy = {s.instance for s in self.active.values()} | {i for i, n in self.running.items() if n}
        for index in [i for i in self.closed if i not in busy]:
            self.closed.pop(index)()

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def requeue(self, key, sequence: Sequence) -> None:
        """A rescheduled request enters the scheduler again: as Triton's, that fails once its sequence has
        been idle past max_sequence_idle_microseconds since its last request came in (the reaper ended it
        meanwhile), and otherwise counts as the sequence's latest request."""
        now = time.monotonic()
        if now - sequence.last_used > self.idle_s:
            raise InvalidInput(f"inference request for sequence {key} to model '{self.model}' must specify the "
                               "START flag on the first request of the sequence")
        sequence.last_used = now

    def check_rows(self, arrays: Dict[str, np.ndarray]) -> None:
        """As Triton: one row per sequence step."""
        if self.batch_dim and arrays and next(iter(arrays.values())).shape[0] != 1:
            raise InvalidInput(f"inference request to model '{self.model}' must specify batch-size 1 due to "
                               "requirements of sequence batcher")

    def _release_idle(self, now: float) -> None:
        for key in [k for k, s in self.active.items() if not s.pending and now - s.last_used > self.idle_s]:
            self._drop(self.active.pop(key))
        self._free_closed()

    def _drop(self, sequence: Sequence) -> None:
        """A sequence the scheduler forgets (idled out, or restarted by a new START): its slot frees, and it
        leaves the backlog. One left there (its client gone, its requests cancelled) took the next slot freed
        and held it for ever, since only active sequences idle out: qa L0_long_running_stress lost every
        slot of a model so, and each new sequence then waited for ever."""
        if sequence in self.backlog:
            self.backlog.remove(sequence)
        self._free_slot(sequence)

    def _place(self, sequence: Sequence, free: List[int]) -> None:
        """The lowest free slot over the instances given (the first instance's on a tie), as Triton hands
        out slots."""
        best = None
        for instance in free:
            used = self.used.setdefault(instance, set())
            index = next(n for n in range(self.slots) if n not in used)
            if best is None or index < best[1]:
                best = (instance, index)
        sequence.instance, sequence.slot_index = best
        sequence.slot = True
        self.used[best[0]].add(best[1])
        self.holding[best[0]] = self.holding.get(best[0], 0) + 1

    def end_slot(self, sequence: Sequence) -> None:
        """A Direct sequence's END request has entered its batch: as Triton, its slot is free from now on,
        for the oldest backlog sequence to take (whose requests then join the next batch)."""
        if sequence.slot:
            self._free_slot(sequence)

    def _free_slot(self, sequence: Sequence) -> None:
        if sequence.slot:
            sequence.slot = False
            self.holding[sequence.instance] -= 1
            self.used.get(sequence.instance, set()).discard(sequence.slot_index)
        while self.backlog:  # the oldest waiting sequence takes the freed slot (any instance's)
            free = [i for i in range(self.instances) if i not in self.closed and self.holding.get(i, 0) < self.slots]
            if not free:
                return
            waiting = self.backlog.pop(0)
            moved_from = waiting.instance
            self._place(waiting, free)
            self.running[moved_from] -= waiting.pending
            self.running[waiting.instance] = self.running.get(waiting.instance, 0) + waiting.pending
            waiting.admit = None
            if self.admitted is not None:
                self.admitted(waiting)
            if waiting.admitted is not None:
                waiting.admitted.set()

    async def _wait_for_slot(self, sequence: Sequence) -> None:
        """A backlogged sequence's first request: until a slot frees (a sequence ends, or idles out)."""
        if sequence.admitted is None:
            sequence.admitted = asyncio.Event()
        while sequence.admit is not None and not sequence.expired:
            wait = self.idle_s if sequence.expires is None else min(self.idle_s, sequence.expires - time.monotonic())
            if not await wait_set(sequence.admitted, max(wait, 0.0)):
                now = time.monotonic()
                if sequence.expires is not None and now >= sequence.expires and sequence.admit is not None:
                    self._expire(sequence)
                else:
                    self._release_idle(now)

    def _expire(self, sequence: Sequence) -> None:
        """As Triton's reaper: a backlog sequence past its requests' timeout is refused whole (UNAVAILABLE),
        and forgotten, so its next request needs START."""
        sequence.expired = True
        if sequence in self.backlog:
            self.backlog.remove(sequence)
        for key in [k for k, s in self.active.items() if s is sequence]:
            del self.active[key]
        for entry in sequence.unpark():  # the Direct batcher's parked requests
            if not entry.future.done():
                entry.future.set_exception(QueueTimeout(EXPIRED))
        if sequence.admitted is not None:
            sequence.admitted.set()

    def open(self, parameters: Dict[str, Any]) -> Tuple[Any, Sequence]:
        """The request's sequence (started by it, or already running), counted as pending until `close`."""
        key = correlation_id(self.model, parameters)
        if self.corrid is not None and isinstance(key, str) != (self.corrid[1] == "BYTES"):
            # as Triton: a string ID for an integer CORRID (or the reverse) is refused, not converted
            raise InvalidInput(f"sequence batching control '{self.corrid[0]}' data-type is "
                               f"'{'BYTES' if isinstance(key, str) else 'UINT64'}', but model '{self.model}' "
                               f"expects '{self.corrid[1]}'")
        now = time.monotonic()
        self._release_idle(now)
        sequence = self.active.get(key)
        if parameters.get("sequence_start"):
            if sequence is None or not sequence.pending:  # a new START restarts an idle sequence's slot
                if sequence is not None:
                    self._drop(sequence)
                load = [0] * self.instances
                for other in self.active.values():
                    load[other.instance] += 1
                open_ = [i for i in range(self.instances) if i not in self.closed]
                sequence = self.active[key] = Sequence(instance=min(open_, key=load.__getitem__))
                if self.slots:
                    free = [i for i in open_ if self.holding.get(i, 0) < self.slots]
                    if free:
                        self._place(sequence, free)
                    else:
                        sequence.admit = self._wait_for_slot
                        self.backlog.append(sequence)
        elif sequence is None:
            raise InvalidInput(f"inference request for sequence {key} to model '{self.model}' must specify the "
                               "START flag on the first request of the sequence")
        sequence.pending += 1
        sequence.last_used = now
        timeout_us = parameters.get("timeout")
        if sequence.admit is not None and isinstance(timeout_us, (int, float)) and timeout_us > 0:
            expires = now + timeout_us / 1e6  # as Triton: a backlog sequence expires at its soonest timeout
            sequence.expires = expires if sequence.expires is None else min(sequence.expires, expires)
        self.running[sequence.instance] = self.running.get(sequence.instance, 0) + 1
        if parameters.get("sequence_end"):  # as Triton: the ID is free once its END arrives, not when it ran
            del self.active[key]
        return key, sequence

    def close(self, key, sequence: Sequence, ended: bool) -> None:
        sequence.pending -= 1
        sequence.last_used = time.monotonic()
        self.running[sequence.instance] -= 1
        if ended and self.active.get(key) is sequence and not sequence.pending:
            del self.active[key]
        # no request left and no longer the active sequence of its ID (ended, or replaced): nothing will
        # come to free its slot later, whichever of its requests finished last
        if self.slots and not sequence.pending and self.active.get(key) is not sequence:
            if sequence in self.backlog:
                self.backlog.remove(sequence)
            self._free_slot(sequence)
        self._free_closed()

    def control_arrays(self, key, parameters: Dict[str, Any], rows: int) -> List[Tuple[str, np.ndarray]]:
        shape = (rows, 1) if self.batch_dim else (1,)
        out = []
        for control in self.controls:
            if control.kind == "CONTROL_SEQUENCE_CORRID":
                if control.dtype is np.object_:
                    array = np.full(shape, str(key).encode("utf-8"), dtype=object)
                elif isinstance(key, str):
                    raise InvalidInput(f"model '{self.model}' takes integer correlation IDs (its CORRID control "
                                       f"is {np.dtype(control.dtype).name}); got the string '{key}'")
                else:  # Triton copies the ID's low bytes: a narrower type wraps rather than fails
                    array = np.full(shape, np.uint64(key).astype(control.dtype), dtype=control.dtype)
            else:
                on = {"CONTROL_SEQUENCE_START": bool(parameters.get("sequence_start")),
                      "CONTROL_SEQUENCE_END": bool(parameters.get("sequence_end")),
                      "CONTROL_SEQUENCE_READY": True}[control.kind]
                array = np.full(shape, control.false_true[1 if on else 0], dtype=control.dtype)
            out.append((control.name, array))
        return out
