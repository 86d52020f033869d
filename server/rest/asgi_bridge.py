"""The ASGI side of our HTTP server: every route but the inference ones goes to the FastAPI app.

The request body is already whole when the app runs (bodies are capped by `max_request_bytes`), so
`receive` hands it over in one message and afterwards waits for the client to go away, as ASGI asks.
Responses with a Content-Length are written as they come; without one (streaming) they are sent
chunked. A HEAD answer keeps its headers and drops its body.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, List, Optional, Tuple

from gpuserve.server.rest.wire import head

if TYPE_CHECKING:  # pragma: no cover
    from gpuserve.server.rest.http11 import HttpConnection, Request

_ASGI = {"version": "3.0", "spec_version": "2.3"}


def scope_of(connection: "HttpConnection", request: "Request") -> dict:
    path, raw_path, query = request.split_url()
    return {"type": "http", "asgi": _ASGI, "http_version": request.version, "server": connection.local,
            "client": connection.client, "scheme": "http", "method": request.method, "root_path": "",
            "path": path, "raw_path": raw_path, "query_string": query, "headers": request.headers,
            "state": {}}


def starlette_request(connection: "HttpConnection", request: "Request"):
    from starlette.requests import Request as StarletteRequest

    return StarletteRequest(scope_of(connection, request), Exchange(connection, request).receive)


class Exchange:
    """receive/send of one request; `status` is what was answered (500 if the app answered nothing)."""

    def __init__(self, connection: "HttpConnection", request: "Request") -> None:
        self.connection = connection
        self.request = request
        self.body_sent = False
        self.started: Optional[Tuple[int, List[Tuple[bytes, bytes]]]] = None
        self.chunked = False
        self.complete = False
        self.status = 500

    async def receive(self) -> dict:
        if not self.body_sent:
            self.body_sent = True
            body = self.request.body
            if type(body) is memoryview:  # an aligned binary body (aligned_body): ASGI apps are handed bytes
                body = bytes(body)
            return {"type": "http.request", "body": body, "more_body": False}
        connection = self.connection
        if not connection.closed and not self.complete:
            if connection.disconnected is None or connection.disconnected.done():
                connection.disconnected = connection.loop.create_future()
            await connection.disconnected
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        kind = message["type"]
        connection, request = self.connection, self.request
        if kind == "http.response.start":
            if self.started is not None:
                raise RuntimeError("http.response.start sent twice")
            headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
            self.started = (message["status"], headers)
            self.status = message["status"]
            return
        if kind != "http.response.body":
            return  # trailers and other extensions are not offered (scope has no "extensions")
        if self.started is None:
            raise RuntimeError("http.response.body before http.response.start")
        if self.complete:
            raise RuntimeError("response already complete")
        body, more = message.get("body", b""), message.get("more_body", False)
        if connection.closed:
            self.complete = not more
            return
        if self.started is not True:
            status, headers = self.started
            self.started = True
            if any(name == b"connection" and b"close" in value.lower() for name, value in headers):
                request.keep_alive = False
            length = None
            if not any(name == b"content-length" for name, _ in headers):
                if more:
                    self.chunked = True
                    headers = headers + [(b"transfer-encoding", b"chunked")]
                else:
                    length = len(body)
            close = connection.closes_after(request)
            if close:
                headers = [(n, v) for n, v in headers if n != b"connection"]
            parts = head(status, headers, connection.server.date, length, close)
        else:
            parts = []
        if request.method != "HEAD":
            if self.chunked:
                if body:
                    parts += (b"%x\r\n" % len(body), body, b"\r\n")
                if not more:
                    parts.append(b"0\r\n\r\n")
            else:
                parts.append(body)
        if parts:
            connection.transport.write(b"".join(parts))
        if not more:
            self.complete = True
            if connection.disconnected is not None and not connection.disconnected.done():
                connection.disconnected.set_result(None)  # listeners for disconnect may stop now
        elif connection.writing_paused is not None:
            await connection.writing_paused


async def run_asgi(app, connection: "HttpConnection", request: "Request") -> int:
    exchange = Exchange(connection, request)
    try:
        await app(scope_of(connection, request), exchange.receive, exchange.send)
    except asyncio.CancelledError:
        raise
    except Exception:
        if exchange.started is None and not connection.closed:
            raise  # nothing sent yet: the caller answers 500
        request.keep_alive = False  # half a response went out: the connection cannot be reused
        return exchange.status
    if not exchange.complete:
        if exchange.started is None:
            raise RuntimeError("the application returned without a response")
        request.keep_alive = False
    return exchange.status
