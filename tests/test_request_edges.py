"""Client requests at the edges fuzzing found answered badly (session 25): each now gets the answer the same
input gets on the protocol's other routes, a 400 where the input is the client's fault."""

from __future__ import annotations

import json
import textwrap
import time

import numpy as np
import pytest

from conftest import running_server
from gpuserve import Model, ModelRepository, PredictorConfig
from gpuserve.repository import DiskRepository

INC = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN")
                                                            .as_numpy() + 1)]) for r in requests]
"""

MANY = """
import os, threading, time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.record = os.path.join(args["model_repository"], "sent.txt")

    def execute(self, requests):
        for request in requests:
            count = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            threading.Thread(target=self.answer, args=(request.get_response_sender(), count)).start()
        return None

    def answer(self, sender, count):
        sent = 0
        while sent < count and not sender.is_cancelled():
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([sent], np.int32))]))
            sent += 1
            time.sleep(0.002)
        with open(self.record, "w") as out:
            out.write(str(sent))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
"""

WAITS = """
import os, threading, time
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.record = os.path.join(args["model_repository"], "waited.txt")

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self.wait, args=(request.get_response_sender(),)).start()
        return None

    def wait(self, sender):
        deadline = time.monotonic() + 30
        while not sender.is_cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(self.record, "w") as out:
            out.write("cancelled" if sender.is_cancelled() else "timed out")
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
"""

CONFIG = """
backend: "python"
{extra}
input [ {{ name: "IN" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
"""


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    for name, source, extra in (("inc", INC, ""), ("many", MANY, "model_transaction_policy { decoupled: true }"),
                                ("waits", WAITS, "model_transaction_policy { decoupled: true }")):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG.format(extra=extra))
        (root / name / "1" / "model.py").write_text(textwrap.dedent(source))
    with running_server(repository=DiskRepository(root).populate(ModelRepository())) as server:
        yield server, root


@pytest.mark.parametrize("body, words", [
    (b'{"IN": 2147483648}', "does not fit input datatype INT32"),
    (b'{"IN": 18446744073709551616}', "does not fit input datatype INT32"),
    (b'{"IN": 1, "parameters": {"deep": ' + b"[" * 3000 + b"]" * 3000 + b"}}", "nests too deeply"),
])
def test_generate_refuses_numbers_out_of_range_and_deep_nesting(triton, http, body, words):
    client = http(triton[0])
    assert client.post("/v2/models/inc/generate", json={"IN": 1}).json()["OUT"] == 2
    answer = client.post("/v2/models/inc/generate", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and words in answer.json()["error"], answer.text


def test_generate_on_a_decoupled_model_stops_at_its_second_response(triton, http):
    """/generate takes one response: the second settles the refusal, and the model is told to stop (it sees
    is_cancelled()) instead of running its stream to the end first."""
    server, root = triton
    count = 100_000  # 200 s of responses if it ran to the end
    answer = http(server).post("/v2/models/many/generate", json={"IN": count})
    assert answer.status_code == 400 and "use generate stream" in answer.json()["error"]
    record = root / "many" / "sent.txt"
    for _ in range(200):
        if record.exists() and record.read_text():
            break
        time.sleep(0.05)
    assert 2 <= int(record.read_text()) < count


class NumpyAnswers(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, (bytes, bytearray)):
            return {"predictions": [type(payload).__name__, len(payload)]}
        return {"predictions": np.array([0.25, 0.75], np.float32), "score": np.float64("nan")}


def test_a_cloudevent_answer_is_written_as_the_plain_answer(http):
    """NumPy values and NaN in a model's answer: the plain V1 answer writes them (NaN as null); a binary or
    structured CloudEvent's answer failed with a 500 or wrote a bare NaN, which is not JSON."""
    with running_server([NumpyAnswers("np")]) as server:
        client = http(server)
        plain = client.post("/v1/models/np:predict", json={"instances": [1]})
        assert plain.status_code == 200 and plain.json() == {"predictions": [0.25, 0.75], "score": None}
        event = {"ce-specversion": "1.0", "ce-source": "test", "ce-type": "t", "ce-id": "1"}
        binary = client.post("/v1/models/np:predict", json={"instances": [1]}, headers=event)
        assert binary.status_code == 200 and binary.json() == plain.json(), binary.text
        structured = client.post("/v1/models/np:predict", headers={"content-type": "application/cloudevents+json"},
                                 content=json.dumps({"specversion": "1.0", "source": "s", "type": "t", "id": "1",
                                                     "time": "2024-01-01T00:00:00Z", "data": {"instances": [1]}}))
        assert structured.status_code == 200 and structured.json()["data"] == plain.json(), structured.text


@pytest.mark.parametrize("size", [1000, 65_536, 1_000_000])
def test_a_large_v1_body_of_another_content_type_reaches_the_model_as_bytes(http, size):
    """KServe hands such a body (an image) to the model as bytes; from 64 KiB up it came as a bytearray."""
    with running_server([NumpyAnswers("np")]) as server:
        answer = http(server).post("/v1/models/np:predict", content=b"\xff" * size,
                                   headers={"content-type": "image/jpeg"})
        assert answer.json() == {"predictions": ["bytes", size]}


def test_a_transformer_refuses_a_body_too_deep_to_forward(http):
    """orjson reads 1,024 levels of nesting and writes 254: a body between the two reached the transformer
    and failed to forward with a 500; now a 400, the client's input."""
    with running_server([NumpyAnswers("m")]) as predictor:
        front = Model("m", predictor_config=PredictorConfig(f"127.0.0.1:{predictor.ports['http']}"))
        front.ready = True
        with running_server([front]) as transformer:
            client = http(transformer)
            body = '{"instances": ' + "[" * 300 + "]" * 300 + "}"
            answer = client.post("/v1/models/m:predict", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 400 and "too deeply" in answer.json()["error"], answer.text
            fine = client.post("/v1/models/m:predict", json={"instances": [1]})
            assert fine.json() == {"predictions": [0.25, 0.75], "score": None}


@pytest.mark.parametrize("version", ["2.0", "", "1"])
def test_a_cloudevent_of_a_version_there_is_not_is_refused_as_kserve_refuses_it(http, version):
    with running_server([NumpyAnswers("np")]) as server:
        client = http(server)
        event = {"ce-specversion": version, "ce-source": "test", "ce-type": "t", "ce-id": "1"}
        binary = client.post("/v1/models/np:predict", json={"instances": [1]}, headers=event)
        words = f"Cloud Event Exceptions: Found invalid specversion {version}"
        assert binary.status_code == 400 and binary.json() == {"error": words}
        structured = client.post("/v1/models/np:predict", json={"specversion": version, "source": "s", "type": "t",
                                                                "id": "1", "time": "x", "data": {"instances": [1]}})
        assert structured.status_code == 400 and structured.json() == {"error": words}
        event["ce-specversion"] = "0.3"
        assert client.post("/v1/models/np:predict", json={"instances": [1]}, headers=event).status_code == 200


@pytest.mark.parametrize("http_server", ["gpuserve", "uvicorn"])
def test_a_405_names_the_methods_the_path_takes(http, http_server):
    with running_server([NumpyAnswers("np")], http_server=http_server) as server:
        client = http(server)
        for method, path, allowed in (("GET", "/v2/models/np/infer", "POST"), ("PUT", "/v2/health/live", "GET"),
                                      ("POST", "/v2/models/np/ready", "GET"), ("PUT", "/v2/logging", "GET, POST"),
                                      ("DELETE", "/v2/models/np/trace/setting", "GET, POST")):
            answer = client.request(method, path)
            assert answer.status_code == 405 and allowed in answer.headers["allow"], (method, path)
            assert answer.json() == {"error": f"Method Not Allowed: {method} {path}"}


def test_infer_stream_answers_a_decoupled_model_one_event_a_response(triton, http):
    """MLServer's `infer_stream` route (server/rest/infer_stream.py) serves every model: a Triton decoupled
    model's responses each as a V2 event (the bare final flag is not one), a one-answer model's as one."""
    client = http(triton[0])
    request = {"id": "s", "inputs": [{"name": "IN", "shape": [1], "datatype": "INT32", "data": [3]}]}
    answer = client.post("/v2/models/many/infer_stream", json=request)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(chunk[len("data: "):]) for chunk in answer.text.split("\n\n") if chunk]
    assert [(e["id"], e["outputs"][0]["data"]) for e in events] == [("s", [0]), ("s", [1]), ("s", [2])]
    single = client.post("/v2/models/inc/versions/1/infer_stream", json=request).text
    assert single.startswith("data: ") and json.loads(single[len("data: "):])["outputs"][0]["data"] == [4]



@pytest.mark.parametrize("route", ["generate_stream", "infer_stream"])
def test_a_client_that_leaves_before_the_first_streamed_response_cancels_the_request(triton, http, route):
    """Before: nothing watched the connection until the first response, so a decoupled model waiting to
    answer never saw is_cancelled() and ran to its own end for a client long gone."""
    import httpx

    server, root = triton
    record = root / "waits" / "waited.txt"
    record.unlink(missing_ok=True)
    body = {"IN": 1} if route == "generate_stream" else {"inputs": [
        {"name": "IN", "shape": [1], "datatype": "INT32", "data": [1]}]}
    with pytest.raises(httpx.ReadTimeout):
        http(server).post(f"/v2/models/waits/{route}", json=body, timeout=0.5)
    for _ in range(300):
        if record.exists() and record.read_text():
            break
        time.sleep(0.02)
    assert record.read_text() == "cancelled"
