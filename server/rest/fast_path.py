"""The inference routes, shared by both HTTP servers: `respond` for ours, raw ASGI under uvicorn.

`POST /v2/models/{name}[/versions/{v}]/infer` and `POST /v1/models/{name}:predict` carry nearly all
traffic, and for small models the web framework's request objects, routing and dependency solving
cost more than the model. These routes are matched by string operations and call the same
data-plane functions the FastAPI routes use. Our HTTP server (http11.py) calls `respond` with the
whole body; under uvicorn this class sits in front of FastAPI as ASGI middleware, reads the body from
`receive` and writes the response with two `send` calls. Everything else (and the OpenAPI
documentation of these routes) stays with FastAPI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Dict, List, Optional, Tuple

import orjson

from gpuserve.compression import COMPRESS_MIN_BYTES, compress, response_encoding
from gpuserve.dataplane import DataPlane
from gpuserve.errors import (InferenceError, InvalidInput, ModelNotFound, PayloadTooLarge, cancelled_here,
                             escaped)
from gpuserve.model import InferenceVerb
from gpuserve.server.binary import Parts, decode_request, infer_body_buffer
from gpuserve.server.rest.common import (JSON_OPTIONS, ErrorRoutes, cancel_on_disconnect, decompress, error_response,
                                         parse_json, response_parts, v1_answer, v1_request)
from gpuserve.server.rest.streaming import Stream, is_stream, stream_headers
from gpuserve.server.rest.torchserve import answer as torchserve_answer
from gpuserve.server.rest.v2 import encode_infer_bytes
from gpuserve.types import InferRequest, InferResponse

logger = logging.getLogger("gpuserve.http")
_JSON = [(b"content-type", b"application/json")]
NOT_PROBED = object()  # `respond`'s request had no look into the response cache before it (see `probe`)


def match(path: str) -> Optional[Tuple[str, str, Optional[str]]]:
    """('infer', name, version), ('predict', name, None) or ('torchserve', name, version) (TorchServe's
    `/predictions/NAME[/VERSION]`) for the hot paths, else None."""
    if path.startswith("/predictions/"):
        name, _, version = path[13:].partition("/")
        if name and "/" not in version:
            return "torchserve", name, version or None
        return None
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        middle = path[11:-6]
        if not middle or "/" not in middle:
            return ("infer", middle, None) if middle else None
        name, sep, version = middle.partition("/versions/")
        if sep and name and version and "/" not in name and "/" not in version:
            return "infer", name, version
        return None
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        name = path[11:-8]
        if name and "/" not in name:
            return "predict", name, None
    return None


def header_dict(pairs) -> Dict[str, str]:
    """ASGI-style (name, value) byte pairs as the data plane's {lower-case name: value}."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in pairs}


class FastPath:
    def __init__(self, app, plane: DataPlane, errors: ErrorRoutes, body_limit: int, compress: bool = True):
        self.app = app
        # False: answers never compressed, whatever Accept-Encoding asks (MLServer's gzip_enabled false)
        self.compress = compress
        self.plane = plane
        self.errors = errors
        self.body_limit = body_limit
        self.metrics = plane.transport_metrics
        self.tracer = plane.runtime_settings.tracer

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        route = match(scope["path"])
        if route is None:
            return await self.app(scope, receive, send)

        def make_request():
            return _starlette_request(scope, receive)

        try:
            body, headers = await self._read(scope, receive, route)
        except Exception as exc:
            start = time.perf_counter()
            status, content, response_headers = await self.error(make_request, exc)
            self.observe(route, status, start)
        else:
            # A client that goes away cancels its request: queued work is then skipped by the batcher.
            handler = asyncio.current_task()
            watcher = asyncio.ensure_future(cancel_on_disconnect(receive, handler))
            try:
                status, content, response_headers = await self.respond(route, body, headers, make_request)
            except asyncio.CancelledError:
                if watcher.done() and not watcher.cancelled() and watcher.result():
                    return  # nobody is listening; nothing is sent
                raise
            finally:
                watcher.cancel()
        if isinstance(content, Stream):
            return await content.send_asgi(send, response_headers)
        await send({"type": "http.response.start", "status": status,
                    "headers": response_headers + [(b"content-length", str(len(content)).encode())]})
        if type(content) is Parts:  # a large binary answer, sent piece by piece rather than joined
            for index, part in enumerate(content.parts):
                await send({"type": "http.response.body", "body": part, "more_body": index + 1 < len(content.parts)})
            return
        await send({"type": "http.response.body", "body": content})

    def probe(self, route, body: bytes, raw_headers) -> Tuple[Optional[tuple], object]:
        """Before any task is made: (the answer, None) when these exact request bytes were answered from
        the response cache before (gpuserve/response_cache.py), else (None, what `respond` takes as
        `probed`: the request's byte digest, or NOT_PROBED). Our HTTP server answers such a hit inside
        the read callback, sparing a task and a loop turn."""
        cache = self.plane.response_cache
        if cache is None or route[0] != "infer" or not cache.answers_bytes_for(route[1]) or self.tracer.on:
            return None, NOT_PROBED  # while tracing, `respond` samples first: a traced hit is traced
        length = None
        for name, value in raw_headers:
            if name == b"inference-header-content-length":
                length = value.decode("latin-1")
            elif name == b"content-encoding":
                return None, NOT_PROBED  # the bytes that count are the decompressed ones: the full path
        start = time.perf_counter()
        request_key = cache.bytes_key(_form(route, length), body)
        answer = self.plane.cached_answer(request_key) if request_key is not None else None
        if answer is None:
            return None, request_key
        self.observe(route, answer[0], start)
        accept = next((value.decode("latin-1") for name, value in raw_headers if name == b"accept-encoding"), None)
        return _encoded(route, answer, accept if self.compress else None), None

    async def respond(self, route, body: bytes, headers: Dict[str, str], make_request,
                      probed: object = NOT_PROBED) -> Tuple[int, bytes, list]:
        """The answer to a whole (still compressed) request body, for both servers.

        Cancellation (the client went away) propagates; every other failure becomes its error
        response, through the user's exception handlers when there are any (`make_request` builds
        the Starlette request those handlers take, only then)."""
        start = time.perf_counter()
        trace = None
        if self.tracer.on and route[0] == "infer":  # Triton's request traces (gpuserve/tracing.py)
            trace = self.tracer.sample(route[1], headers)
            if trace is not None:
                trace.stamp("HTTP_RECV_START")
                trace.stamp("HTTP_RECV_END")
        self.metrics.rest_in_progress += 1
        try:
            status, content, response_headers = await self._answer(
                route, decompress(body, headers.get("content-encoding"), self.body_limit), headers, probed, trace)
        except Exception as exc:
            status, content, response_headers = await self.error(make_request, exc)
        except BaseException as exc:
            if cancelled_here(exc):
                if trace is not None:
                    trace.end()
                raise
            # model code that raised outside Exception, where nothing nearer caught it: 500, keep serving
            status, content, response_headers = await self.error(make_request, escaped(exc))
        finally:
            self.metrics.rest_in_progress -= 1
        self.observe(route, status, start)
        answer = _encoded(route, (status, content, response_headers),
                          headers.get("accept-encoding") if self.compress else None)
        if trace is None:
            return answer
        # as Triton's, whose points are its HTTP library's reply write: the caller writes the answer in
        # this same loop step, so HTTP_SEND_END is stamped at the next one, after the write
        trace.stamp("HTTP_SEND_START")
        asyncio.get_running_loop().call_soon(_sent, trace)
        return answer

    def observe(self, route, status: int, start: float) -> None:
        self.metrics.observe_rest("infer_latest" if route[0] == "infer" and route[2] is None else
                                  "infer_version" if route[0] == "infer" else
                                  "torchserve_predictions" if route[0] == "torchserve" else "predict",
                                  "POST", status, time.perf_counter() - start)

    async def _read(self, scope, receive, route) -> Tuple[bytes, Dict[str, str]]:
        headers = header_dict(scope["headers"])
        declared = headers.get("content-length")
        whole = None  # a large binary inference body, its tensor data aligned (as our HTTP server reads it)
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise InvalidInput("invalid Content-Length header") from None
            if length > self.body_limit:
                raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of "
                                      f"{self.body_limit} bytes")
            whole = infer_body_buffer(length, headers.get("inference-header-content-length"),
                                      headers.get("content-encoding"), route)
        chunks: List[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidInput("client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            if chunk:
                start, size = size, size + len(chunk)
                if size > self.body_limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {self.body_limit} bytes")
                if whole is not None and size > len(whole):  # more than declared (the server refuses that first)
                    chunks, whole = [bytes(whole[:start])], None
                if whole is not None:
                    whole[start:size] = chunk
                else:
                    chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if whole is not None:
            return (whole if size == len(whole) else bytes(whole[:size])), headers
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), headers

    async def _answer(self, route, body: bytes, headers: Dict[str, str], probed: object = NOT_PROBED,
                      trace=None) -> Tuple[int, bytes, list]:
        kind, name, version = route
        if kind == "torchserve":  # TorchServe's inference API: its own bodies and errors (server/rest/torchserve.py)
            return await torchserve_answer(self.plane, name, version, body, headers)
        if kind == "predict":
            payload, event = v1_request(body, headers)
            response, response_headers = await self.plane.predict_v1(name, payload, headers, InferenceVerb.PREDICT)
            if is_stream(response):
                return 200, await Stream.start(response), stream_headers(response_headers)
            as_event = v1_answer(name, response, event, response_headers)
            if as_event is not None:
                return 200, as_event[0], _with([], as_event[1])
            if isinstance(response, (bytes, str)):  # KServe sends a model's text or bytes as they are
                return 200, response.encode() if isinstance(response, str) else response, \
                    _with([], response_headers)
            if hasattr(response, "to_rest") and not isinstance(response, dict):
                raise InferenceError(f"model '{name}' returned {type(response).__name__} to a V1 request")
            return 200, orjson.dumps(response, option=JSON_OPTIONS), _with(_JSON, response_headers)
        length = headers.get("inference-header-content-length")
        cache = self.plane.response_cache
        if probed is not NOT_PROBED:  # looked up already (`probe`), and missed
            request_key = probed
        elif cache is not None and cache.answers_bytes_for(name):
            try:
                request_key = cache.bytes_key(_form(route, length), body)
                answer = self.plane.cached_answer(request_key) if request_key is not None and trace is None \
                    else None  # a traced request's hit is answered (and traced) by the data plane
            except Exception:  # never fail a request here: the full path answers it
                logger.exception("response cache lookup failed")
                request_key = answer = None
            if answer is not None:  # the same bytes answered before from the response cache
                return answer
        else:
            request_key = None
        try:
            if length is not None:
                request = decode_request(body, length, name, version, self.plane.model_config)
            else:
                request = InferRequest.from_rest(name, parse_json(body), version)
        except InvalidInput:
            if self.plane.repository.get_model(name, version) is None:  # as Triton: the model is looked up first
                raise ModelNotFound(name, version) from None
            raise
        request.trace = trace
        response, response_headers = await self.plane.infer(request, headers)
        if type(response) is not InferResponse and is_stream(response):
            return 200, await Stream.start(response), stream_headers(response_headers)
        status, content, content_type, extra = encode_infer_bytes(response, request, response_headers)
        answer = status, content, _with([(b"content-type", content_type)], extra)
        if request.cache_key is not None and not response_headers:
            try:
                if request_key is None:  # this model's first kept answer, or not looked up
                    request_key = cache.bytes_key(_form(route, length), body)
                if request_key is not None:
                    cache.put_encoded(request_key, request.cache_key, answer, name, version, len(content))
            except Exception:  # the request is answered; only the cache missed out
                logger.exception("response cache insertion failed")
        return answer

    async def error(self, make_request, exc: Exception) -> Tuple[int, bytes, list]:
        if self.errors.handlers:
            return response_parts(await self.errors.respond(make_request(), exc))
        return response_parts(error_response(exc))


def _encoded(route, answer: Tuple[int, object, list], accept: Optional[str]) -> Tuple[int, object, list]:
    """A successful inference answer compressed as `Accept-Encoding` asks (Triton compresses those only)."""
    status, content, headers = answer
    if not accept or status != 200 or route[0] != "infer" or not isinstance(content, (bytes, bytearray, Parts)) \
            or len(content) < COMPRESS_MIN_BYTES:
        return answer
    encoding = response_encoding(accept)
    if encoding is None:
        return answer
    if type(content) is Parts:  # compressed whole, as before: the client asked for it
        content = bytes(content)
    return status, compress(content, encoding), headers + [(b"content-encoding", encoding.encode())]


def _sent(trace) -> None:
    trace.stamp("HTTP_SEND_END")
    trace.end()


def _form(route, header_length: Optional[str]) -> str:
    """What besides the body makes an HTTP inference request (the response cache's byte key)."""
    return f"http\x00{route[1]}\x00{route[2] or ''}\x00{header_length or ''}"


def _starlette_request(scope, receive):
    from starlette.requests import Request

    return Request(scope, receive)


def _with(base: list, extra: Optional[Dict[str, str]]) -> list:
    """The server's headers and a model's (checked by the data plane: gpuserve/response_headers.py); a
    model's Content-Type replaces the server's, as KServe lets it."""
    if not extra:
        return base
    added = [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in extra.items()]
    if any(name.lower() == b"content-type" for name, _ in added):
        base = [(name, value) for name, value in base if name != b"content-type"]
    return base + added

