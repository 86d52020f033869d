"""Reading a decoupled step's responses one ahead of the ensemble: a response that later steps completed is
final when the step had ended by then, without holding any response back to find out (Triton's rule).

A background task drains the step into a buffer, so `ended()` can say, at the moment a branch of the
graph completes, whether the step has nothing more to send.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, AsyncIterator, Deque


class Lookahead:
    def __init__(self, source: AsyncIterator[Any]):
        self._source = source
        self._buffer: Deque[Any] = collections.deque()
        self._changed = asyncio.Event()
        self._done = False
        self._error: BaseException | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "Lookahead":
        self._task = asyncio.ensure_future(self._drain())
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except BaseException:  # noqa: S110 - the drain's cancellation, or the error already raised
                pass
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _drain(self) -> None:
        try:
            async for item in self._source:
                self._buffer.append(item)
                self._changed.set()
        except Exception as exc:
            self._error = exc
        finally:
            self._done = True
            self._changed.set()

    def ended(self) -> bool:
        """Nothing buffered and nothing more coming (an error still to raise counts as more)."""
        return self._done and not self._buffer and self._error is None

    def __aiter__(self) -> "Lookahead":
        return self

    async def __anext__(self) -> Any:
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self._done:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()
