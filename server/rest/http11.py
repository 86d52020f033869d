"""HTTP/1.1 on httptools, with the inference routes answered straight from the parser.

Under uvicorn every request costs an ASGI scope, an `asyncio.Event`, a cycle object, a keep-alive
timer armed and cancelled, a regex check of each response header and a pass through the app's
middleware: for a small model that was as much CPU as the data plane and the model together. Here a
request to `/v2/models/{m}[/versions/{v}]/infer` or `/v1/models/{m}:predict` goes from
`on_message_complete` into one Task that calls the data plane, and its answer leaves in one
`transport.write`. Every other route is handed to the ASGI app (FastAPI) by `asgi_bridge`, so
behaviour there stays the framework's. Keep-alive deadlines and the Date header are kept by one
timer per server, not one per request.

Requests on a connection are answered in order (pipelining): complete requests wait in `pending`
and reading pauses when too many wait. An inference request pipelined behind inference requests only
starts its data-plane work at once (`early`), so pipelined requests batch together as requests on
separate connections do; its answer still leaves in its turn. Any other route waits for its turn, and
so does every request behind it (a model unloaded by one request is not inferred by the next early).
A client that goes away cancels its inference tasks, so the batcher skips their queued work. uvicorn remains the server when httptools is missing or settings ask
for it (`http_server = "uvicorn"`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from email.utils import formatdate
from typing import Deque, List, Optional, Tuple
from urllib.parse import unquote

import httptools

from gpuserve.datatypes import VIEW_BYTES
from gpuserve.errors import PayloadTooLarge, cancelled_here, escaped
from gpuserve.server.binary import Parts, infer_body_buffer
from gpuserve.server.rest.asgi_bridge import Exchange, run_asgi, starlette_request
from gpuserve.server.rest.common import error_response, response_parts
from gpuserve.server.rest.fast_path import NOT_PROBED, FastPath, header_dict, match
from gpuserve.server.rest.streaming import Stream
from gpuserve.server.rest.wire import head
from gpuserve.server.writes import write_views

logger = logging.getLogger("gpuserve.http")
access_logger = logging.getLogger("uvicorn.access")  # the name uvicorn users already route

MAX_PENDING = 16  # pipelined requests buffered per connection before reading pauses
MAX_HEAD_BYTES = 64 * 1024  # URL plus headers of one request; more is answered 431 and the connection closed
# From a request's first byte to the end of its headers, at most (nginx's client_header_timeout): a client
# dribbling its headers a byte at a time (slowloris) held its connection and socket for as long as it liked.
HEAD_TIMEOUT_S = 60.0


class _HeadTooLarge(Exception):
    """Raised from a parser callback; httptools turns it into HttpParserError with this as context."""


class _TooManyChunks(Exception):
    """Raised from a parser callback: a chunked body in more pieces than MAX_CHUNKS."""


MAX_CHUNKS = 65536  # Triton's bound on a chunked body's non-empty chunks (each costs it, and us, a callback)
CHUNKS_REFUSED = (b'{"error":"Chunked request body exceeds maximum of %d non-empty chunks. Send fewer or larger '
                  b'HTTP chunks."}' % MAX_CHUNKS)
LAST_CHUNK = b"0\r\n\r\n"


def _declared_length(request: "Request") -> str:
    return next((value.decode("latin-1") for name, value in request.headers if name == b"content-length"), "?")


class Request:
    __slots__ = ("method", "url", "headers", "chunks", "size", "too_large", "keep_alive", "version",
                 "expect_continue", "route", "head_bytes", "answered", "early", "pieces", "piece_data", "begun",
                 "head_done", "whole")

    def __init__(self) -> None:
        self.url = b""
        self.headers: List[Tuple[bytes, bytes]] = []
        self.chunks: List[bytes] = []
        self.size = 0
        self.too_large = False
        self.keep_alive = True
        self.expect_continue = False
        self.method = "GET"
        self.version = "1.1"
        self.route = None  # ('infer' | 'predict', model, version) for the routes answered here
        self.head_bytes = 0
        self.answered = False  # refused from its headers alone (a declared length over the limit)
        self.early: Optional[asyncio.Task] = None  # its answer, begun while requests ahead were answered
        self.pieces = 0  # a chunked body's non-empty chunks so far
        self.piece_data = False  # the chunk being read had data
        self.whole = None  # a large declared body (a bytearray, or aligned_body's view), filled in place
        self.begun = 0.0  # loop time of its first byte
        self.head_done = False

    @property
    def body(self) -> bytes:
        """The whole body; a body that came in pieces is joined once, however often it is read."""
        if self.whole is not None:
            return self.whole
        if len(self.chunks) > 1:
            self.chunks = [b"".join(self.chunks)]
        return self.chunks[0] if self.chunks else b""

    def split_url(self) -> Tuple[str, bytes, bytes]:
        """(path, raw path, query); the common origin-form URL without escapes is not parsed."""
        url = self.url
        if url[:1] == b"/" and b"?" not in url and b"%" not in url:
            try:
                return url.decode("ascii"), url, b""
            except UnicodeDecodeError:
                pass
        parsed = httptools.parse_url(url)
        raw = parsed.path or b"/"
        path = raw.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        return path, raw, parsed.query or b""


class HttpConnection(asyncio.Protocol):
    """One client connection: parse, queue complete requests, answer them in order."""

    def __init__(self, server: "HttpServer") -> None:
        self.server = server
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        try:  # answer the first of several pipelined requests even when the client closes early
            # and take a chunked body that also declares a Content-Length, as Triton does (RFC 9112 6.3:
            # the chunks count; on_headers_complete closes such a connection after its answer)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True, lenient_chunked_length=True)
        except AttributeError:
            pass
        self.transport: Optional[asyncio.Transport] = None
        self.request: Optional[Request] = None  # being parsed
        self.pending: Deque[Request] = deque()  # complete, waiting for the one in flight
        self.task: Optional[asyncio.Task] = None
        self.current: Optional[Request] = None
        self.closed = False
        self.closing = False  # answer what is in flight, then close
        self.reading_paused = False
        self.writing_paused: Optional[asyncio.Future] = None
        self.disconnected: Optional[asyncio.Future] = None  # for ASGI apps that listen for it
        self.idle_since = self.last_data = self.loop.time()
        self.client: Optional[Tuple[str, int]] = None
        self.local: Optional[Tuple[str, int]] = None
        self.draining: Optional[bytes] = None  # refused mid-body: the last bytes read while the rest is dropped
        self.refusal: Optional[bytes] = None  # a malformed request's 400, held until the requests ahead are answered

    # asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections.add(self)
        peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        self.client = tuple(peer[:2]) if isinstance(peer, tuple) else None
        self.local = tuple(local[:2]) if isinstance(local, tuple) else None

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.connections.discard(self)
        # The parser calls back into this object, a cycle only a full collection finds, and the server runs
        # those rarely (model_server's thresholds): every closed connection stayed until then
        self.parser = None
        for request in self.pending:
            if request.early is not None:
                request.early.cancel()
        self.pending.clear()
        if self.disconnected is not None and not self.disconnected.done():
            self.disconnected.set_result(None)
        if self.writing_paused is not None and not self.writing_paused.done():
            self.writing_paused.set_result(None)
        if self.task is not None and self.current is not None and self.current.route is not None:
            self.task.cancel()  # inference: queued work is skipped; nobody reads the answer

    def data_received(self, data: bytes) -> None:
        self.last_data = self.loop.time()
        if self.refusal is not None:
            return  # nothing after a malformed request is parsed
        if self.draining is not None:
            self._drain(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True  # no protocol switch here: answer the request as plain HTTP, then close
            if self.idle():
                self.transport.close()
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge) or isinstance(exc.__cause__, _HeadTooLarge):
                self._bad_request(f"request line and headers exceed {MAX_HEAD_BYTES} bytes", 431)
            elif isinstance(exc.__context__, _TooManyChunks) or isinstance(exc.__cause__, _TooManyChunks):
                self._refuse_chunks(data)
            else:
                self._bad_request(f"Invalid HTTP request received: {exc}")

    def eof_received(self) -> None:
        return None  # close our side when done (default behaviour)

    def pause_writing(self) -> None:
        self.writing_paused = self.loop.create_future()
        self._pause_reading()

    def resume_writing(self) -> None:
        if self.writing_paused is not None and not self.writing_paused.done():
            self.writing_paused.set_result(None)
        self.writing_paused = None
        if len(self.pending) < MAX_PENDING:
            self._resume_reading()

    # httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.request = Request()
        self.request.begun = self.loop.time()

    def on_url(self, url: bytes) -> None:
        request = self.request
        request.url += url
        request.head_bytes += len(url)
        if request.head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge()

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        request.headers.append((name.lower(), value))
        request.head_bytes += len(name) + len(value) + 4
        if request.head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge()

    def on_headers_complete(self) -> None:
        request, parser = self.request, self.parser
        request.head_done = True
        request.method = parser.get_method().decode("ascii")
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        limit = self.server.body_limit
        declared = chunked = False
        length = 0
        binary = encoded = None
        for name, value in request.headers:
            if name == b"content-length":
                declared = True
                try:
                    length = int(value)
                    request.too_large = length > limit
                except ValueError:
                    pass  # the parser itself rejects a malformed length
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"expect" and value.lower() == b"100-continue":
                request.expect_continue = True
            elif name == b"inference-header-content-length":
                binary = value.decode("latin-1")
            elif name == b"content-encoding":
                encoded = value
        if declared and chunked:  # the length is ignored; no request after this one is trusted on the connection
            request.too_large = False
            request.keep_alive = False
        elif length >= VIEW_BYTES and not request.too_large:
            # read into one buffer of its length as it arrives: joining its pieces at the end held the body
            # twice (a 1.9 GB request peaked at 3.8 GB before any decoding). A binary inference body is placed
            # so that its tensor data is aligned; the decode's views of it are the model's inputs
            if binary is not None and self.server.fast is not None:
                request.whole = infer_body_buffer(length, binary, encoded, match(request.split_url()[0]))
            if request.whole is None:
                request.whole = bytearray(length)
        if request.expect_continue and not request.too_large and self.task is None and not self.pending:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if request.too_large and self.task is None and not self.pending:
            # Refused from the declared length alone, now: the client may wait for an answer before sending
            # a body this large (or send it slowly); the connection closes, as the rest may still come.
            request.answered, request.keep_alive = True, False
            self._write_error(request, PayloadTooLarge(
                f"request body of {_declared_length(request)} bytes exceeds the limit of {self.server.body_limit} bytes"))
            if request.expect_continue:  # the client waits for a go-ahead that never comes: nothing to read
                self.transport.close()
            # otherwise the body is read and dropped, and the connection closes after it: closing now reset
            # the connection under a client still sending, which then never read the 413 (tritonclient's
            # 3 GB request in qa/L0_large_payload failed with a broken pipe instead of the server's error)

    def on_chunk_header(self) -> None:
        self.request.piece_data = False

    def on_chunk_complete(self) -> None:
        request = self.request
        if request.piece_data:
            request.pieces += 1
            if request.pieces > MAX_CHUNKS:
                raise _TooManyChunks()

    def on_body(self, chunk: bytes) -> None:
        request = self.request
        request.piece_data = True
        if request.too_large:
            return  # discarded: the answer is 413
        start = request.size
        request.size += len(chunk)
        if request.whole is not None:  # the declared length, which the parser holds the body to
            request.whole[start:request.size] = chunk
            return
        if request.size > self.server.body_limit:
            request.too_large, request.chunks = True, []
            return
        request.chunks.append(chunk)

    def on_message_complete(self) -> None:
        request, self.request = self.request, None
        if request.answered:  # refused from its declared length, its body now read and dropped
            self.transport.close()
            return
        if self.task is None:
            self._start(request)
        else:
            self.pending.append(request)
            self._start_early(request)
            if len(self.pending) >= MAX_PENDING:
                self._pause_reading()

    def _start_early(self, request: Request) -> None:
        """Begin a pipelined inference request's work now when every request ahead of it is one too."""
        current = self.current
        if request.method != "POST" or request.too_large or current is None or current.route is None \
                or self.server.guard is not None or self.server.fast is None or self._cross_origin(request):
            return
        for ahead in self.pending:
            if ahead is request:
                break
            if ahead.early is None:
                return
        else:
            return  # no longer waiting
        request.route = match(request.split_url()[0])
        if request.route is not None:
            request.early = self.loop.create_task(self._respond(request))

    def _respond(self, request: Request, probed: object = NOT_PROBED):
        """The data plane's answer to an inference route (a coroutine)."""
        return self.server.fast.respond(request.route, request.body, header_dict(request.headers),
                                        lambda: starlette_request(self, request), probed)

    # answering -------------------------------------------------------------------------------
    def _start(self, request: Request) -> None:
        self.current = request
        if self.server.guard is not None and self._refused(request):
            return
        probed = NOT_PROBED
        if request.early is None and request.method == "POST" and not request.too_large and self.server.fast \
                and not self._cross_origin(request):
            request.route = match(request.split_url()[0])  # the metrics port has no inference routes
            if request.route is not None and not self.transport.is_closing():
                try:
                    answer, probed = self.server.fast.probe(request.route, request.body, request.headers)
                except Exception:  # never fail a request here: the full path answers it, errors included
                    logger.exception("response cache lookup failed")
                    answer, probed = None, NOT_PROBED
                if answer is not None:  # answered from the response cache, here and now
                    status, headers, body = answer[0], answer[2], answer[1]
                    self.write(request, status, headers, body)
                    if self.server.access_log:
                        self._log_access(request, status)
                    if self.server.spans is not None:
                        self._span(request, status)
                    self._finished()
                    return
        self.task = self.loop.create_task(self._answer(request, probed))

    def _cross_origin(self, request: Request) -> bool:
        """A browser's request to a server answering CORS: the app (wrapped in CORSMiddleware) answers it."""
        return self.server.cors and any(name == b"origin" for name, _ in request.headers)

    def _refused(self, request: Request) -> bool:
        """Answered 403 here when the request's endpoint group is restricted and its header missing."""
        headers = request.headers

        def header(name: str) -> Optional[str]:
            wanted = name.encode("latin-1")
            return next((value.decode("latin-1") for key, value in headers if key == wanted), None)

        body = self.server.guard.refusal(request.method, request.split_url()[0], header)
        if body is None:
            return False
        self.write(request, 403, [(b"content-type", b"application/json")], body)
        if self.server.access_log:
            self._log_access(request, 403)
        self._finished()
        return True

    async def _answer(self, request: Request, probed: object = NOT_PROBED) -> None:
        route = request.route
        status = 500
        try:
            if request.too_large:
                request.keep_alive = False  # the rest of its body may still be on the wire
                status = self._write_error(request, PayloadTooLarge(
                    f"request body exceeds the limit of {self.server.body_limit} bytes"))
            elif route is not None:
                status, body, headers = await (request.early or self._respond(request, probed))
                if isinstance(body, Stream):
                    await self._stream(request, body, headers)
                else:
                    self.write(request, status, headers, body)
            else:
                status = await run_asgi(self.server.app, self, request)
        except Exception as exc:  # a bug below us: answer 500 and keep serving
            logger.exception("unhandled error answering %s %s", request.method, request.url[:200])
            if not self.closed:
                status = self._write_error(request, exc)
        except BaseException as exc:
            if cancelled_here(exc):  # the client went away, or the server stops
                status = 499
            else:  # sys.exit(), a CancelledError of its own, ... from code nothing below caught: 500, keep serving
                logger.error("answering %s %s raised %s", request.method, request.url[:200], type(exc).__name__)
                if not self.closed:
                    status = self._write_error(request, escaped(exc))
        finally:
            if self.server.access_log:
                self._log_access(request, status)
            if self.server.spans is not None:
                self._span(request, status)
            self._finished()

    async def _stream(self, request: Request, stream: Stream, headers: List[Tuple[bytes, bytes]]) -> None:
        """A model's stream, chunked through the ASGI bridge's writer (it waits while the client reads slowly)."""
        exchange = Exchange(self, request)
        try:
            await stream.send_asgi(exchange.send, headers)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the model's stream failed after its answer began; closing the connection")
        finally:
            if not exchange.complete:
                request.keep_alive = False
                await stream.aclose()

    def _log_access(self, request: Request, status: int) -> None:
        path = request.url.decode("latin-1")
        access_logger.info('%s - "%s %s HTTP/%s" %d', "%s:%d" % self.client if self.client else "-",
                           request.method, path, request.version, status)

    def _span(self, request: Request, status: int) -> None:
        path, _, query = request.split_url()
        begun = time.time_ns() - int((self.loop.time() - request.begun) * 1e9) if request.begun else time.time_ns()
        self.server.spans.http(request.method, path, query, status, begun, header_dict(request.headers), self.client,
                               self.local, request.version)

    def _write_error(self, request: Request, exc: BaseException) -> int:
        status, body, headers = response_parts(error_response(exc))
        self.write(request, status, headers, body)
        return status

    def closes_after(self, request: Request) -> bool:
        """Whether this answer is the connection's last (then it says `connection: close`)."""
        close = not request.keep_alive or self.closing or self.server.stopping
        if close:
            request.keep_alive = False
        return close

    def write(self, request: Request, status: int, headers: List[Tuple[bytes, bytes]], body: bytes) -> None:
        if self.closed or self.transport.is_closing():  # e.g. closed after an early 413: nothing more goes out
            return
        parts = head(status, headers, self.server.date, len(body), self.closes_after(request))
        if type(body) is Parts:  # a large answer: its pieces (views of the output arrays) are not joined
            head_bytes = b"".join(parts)
            if request.method == "HEAD":
                self.transport.write(head_bytes)
            else:
                write_views(self.transport, [head_bytes, *body.parts])
            return
        if request.method != "HEAD":
            parts.append(body)
        self.transport.write(b"".join(parts))

    def _finished(self) -> None:
        request, self.task, self.current = self.current, None, None
        if self.closed:
            return
        if request is not None and not request.keep_alive or self.closing or self.server.stopping:
            self.transport.close()
            return
        if self.pending:
            self._start(self.pending.popleft())
            for request in list(self.pending):  # those held behind another route's request may begin now
                if request.early is None:
                    self._start_early(request)
                    if request.early is None:
                        break
            if len(self.pending) < MAX_PENDING and self.writing_paused is None and self.refusal is None:
                self._resume_reading()
        elif self.refusal is not None:  # every request ahead of the malformed one is answered
            self.transport.write(self.refusal)
            self.transport.close()
        else:
            self.idle_since = self.loop.time()

    def _bad_request(self, message: str, status: int = 400) -> None:
        """The refusal ends the connection, but requests pipelined ahead of the malformed one are answered
        first: written at once, it was read as the answer to the first of them (which still ran)."""
        if not self.closed:
            body = message.encode("latin-1", "replace")
            parts = head(status, [(b"content-type", b"text/plain; charset=utf-8")], self.server.date, len(body), True)
            if self.task is not None or self.pending:
                self.refusal = b"".join(parts) + body
                self._pause_reading()
                return
            self.transport.write(b"".join(parts) + body)
            self.transport.close()

    def _refuse_chunks(self, data: bytes) -> None:
        """Answer 400 at once, as Triton; the rest of the body is read and dropped unparsed until its last
        chunk, so the client reads the answer (closing with its bytes unread would reset the connection)."""
        if self.request is not None:  # its pieces go now, not when the collector finds the closed connection
            self.request.chunks, self.request.too_large = [], True
        if self.closed:
            return
        parts = head(400, [(b"content-type", b"application/json")], self.server.date, len(CHUNKS_REFUSED), True)
        self.transport.write(b"".join(parts) + CHUNKS_REFUSED)
        self.draining = b""
        self._drain(data)

    def _drain(self, data: bytes) -> None:
        self.draining = (self.draining + data)[-len(LAST_CHUNK):]
        if self.draining == LAST_CHUNK:
            self.transport.close()

    def _pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def idle(self) -> bool:
        return self.task is None and self.request is None and not self.pending

    def stalled(self, now: float, limit_s: float) -> bool:
        """A request begun and then left without a byte for `limit_s` (slowloris)."""
        return self.request is not None and not self.reading_paused and now - self.last_data > limit_s

    def head_overdue(self, now: float, limit_s: float) -> bool:
        request = self.request
        return request is not None and not request.head_done and self.refusal is None and now - request.begun > limit_s

    def shutdown(self) -> None:
        """Close now when idle, otherwise after the answer in flight."""
        self.closing = True
        if self.idle() and not self.closed:
            self.transport.close()


class HttpServer:
    """Serves one bound socket; `serve()` returns after `stop()` once connections drained."""

    def __init__(self, app, sock, body_limit: int, fast: Optional[FastPath] = None, keep_alive_s: float = 75.0,
                 graceful_s: float = 30.0, access_log: bool = False, guard=None,
                 head_timeout_s: float = HEAD_TIMEOUT_S, ssl_context=None, cors: bool = False, spans=None) -> None:
        self.app = app
        self.fast = fast
        self.guard = guard  # server/restricted.py's HttpRestrictions, when endpoint groups are restricted
        self.sock = sock
        self.body_limit = body_limit
        self.keep_alive_s = keep_alive_s
        self.ssl_context = ssl_context  # HTTPS (KServe 0.21's ssl_certfile / ssl_keyfile)
        self.cors = cors  # `app` answers CORS: a request with an Origin header goes there (server/cors.py)
        self.head_timeout_s = head_timeout_s
        self.graceful_s = graceful_s
        self.access_log = access_log
        self.spans = spans  # MLServer's tracing_server (gpuserve/otel_mlserver.py): a span per answered request
        self.connections: set = set()
        self.stopping = False
        self.date = b""
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._listener: Optional[asyncio.AbstractServer] = None

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.stopping:
            self._stop.set()
        self._tick()
        self._listener = await self.loop.create_server(lambda: HttpConnection(self), sock=self.sock, backlog=2048,
                                                       ssl=self.ssl_context)
        if self.stopping:
            self._listener.close()
        try:
            await self._stop.wait()
        finally:
            self._listener.close()
            await self._drain()
            if self._timer is not None:
                self._timer.cancel()

    def stop_accepting(self, close_idle: bool = False) -> None:
        """A shutdown's first step: new connections are refused; the open ones are still served (each answer
        now says `connection: close` and closes its connection) until `stop()`, as Triton serves them, or with
        `close_idle` those waiting for a request close now, as uvicorn (KServe) closes them."""
        self.stopping = True
        if self._listener is not None:
            self._listener.close()
        if close_idle:
            for connection in list(self.connections):
                connection.shutdown()

    def open_connections(self) -> int:
        return len(self.connections)

    def stop(self, grace_s: Optional[float] = None) -> None:
        """Stop serving: idle connections close, answers under way get `grace_s` (default: graceful_s)."""
        self.stopping = True
        if grace_s is not None:
            self.graceful_s = grace_s
        if self._stop is not None:
            self._stop.set()

    async def _drain(self) -> None:
        for connection in list(self.connections):
            connection.shutdown()
        deadline = self.loop.time() + self.graceful_s
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.task is not None:
                connection.task.cancel()
            connection.transport.close()

    def _tick(self) -> None:
        """Once a second: the Date header, and idle keep-alive connections closed."""
        self.date = b"date: " + formatdate(time.time(), usegmt=True).encode() + b"\r\n"
        now = self.loop.time()
        for connection in list(self.connections):
            if connection.idle() and now - connection.idle_since > self.keep_alive_s:
                connection.transport.close()
            elif connection.stalled(now, self.keep_alive_s):
                connection.transport.close()
            elif connection.head_overdue(now, self.head_timeout_s):
                connection._bad_request(f"request headers not received within {self.head_timeout_s:g} s", 408)
        self._timer = self.loop.call_later(1.0, self._tick)
