"""The responses of one request to a decoupled model, from the model's threads to the request's task.

Why a window: a model's `send` used to return at once, so a model that makes tokens faster than the
server writes them filled the server loop's queue; under saturation a new request's first response
then waited behind every token already made (32 streams: 24 ms to the first token against Triton's
7 ms, benchmarks/RESULTS.md). Triton's stub waits for the server to take each response. Here a sender
may run `SEND_WINDOW` responses ahead of the request's reader, then waits for it, so the loop's queue
holds a few responses of each stream and a new stream's first one is near its front. The server loop's
own thread never waits (a model may answer from there), and a reader that stops reading (a stalled
client) does not hold the model: after `STALL_S` its stream stops pacing and queues as before.

Off by default (`decoupled_send_window: 0`): measured on the 2-core VM (benchmarks/RESULTS.md, 2026-12-05) a window
of 2 cut the first token's time 2-3x at 8 clients and ~1.7x at 32, but cost a third of one stream's tokens/s and
doubled the server's CPU per token, since in that benchmark the model makes tokens faster than any reader takes
them. A model that makes tokens at a model's pace (slower than the reader) never waits either way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Optional

SEND_WINDOW = 0  # responses a sender may have made that the reader has not taken yet (0: no limit)
STALL_S = 1.0  # a sender waits this long for a reader at most; then the stream queues without bound


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
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (item, final, took))
        except RuntimeError:  # the server's loop has closed: nobody is listening any more
            pass

    async def get(self):
        item, final, took = await self._queue.get()
        if took:
            self._room.release()
        return item, final
