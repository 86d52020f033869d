"""Our HTTP/1.1 server (server/rest/http11.py) at the byte level: pipelining, keep-alive, HTTP/1.0,
Expect: 100-continue, chunked bodies, malformed requests, HEAD, the ASGI bridge's streaming and error
paths, and uvicorn still serving when settings ask for it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import numpy as np
import pytest

from conftest import running_server
from gpuserve import InferOutput, InferRequest, InferResponse, Model
from gpuserve.server.rest.http11 import HttpServer

pytest.importorskip("httptools")

INFER = b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[%d]}]}'


class Doubler(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            outputs = [InferOutput.from_numpy("y", t.as_numpy() * 2) for t in payload.inputs]
            return InferResponse(payload.id, self.name, outputs)
        return {"predictions": (np.asarray(payload["instances"]) * 2).tolist()}


@pytest.fixture(scope="module")
def server():
    with running_server([Doubler("doubler")], max_request_bytes=4096) as srv:
        yield srv


def post(path: bytes, body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST " + path + b" HTTP/" + version + b"\r\nHost: x\r\nContent-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def read_responses(sock: socket.socket, count: int, timeout: float = 10.0):
    """Parse `count` responses (Content-Length or chunked framing) off the socket."""
    sock.settimeout(timeout)
    buffer, out = b"", []
    while len(out) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return out, buffer
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines[1:])}
        if status == 100:
            out.append((100, headers, b""))
            continue
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                while b"\r\n" not in buffer:
                    buffer += sock.recv(65536)
                size_line, buffer = buffer.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(buffer) < size + 2:
                    buffer += sock.recv(65536)
                body, buffer = body + buffer[:size], buffer[size + 2:]
                if size == 0:
                    break
        else:
            length = int(headers.get(b"content-length", b"0"))
            while len(buffer) < length:
                buffer += sock.recv(65536)
            body, buffer = buffer[:length], buffer[length:]
        out.append((status, headers, body))
    return out, buffer


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.ports["http"]))


def assert_still_serving(server):
    with connect(server) as sock:
        sock.sendall(post(b"/v2/models/doubler/infer", INFER % 1))
        assert read_responses(sock, 1)[0][0][0] == 200


def test_pipelined_requests_are_answered_in_order(server):
    with connect(server) as sock:
        sock.sendall(post(b"/v2/models/doubler/infer", INFER % 1) + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
                     + post(b"/v2/models/doubler/infer", INFER % 7) + post(b"/v2/models/ghost/infer", INFER % 1)
                     + post(b"/v1/models/doubler:predict", b'{"instances":[[3]]}'))
        (a, b, c, d, e), _ = read_responses(sock, 5)
    assert a[0] == 200 and json.loads(a[2])["outputs"][0]["data"] == [2]
    assert b[0] == 200 and json.loads(b[2]) == {"live": True}
    assert c[0] == 200 and json.loads(c[2])["outputs"][0]["data"] == [14]
    assert d[0] == 404 and "ghost" in json.loads(d[2])["error"]
    assert e[0] == 200
    assert all(b"date" in r[1] for r in (a, b, c, d, e))


class Overlap(Model):
    """Counts how many of its requests run at once."""

    def __init__(self, name):
        super().__init__(name)
        self.running = self.most = self.cancelled = 0

    def load(self):
        self.ready = True

    async def predict(self, payload, headers=None):
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("y", payload.inputs[0].as_numpy())])


def test_pipelined_inference_requests_run_together_and_answer_in_order():
    model = Overlap("overlap")
    with running_server([model, Doubler("doubler")]) as srv:
        with connect(srv) as sock:
            sock.sendall(b"".join(post(b"/v2/models/overlap/infer", INFER % i) for i in range(6)))
            replies, _ = read_responses(sock, 6)
        assert [json.loads(r[2])["outputs"][0]["data"] for r in replies] == [[i] for i in range(6)]
        assert model.most == 6  # all six at once, not one after another
        model.most = 0
        with connect(srv) as sock:  # a request of another route is answered in its turn, and so is what follows
            sock.sendall(post(b"/v2/models/overlap/infer", INFER % 1) + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
                         + post(b"/v2/models/overlap/infer", INFER % 2) + post(b"/v2/models/overlap/infer", INFER % 3))
            replies, _ = read_responses(sock, 4)
        assert [r[0] for r in replies] == [200] * 4 and json.loads(replies[1][2]) == {"live": True}
        assert model.most == 2  # the last two together, after the health check
        with connect(srv) as sock:  # a client that leaves cancels what it had pipelined
            sock.sendall(b"".join(post(b"/v2/models/overlap/infer", INFER % i) for i in range(4)))
            import time

            time.sleep(0.01)
        deadline = time.monotonic() + 5
        while model.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert model.running == 0 and model.cancelled == 4
        assert_still_serving(srv)


def test_many_requests_share_one_connection(server):
    with connect(server) as sock:
        for i in range(50):
            sock.sendall(post(b"/v2/models/doubler/infer", INFER % i))
            (reply,), rest = read_responses(sock, 1)
            assert reply[0] == 200 and json.loads(reply[2])["outputs"][0]["data"] == [2 * i] and rest == b""


def test_http10_without_keep_alive_is_closed_after_the_answer(server):
    with connect(server) as sock:
        sock.sendall(post(b"/v2/models/doubler/infer", INFER % 2, version=b"1.0"))
        (reply,), _ = read_responses(sock, 1)
        assert reply[0] == 200 and reply[1][b"connection"] == b"close"
        assert sock.recv(10) == b""


def test_expect_100_continue(server):
    body = INFER % 4
    with connect(server) as sock:
        request = post(b"/v2/models/doubler/infer", body, extra=b"Expect: 100-continue\r\n")
        sock.sendall(request[: -len(body)])
        (interim,), _ = read_responses(sock, 1)
        assert interim[0] == 100
        sock.sendall(body)
        (reply,), _ = read_responses(sock, 1)
        assert reply[0] == 200 and json.loads(reply[2])["outputs"][0]["data"] == [8]


def test_chunked_request_body(server):
    body = INFER % 5
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(b"POST /v2/models/doubler/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
        (reply,), _ = read_responses(sock, 1)
    assert reply[0] == 200 and json.loads(reply[2])["outputs"][0]["data"] == [10]


def test_oversized_bodies_are_413_and_the_server_keeps_serving(server):
    with connect(server) as sock:  # a request pipelined behind it is not answered: the connection closes
        good = post(b"/v2/models/doubler/infer", b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[5]}]}')
        sock.sendall(post(b"/v2/models/doubler/infer", b" " * 5000) + good)
        (reply,), _ = read_responses(sock, 1)
        assert reply[0] == 413 and reply[1][b"connection"] == b"close"
    with connect(server) as sock:  # a declared length over the limit is refused at once, before any body
        sock.sendall(b"POST /v2/models/doubler/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
        (reply,), _ = read_responses(sock, 1, timeout=5.0)
        assert reply[0] == 413 and b"99999999999" in reply[2] and reply[1][b"connection"] == b"close"
    with connect(server) as sock:  # chunked, no length given: cut off once past the limit
        sock.sendall(b"POST /v2/models/doubler/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"800\r\n" + b" " * 2048 + b"\r\n" + b"800\r\n" + b" " * 2048 + b"\r\n" + b"1\r\n \r\n0\r\n\r\n")
        (reply,), _ = read_responses(sock, 1)
        assert reply[0] == 413
    assert_still_serving(server)


def test_malformed_request_is_400_and_the_server_keeps_serving(server):
    with connect(server) as sock:
        sock.sendall(b"POST /v2/models/doubler/infer HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
        (reply,), _ = read_responses(sock, 1)
        assert reply[0] == 400 and b"Invalid HTTP request" in reply[2]
        assert sock.recv(10) == b""
    assert_still_serving(server)


def test_head_keeps_headers_and_drops_the_body(server):
    with connect(server) as sock:
        sock.sendall(b"HEAD /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        data = b""
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"}"):
            data += sock.recv(65536)
    first, second = data.split(b"HTTP/1.1 ")[1:]
    assert first.endswith(b"\r\n\r\n")  # no body after the HEAD answer's headers
    assert second.endswith(b'{"live":true}')


def test_query_string_and_escapes_reach_the_app(server):
    with connect(server) as sock:
        sock.sendall(b"GET /v2/models/doub%6cer/ready?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        (reply,), _ = read_responses(sock, 1)
    assert reply[0] == 200


# The ASGI bridge with apps of our own ---------------------------------------------------------

async def _streaming_app(scope, receive, send):
    path = scope["path"]
    if path == "/stream":
        message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", message["body"]):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/boom":
        raise RuntimeError("kaboom")
    elif path == "/half":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("died mid-answer")
    elif path == "/silent":
        return
    else:
        assert (await receive())["type"] == "http.request"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"x-path", path.encode())]})
        await send({"type": "http.response.body", "body": scope["query_string"]})


@pytest.fixture(scope="module")
def bridge_port():
    ready, holder = threading.Event(), {}

    def run():
        async def main():
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            server = HttpServer(_streaming_app, sock, body_limit=1 << 20, graceful_s=1, keep_alive_s=1.0)
            holder["port"], holder["server"], holder["loop"] = sock.getsockname()[1], server, asyncio.get_running_loop()
            ready.set()
            await server.serve()

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield holder["port"]
    holder["loop"].call_soon_threadsafe(holder["server"].stop)
    thread.join(10)
    assert not thread.is_alive()


def _exchange(port: int, raw: bytes, count: int = 1, check_open: bool = False):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(raw)
        replies, _ = read_responses(sock, count)
        tail = b"?"
        if check_open:
            sock.settimeout(0.5)
            try:
                tail = sock.recv(10)
            except socket.timeout:
                tail = None  # still open
    return replies, tail


def test_bridge_streams_chunked_without_content_length(bridge_port):
    (reply,), tail = _exchange(bridge_port, b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nthree",
                               check_open=True)
    assert tail is None  # kept open
    assert reply[0] == 200 and reply[1][b"transfer-encoding"] == b"chunked" and reply[2] == b"one two three"


def test_bridge_keeps_the_connection_after_a_streamed_answer(bridge_port):
    replies, _ = _exchange(bridge_port, b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"
                                        b"GET /plain?q=1 HTTP/1.1\r\nHost: x\r\n\r\n", count=2)
    assert replies[0][2] == b"one two x"
    assert replies[1][0] == 200 and replies[1][2] == b"q=1" and replies[1][1][b"x-path"] == b"/plain"
    assert replies[1][1][b"content-length"] == b"3"


def test_bridge_app_errors(bridge_port):
    (reply,), tail = _exchange(bridge_port, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply[0] == 500 and "kaboom" in json.loads(reply[2])["error"]
    (reply,), tail = _exchange(bridge_port, b"GET /silent HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply[0] == 500
    with socket.create_connection(("127.0.0.1", bridge_port)) as sock:
        sock.sendall(b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break  # the connection is closed: a half answer cannot be completed
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"partial" in data and not data.endswith(b"0\r\n\r\n")
    (reply,), _ = _exchange(bridge_port, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply[0] == 200


def test_oversized_head_is_431_and_closed(bridge_port):
    with socket.create_connection(("127.0.0.1", bridge_port)) as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        (reply,), _ = read_responses(sock, 1)
        assert reply[0] == 431 and sock.recv(10) == b""
    assert _exchange(bridge_port, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")[0][0][0] == 200


def test_idle_and_stalled_connections_are_closed_after_the_keep_alive_time(bridge_port):
    with socket.create_connection(("127.0.0.1", bridge_port)) as idle, \
            socket.create_connection(("127.0.0.1", bridge_port)) as stalled:
        idle.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_responses(idle, 1)[0][0][0] == 200
        stalled.sendall(b"POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
        for sock in (idle, stalled):
            sock.settimeout(5)
            assert sock.recv(10) == b""  # closed by the server within ~2 s (keep_alive_s=1)


def test_uvicorn_still_serves_when_asked():
    import httpx

    with running_server([Doubler("doubler")], http_server="uvicorn") as srv:
        from gpuserve.server.model_server import _Uvicorn

        assert isinstance(srv._servers[0], _Uvicorn)
        reply = httpx.post(f"http://127.0.0.1:{srv.ports['http']}/v2/models/doubler/infer", content=INFER % 3)
        assert reply.status_code == 200 and reply.json()["outputs"][0]["data"] == [6]


def test_our_server_is_the_default_where_httptools_is_installed(server):
    assert isinstance(server._servers[0], HttpServer)


def test_upgrade_requests_are_answered_as_plain_http_and_closed(server):
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        (reply,), _ = read_responses(sock, 1)
        assert reply[0] == 200 and reply[1][b"connection"] == b"close"
        sock.settimeout(5)
        assert sock.recv(10) == b""


def test_inference_routes_on_the_metrics_port_are_refused_not_500(server):
    """The metrics port runs the same HTTP server without inference routes: a POST there was a 500 with a
    traceback in the log (its missing fast path was called)."""
    with socket.create_connection(("127.0.0.1", server.ports["metrics"])) as sock:
        sock.sendall(post(b"/v2/models/doubler/infer", INFER % 1) + post(b"/v1/models/doubler:predict", b"{}"))
        answers, _ = read_responses(sock, 2)
    assert [status for status, _, _ in answers] == [405, 405]
    assert_still_serving(server)


def test_closed_connections_are_freed_without_a_full_collection(server):
    """A connection and its parser referred to each other, a cycle only gen-2 collections free, which the
    server's thresholds make rare: every closed connection stayed (memory_growth's per-round growth)."""
    import gc
    import time

    from gpuserve.server.rest.http11 import HttpConnection

    def alive():
        return sum(1 for o in gc.get_objects() if isinstance(o, HttpConnection))

    before = alive()
    for i in range(50):
        with connect(server) as sock:
            sock.sendall(post(b"/v2/models/doubler/infer", INFER % i))
            assert read_responses(sock, 1)[0][0][0] == 200
    deadline = time.monotonic() + 5
    while alive() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive() <= before
