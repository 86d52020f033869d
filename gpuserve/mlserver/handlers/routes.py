"""A runtime's `@custom_handler` methods as FastAPI routes, answering as MLServer's REST app answers them.

MLServer mounts each marked method with its own route class, so a client sees: the body of a
gzip-encoded request inflated before the method reads it, JSON without a Content-Type header still
parsed as JSON (the FastAPI MLServer 1.7.1 pins did so), a returned value written as JSON (bytes
as text), an `MLServerError` as `{"error": message}` with its status, FastAPI's own
`{"detail": ...}` for an `HTTPException`, a validation failure (422) or a wrong method (405).
`CustomRoute` gives the same answers on gpuserve's app, and `answer` serves a request inside a
parallel worker, where the runtime lives (gpuserve/parallel.py).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gpuserve.compression import ENCODINGS, inflate
from gpuserve.errors import status_of

logger = logging.getLogger("gpuserve.rest")
_LENIENT = "strict_content_type" in inspect.signature(APIRoute.__init__).parameters
BODY_LIMIT = 256 * 1024 * 1024


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


class JSONAnswer(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_text, option=orjson.OPT_SERIALIZE_NUMPY)


class InflatingRequest(Request):
    """A request whose body is read inflated when it came gzip- or deflate-encoded."""

    limit = BODY_LIMIT

    async def body(self) -> bytes:
        if not hasattr(self, "_inflated"):
            self._inflated = _inflate(await super().body(), self.headers.get("content-encoding"), self.limit)
        return self._inflated


def _inflate(body: bytes, encoding: Optional[str], limit: int) -> bytes:
    """As MLServer's gzip middleware: other encodings reach the handler as sent."""
    encoding = (encoding or "").strip().lower()
    return inflate(body, encoding, limit) if encoding in ENCODINGS else body


def error_answer(exc: BaseException) -> Response:
    if isinstance(exc, HTTPException):
        return JSONAnswer({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    status, _ = status_of(exc)
    if status >= 500:
        logger.error("custom route failed with %s", status, exc_info=exc)
    return JSONAnswer({"error": str(exc) or type(exc).__name__}, status_code=status)


class CustomRoute(APIRoute):
    """FastAPI's own route, so the method's parameters are read from the request as MLServer's app reads them;
    only the request class, the JSON writer and the error bodies are MLServer's."""

    def __init__(self, path: str, endpoint: Callable, method: str, body_limit: int = BODY_LIMIT):
        options: Dict[str, Any] = {"strict_content_type": False} if _LENIENT else {}
        self.body_limit = body_limit
        super().__init__(path, endpoint, methods=[method.upper()], response_class=JSONAnswer,
                         include_in_schema=False, **options)

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        limit = self.body_limit

        async def run(request: Request) -> Response:
            request = InflatingRequest(request.scope, request.receive)
            request.limit = limit
            try:
                return await handler(request)
            except RequestValidationError:
                raise  # FastAPI's own 422 answer
            except Exception as exc:
                return error_answer(exc)

        return run

    async def handle(self, scope, receive, send) -> None:
        if self.methods and scope["method"] not in self.methods:
            answer = JSONAnswer({"detail": "Method Not Allowed"}, status_code=405,
                                headers={"Allow": ", ".join(sorted(self.methods))})
            return await answer(scope, receive, send)
        await super().handle(scope, receive, send)


def routes_for(handlers: List[Tuple[Any, Callable]], body_limit: int = BODY_LIMIT) -> List[CustomRoute]:
    return [CustomRoute(mark.rest_path, method, mark.rest_method, body_limit) for mark, method in handlers]


_SCOPE_KEYS = ("type", "http_version", "method", "scheme", "path", "raw_path", "root_path", "query_string",
               "server", "client")


def portable_scope(scope: dict) -> dict:
    """What of a request's ASGI scope another process needs to serve it (plain, picklable values)."""
    out = {key: scope[key] for key in _SCOPE_KEYS if key in scope}
    out["headers"] = [(bytes(k), bytes(v)) for k, v in scope.get("headers", ())
                      if bytes(k).lower() not in (b"content-encoding", b"content-length")]
    return out


async def answer(app, scope: dict, body: bytes) -> Tuple[int, List[Tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of `app` for one whole request: how a parallel worker serves a route."""
    scope = dict(scope, headers=list(scope["headers"]) + [(b"content-length", str(len(body)).encode())])
    scope.setdefault("asgi", {"version": "3.0"})
    sent = False
    started: Dict[str, Any] = {}
    parts: List[bytes] = []

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            started.update(message)
        elif message["type"] == "http.response.body":
            parts.append(bytes(message.get("body", b"")))

    await app(scope, receive, send)
    headers = [(bytes(k), bytes(v)) for k, v in started.get("headers", ())]
    return int(started.get("status", 500)), headers, b"".join(parts)


def app_for(handlers: List[Tuple[Any, Callable]]):
    """A bare FastAPI app serving just these routes (in a parallel worker)."""
    from fastapi import FastAPI

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.router.routes.extend(routes_for(handlers))
    return app

