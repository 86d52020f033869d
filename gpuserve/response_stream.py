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
