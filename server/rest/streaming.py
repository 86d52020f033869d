"""A model whose `predict` returns an async iterator (KServe's `AsyncIterator[Any]`) is answered with a
chunked response of what it yields, on V1 `:predict` and V2 `/infer` alike: str as UTF-8, bytes as
they are, anything else as JSON. Like KServe's `StreamingResponse(content=...)` the answer names no
content type (the model's items may be text, JSON lines or bytes) and carries the model's response headers.

The first item is awaited before anything is sent, so a model that fails at once still gets its
error status; a failure after that can only cut the stream short (the status is already out), and
the connection is closed rather than reused.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import orjson

from gpuserve.server.rest.common import JSON_OPTIONS

logger = logging.getLogger("gpuserve.rest")
_EMPTY = object()


def is_stream(response: Any) -> bool:
    return hasattr(response, "__aiter__") and not isinstance(response, (dict, str, bytes))


def chunk(item: Any) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    return orjson.dumps(item, option=JSON_OPTIONS)


class Stream:
    """A model's stream, its first item already taken (so errors before it are ordinary errors)."""

    def __init__(self, iterator: AsyncIterator[Any], first: Any):
        self.iterator = iterator
        self.first = first

    @classmethod
    async def start(cls, response: Any) -> "Stream":
        iterator = response.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            first = _EMPTY
        return cls(iterator, first)

    async def chunks(self):
        if self.first is _EMPTY:
            return
        yield chunk(self.first)
        async for item in self.iterator:
            yield chunk(item)

    async def send_asgi(self, send, headers: List[Tuple[bytes, bytes]]) -> None:
        """Write it through an ASGI `send` (uvicorn's, or our HTTP server's bridge, which chunks it)."""
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async for data in self.chunks():
            if data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def aclose(self) -> None:
        close = getattr(self.iterator, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:  # already failed; the failure was logged where it happened
                pass


def stream_headers(response_headers: Optional[Dict[str, str]]) -> List[Tuple[bytes, bytes]]:
    return [(str(k).lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in (response_headers or {}).items()
            if str(k).lower() not in ("content-length", "content-type", "transfer-encoding")]


def streaming_response(stream: Stream, response_headers: Optional[Dict[str, str]] = None):
    """The same answer as a Starlette response, for the FastAPI routes."""
    from starlette.responses import StreamingResponse

    return StreamingResponse(stream.chunks(), headers={k.decode(): v.decode() for k, v in
                                                       stream_headers(response_headers)})
