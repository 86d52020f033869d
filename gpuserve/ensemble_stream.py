"""The rest of an ensemble's graph, run for every response of a decoupled step at once, answered in the step's order.

Each response of the step starts its own flow as soon as it arrives, so the later steps see the flows together
(they batch, and a step's queue limit meets them as in Triton: qa L0_simple_ensemble
EnsembleStepMaxQueueSizeTest), while the ensemble's responses leave in the order the step gave them, so a
streaming client reads its tokens in order (Triton sends each as its flow completes, which can reorder them).
`ensemble_scheduling { max_inflight_requests: N }` bounds the flows of one request running at once (0: no bound).

A failed flow ends the request's responses with its error once the flows before it have answered; the flows after
it are cancelled. Whether the step has ended is known the moment it does (the next response is always being
read), so a response completed after the step's end can be marked final (Triton's rule).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any, AsyncIterator, Callable, Deque, Optional, Tuple

_END = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


class _Flow:
    """One response's run through the rest of the graph; its results wait in `items` for their turn."""

    __slots__ = ("items", "flagged", "task")

    def __init__(self, source: AsyncIterator[Any], flagged: bool, slots: Optional[asyncio.Semaphore]):
        self.items: asyncio.Queue = asyncio.Queue()
        self.flagged = flagged
        self.task = asyncio.ensure_future(self._run(source, slots))

    async def _run(self, source: AsyncIterator[Any], slots: Optional[asyncio.Semaphore]) -> None:
        try:
            async with contextlib.aclosing(source) as results:
                async for item in results:
                    self.items.put_nowait(item)
        except Exception as exc:
            self.items.put_nowait(_Failed(exc))
        finally:
            self.items.put_nowait(_END)
            if slots is not None:
                slots.release()


class FanOut:
    """`async for item, flagged, ended in FanOut(upstream, start, limit).results()`: each result of each flow, in
    the upstream's order; `flagged`: the upstream response it came from carried the final flag; `ended`: the
    upstream had ended and no later flow exists when the item was taken."""

    def __init__(self, upstream: AsyncIterator[Tuple[Any, bool]], start: Callable[[Any], AsyncIterator[Any]],
                 limit: int = 0):
        self._upstream = upstream
        self._start = start
        self._slots = asyncio.Semaphore(limit) if limit and limit > 0 else None
        self._flows: Deque[_Flow] = collections.deque()
        self._changed = asyncio.Event()
        self._done = False
        self._error: Optional[BaseException] = None
        self._launcher: Optional[asyncio.Task] = None

    async def _launch(self) -> None:
        try:
            async for produced, flagged in self._upstream:
                if self._slots is not None:
                    await self._slots.acquire()
                self._flows.append(_Flow(self._start(produced), flagged, self._slots))
                self._changed.set()
        except Exception as exc:
            self._error = exc
        finally:
            self._done = True
            self._changed.set()

    async def results(self) -> AsyncIterator[Tuple[Any, bool, bool]]:
        self._launcher = asyncio.ensure_future(self._launch())
        flows = self._flows
        try:
            while True:
                if not flows:
                    if self._done:
                        if self._error is not None:
                            raise self._error
                        return
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                flow = flows[0]
                item = await flow.items.get()
                if item is _END:
                    flows.popleft()
                    continue
                if isinstance(item, _Failed):
                    raise item.error
                yield item, flow.flagged, self._done and self._error is None and len(flows) == 1
        finally:
            await self._close()

    async def _close(self) -> None:
        tasks = [self._launcher] + [flow.task for flow in self._flows]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        aclose = getattr(self._upstream, "aclose", None)
        if aclose is not None:
            await aclose()
