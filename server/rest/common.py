"""Pieces every REST route shares: body reading with a size cap, orjson responses, the error table.

Handlers are wrapped by `guarded`, which turns any exception into `{"error": "..."}` with the
status from `gpuserve.errors` (or a user-registered exception handler), logs it, and never lets it
escape to the ASGI server.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gpuserve.compression import ENCODINGS, inflate
from gpuserve.errors import GpuserveError, InvalidInput, PayloadTooLarge, status_of, user_error_text, words_of
from gpuserve.transport_metrics import TransportMetrics

logger = logging.getLogger("gpuserve.rest")
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def json_response(content: Any, status: int = 200, headers: Optional[Dict[str, str]] = None) -> Response:
    return Response(orjson.dumps(content, option=JSON_OPTIONS), status_code=status,
                    media_type="application/json", headers=headers)


def error_response(exc: BaseException) -> Response:
    status, _ = status_of(exc)
    headers = getattr(exc, "headers", None) or None
    message = user_error_text(exc) or words_of(exc) or type(exc).__name__
    if status >= 500:  # a traceback where it tells more than the message: an exception outside the error
        # table (a bug, a model's own), or one of ours raised from such (as gRPC logs them, server/grpc/service.py)
        cause = exc.__cause__
        unexpected = not isinstance(exc, GpuserveError) or cause is not None and not isinstance(cause, GpuserveError)
        logger.error("request failed with %s: %s", status, message, exc_info=status == 500 and unexpected)
    else:
        logger.warning("request rejected with %s: %s", status, message)
    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json",
                    headers=headers)


def response_parts(response: Response) -> Tuple[int, bytes, List[Tuple[bytes, bytes]]]:
    """(status, body, headers without Content-Length) of a Starlette response, for servers that frame
    the body themselves."""
    headers = [(k, v) for k, v in response.raw_headers if k != b"content-length"]
    return response.status_code, bytes(response.body), headers


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes before reading it where the length is known."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        except ValueError:
            raise InvalidInput("invalid Content-Length header") from None
        try:
            return await request.body()
        except ClientDisconnect:
            raise InvalidInput("client disconnected before sending the whole body") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decompress(body: bytes, encoding: Optional[str], limit: int) -> bytes:
    """Undo `Content-Encoding: gzip|deflate` (tritonclient's request_compression_algorithm), capped at `limit`."""
    if not encoding or encoding == "identity":
        return body
    encoding = encoding.strip().lower()
    if encoding not in ENCODINGS:
        raise InvalidInput(f"unsupported Content-Encoding '{encoding}'; use gzip or deflate")
    return inflate(body, encoding, limit)


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidInput("request body is empty; expected JSON")
    return loads(body)


def loads(body) -> Any:
    """orjson, and where it refuses NaN / Infinity / -Infinity (which tritonclient's JSON encoder writes for
    such floats, and Triton reads), Python's json, which takes them."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raw = body if isinstance(body, (bytes, bytearray)) else bytes(body)
        if b"NaN" in raw or b"Infinity" in raw:
            try:
                return json.loads(raw)
            except ValueError:
                pass
        raise InvalidInput(f"Unrecognized request format: {exc}") from None


# The content types KServe's V1 reads as JSON; a body of any other declared type reaches the model as bytes.
V1_JSON_TYPES = frozenset({"application/json", "application/cloudevents+json", "application/ld+json",
                           "application/octet-stream"})


def v1_payload(body: bytes, headers: Dict[str, str]) -> Any:
    """A V1 body as KServe hands it to `preprocess`: parsed JSON, or the raw bytes when the client declared
    another content type (an image, text), which a KServe model decodes itself."""
    declared = (headers.get("content-type") or "").split(";")[0].strip().lower()
    if declared and declared not in V1_JSON_TYPES:
        # JSON all the same when it is JSON: curl -d declares form data, hey text/html, ab text/plain; a
        # body that is not (an image, text) reaches the model as bytes
        if bytes(body[:256]).lstrip()[:1] in (b"{", b"["):  # a look at its start, not a copy of it all
            try:
                return parse_json(body)
            except InvalidInput:
                pass
        return body if type(body) is bytes else bytes(body)  # a large body arrives in a bytearray; KServe gives bytes
    return parse_json(body)


def v1_request(body: bytes, headers: Dict[str, str]) -> Tuple[Any, Any]:
    """(payload, CloudEvent or None) of a V1 request: a binary event's data is read whatever its content type."""
    from gpuserve.server.rest import cloudevents

    if all(h in headers for h in cloudevents.BINARY_HEADERS):
        return cloudevents.read(None, body, headers)
    return cloudevents.read(v1_payload(body, headers), body, headers)


def v1_answer(model_name: str, response: Any, event: Any,
              response_headers: Optional[Dict[str, str]]) -> Optional[Tuple[bytes, Dict[str, str]]]:
    """The answer to a request that came as a CloudEvent, as one (body, headers); None for any other."""
    if event is None or not event.answer_as_event:
        return None
    from gpuserve.server.rest import cloudevents

    body, headers = cloudevents.write(model_name, response, event)
    return body, {**(response_headers or {}), **headers}


async def json_object_body(request: Request, required: bool = False, limit: int = 1 << 20) -> dict:
    """The small JSON object an extension route takes; an empty body is {} unless `required`."""
    body = await read_body(request, limit)
    if not body.strip():
        if required:
            raise InvalidInput("request body is empty; expected a JSON object")
        return {}
    value = parse_json(body)
    if not isinstance(value, dict):
        raise InvalidInput("request body must be a JSON object")
    return value


class ErrorRoutes:
    """User exception handlers (ModelServer.register_exception_handler) consulted before the table."""

    def __init__(self) -> None:
        self.handlers: Dict[type, Callable] = {}

    async def respond(self, request: Request, exc: BaseException) -> Response:
        for klass in type(exc).__mro__:
            handler = self.handlers.get(klass)
            if handler is not None:
                try:
                    result = handler(request, exc)
                    if inspect.isawaitable(result):
                        result = await result
                    return result
                except Exception as inner:  # a broken handler still gets a clean answer
                    return error_response(inner)
        return error_response(exc)


def guarded(errors: ErrorRoutes, metrics: Optional[TransportMetrics] = None) -> Callable:
    """Map exceptions through the error table and count each request by endpoint, method and status."""

    def wrap(handler: Callable) -> Callable:
        endpoint = handler.__name__

        @functools.wraps(handler)
        async def run(*args, **kwargs):
            request = kwargs.get("request")
            start = time.perf_counter()
            if metrics is not None:
                metrics.rest_in_progress += 1
            try:
                response = await handler(*args, **kwargs)
            except Exception as exc:
                response = await errors.respond(request, exc)
            finally:
                if metrics is not None:
                    metrics.rest_in_progress -= 1
            if metrics is not None:
                metrics.observe_rest(endpoint, request.method if request is not None else "",
                                     response.status_code, time.perf_counter() - start)
            return response

        return run

    return wrap


async def cancel_on_disconnect(receive, task) -> bool:
    """Cancel `task` when the client goes (read after the body: the next ASGI message is the disconnect)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return True
