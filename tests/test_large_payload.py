"""Large requests and answers (qa/L0_large_payload): the server holds a large tensor about once, not once
per copy. A 1.9 GB request used to peak at ~8 GB (the body joined from its pieces, the answer built as
bytes and joined twice more; over gRPC, protobuf's copies both ways), which is what these tests catch:
each measures the server process's peak RSS growth (VmHWM, reset through /proc/PID/clear_refs) for one
128 MB request to a Python-backend identity model, which itself copies nothing."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import free_ports

from gpuserve.errors import InvalidInput
from gpuserve.server.grpc import inference_pb2 as pb
from gpuserve.server.grpc.large import RawAnswer, parse_request, split_raw_inputs

MB = 1 << 20
SIZE = 128 * MB
IDENTITY = '''import triton_python_backend_utils as pb_utils
class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0",
                pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]) for r in requests]
'''
CONFIG = '''name: "identity"
backend: "python"
max_batch_size: 0
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }]
'''


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} for {pid}")


def _reset_peak(pid: int) -> None:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
    except OSError as exc:
        pytest.skip(f"cannot reset the peak RSS here: {exc}")


def _start(root, *flags):
    ports = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={root}",
                             "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port",
                             str(ports[2]), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            connection = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=5)
            connection.request("GET", "/v2/models/identity/ready")
            ready = connection.getresponse().status == 200
            connection.close()
            if ready:
                return proc, ports
        except OSError:
            pass
        assert time.monotonic() < deadline, "server not ready"
        time.sleep(0.2)


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _repository(root):
    (root / "identity" / "1").mkdir(parents=True)
    (root / "identity" / "config.pbtxt").write_text(CONFIG)
    (root / "identity" / "1" / "model.py").write_text(IDENTITY)
    return root


def test_body_over_the_limit_is_read_before_the_connection_closes(tmp_path):
    """The 413 for a declared length over --http-max-input-size went out and the connection closed at once:
    a client still sending its body got a reset (tritonclient: a broken pipe, not the server's error)."""
    proc, (http_port, _, _) = _start(_repository(tmp_path), "--http-max-input-size=1048576")
    try:
        body = b"\0" * (16 * MB)
        with socket.create_connection(("127.0.0.1", http_port), timeout=30) as sock:
            sock.sendall(b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                         % len(body))
            sock.sendall(body)  # reset here when the server closed early
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
                more = sock.recv(65536)
                if not more:
                    break
                reply += more
        assert reply.startswith(b"HTTP/1.1 413") and b"exceeds the limit" in reply, reply[:300]
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    proc, ports = _start(_repository(tmp_path_factory.mktemp("large")))
    yield proc, ports
    _stop(proc)


def _binary_request(data: np.ndarray, accept_gzip: bool = False):
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [data.size], "datatype": "FP32",
                                     "parameters": {"binary_data_size": data.nbytes}}],
                         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream",
               "Content-Length": str(len(header) + data.nbytes)}
    if accept_gzip:
        headers["Accept-Encoding"] = "gzip"
    return header, headers


def _post_binary(port: int, data: np.ndarray, accept_gzip: bool = False):
    header, headers = _binary_request(data, accept_gzip)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.putrequest("POST", "/v2/models/identity/infer", skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(header)
    connection.send(memoryview(data).cast("B"))
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200, body[:500]
    if response.getheader("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    length = int(response.getheader("Inference-Header-Content-Length"))
    answer = json.loads(body[:length])
    assert answer["outputs"][0]["parameters"]["binary_data_size"] == data.nbytes
    return np.frombuffer(body, dtype=np.float32, offset=length)


def test_binary_http_request_peaks_near_its_size(server):
    """Body joined from its pieces and the answer joined twice: the peak was ~3x the request."""
    proc, (http_port, _, _) = server
    data = np.arange(SIZE // 4, dtype=np.float32)
    _post_binary(http_port, data[:1024])  # warm
    _reset_peak(proc.pid)
    before = _status(proc.pid, "VmRSS")
    got = _post_binary(http_port, data)
    growth = _status(proc.pid, "VmHWM") - before
    assert np.array_equal(got, data)
    assert growth < 1.6 * SIZE, f"peak grew by {growth / MB:.0f} MB for a {SIZE // MB} MB request"


def test_request_not_held_after_its_answer(tmp_path):
    """The batcher's loop kept its last batch while it waited for the next request: a large request's
    arrays stayed in memory until then (so the next large one peaked at twice its size). A fresh server:
    its first request goes through the loop (later lone ones may run inline, past it)."""
    proc, (http_port, _, _) = _start(_repository(tmp_path))
    try:
        data = np.arange(SIZE // 4, dtype=np.float32)
        before = _status(proc.pid, "VmRSS")
        _post_binary(http_port, data)
        deadline = time.monotonic() + 10
        while _status(proc.pid, "VmRSS") - before > SIZE // 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        held = _status(proc.pid, "VmRSS") - before
    finally:
        _stop(proc)
    assert held < SIZE // 2, f"{held / MB:.0f} MB still held after a {SIZE // MB} MB request was answered"


def test_grpc_request_peaks_near_its_size(server):
    """protobuf's copies of raw_input_contents and raw_output_contents: the peak was ~6x the request."""
    import tritonclient.grpc as grpcclient

    proc, (_, grpc_port, _) = server
    data = np.arange(SIZE // 4, dtype=np.float32)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")

    def infer(array):
        tensor = grpcclient.InferInput("INPUT0", list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        return client.infer("identity", [tensor]).as_numpy("OUTPUT0")

    infer(data[:1024])
    _reset_peak(proc.pid)
    before = _status(proc.pid, "VmRSS")
    got = infer(data)
    growth = _status(proc.pid, "VmHWM") - before
    client.close()
    assert np.array_equal(got, data)
    assert growth < 2.6 * SIZE, f"peak grew by {growth / MB:.0f} MB for a {SIZE // MB} MB request"


def test_large_answer_compressed_when_asked(server):
    """A large answer is written in pieces, but one the client asks gzip for is still compressed."""
    _, (http_port, _, _) = server
    data = np.arange(2 * MB // 4, dtype=np.float32)
    assert np.array_equal(_post_binary(http_port, data, accept_gzip=True), data)


def test_large_chunked_request_still_read(server):
    """A chunked body (no Content-Length) is read the ordinary way."""
    _, (http_port, _, _) = server
    data = np.arange(2 * MB // 4, dtype=np.float32)
    header, headers = _binary_request(data)
    del headers["Content-Length"]
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
    connection.request("POST", "/v2/models/identity/infer", body=iter([header, data.tobytes()]), headers=headers,
                       encode_chunked=True)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200, body[:300]
    length = int(response.getheader("Inference-Header-Content-Length"))
    assert np.array_equal(np.frombuffer(body, dtype=np.float32, offset=length), data)


def test_grpc_stream_large_request(server):
    """ModelStreamInfer reads large requests through the same view parse."""
    import queue

    import tritonclient.grpc as grpcclient

    _, (_, grpc_port, _) = server
    data = np.arange(2 * MB // 4, dtype=np.float32)
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        tensor = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
        tensor.set_data_from_numpy(data)
        client.async_stream_infer("identity", [tensor])
        result, error = answers.get(timeout=60)
    finally:
        client.stop_stream()
        client.close()
    assert error is None, error
    assert np.array_equal(result.as_numpy("OUTPUT0"), data)


def _request_bytes(*raws: bytes) -> bytes:
    message = pb.ModelInferRequest(model_name="m", id="7")
    for index, raw in enumerate(raws):
        message.inputs.add(name=f"IN{index}", datatype="INT8", shape=[len(raw)])
        message.raw_input_contents.append(raw)
    message.outputs.add(name="OUT")
    return message.SerializeToString()


def test_split_raw_inputs_matches_protobuf():
    raws = (bytes(range(256)) * 5000, b"", b"xyz")
    wire = _request_bytes(*raws)
    parsed = parse_request(pb.ModelInferRequest, memoryview(bytearray(wire)))
    assert [bytes(view) for view in parsed.raw_input_contents] == list(raws)
    assert not any(view.readonly for view in parsed.raw_input_contents)  # the server's own buffer
    assert parsed.model_name == "m" and parsed.id == "7" and [t.name for t in parsed.inputs] == ["IN0", "IN1", "IN2"]
    assert not parsed.message.raw_input_contents and parsed.outputs[0].name == "OUT"


@pytest.mark.parametrize("cut", [1, 7, 40])
def test_split_raw_inputs_refuses_a_truncated_message(cut):
    wire = _request_bytes(b"a" * 5000)
    with pytest.raises(InvalidInput, match="not valid protobuf"):
        split_raw_inputs(memoryview(wire[:-cut]))


def test_raw_answer_is_the_same_message():
    head = pb.ModelInferResponse(model_name="m", model_version="1")
    head.outputs.add(name="A", datatype="FP32", shape=[3])
    head.outputs.add(name="B", datatype="INT8", shape=[0])
    a = np.array([1, 2, 3], dtype=np.float32)
    answer = RawAnswer(head, [memoryview(a).cast("B"), b""])
    parsed = pb.ModelInferResponse.FromString(answer.SerializeToString())
    assert list(parsed.raw_output_contents) == [a.tobytes(), b""]
    assert parsed.model_name == "m" and [o.name for o in parsed.outputs] == ["A", "B"]


@pytest.mark.parametrize("elements", [16383, 16384, 16385, 100000, 200000, 262145])
def test_sizes_around_the_view_bound_answer_exactly(server, elements):
    """Requests and answers from 64 KiB on take the view paths (server/grpc/large.py, server/binary.py,
    server/rest/http11.py): sizes just under, at and over the bound, and mid-size ones, come back exact
    through tritonclient over HTTP (binary tensors) and gRPC, unary and on a stream."""
    import queue

    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    _, (http_port, grpc_port, _) = server
    data = np.random.default_rng(elements).standard_normal(elements).astype(np.float32)
    with httpclient.InferenceServerClient(f"127.0.0.1:{http_port}") as client:
        tensor = httpclient.InferInput("INPUT0", [elements], "FP32")
        tensor.set_data_from_numpy(data, binary_data=True)
        for _ in range(2):
            answer = client.infer("identity", [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)])
            assert np.array_equal(answer.as_numpy("OUTPUT0"), data)
    answers: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
        tensor = grpcclient.InferInput("INPUT0", [elements], "FP32")
        tensor.set_data_from_numpy(data)
        for _ in range(2):
            assert np.array_equal(client.infer("identity", [tensor]).as_numpy("OUTPUT0"), data)
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            for _ in range(3):
                client.async_stream_infer("identity", [tensor])
            for _ in range(3):
                result, error = answers.get(timeout=60)
                assert error is None, error
                assert np.array_equal(result.as_numpy("OUTPUT0"), data)
        finally:
            client.stop_stream()
