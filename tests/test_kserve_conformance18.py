"""What a KServe user sees, checked against a real kserve ModelServer (benchmarks/peers/kserve_conformance.py):
a V1 body declared as something other than JSON reaches the model as bytes and a str/bytes answer goes back
as it is (image and text models rely on it); an exception outside kserve's error table answers
`"<type> : <message>"` as kserve's catch-all handler; `ModelNotFound(name)` raised by user code says
kserve's words, while the server's own unknown-model answer on V2 stays Triton's."""

import grpc
import pytest

from conftest import running_server
from gpuserve import InferRequest, Model
from gpuserve.errors import InvalidInput, ModelNotFound

V2_BODY = {"id": "q", "inputs": [{"name": "k", "shape": [1], "datatype": "BYTES", "data": ["plain"]}]}


class Raw(Model):
    def load(self):
        self.ready = True

    def preprocess(self, payload, headers=None):
        return {"raw": payload} if isinstance(payload, bytes) else payload

    def predict(self, payload, headers=None):
        if "raw" not in payload:
            return {"predictions": payload["instances"]}
        raw = payload["raw"]
        return raw.decode().upper() if headers.get("x-as") == "text" else raw[::-1]


ERRORS = {"plain": lambda: Exception("boom"), "value": lambda: ValueError("not a value"),
          "key": lambda: KeyError("k"), "invalid": lambda: InvalidInput("bad value"),
          "notfound": lambda: ModelNotFound("elsewhere"), "notimpl": lambda: NotImplementedError("not here")}


class Raiser(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            kind = payload.inputs[0].as_numpy().ravel()[0]
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        else:
            kind = payload["instances"][0]
        raise ERRORS[kind]()


@pytest.mark.parametrize("http_server", ["gpuserve", "uvicorn"])
def test_v1_non_json_body_reaches_the_model_as_bytes(http, http_server):
    with running_server([Raw("raw")], http_server=http_server) as server:
        client = http(server)
        text = client.post("/v1/models/raw:predict", content=b"plain", headers={"content-type": "text/plain",
                                                                                 "x-as": "text"})
        assert text.status_code == 200 and text.content == b"PLAIN" and "content-type" not in text.headers
        image = client.post("/v1/models/raw:predict", content=b"\x89PNG\x00\x01",
                            headers={"content-type": "image/png"})
        assert image.status_code == 200 and image.content == b"\x01\x00GNP\x89"
        # the JSON types kserve reads as JSON still are JSON
        for kind in ("application/json", "application/octet-stream", "application/json; charset=utf-8"):
            reply = client.post("/v1/models/raw:predict", content=b'{"instances": [5]}',
                                headers={"content-type": kind})
            assert reply.json() == {"predictions": [5]}, kind
        bad = client.post("/v1/models/raw:predict", content=b"{oops", headers={"content-type": "application/json"})
        assert bad.status_code == 400


@pytest.mark.parametrize("http_server", ["gpuserve", "uvicorn"])
def test_user_errors_answer_as_kserve(http, http_server):
    with running_server([Raiser("raiser")], http_server=http_server) as server:
        client = http(server)
        expected = {"plain": (500, "Exception : boom"), "value": (500, "ValueError : not a value"),
                    "key": (500, "KeyError : 'k'"), "invalid": (400, "bad value"),
                    "notfound": (404, "Model with name elsewhere does not exist."),
                    "notimpl": (501, "not here")}
        for kind, (status, text) in expected.items():
            v1 = client.post("/v1/models/raiser:predict", json={"instances": [kind]})
            assert (v1.status_code, v1.json()) == (status, {"error": text}), kind
            body = {**V2_BODY, "inputs": [{**V2_BODY["inputs"][0], "data": [kind]}]}
            v2 = client.post("/v2/models/raiser/infer", json=body)
            assert (v2.status_code, v2.json()) == (status, {"error": text}), kind
        # the server's own answer for a model it does not have stays Triton's on V2, kserve's on V1
        assert client.post("/v2/models/nothing/infer", json=V2_BODY).json() == {
            "error": "Request for unknown model: 'nothing' is not found"}
        assert client.post("/v1/models/nothing:predict", json={"instances": [1]}).json() == {
            "error": "Model with name nothing does not exist."}


def test_user_model_not_found_over_grpc():
    from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc

    with running_server([Raiser("raiser")]) as server:
        request = pb.ModelInferRequest(model_name="raiser")
        request.inputs.add(name="k", datatype="BYTES", shape=[1])
        request.raw_input_contents.append(len(b"notfound").to_bytes(4, "little") + b"notfound")
        with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
            with pytest.raises(grpc.RpcError) as failure:
                service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        assert failure.value.details() == "Model with name elsewhere does not exist."


@pytest.mark.parametrize("http_server", ["gpuserve", "uvicorn"])
def test_v1_cloudevents_as_kserve(http, http_server):
    with running_server([Raw("raw")], http_server=http_server) as server:
        client = http(server)
        binary = client.post("/v1/models/raw:predict", json={"instances": [4]},
                             headers={"ce-specversion": "1.0", "ce-source": "me", "ce-type": "t", "ce-id": "1"})
        assert binary.status_code == 200 and binary.json() == {"predictions": [4]}
        assert binary.headers["ce-type"] == "io.kserve.inference.response"
        assert binary.headers["ce-source"] == "io.kserve.inference.raw" and binary.headers["ce-id"] != "1"
        event = {"specversion": "1.0", "source": "me", "type": "t", "id": "1", "time": "2026-12-05T00:00:00Z",
                 "data": {"instances": [6]}}
        structured = client.post("/v1/models/raw:predict", json=event,
                                 headers={"content-type": "application/cloudevents+json"})
        assert structured.headers["content-type"] == "application/cloudevents+json"
        answer = structured.json()
        assert answer["data"] == {"predictions": [6]} and answer["type"] == "io.kserve.inference.response"
        # an event-shaped JSON body is unwrapped, the answer is plain JSON
        assert client.post("/v1/models/raw:predict", json=event).json() == {"predictions": [6]}
        bad = client.post("/v1/models/raw:predict", content=b"{oops", headers={
            "content-type": "application/json", "ce-specversion": "1.0", "ce-source": "me", "ce-type": "t",
            "ce-id": "1"})
        assert bad.status_code == 400 and "binary json cloudevent" in bad.json()["error"]


@pytest.mark.parametrize("http_server", ["gpuserve", "uvicorn"])
def test_curl_form_bodies_stay_json_and_builtin_models_refuse_raw_bodies(http, http_server, simple_onnx_repo):
    from gpuserve.model_repository import ModelRepository
    from gpuserve.repository import DiskRepository

    repository = DiskRepository(str(simple_onnx_repo[0])).populate(ModelRepository())
    with running_server([Raw("raw")], repository=repository, http_server=http_server) as server:
        client = http(server)
        form = {"content-type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
        assert client.post("/v1/models/raw:predict", content=b'{"instances": [3]}', headers=form).json() == {
            "predictions": [3]}
        assert client.post("/v1/models/raw:predict", content=b"a=1", headers=form).content == b"1=a"
        assert client.post("/v1/models/simple:predict", content=b'{"instances": [[1, 2, 3, 4]]}',
                           headers=form).status_code == 200
        for declared in ("text/html", "text/plain"):  # hey's and ab's defaults: a load test's JSON stays JSON
            assert client.post("/v1/models/simple:predict", content=b' {"instances": [[1, 2, 3, 4]]}',
                               headers={"content-type": declared}).status_code == 200
        image = client.post("/v1/models/simple:predict", content=b"\x89PNG", headers={"content-type": "image/png"})
        assert image.status_code == 400 and "takes a JSON body on V1" in image.json()["error"]
