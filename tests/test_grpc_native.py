"""What only the native gRPC transport (settings.grpc_transport = "native", server/grpc/native.py) has to
get right itself; test_grpc.py runs every RPC against both transports."""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import InferOutput, InferResponse, Model

TIMEOUT = 20


class Double(Model):
    def load(self):
        self.ready = True
        return True

    async def predict(self, payload, headers=None):
        x = payload.inputs[0].as_numpy()
        delay = float(payload.parameters.get("sleep", 0) or 0) if payload.parameters else 0.0
        if delay:
            await asyncio.sleep(delay)
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("OUTPUT0", x * 2)])


@pytest.fixture(scope="module")
def server():
    with running_server([Double("double")], grpc_transport="native") as srv:
        yield srv


@pytest.fixture(scope="module")
def url(server):
    return f"127.0.0.1:{server.ports['grpc']}"


def _input(x):
    tensor = triton.InferInput("INPUT0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_are_read(url, algorithm):
    x = np.random.default_rng(0).normal(size=(64, 256)).astype(np.float32)
    with triton.InferenceServerClient(url) as client:
        result = client.infer("double", [_input(x)], compression_algorithm=algorithm, client_timeout=TIMEOUT)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x * 2)


def test_deadline_ends_the_call_and_the_server_goes_on(url):
    x = np.ones((1, 4), np.float32)
    with triton.InferenceServerClient(url) as client:
        start = time.monotonic()
        with pytest.raises(InferenceServerException) as excinfo:
            client.infer("double", [_input(x)], parameters={"sleep": 2.0}, client_timeout=0.3)
        assert "Deadline" in str(excinfo.value) and time.monotonic() - start < 1.5
        np.testing.assert_array_equal(client.infer("double", [_input(x)]).as_numpy("OUTPUT0"), x * 2)


def test_many_concurrent_calls_and_streams_on_one_channel(url):
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(int(rng.integers(1, 50)), 8)).astype(np.float32) for _ in range(200)]

    async def main():
        async with triton_aio.InferenceServerClient(url) as client:
            unary = asyncio.gather(*(client.infer("double", [_input(x)], request_id=str(i)) for i, x in enumerate(xs)))

            async def requests():
                for i, x in enumerate(xs[:50]):
                    yield {"model_name": "double", "inputs": [_input(x)], "request_id": f"s{i}"}

            streamed = []
            async for result, error in client.stream_infer(requests()):
                assert error is None
                streamed.append(result)
                if len(streamed) == 50:
                    break
            return await unary, streamed

    unary, streamed = asyncio.run(main())
    for i, result in enumerate(unary):
        assert result.get_response().id == str(i)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), xs[i] * 2)
    assert [r.get_response().id for r in streamed] == [f"s{i}" for i in range(50)]
    for i, result in enumerate(streamed):
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), xs[i] * 2)


def test_a_connection_that_is_not_http2_is_closed_and_the_server_goes_on(server, url):
    with socket.create_connection(("127.0.0.1", server.ports["grpc"]), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        data = sock.recv(65536)
        while data:  # our SETTINGS, then GOAWAY, then the close
            more = sock.recv(65536)
            if not more:
                break
            data += more
    with triton.InferenceServerClient(url) as client:
        assert client.is_server_live()


def test_a_header_block_without_end_is_cut_off_and_the_server_goes_on(server, url):
    # a CONTINUATION flood: HEADERS without END_HEADERS, then CONTINUATIONs that never end; the server must
    # not buffer them without bound (grpc-core and Triton cut such a client off too)
    from gpuserve.server.grpc.http2 import CONTINUATION, ENHANCE_YOUR_CALM, GOAWAY, HEADERS, SETTINGS, frame

    with socket.create_connection(("127.0.0.1", server.ports["grpc"]), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0) + frame(HEADERS, 0, 1, b"\x00" * 100))
        received, sent = b"", 0
        try:
            for _ in range(200):  # 200 x 15 KB = 3 MB offered, far past the limit
                sock.sendall(frame(CONTINUATION, 0, 1, b"\x00" * 15000))
                sent += 15000
        except OSError:
            pass  # the server closed the connection while we were still sending
        sock.settimeout(5)
        try:
            while True:
                more = sock.recv(65536)
                if not more:
                    break
                received += more
        except OSError:
            pass
    assert sent < 3_000_000 or received  # cut off: either mid-send, or a GOAWAY waited for us
    codes, at = [], 0
    while at + 9 <= len(received):  # the frames the server sent: its SETTINGS, then the GOAWAY
        length, kind = int.from_bytes(received[at:at + 3], "big"), received[at + 3]
        if kind == GOAWAY:
            codes.append(int.from_bytes(received[at + 13:at + 17], "big"))
        at += 9 + length
    assert not received or codes == [ENHANCE_YOUR_CALM]
    with triton.InferenceServerClient(url) as client:
        assert client.is_server_live()


def test_without_hpack_the_server_falls_back_to_grpc_aio(monkeypatch, caplog):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "hpack" else real(name, *a))
    with caplog.at_level("WARNING", logger="gpuserve"):
        with running_server([Double("double")]) as srv:  # native is the default
            with triton.InferenceServerClient(f"127.0.0.1:{srv.ports['grpc']}") as client:
                x = np.ones((2, 3), np.float32)
                np.testing.assert_array_equal(client.infer("double", [_input(x)]).as_numpy("OUTPUT0"), x * 2)
    assert any("needs the hpack package" in record.getMessage() for record in caplog.records)


def test_custom_metadata_reaches_the_model_as_headers(url):
    seen = {}

    class Headers(Double):
        async def predict(self, payload, headers=None):
            seen.update(headers or {})
            return await super().predict(payload, headers)

    with running_server([Headers("headers")]) as srv:
        with triton.InferenceServerClient(f"127.0.0.1:{srv.ports['grpc']}") as client:
            client.infer("headers", [_input(np.ones((1, 2), np.float32))], headers={"x-tenant": "blue"})
    assert seen.get("x-tenant") == "blue"
    assert not any(key.startswith((":", "grpc-")) or key in ("te", "content-type") for key in seen)


def test_a_request_over_the_message_limit_is_resource_exhausted():
    with running_server([Double("double")], grpc_max_message_bytes=1024) as srv:
        with triton.InferenceServerClient(f"127.0.0.1:{srv.ports['grpc']}") as client:
            with pytest.raises(InferenceServerException) as excinfo:
                client.infer("double", [_input(np.ones((64, 64), np.float32))])
            assert "RESOURCE_EXHAUSTED" in str(excinfo.value.status()) and "over the limit" in str(excinfo.value)
            x = np.ones((2, 2), np.float32)
            np.testing.assert_array_equal(client.infer("double", [_input(x)]).as_numpy("OUTPUT0"), x * 2)
