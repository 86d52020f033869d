"""Large answers leave as views of the output arrays (gpuserve.datatypes.wire_raw), written to the socket as the
client reads them. A model that keeps one output array and refills it on each execute must not see a previous
answer change under a client still reading it: Triton's Python stub copies outputs into shared memory when
execute returns, so its users never see that. Each test holds one answer half-sent (a client that does not
read: a tiny TCP receive window over HTTP, no HTTP/2 WINDOW_UPDATE over gRPC), has other clients rewrite the
model's array meanwhile, then reads the held answer and checks every element is its own request's value."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import free_ports

from gpuserve.server.grpc import inference_pb2 as pb
from gpuserve.server.grpc.http2 import literal

ELEMENTS = 1 << 20  # 4 MB of INT32: far more than the socket buffers hold
REUSING = '''import numpy as np
import triton_python_backend_utils as pb_utils
OUT = np.zeros(%d, dtype=np.int32)
class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            OUT[:] = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()[0]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", OUT)]))
        return responses
''' % ELEMENTS
CONFIG = '''name: "reuse"
backend: "python"
max_batch_size: 0
input [{ name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] }]
output [{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] }]
'''


def _start(root, source: str, config: str = CONFIG, model: str = "reuse"):
    """A server of its own (gpuserve start) for one Python-backend model, written into `root` first."""
    (root / model / "1").mkdir(parents=True)
    (root / model / "config.pbtxt").write_text(config)
    (root / model / "1" / "model.py").write_text(source)
    ports = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={root}",
                             "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port",
                             str(ports[2])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_ready(proc, ports[0], model)
    return proc, ports


def _wait_ready(proc, port: int, model: str = "reuse") -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", f"/v2/models/{model}/ready")
            ready = connection.getresponse().status == 200
            connection.close()
            if ready:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "server not ready"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    proc, ports = _start(root, REUSING)
    yield ports
    _stop(proc)


def _stop(proc) -> None:
    """A module's server at its fixture's end: asked to stop, killed if it has not within 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _http_request(value: int) -> bytes:
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "INT32",
                                     "parameters": {"binary_data_size": 4}}],
                         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
    body = header + np.int32(value).tobytes()
    return (b"POST /v2/models/reuse/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(header), len(body)) + body)


def _rewrite(ports, values) -> None:
    """Other clients' requests, each answered right: the model's array holds their values afterwards."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports[1]}")
    try:
        for value in values:
            tensor = grpcclient.InferInput("INPUT0", [1], "INT32")
            tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
            answer = client.infer("reuse", [tensor]).as_numpy("OUTPUT0")
            assert answer.shape == (ELEMENTS,) and (answer == value).all()
    finally:
        client.close()


def _read_http(sock) -> bytes:
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    head, body = reply.split(b"\r\n\r\n", 1)
    length = int([line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0])
    while len(body) < length:
        more = sock.recv(1 << 20)
        assert more, "connection closed mid-answer"
        body += more
    header_length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                         if line.lower().startswith(b"inference-header-content-length")][0])
    return body[header_length:]


def test_http_binary_answer_held_by_a_slow_client_keeps_its_values(server):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the server's write stalls after a few KB
    sock.settimeout(60)
    sock.connect(("127.0.0.1", server[0]))
    try:
        sock.sendall(_http_request(7))
        time.sleep(0.5)  # answered and stalled mid-write
        _rewrite(server, range(100, 103))
        data = np.frombuffer(_read_http(sock), dtype=np.int32)
    finally:
        sock.close()
    assert data.shape == (ELEMENTS,)
    assert (data == 7).all(), f"values {sorted(set(np.unique(data).tolist()))} in an answer to 7"


def _h2_frames(sock, buffer: bytearray):
    while True:
        while len(buffer) < 9 or len(buffer) < 9 + int.from_bytes(buffer[:3], "big"):
            more = sock.recv(1 << 20)
            assert more, "connection closed mid-answer"
            buffer += more
        length = int.from_bytes(buffer[:3], "big")
        kind, flags, stream = buffer[3], buffer[4], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
        payload = bytes(buffer[9:9 + length])
        del buffer[:9 + length]
        yield kind, flags, stream, payload


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def test_grpc_answer_held_by_flow_control_keeps_its_values(server):
    """A bare HTTP/2 client that leaves the default 64 KiB windows as they are: the server sends 64 KiB of
    the answer and waits for a WINDOW_UPDATE, holding the rest."""
    request = pb.ModelInferRequest(model_name="reuse", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="INPUT0", datatype="INT32", shape=[1])], raw_input_contents=[np.int32(7).tobytes()])
    message = request.SerializeToString()
    headers = b"".join(literal(name, value) for name, value in (
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/inference.GRPCInferenceService/ModelInfer"),
        (b":authority", b"x"), (b"content-type", b"application/grpc"), (b"te", b"trailers")))
    sock = socket.create_connection(("127.0.0.1", server[1]), timeout=60)
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0) + _frame(1, 4, 1, headers)
                     + _frame(0, 1, 1, b"\0" + len(message).to_bytes(4, "big") + message))
        frames, data = _h2_frames(sock, bytearray()), bytearray()
        for kind, flags, stream, payload in frames:
            if kind == 4 and not flags & 1:
                sock.sendall(_frame(4, 1, 0))
            if kind == 0 and stream == 1:
                data += payload
                if len(data) >= 60000:
                    break
        _rewrite(server, range(100, 103))
        sock.sendall(_frame(8, 0, 0, (1 << 30).to_bytes(4, "big")) + _frame(8, 0, 1, (1 << 30).to_bytes(4, "big")))
        for kind, flags, stream, payload in frames:
            if kind == 0 and stream == 1:
                data += payload
            if kind == 1 and stream == 1 and flags & 1:  # the trailers
                break
    finally:
        sock.close()
    assert len(data) == 5 + int.from_bytes(data[1:5], "big")
    answer = pb.ModelInferResponse.FromString(bytes(data[5:]))
    values = np.frombuffer(answer.raw_output_contents[0], dtype=np.int32)
    assert values.shape == (ELEMENTS,)
    assert (values == 7).all(), f"values {sorted(set(np.unique(values).tolist()))} in an answer to 7"


SENDING_LATER = '''import threading
import numpy as np
import triton_python_backend_utils as pb_utils
OUT = np.zeros(%d, dtype=np.int32)
def send_then_refill(sender, value):
    OUT[:] = value
    sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", OUT)]))
    OUT[:] = -1  # after send(): Triton's stub has copied the answer by now
class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            value = int(pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()[0])
            threading.Thread(target=send_then_refill, args=(request.get_response_sender(), value)).start()
        return None
''' % ELEMENTS


def test_python_answer_sent_after_execute_is_taken_at_send(tmp_path):
    import tritonclient.http as httpclient

    proc, ports = _start(tmp_path, SENDING_LATER)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
    try:
        for value in (5, 6, 7):
            tensor = httpclient.InferInput("INPUT0", [1], "INT32")
            tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
            answer = client.infer("reuse", [tensor]).as_numpy("OUTPUT0")
            assert (answer == value).all(), f"values {sorted(set(np.unique(answer).tolist()))} in an answer to {value}"
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)


CUSTOM = """import sys
import numpy as np
from gpuserve import InferOutput, InferResponse, Model, ModelServer
class Reuse(Model):
    def __init__(self):
        super().__init__("reuse")
        self.out = np.zeros(%d, dtype=np.int32)
        self.ready = True
    async def predict(self, payload, headers=None, response_headers=None):
        self.out[:] = payload.inputs[0].as_numpy()[0]
        return InferResponse(payload.id, self.name, [InferOutput("OUTPUT0", [self.out.size], "INT32", self.out)])
ports = [int(p) for p in sys.argv[1:]]
ModelServer(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2]).start([Reuse()])
""" % ELEMENTS


def test_custom_model_refilling_its_output_keeps_a_held_answer(tmp_path):
    """A gpuserve Model subclass (KServe's API) that refills one array: its answer is copied once it leaves
    predict, so a client still reading keeps its values."""
    script = tmp_path / "reuse.py"
    script.write_text(CUSTOM)
    ports = free_ports(3)
    proc = subprocess.Popen([sys.executable, str(script), *map(str, ports)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _wait_ready(proc, ports[0])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(60)
        sock.connect(("127.0.0.1", ports[0]))
        try:
            sock.sendall(_http_request(7))
            time.sleep(0.5)
            _rewrite(ports, range(100, 103))
            data = np.frombuffer(_read_http(sock), dtype=np.int32)
        finally:
            sock.close()
    finally:
        proc.terminate()
        proc.wait(30)
    assert (data == 7).all(), f"values {sorted(set(np.unique(data).tolist()))} in an answer to 7"


def test_identity_answers_stay_views_of_the_request():
    """An output that is (a view of) a request's input is not copied: nothing rewrites a request's bytes."""
    from gpuserve.ownership import owned, roots

    body = memoryview(bytearray(np.arange(8, dtype=np.int32).tobytes())).toreadonly()
    given = np.frombuffer(body, dtype=np.int32)
    inputs = roots([given])
    assert owned(given, inputs) is given
    assert owned(given.reshape(2, 4), inputs).base is not None
    assert np.shares_memory(owned(given[2:], inputs), given)
    kept = np.zeros(8, dtype=np.int32)
    assert owned(kept, inputs) is not kept and owned(kept[1:], inputs).base is None
