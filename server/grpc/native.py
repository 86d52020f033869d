"""gRPC on gpuserve's own HTTP/2 (server/grpc/http2.py), serving the same servicer as grpc.aio.

Opt in with `grpc_transport: "native"` (GPUSERVE_GRPC_TRANSPORT=native): grpc.aio costs ~280-300 us
of server CPU a call on the machines measured, this transport's protocol work ~40 (RESULTS.md, session
6). Each call gets a Context with the three things service.py asks of grpc.aio's (invocation metadata,
trailing metadata, abort); an abort raises a grpc.aio.AbortError subclass, so the servicer's error
table and metrics work unchanged. Unary calls run as one task once the request message is complete;
ModelStreamInfer reads its requests from a queue the connection fills and writes each answer as the
servicer yields it. Requests may be gzip- or deflate-compressed (grpc-encoding); answers are not.
`grpc-timeout` ends a call with DEADLINE_EXCEEDED; a client's RST_STREAM or a dropped connection
cancels its call. grpc.health.v1 Check and Watch are served when grpcio-health-checking is installed.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import logging
import time
import urllib.parse
import zlib
from typing import Dict, List, Optional, Tuple

import grpc
import numpy as np

from gpuserve.dataplane import DataPlane
from gpuserve.datatypes import VIEW_BYTES
from gpuserve.errors import GpuserveError, InvalidInput, InvalidSettings
from gpuserve.settings import ServerSettings
from gpuserve.server.grpc import model_repository as repository
from gpuserve.server.grpc import tfserving, tls, torchserve
from gpuserve.server.grpc.debug_delays import common_delay_s, delayed
from gpuserve.server.grpc.http2 import Http2Connection, _hpack_int, literal
from gpuserve.server.grpc.large import RawAnswer, parse_request, read_varint
from gpuserve.server.grpc.service import SERVICE, _address, health_status, restricted_servicer, rpcs
from gpuserve.server.restricted import grpc_rules, restrict_method

logger = logging.getLogger("gpuserve.grpc")

# ":status: 200" is HPACK static entry 8; content-type (static name 31) as a literal without indexing.
RESPONSE_HEADERS = b"\x88\x0f\x10" + _hpack_int(16, 7) + b"application/grpc"
HEALTH_POLL_S = 1.0  # how often a Watch looks at readiness again
HEADERS_READ_KEPT = 256  # header lists whose reading NativeGrpcServer._read keeps
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class NativeAbort(grpc.aio.AbortError):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code, self.details = code, details


class Context:
    """What service.py uses of grpc.aio's ServicerContext."""

    __slots__ = ("_metadata", "trailing", "cache_entry")
    raw_views = True  # service.py may answer with a RawAnswer (server/grpc/large.py), which `Call` writes

    def __init__(self, metadata: Tuple[Tuple[str, str], ...]):
        self._metadata = metadata
        self.trailing: Tuple[Tuple[str, str], ...] = ()
        # (response cache key, model name, version) of the answer, set by service.py when the cache holds it
        self.cache_entry: Optional[tuple] = None

    def invocation_metadata(self):
        return self._metadata

    def set_trailing_metadata(self, metadata) -> None:
        self.trailing = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = ""):
        raise NativeAbort(code, details)


def _trailer_block(code: grpc.StatusCode, details: str, trailing) -> bytes:
    parts = [literal(b"grpc-status", str(code.value[0]).encode())]
    if details:
        parts.append(literal(b"grpc-message", urllib.parse.quote(details, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")
                             .encode()))
    for key, value in trailing:
        key = str(key).lower()
        if key.endswith("-bin"):
            data = value if isinstance(value, bytes) else str(value).encode()
            parts.append(literal(key.encode(), base64.b64encode(data).rstrip(b"=")))
        else:
            parts.append(literal(key.encode(), str(value).encode("latin-1", "replace")))
    return b"".join(parts)


OK_TRAILERS = _trailer_block(grpc.StatusCode.OK, "", ())  # the trailers of a call that succeeded, said nothing more


def _metadata(headers):
    """The client's custom metadata as grpc.aio presents it: reserved headers left out, -bin values decoded."""
    for key, value in headers:
        if key.startswith((":", "grpc-")) or key in ("te", "content-type"):
            continue
        if key.endswith("-bin"):
            try:
                yield key, base64.b64decode(value + "=" * (-len(value) % 4))
            except ValueError:
                continue
        else:
            yield key, value


def _timeout(text: str) -> Optional[float]:
    if len(text) < 2 or text[-1] not in _TIMEOUT_UNITS or not text[:-1].isdigit():
        return None
    return int(text[:-1]) * _TIMEOUT_UNITS[text[-1]]


class _Method:
    __slots__ = ("name", "handler", "request_class", "streaming")

    def __init__(self, name, handler, request_class, streaming):
        self.name, self.handler, self.request_class, self.streaming = name, handler, request_class, streaming


DECOMPRESSORS = {"gzip": lambda message: zlib.decompress(message, 16 + zlib.MAX_WBITS), "deflate": zlib.decompress}
ACCEPT_ENCODING = "identity,deflate,gzip"


class Call:
    """One RPC on one HTTP/2 stream: the stream's owner for http2.py."""

    def __init__(self, server: "NativeGrpcServer", connection: Http2Connection, stream_id: int,
                 method: Optional[_Method], headers: Dict[str, str], metadata):
        self.server, self.connection, self.stream_id, self.method = server, connection, stream_id, method
        self.buffer = bytearray()
        self.big: Optional[memoryview] = None  # a large request message being received, `big_filled` of it
        self.big_filled, self.big_compressed = 0, 0
        self.encoding = headers.get("grpc-encoding", "identity")
        self.context = Context(metadata)
        self.messages: List[bytes] = []
        self.queue: Optional[asyncio.Queue] = None
        self.task: Optional[asyncio.Task] = None
        self.headers_sent = False
        self.finished = False
        self.timer = None
        self.traced = None  # MLServer's tracing_server (gpuserve/otel_mlserver.py): (start ns, headers)
        if server.spans is not None:
            self.traced = (time.time_ns(), headers)
        timeout = _timeout(headers.get("grpc-timeout", ""))
        if timeout is not None:
            self.timer = asyncio.get_running_loop().call_later(timeout, self._expire)
        if method is None:  # answered at once, as grpc does; what the client still sends is dropped
            self.finish(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        elif method.streaming:
            self.queue = asyncio.Queue()
            self.task = asyncio.ensure_future(self._run_stream())
            server.calls.add(self.task)
            self.task.add_done_callback(server.calls.discard)

    # from the connection ----------------------------------------------------------------------------
    def data(self, payload: bytes, end_stream: bool) -> None:
        if self.finished:
            return
        if payload:
            size = len(payload) - 5  # the common frame: one whole small message, nothing before it
            if size >= 0 and not self.buffer and self.big is None and size < VIEW_BYTES \
                    and size <= self.server.max_message_bytes and int.from_bytes(payload[1:5], "big") == size:
                if not self._emit(payload[0], bytes(payload[5:])):
                    return
            elif not self._take(payload):
                return
        if end_stream:
            self._ended()

    def receive_into(self, length: int, head: memoryview) -> Optional[memoryview]:
        """The connection's large DATA frame (`length` bytes, `head` of them read) goes straight into the
        large message it belongs to, when the whole frame lies inside one."""
        if self.finished:
            return None
        if self.big is not None:
            if length > len(self.big) - self.big_filled:
                return None
        else:  # the frame must start a large message (its prefix may have come in the frame before)
            need = 5 - len(self.buffer)
            if need <= 0 or len(head) < need:
                return None
            size = int.from_bytes((bytes(self.buffer) + bytes(head[:need]))[1:5], "big")
            if size < VIEW_BYTES or size > self.server.max_message_bytes or len(self.buffer) + length > 5 + size:
                return None
        if not self._take(head) or self.big is None:
            return None  # cannot happen after the checks above, but the frame would then be read the plain way
        start = self.big_filled
        self.big_filled += length - len(head)  # counted now: data_filled follows before any other frame
        return self.big[start:self.big_filled]

    def data_filled(self, end_stream: bool) -> None:
        if self.finished:
            return
        big = self.big
        if big is not None and self.big_filled == len(big):
            self.big = None
            if not self._emit(self.big_compressed, big):
                return
        if end_stream:
            self._ended()

    def _ended(self) -> None:
        if self.queue is not None:
            self.queue.put_nowait(None)
        elif len(self.messages) != 1:
            self.finish(grpc.StatusCode.INTERNAL, f"a unary call needs one request message, got {len(self.messages)}")
        else:
            message, request_key = self.messages.pop(), None
            if self.method.name == "ModelInfer" and not self.server.tracer.on:  # while tracing, a hit
                try:  # goes the full way, where it is sampled and traced
                    answer, request_key = self.server.cached_answer(message)
                except Exception:  # never fail a call here: the full path answers it, errors included
                    logger.exception("response cache lookup failed")
                    answer = None
                if answer is not None:  # these exact bytes were answered from the response cache
                    return self.answer(answer)
            self.task = self.connection.loop.create_task(self._run_unary(message, request_key))
            self.server.calls.add(self.task)
            self.task.add_done_callback(self.server.calls.discard)

    def reset(self) -> None:
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _take(self, payload) -> bool:
        """A large message's bytes land in a buffer of its size, allocated once its length is known (no
        joins as its frames arrive); other bytes gather in `buffer` and are split into messages. `payload`
        may be a view of the connection's read buffer: nothing here keeps it."""
        payload = memoryview(payload)
        while True:
            big = self.big
            if big is not None:
                size = min(len(payload), len(big) - self.big_filled)
                big[self.big_filled:self.big_filled + size] = payload[:size]
                self.big_filled += size
                if self.big_filled < len(big):
                    return True
                self.big = None
                if not self._emit(self.big_compressed, big):
                    return False
                payload = payload[size:]
                if not payload:
                    return True
            elif not self.buffer and len(payload) >= 5 and len(payload) < 5 + int.from_bytes(payload[1:5], "big"):
                if not self._begin_large(payload[0], int.from_bytes(payload[1:5], "big"), payload[5:]):
                    break  # a message under the view bound, or over the limit: the plain way says so
                return True  # a large message begins here: the payload's rest lies inside it
            else:
                break
        self.buffer += payload
        return self._split_messages()

    def _begin_large(self, compressed: int, size: int, first) -> bool:
        """Starts receiving a large message straight into a buffer of its own, `first` its first bytes."""
        if size < VIEW_BYTES or size > self.server.max_message_bytes:
            return False
        try:  # not zeroed: memory is taken as the bytes arrive, not for what is only declared
            big = memoryview(np.empty(size, np.uint8))
        except MemoryError:
            return False  # refused by _split_messages the plain way
        big[:len(first)] = first
        self.big, self.big_filled, self.big_compressed = big, len(first), compressed
        return True

    def _split_messages(self) -> bool:
        buffer = self.buffer
        while len(buffer) >= 5:
            size = int.from_bytes(buffer[1:5], "big")
            if size > self.server.max_message_bytes:
                self._end_early(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"request message of {size} bytes is over the limit of {self.server.max_message_bytes}")
                return False
            if len(buffer) < 5 + size:
                if size >= VIEW_BYTES:  # the rest goes straight into a buffer of its own
                    if not self._begin_large(buffer[0], size, memoryview(buffer)[5:]):
                        self._end_early(grpc.StatusCode.RESOURCE_EXHAUSTED, f"no memory for a message of {size} bytes")
                        return False
                    self.buffer = bytearray()
                break
            if size >= VIEW_BYTES:  # the message stays where it was received: a view, not a copy
                compressed, message = buffer[0], memoryview(buffer)[5:5 + size]
                self.buffer = buffer = bytearray(buffer[5 + size:])
            else:
                compressed, message = buffer[0], bytes(buffer[5:5 + size])
                del buffer[:5 + size]
            if not self._emit(compressed, message):
                return False
        return True

    def _emit(self, compressed: int, message) -> bool:
        if compressed:
            if self.encoding == "identity":  # the flag without a grpc-encoding: the client broke the protocol
                self._end_early(grpc.StatusCode.INTERNAL, "a compressed message needs a grpc-encoding naming its "
                                "compression")
                return False
            if self.encoding not in DECOMPRESSORS:  # gRPC's compression spec: UNIMPLEMENTED, saying what we take
                self.context.trailing += (("grpc-accept-encoding", ACCEPT_ENCODING),)
                self._end_early(grpc.StatusCode.UNIMPLEMENTED,
                                f"grpc-encoding '{self.encoding}' is not supported (supported: {ACCEPT_ENCODING})")
                return False
            try:
                message = self._decompress(message)
            except Exception as exc:
                self._end_early(grpc.StatusCode.INTERNAL, f"cannot decompress the request ({self.encoding}): {exc}")
                return False
        if self.queue is not None:
            self.queue.put_nowait(message)
        else:
            self.messages.append(message)
        return True

    def _decompress(self, message: bytes) -> bytes:
        return DECOMPRESSORS[self.encoding](message)

    def _expire(self) -> None:
        self.timer = None
        self._end_early(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _end_early(self, code: grpc.StatusCode, details: str) -> None:
        """End the call from outside its task (deadline, a bad request message): the task stops too."""
        if not self.finished:
            if self.task is not None and not self.task.done():
                self.task.cancel()
            self.finish(code, details)

    # answering --------------------------------------------------------------------------------------
    def send(self, message) -> None:
        if self.finished:
            return
        if not self.headers_sent:
            self.headers_sent = True
            self.connection.send_headers(self.stream_id, RESPONSE_HEADERS)
        if type(message) is RawAnswer:  # a large answer: its pieces, the outputs' bytes as views
            parts = message.parts()
            size = sum(len(part) for part in parts)
            self.connection.send_parts(self.stream_id, [b"\x00" + size.to_bytes(4, "big"), *parts])
            return
        self.connection.send_data(self.stream_id, b"\x00" + len(message).to_bytes(4, "big") + message)

    def answer(self, message) -> None:
        """`send(message)` and `finish(OK)`: a small answer with no trailing metadata leaves as one piece."""
        if self.finished:
            return
        if not self.headers_sent and type(message) is bytes and not self.context.trailing and \
                self.connection.send_whole(self.stream_id, RESPONSE_HEADERS,
                                           b"\x00" + len(message).to_bytes(4, "big") + message, OK_TRAILERS):
            self.headers_sent = self.finished = True
            if self.timer is not None:
                self.timer.cancel()
            if self.traced is not None:
                self._span(grpc.StatusCode.OK)
            return
        self.send(message)
        self.finish(grpc.StatusCode.OK, "")

    def finish(self, code: grpc.StatusCode, details: str) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        if self.traced is not None:
            self._span(code)
        block = _trailer_block(code, details, self.context.trailing)
        if self.headers_sent:
            self.connection.send_trailers(self.stream_id, block)
        else:  # trailers-only: one HEADERS frame ends the stream
            self.connection.send_headers(self.stream_id, RESPONSE_HEADERS + block, end_stream=True)

    def _span(self, code: grpc.StatusCode) -> None:
        begun, headers = self.traced
        peer = self.connection.transport.get_extra_info("peername") if self.connection.transport else None
        self.server.spans.grpc(headers.get(":path", ""), code.value[0], begun, headers,
                               tuple(peer[:2]) if isinstance(peer, tuple) else None)

    async def _run_unary(self, message: bytes, request_key: Optional[bytes] = None) -> None:
        method = self.method
        try:
            request = parse_request(method.request_class, message)
        except Exception as exc:
            return self.finish(grpc.StatusCode.INTERNAL, f"cannot parse the request message: {exc}")
        try:
            response = await method.handler(request, self.context)
        except NativeAbort as exc:
            return self.finish(exc.code, exc.details)
        except asyncio.CancelledError:
            return
        except Exception as exc:  # the servicer's guard answers everything; this is a bug
            logger.exception("gRPC %s failed", method.name)
            return self.finish(grpc.StatusCode.UNKNOWN, str(exc))
        try:
            answer = response if type(response) is RawAnswer else response.SerializeToString()
        except Exception as exc:  # never leave the call open until the client's deadline
            logger.exception("gRPC %s: the answer cannot be encoded", method.name)
            what = "a stream (async iterator); a unary call cannot carry it" if hasattr(response, "__aiter__") \
                else f"{type(response).__name__}: {exc}"
            return self.finish(grpc.StatusCode.INTERNAL, f"the answer cannot be encoded: {what}")
        self.answer(answer)
        if self.context.cache_entry is not None and not self.context.trailing:
            try:
                if type(answer) is RawAnswer:
                    answer = answer.SerializeToString()
                self.server.keep_answer(message, request_key, self.context.cache_entry, answer)
            except Exception:  # the call is answered; only the cache missed out
                logger.exception("response cache insertion failed")

    async def _requests(self):
        request_class = self.method.request_class
        while True:
            message = await self.queue.get()
            if message is None:
                return
            try:
                request = parse_request(request_class, message)
            except Exception as exc:  # the client's bytes: the stream ends as a unary call would, with no traceback
                raise GpuserveError(f"cannot parse the request message: {exc}") from None
            yield request

    async def _run_stream(self) -> None:
        try:
            async for response in self.method.handler(self._requests(), self.context):
                self.send(response.SerializeToString())
                if self.connection.pending_bytes(self.stream_id) > 16 << 20:  # a client that stopped reading
                    while self.connection.pending_bytes(self.stream_id) > 4 << 20 and not self.finished:
                        await asyncio.sleep(0.005)
        except NativeAbort as exc:
            return self.finish(exc.code, exc.details)
        except asyncio.CancelledError:
            return
        except Exception as exc:
            logger.exception("gRPC %s failed", self.method.name)
            return self.finish(grpc.StatusCode.UNKNOWN, str(exc))
        self.finish(grpc.StatusCode.OK, "")


class NativeGrpcServer:
    def __init__(self, plane: DataPlane, settings: ServerSettings):
        self.max_message_bytes = int(settings.grpc_max_message_bytes)
        self.connections: set = set()
        self.calls: set = set()
        self.methods = _methods(restricted_servicer(plane, settings), plane, settings,
                               grpc_rules(settings.grpc_restricted_protocol))
        self.server: Optional[asyncio.AbstractServer] = None
        self.plane = plane
        self.tracer = plane.runtime_settings.tracer
        self.spans = plane.server_spans
        self._headers_read: Dict[int, tuple] = {}  # see _read

    # the response cache's byte layer (gpuserve/response_cache.py): a ModelInfer message seen before -------
    def cached_answer(self, message: bytes) -> Tuple[Optional[bytes], Optional[bytes]]:
        """(the answer these exact bytes got before, or None; the message's digest when it was taken)."""
        cache = self.plane.response_cache
        if cache is None or not cache.answers_bytes():
            return None, None
        name = _model_name(message)
        if name is None or not cache.answers_bytes_for(name):
            return None, None  # a model with no kept answers: its requests are not hashed
        request_key = cache.bytes_key("grpc", message)
        return (self.plane.cached_answer(request_key) if request_key is not None else None), request_key

    def keep_answer(self, message: bytes, request_key: Optional[bytes], entry: tuple, answer: bytes) -> None:
        """Keep the serialized answer under the message's digest (taken here unless the lookup took it)."""
        cache = self.plane.response_cache
        if cache is not None and request_key is None:
            request_key = cache.bytes_key("grpc", message)
        if cache is not None and request_key is not None:
            key, name, version = entry
            cache.put_encoded(request_key, key, answer, name, version, len(answer))

    def open(self, connection: Http2Connection, stream_id: int, headers, end_stream: bool) -> Call:
        _, fields, method, metadata = self._read(headers)
        call = Call(self, connection, stream_id, method, fields, metadata)
        if end_stream:
            call.data(b"", True)
        return call

    def _read(self, headers) -> tuple:
        """(headers, fields, method, metadata) of a call's headers. A header list the connection kept decoded
        (http2.py `Http2Connection._decode`) comes back as the same object call after call, so what was read
        from it is kept too, under its identity, with the list itself (its identity cannot be reused while
        kept); fields and metadata are only read. Another ~3 % of a small call's cost."""
        read = self._headers_read.get(id(headers))
        if read is None or read[0] is not headers:
            fields = dict(headers)
            read = (headers, fields, self.methods.get(fields.get(":path", "")), tuple(_metadata(headers)))
            if len(self._headers_read) >= HEADERS_READ_KEPT:
                self._headers_read.clear()
            self._headers_read[id(headers)] = read
        return read

    def stop_accepting(self) -> None:
        """A shutdown's start: new connections are refused, open ones get GOAWAY (their calls under way
        finish; a client's next call reconnects and is refused, as Triton's)."""
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            connection.goaway()

    async def stop(self, grace: Optional[float]) -> None:
        self.stop_accepting()
        if self.calls:
            _, pending = await asyncio.wait(list(self.calls), timeout=grace)
            for task in pending:
                task.cancel()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection._write_out()
                connection.transport.close()


def _model_name(message: bytes) -> Optional[str]:
    """ModelInferRequest's model_name (field 1, serialized first), read without parsing the message."""
    if len(message) < 2 or message[0] != 0x0A:
        return None
    try:
        length, pos = read_varint(message, 1, min(len(message), 6))
    except InvalidInput:
        return None
    return bytes(message[pos:pos + length]).decode("utf-8", "replace") if pos + length <= len(message) else None


def _methods(servicer, plane: DataPlane, settings: ServerSettings, rules) -> Dict[str, _Method]:
    methods = {f"/{SERVICE}/{name}": _Method(name, getattr(servicer, name), request_class, streaming)
               for name, request_class, _, streaming in rpcs()}
    methods.update({f"/{repository.SERVICE}/{name}": _Method(name, getattr(servicer, name), request_class, False)
                    for name, request_class, _ in repository.repository_rpcs()})  # MLServer's repository service
    for other in (tfserving, torchserve):  # TensorFlow Serving's and TorchServe's services
        servicer = other.restricted_servicer(plane, settings)
        methods.update({f"/{service}/{name}": _Method(name, getattr(servicer, name), request_class, streaming)
                        for service, name, request_class, _, streaming in other.rpcs()})
    methods.update(_health(plane, rules))
    return methods


def _health(plane: DataPlane, rules) -> Dict[str, _Method]:
    """grpc.health.v1 Check and Watch, as service.py serves them on grpc.aio, when grpcio-health-checking is
    there: the overall ("") and inference-service health follow the data plane's readiness."""
    try:
        from grpc_health.v1 import health_pb2
    except ImportError:
        return {}
    response = health_pb2.HealthCheckResponse

    async def check(request, context):
        found = health_status(plane, request.service, health_pb2)
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service}")
        return response(status=found)

    async def watch(requests, context):
        request = None
        async for request in requests:
            break
        if request is None:
            return
        last = None
        while True:  # until the client leaves (its call is cancelled)
            found = health_status(plane, request.service, health_pb2)
            found = response.SERVICE_UNKNOWN if found is None else found
            if found != last:
                last = found
                yield response(status=found)
            await asyncio.sleep(HEALTH_POLL_S)

    check, watch = restrict_method(check, "health", rules), restrict_method(watch, "health", rules)
    check = delayed(check, common_delay_s())  # Triton's test hook (debug_delays.py); nothing when unset
    return {"/grpc.health.v1.Health/Check": _Method("Check", check, health_pb2.HealthCheckRequest, False),
            "/grpc.health.v1.Health/Watch": _Method("Watch", watch, health_pb2.HealthCheckRequest, True)}


async def start_native_grpc_server(plane: DataPlane, settings: ServerSettings) -> Tuple[NativeGrpcServer, int]:
    server = NativeGrpcServer(plane, settings)
    loop = asyncio.get_running_loop()
    address = _address(settings.grpc_host or settings.host, settings.grpc_port)
    context = tls.ssl_context(settings) if tls.wanted(settings) else None
    factory = lambda: Http2Connection(server.open, server.connections)  # noqa: E731
    try:
        if address.startswith("unix:"):  # a Unix socket named PATH:port, as tritonserver's --grpc-address unix:PATH
            server.server = await loop.create_unix_server(factory, address[len("unix:"):], ssl=context)
            return server, settings.grpc_port
        server.server = await loop.create_server(factory, (settings.grpc_host or settings.host).strip("[]"),
                                                 settings.grpc_port, ssl=context,
                                                 reuse_port=settings.reuse_port or settings.reuse_grpc_port or None)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InvalidSettings(f"failed to start GRPC service: Unavailable - Socket '{address}' already in use") \
                from None
        raise InvalidSettings(f"cannot listen for gRPC on {address}: {exc}") from None
    port = server.server.sockets[0].getsockname()[1]
    return server, port
