"""The responses of one request to a decoupled model, from the model's threads to the request's task.

Why a window: a model's `send` returns at once, so a model that makes responses faster than its client
reads them queues all of them in the server (Triton's stub instead waits for the server to take each). With
a window a sender may run `SEND_WINDOW` responses ahead of the request's reader, then waits for it. The
server loop's own thread never waits (a model may answer from there), and a reader that stops reading (a
stalled client) does not hold the model: after `STALL_S` its stream stops pacing and queues as before.
It was tried first for time to first token under saturation (32 streams: 24 ms against Triton's 7 ms).

Off by default (`decoupled_send_window: 0`). Measured on the quiet 2-core VM (benchmarks/RESULTS.md, 2026-12-05,
a model making 32 tokens as fast as it can): a window of 2 cut the first token's time at 8 clients (3.2-4.3 ->
2.4 ms) but not at 32 (22-24 -> 27-29 ms), where the tokens wait in the gRPC stream's own queue, and it halved
tokens/s at 8 and 32 clients and doubled the server's CPU per token (every token then wakes a thread). A model
that makes tokens at a model's pace (slower than its reader) never waits either way; the window bounds what a
slow reader leaves queued.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import threading
import time
from typing import Dict, List, Optional

SEND_WINDOW = 0  # responses a sender may have made that the reader has not taken yet (0: no limit)
STALL_S = 1.0  # a sender waits this long for a reader at most; then the stream queues without bound
ORDER_WAIT_S = 1.0  # a reader waits this long at most for another request's earlier response to be read


class SendOrder:
    """The responses of one gRPC stream's decoupled requests leave in the order their models sent them, as
    Triton's stream writes them. Each request's responses have their own reader (the stream's pump for that
    request), and a reader that started late (its request's task finished after its model had already sent)
    would otherwise let a later request's response overtake (a CI run saw 0, 0, 1 where 0, 1, 0 was sent).
    Stamps are taken on the loop's thread as sends arrive, so in send order; a reader hands over its response
    only once every earlier stamp was read. A reader that never comes (its request failed around it) holds the
    others `ORDER_WAIT_S` once: the stamps it blocks with are then given up."""

    def __init__(self) -> None:
        self.members = 0  # response streams of the gRPC stream's requests not closed yet: alone, one needs no stamps
        self._next = 0
        self._pending: List[int] = []  # a heap of stamps taken and not yet read
        self._read: set = set()
        self._waiters: Dict[int, asyncio.Future] = {}

    def stamp(self) -> int:
        stamp = self._next
        self._next += 1
        heapq.heappush(self._pending, stamp)
        return stamp

    def _first(self) -> Optional[int]:
        while self._pending and self._pending[0] in self._read:
            self._read.discard(heapq.heappop(self._pending))
        return self._pending[0] if self._pending else None

    def release(self, stamps) -> None:
        first = self._first()  # stamps below it were read (or given up) already
        self._read.update(s for s in stamps if first is not None and s >= first)
        first = self._first()
        waiter = self._waiters.get(first)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def turn(self, stamp: int) -> None:
        first = self._first()
        if first is None or stamp <= first:
            return
        waiter = self._waiters[stamp] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(waiter, ORDER_WAIT_S)
        except asyncio.TimeoutError:
            self.release([s for s in self._pending if s < stamp])  # given up: their reader never came
        finally:
            self._waiters.pop(stamp, None)


# Set per request by a gRPC stream: a one-item list the request's first decoupled response stream takes.
SEND_ORDER: "contextvars.ContextVar[Optional[list]]" = contextvars.ContextVar("gpuserve_send_order", default=None)


def configure(window: int) -> None:
    """The server's `decoupled_send_window` setting."""
    global SEND_WINDOW
    SEND_WINDOW = max(0, int(window))


class ResponseStream:
    """Sent from any thread, read by the request's task in order, ending with the item marked final."""

    times_first_response = True  # the engine leaves timing this request's first response to the reader

    def __init__(self, loop: asyncio.AbstractEventLoop, window: Optional[int] = None):
        window = SEND_WINDOW if window is None else window
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._cancelled = False  # the client stopped listening before the final response
        self.created = time.perf_counter_ns()  # the request's start, for its time to first response
        self._reader_thread = threading.get_ident()  # made on the server loop's thread, which never waits
        self._paced = window > 0
        self._room = threading.Semaphore(window) if window > 0 else None
        holder = SEND_ORDER.get()
        self._order: Optional[SendOrder] = holder.pop() if holder else None
        if self._order is not None:
            self._order.members += 1
        self._stamps: List[int] = []  # this stream's stamps not yet read, oldest first
        self._ended = False  # its final response has arrived: later sends are not ordered

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @cancelled.setter
    def cancelled(self, value: bool) -> None:
        self._cancelled = bool(value)
        if value and self._room is not None:
            self._paced = False
            self._room.release(64)  # wake the waiting senders (one, as a rule; any left wake after STALL_S)

    def is_cancelled(self) -> bool:
        return self._cancelled

    def put(self, item, final: bool) -> None:
        """From any thread."""
        took = False
        if self._paced and threading.get_ident() != self._reader_thread:
            took = self._room.acquire(timeout=STALL_S)
            if not took and not self._cancelled:
                self._paced = False  # nobody reads: stop holding the model back
        try:
            self._loop.call_soon_threadsafe(self._arrive, item, final, took)
        except RuntimeError:  # the server's loop has closed: nobody is listening any more
            pass

    def _arrive(self, item, final: bool, took: bool) -> None:
        stamp = None  # a request alone on its stream is not stamped: whatever joins later sends after these
        if self._order is not None and self._order.members > 1 and not self._ended and not self._cancelled:
            stamp = self._order.stamp()
            self._stamps.append(stamp)
        self._ended = self._ended or final
        self._queue.put_nowait((item, final, took, stamp))

    async def get(self):
        item, final, took, stamp = await self._queue.get()
        if took:
            self._room.release()
        order = self._order
        if stamp is not None and order is not None:
            try:
                await order.turn(stamp)
            finally:
                if stamp in self._stamps:
                    self._stamps.remove(stamp)
                    order.release([stamp])
        return item, final

    def close(self) -> None:
        """The reader is done (final read, or its client left): what it never read holds no other reader."""
        self._ended = True
        order, self._order = self._order, None
        if order is not None:
            order.members -= 1
            if self._stamps:
                order.release(self._stamps)
                self._stamps = []
