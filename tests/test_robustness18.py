"""Hostile clients on the raw sockets (session 18's robustness pass; qa L0_long_running_stress and
L0_memory_growth ask the same of a long run): each is answered or dropped cleanly, the server keeps
serving the others, and what it held is freed."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import numpy as np
import pytest

from conftest import running_server
from gpuserve import InferOutput, InferResponse, Model

pytest.importorskip("httptools")


async def _plain_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def http_port():
    from gpuserve.server.rest.http11 import HttpServer

    ready, holder = threading.Event(), {}

    def run():
        async def main():
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            server = HttpServer(_plain_app, sock, body_limit=1 << 20, graceful_s=1, keep_alive_s=30.0,
                                head_timeout_s=1.5)
            holder.update(port=sock.getsockname()[1], server=server, loop=asyncio.get_running_loop())
            ready.set()
            await server.serve()

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield holder["port"]
    holder["loop"].call_soon_threadsafe(holder["server"].stop)
    thread.join(10)


def _read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_a_malformed_request_behind_pipelined_ones_is_refused_after_their_answers(http_port):
    """The 400 went out at once, ahead of the answer to the good request before it, which a client reads
    as that request's answer (it still ran); now the good one is answered, then the 400, then the close."""
    with socket.create_connection(("127.0.0.1", http_port)) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE /x HTTP/9.9\r\n\x00\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
        data = _read_until_closed(sock)
    statuses = [data[i + 9:i + 12] for i in range(len(data)) if data.startswith(b"HTTP/1.1 ", i)]
    assert statuses == [b"200", b"400"], data
    assert data.index(b"ok") < data.index(b"400")


def test_headers_dribbled_slowly_are_answered_408_and_others_still_served(http_port):
    """A slowloris client kept its connection as long as it sent a byte now and then (the idle check only
    sees silence); the request line and headers now have a deadline from their first byte."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", http_port)) as slow:
        slow.settimeout(0.2)
        got = b""
        for byte in b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100:
            try:
                slow.sendall(bytes((byte,)))
                got += slow.recv(65536)
            except socket.timeout:
                pass
            except OSError:
                break
            if got or time.monotonic() - started > 8:
                break
            with socket.create_connection(("127.0.0.1", http_port)) as good:  # served meanwhile
                good.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert _read_until_closed(good).startswith(b"HTTP/1.1 200")
        got += _read_until_closed(slow, 5)
    assert got.startswith(b"HTTP/1.1 408") and b"connection: close" in got.lower(), got
    assert time.monotonic() - started < 8


class _Echo(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("y", t.as_numpy()) for t in payload.inputs])


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def test_a_grpc_client_that_never_reads_is_no_longer_read():
    """A client that opens streams and never reads its socket made every request an answer buffered in the
    server (1000 streams of 256 KiB: +600 MB); the server now stops reading such a peer once 4 MiB wait
    for it, and serves other clients meanwhile."""
    from hpack import Encoder

    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.service_pb2 as pb

    size = 1 << 20
    request = pb.ModelInferRequest(model_name="echo")
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "x", "FP32"
    tensor.shape.extend([1, size // 4])
    request.raw_input_contents.append(np.ones(size // 4, np.float32).tobytes())
    message = request.SerializeToString()
    message = b"\x00" + len(message).to_bytes(4, "big") + message
    headers = [(":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
               (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")]
    with running_server([_Echo("echo")]) as server:
        port = server.ports["grpc"]
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        big = (2**31 - 1).to_bytes(4, "big")
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0, b"\x00\x04" + big) +
                     _h2_frame(8, 0, 0, (2**31 - 1 - 65535).to_bytes(4, "big")))
        encoder, sent = Encoder(), 0
        sock.settimeout(3)
        try:
            for k in range(64):  # 64 MiB of requests, as many answers
                stream = 2 * k + 1
                data = b"".join(_h2_frame(0, 1 if i + 16384 >= len(message) else 0, stream, message[i:i + 16384])
                                for i in range(0, len(message), 16384))
                sock.sendall(_h2_frame(1, 4, stream, encoder.encode(headers)) + data)
                sent += 1
        except socket.timeout:
            pass
        try:
            assert sent < 48, f"the server read all {sent} requests of a client that reads nothing"
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
            assert client.is_server_live()
            small = grpcclient.InferInput("x", [1, 2], "FP32")
            small.set_data_from_numpy(np.ones((1, 2), np.float32))
            assert client.infer("echo", [small]).as_numpy("y").tolist() == [[1.0, 1.0]]
            client.close()
        finally:
            sock.close()
        native = server.grpc_servers[0]
        deadline = time.monotonic() + 5
        while getattr(native, "connections", ()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not getattr(native, "connections", ()), "the silent client's connection was not freed"


SEQUENCE_CONFIG = """name: "seq"
platform: "onnxruntime_onnx"
max_batch_size: 0
instance_group [ { count: 1 kind: KIND_CPU } ]
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
sequence_batching {
  max_sequence_idle_microseconds: 2000000
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] }
  ]
}
"""


def _sequence_repo(root):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT", "START"], ["SUM"]), helper.make_node("Mul", ["SUM", "READY"], ["OUTPUT"])],
        "seq", [helper.make_tensor_value_info(n, TensorProto.INT32, [1]) for n in ("INPUT", "START", "READY")],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.INT32, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (root / "seq" / "1").mkdir(parents=True)
    onnx.save(model, str(root / "seq" / "1" / "model.onnx"))
    (root / "seq" / "config.pbtxt").write_text(SEQUENCE_CONFIG)
    return root


def test_a_backlog_sequence_whose_client_left_does_not_keep_a_slot_for_ever(tmp_path):
    """qa L0_long_running_stress hung every client within minutes: a sequence waiting in the backlog whose
    request was cancelled idled out of the active sequences but stayed in the backlog, took the next slot
    freed and held it with nobody left to end it; with every slot so lost, each new sequence waited for ever."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from gpuserve.model_repository import ModelRepository
    from gpuserve.repository import DiskRepository

    def step(client, sequence_id, value, timeout=None, **flags):
        tensor = grpcclient.InferInput("INPUT", [1], "INT32")
        tensor.set_data_from_numpy(np.array([value], np.int32))
        result = client.infer("seq", [tensor], sequence_id=sequence_id, client_timeout=timeout, **flags)
        return int(result.as_numpy("OUTPUT")[0])

    repository = DiskRepository(_sequence_repo(tmp_path)).populate(ModelRepository())
    with running_server(repository=repository) as server:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        assert step(client, 1, 5, sequence_start=True) == 6  # holds the only slot
        with pytest.raises(InferenceServerException, match="Deadline"):
            step(client, 2, 7, timeout=0.3, sequence_start=True)  # waits in the backlog; its client leaves
        # sequence 1 stays busy while sequence 2 idles out (2 s): a step every 0.2 s leaves a loaded machine 1.8 s
        # per gap before sequence 1 idles out too (0.4 s against 1 s left it 0.6 s)
        for _ in range(15):
            time.sleep(0.2)
            assert step(client, 1, 1) == 1
        assert step(client, 1, 1, sequence_end=True) == 1  # frees the slot
        assert step(client, 3, 2, timeout=5, sequence_start=True, sequence_end=True) == 3
        client.close()


def test_a_backlog_sequence_runs_in_order_and_frees_its_slot_when_a_request_comes_as_it_is_admitted():
    """A request that came just after its sequence left the backlog took the sequence's free lock ahead of
    the requests still waking from the backlog wait: the END ran before START, and as the last request to
    finish was not the END, the slot stayed held with no sequence left to free it (qa
    L0_long_running_stress: a model's every slot lost within minutes, all clients waiting for ever)."""
    from gpuserve.triton_sequence import SequenceRouter

    async def scenario():
        router = SequenceRouter("m", {"max_sequence_idle_microseconds": 60_000_000}, 1, False, max_batch_size=0)
        ran = []

        async def request(params, label):
            key, sequence = router.open(params)
            try:
                async with sequence.turn():
                    ran.append(label)
                    await asyncio.sleep(0.01)
            finally:
                router.close(key, sequence, bool(params.get("sequence_end")))

        holder = asyncio.ensure_future(request({"sequence_id": 1, "sequence_start": True, "sequence_end": True}, "A"))
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(request({"sequence_id": 2, "sequence_start": True}, "B-start")),
                   asyncio.ensure_future(request({"sequence_id": 2}, "B-middle"))]
        await asyncio.sleep(0)
        await holder  # frees the slot: sequence 2 is admitted, its waiters not yet woken
        last = asyncio.ensure_future(request({"sequence_id": 2, "sequence_end": True}, "B-end"))
        await asyncio.wait_for(asyncio.gather(*waiting, last), 5)
        return ran, dict(router.holding), router.backlog

    ran, holding, backlog = asyncio.run(scenario())
    assert ran == ["A", "B-start", "B-middle", "B-end"]
    assert sum(holding.values()) == 0 and not backlog
