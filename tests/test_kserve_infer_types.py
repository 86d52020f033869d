"""KServe 0.16's request/response types as its users call them (checked against kserve 0.16.0 itself):
tensor states and errors, `to_rest()`'s `(body, json_length)`, `to_grpc`/`from_grpc`/`from_bytes`, the
`infer_type` helpers, what the server answers for a model's binary-announced outputs, and `/docs` off
by default for a KServe script."""

import asyncio
import sys

import httpx
import numpy as np
import orjson
import pytest

from conftest import free_ports

from gpuserve import InferenceError, InferInput, InferOutput, InferRequest, InferResponse, InvalidInput, Model
from gpuserve.protocol import infer_type
from gpuserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from gpuserve.types import RequestedOutput
from test_kserve_model_server import serving

F32 = np.array([[1.5, 2.5]], dtype=np.float32)
WORDS = np.array([b"ab", b"c"], dtype=object)
WORDS_RAW = b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"


def pair(binary=None, cls=InferInput):
    a, b = cls("a", [1, 2], "FP32", data=[1.5, 2.5]), cls("b", [2], "BYTES", data=["ab", "c"])
    if binary is not None:
        a, b = cls("a", [1, 2], "FP32"), cls("b", [2], "BYTES")
        a.set_data_from_numpy(F32, binary_data=binary)
        b.set_data_from_numpy(WORDS, binary_data=binary)
    return [a, b]


# -- tensors (item 3) -------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [InferInput, InferOutput])
def test_tensor_setters_and_datatype(cls):
    tensor = cls("x", [1, 2], "fp32")
    assert tensor.datatype == "FP32" and tensor.data is None
    tensor.shape = [2, 1]
    tensor.data = [1.0, 2.0]
    assert tensor.shape == [2, 1] and tensor.as_numpy().shape == (2, 1)
    tensor.parameters = {"a": 1}
    assert tensor.parameters == {"a": 1}
    given = cls("y", [1, 2], "FP32", data=F32)
    assert given.data is F32  # NumPy data reads back as given


@pytest.mark.parametrize("cls", [InferInput, InferOutput])
def test_set_data_from_numpy_binary_and_json(cls):
    a, b = pair(binary=True, cls=cls)
    assert a.data is None and a.parameters == {"binary_data_size": 8} and a.as_numpy().tolist() == [[1.5, 2.5]]
    assert b.data is None and b.parameters == {"binary_data_size": 11} and b.as_numpy().tolist() == [b"ab", b"c"]
    a.set_data_from_numpy(F32, binary_data=False)
    b.set_data_from_numpy(WORDS, binary_data=False)
    assert a.data == [1.5, 2.5] and a.parameters == {}
    assert b.data == ["ab", "c"] and b.parameters == {} and b.as_numpy().tolist() == ["ab", "c"]
    assert a.to_dict() == {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2.5], "parameters": {}}
    assert repr(a) == '"name": "a","shape": [1, 2],"datatype": "FP32","data": [1.5, 2.5],"parameters": {}'


def test_set_data_from_numpy_errors_are_kserves():
    tensor = InferInput("x", [1, 2], "FP32")
    for array, message in [(F32.astype(np.float64), "got unexpected datatype FP64 from numpy array, expected FP32"),
                           (np.zeros([2, 3], np.float32), "got unexpected numpy array shape [2, 3], expected [1, 2]"),
                           ([1.0, 2.0], "input_tensor must be a numpy array")]:
        with pytest.raises(InferenceError, match=message.replace("[", r"\[").replace("]", r"\]")):
            tensor.set_data_from_numpy(array)
    with pytest.raises(InferenceError, match="Failed to encode"):
        InferInput("s", [1], "BYTES").set_data_from_numpy(np.array([b"\xff"], dtype=object), binary_data=False)


def test_as_string_equality_and_requested_outputs():
    assert InferInput("s", [1, 2], "BYTES", data=[[b"a", b"b"]]).as_string() == ["a", "b"]
    with pytest.raises(InvalidInput, match="invalid datatype FP32 in the input"):
        InferInput("s", [1], "FP32", data=[1.0]).as_string()
    assert not hasattr(InferOutput("s", [1], "BYTES"), "as_string")
    same = InferInput("b", [2], "FP32", data=[1.0, 2.0])
    assert same == InferInput("b", [2], "FP32", data=[1.0, 2.0])
    assert same != InferInput("b", [2], "FP32", data=[1.0, 2.0], parameters={"a": 1})
    assert same != InferOutput("b", [2], "FP32", data=[1.0, 2.0])
    assert RequestedOutput("o") == RequestedOutput("o") and RequestedOutput("o", {"a": 1}) != RequestedOutput("o")
    assert repr(RequestedOutput("o", {"binary_data": True})) == "RequestedOutput(name=o, parameters={'binary_data': True})"


def test_request_and_response_views():
    request = InferRequest("m", pair(), request_id="1")
    assert request.to_dict() == {"id": "1", "model_name": "m", "inputs": [t.to_dict() for t in request.inputs],
                                 "parameters": {}, "from_grpc": False}
    assert repr(request).startswith('"id": "1","model_name": "m","inputs": ["name": "a",')
    assert request != InferRequest("m", pair(), request_id="1", request_outputs=[RequestedOutput("o")])
    assert request.as_dataframe().to_dict() == {"a": {0: 1.5, 1: 2.5}, "b": {0: "ab", 1: "c"}}
    assert InferRequest("m", [InferInput("a", [2, 2], "FP32", data=[1, 2, 3, 4])]).as_dataframe()["a"].tolist() == \
        [1, 2, 3, 4]  # one row per element, as KServe's
    assert InferRequest("m", pair(), parameters={"binary_data_output": True}).use_binary_outputs is True
    response = InferResponse("r", "m", pair(cls=InferOutput))
    assert response != InferResponse("r", "m", pair(cls=InferOutput), model_version="2")
    assert response.to_dict()["from_grpc"] is False


# -- to_rest and from_bytes (item 1) ------------------------------------------------------------------

def test_request_to_rest_is_a_dict_or_bytes():
    body, length = InferRequest("m", pair(), parameters={"p": "x"}, request_outputs=[RequestedOutput("o")]).to_rest()
    assert length is None and body["model_name"] == "m" and len(body["id"]) == 36  # an id is made, as KServe's
    assert body["inputs"][1] == {"name": "b", "shape": [2], "datatype": "BYTES", "data": ["ab", "c"]}
    assert body["outputs"] == [{"name": "o"}] and body["parameters"] == {"p": "x"}
    body, length = InferRequest("m", pair(binary=True), request_id="r1").to_rest()
    header = orjson.loads(body[:length])
    assert header["id"] == "r1" and [i["parameters"] for i in header["inputs"]] == [{"binary_data_size": 8},
                                                                                   {"binary_data_size": 11}]
    assert "data" not in header["inputs"][0] and body[length:] == F32.tobytes() + WORDS_RAW
    back = InferRequest.from_bytes(body, length, "m2")
    assert back.model_name == "m2" and back.inputs[0].data == [1.5, 2.5] and back.inputs[1].data == ["ab", "c"]
    assert back.inputs[0].parameters == {}
    assert InferRequest("m", [InferInput("a", [1, 2], "FP32", data=F32)]).to_rest()[0]["inputs"][0]["data"] == \
        [1.5, 2.5]
    with pytest.raises(InvalidInput, match="'data' field is missing"):
        InferRequest("m", [InferInput("a", [1], "FP32")]).to_rest()
    with pytest.raises(InvalidInput, match="Sending FP16 data via JSON is not supported"):
        InferRequest("m", [InferInput("a", [1], "FP16", data=[1.0])]).to_rest()


def test_response_to_rest_follows_binary_flags():
    body, length = InferResponse("r1", "m", pair(binary=True, cls=InferOutput)).to_rest()
    assert length is None and body == {"id": "r1", "model_name": "m", "model_version": None, "outputs": [
        {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2.5]},
        {"name": "b", "shape": [2], "datatype": "BYTES", "data": ["ab", "c"]}]}
    body, length = InferResponse("r1", "m", pair(cls=InferOutput), use_binary_outputs=True).to_rest()
    assert body[length:] == F32.tobytes() + WORDS_RAW
    back = InferResponse.from_bytes(body, length)
    assert back.outputs[1].data == ["ab", "c"] and back.outputs[1].parameters == {}
    wanted = [RequestedOutput("b", {"binary_data": True})]
    body, length = InferResponse("r1", "m", pair(cls=InferOutput), requested_outputs=wanted).to_rest()
    assert [o["name"] for o in orjson.loads(body[:length])["outputs"]] == ["b"] and body[length:] == WORDS_RAW
    with pytest.raises(InvalidInput, match="Unexpected inference output 'zz'"):
        InferResponse("r", "m", pair(cls=InferOutput), requested_outputs=[RequestedOutput("zz")]).to_rest()


class Predictor:
    """httpx's MockTransport as a V2 predictor that answers binary: what a transformer's predict sends and reads."""

    def __init__(self):
        self.seen = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen = request
        head = orjson.dumps({"model_name": "m", "outputs": [{"name": "y", "shape": [2], "datatype": "BYTES",
                                                              "parameters": {"binary_data_size": 11}}]})
        return httpx.Response(200, content=head + WORDS_RAW, headers={"inference-header-content-length": str(len(head))})


def test_transformer_and_rest_client_send_and_read_binary():
    from gpuserve import InferenceRESTClient, RESTConfig
    from gpuserve.remote import RemotePredictor

    predictor = Predictor()
    model = Model("m")
    model.predictor_host, model.protocol = "http://predictor", "v2"
    remote = RemotePredictor()
    remote._http = httpx.AsyncClient(transport=httpx.MockTransport(predictor))
    answer = asyncio.run(remote.predict(model, InferRequest("m", pair(binary=True)), {}))
    length = int(predictor.seen.headers["inference-header-content-length"])
    assert predictor.seen.content[length:] == F32.tobytes() + WORDS_RAW
    assert answer.outputs[0].data == ["ab", "c"]  # read as KServe's from_bytes reads it
    client = InferenceRESTClient(RESTConfig(protocol="v2", transport=httpx.MockTransport(predictor)))
    answer = asyncio.run(client.infer("http://predictor", InferRequest("m", pair()), model_name="m"))
    assert predictor.seen.headers["content-type"] == "application/json" and answer.outputs[0].data == ["ab", "c"]


# -- gRPC (item 2) ----------------------------------------------------------------------------------

def test_request_to_grpc_and_back():
    message = InferRequest("m", pair(), request_id="r1", parameters={"p": "x", "n": 3, "t": True},
                           request_outputs=[RequestedOutput("o", {"binary_data": True})]).to_grpc()
    assert isinstance(message, pb.ModelInferRequest) and not message.raw_input_contents
    assert list(message.inputs[0].contents.fp32_contents) == [1.5, 2.5]
    assert list(message.inputs[1].contents.bytes_contents) == [b"ab", b"c"]
    assert message.parameters["n"].int64_param == 3 and message.outputs[0].parameters["binary_data"].bool_param
    back = InferRequest.from_grpc(message)
    assert back.from_grpc is True and back.id == "r1" and back.model_version == ""
    assert back.inputs[1].data == [b"ab", b"c"] and back.parameters == {"p": "x", "n": 3, "t": True}
    assert back.use_binary_outputs is False
    raw = InferRequest("m", pair(binary=True), request_id="r1").to_grpc()
    assert list(raw.raw_input_contents) == [F32.tobytes(), WORDS_RAW]
    assert raw.inputs[0].parameters["binary_data_size"].int64_param == 8  # as KServe leaves it
    back = InferRequest.from_grpc(raw)
    assert back.use_binary_outputs is True and back.inputs[0].data == [] and back.inputs[1].as_numpy().tolist() == \
        [b"ab", b"c"]
    body, length = back.to_rest()
    assert body[length:] == F32.tobytes() + WORDS_RAW


def test_response_to_grpc_and_back():
    message = InferResponse("r1", "m", pair(cls=InferOutput), model_version="3", parameters={"p": 1}).to_grpc()
    assert isinstance(message, pb.ModelInferResponse) and message.model_version == "3"
    assert list(message.outputs[1].contents.bytes_contents) == [b"ab", b"c"] and message.parameters["p"].int64_param == 1
    back = InferResponse.from_grpc(message)
    assert back.from_grpc is True and back.outputs[0].data == [1.5, 2.5] and back.parameters == {"p": 1}
    raw = InferResponse("r", "m", [InferOutput("h", [1], "FP16", data=[1.0]), InferOutput("i", [1], "INT32", data=[3])])
    message = raw.to_grpc()  # FP16 has no typed field: every output goes raw, as KServe sends them
    assert list(message.raw_output_contents) == [np.float16(1).tobytes(), np.int32(3).tobytes()]
    assert InferResponse.from_grpc(message).outputs[0].as_numpy().tolist() == [1.0]


def test_infer_type_helpers():
    assert infer_type.serialize_byte_tensor(WORDS).item() == WORDS_RAW
    assert infer_type.serialize_byte_tensor(np.array([], dtype=object)).shape == (0,)
    with pytest.raises(InferenceError, match="cannot serialize bytes tensor"):
        infer_type.serialize_byte_tensor(np.array([1.0]))
    assert infer_type.deserialize_bytes_tensor(WORDS_RAW).tolist() == [b"ab", b"c"]
    assert infer_type.get_content("INT32", pb.InferTensorContents(int_contents=[1, 2])) == [1, 2]
    with pytest.raises(InvalidInput, match="invalid content type"):
        infer_type.get_content("XX", pb.InferTensorContents())
    params = infer_type.to_grpc_parameters({"a": "s", "b": True, "c": 3})
    assert params["a"].string_param == "s" and params["b"].bool_param and params["c"].int64_param == 3
    assert infer_type.to_http_parameters({"a": pb.InferParameter(int64_param=2), "b": 3}) == {"a": 2, "b": 3}


# -- the server's answers and /docs (items 3, 4) -------------------------------------------------------

class Announcing(Model):
    """Builds its outputs as KServe's docs do: set_data_from_numpy() with its default binary_data=True."""

    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        return InferResponse(payload.id, self.name, pair(binary=True, cls=InferOutput))


def test_binary_announced_outputs_answered_as_json(monkeypatch):
    from gpuserve import ModelServer

    monkeypatch.setattr(sys, "argv", ["serve.py"])
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    http, grpc = free_ports(2)
    with serving(ModelServer(http_port=http, grpc_port=grpc, enable_grpc=False), [Announcing("m")]):
        url = f"http://127.0.0.1:{http}/v2/models/m/infer"
        outputs = httpx.post(url, json=body).json()["outputs"]
        assert [o.get("parameters") for o in outputs] == [None, None] and outputs[1]["data"] == ["ab", "c"]
        wanted = {**body, "outputs": [{"name": "a", "parameters": {"binary_data": True}}, {"name": "b"}]}
        reply = httpx.post(url, json=wanted)
        length = int(reply.headers["inference-header-content-length"])
        outputs = orjson.loads(reply.content[:length])["outputs"]
        assert outputs[0]["parameters"] == {"binary_data_size": 8} and "parameters" not in outputs[1]


class Doubling(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        self.seen = type(payload.inputs[0].data)  # what a model reads from a gRPC request
        return InferResponse(payload.id, self.name, [InferOutput("y", [2], "FP32", data=payload.inputs[0].as_numpy() * 2)])


def test_grpc_client_sends_to_grpc_and_reads_with_from_grpc(monkeypatch):
    from gpuserve import InferenceGRPCClient, ModelServer

    monkeypatch.setattr(sys, "argv", ["serve.py"])
    model = Doubling("d")
    binary = InferInput("x", [2], "FP32")
    binary.set_data_from_numpy(np.array([1.0, 2.0], np.float32))
    http, grpc = free_ports(2)

    async def call():
        client = InferenceGRPCClient(f"127.0.0.1:{grpc}")
        typed = await client.infer(InferRequest("d", [InferInput("x", [2], "FP32", data=[1.0, 2.0])], request_id="r1"))
        raw = await client.infer(InferRequest("d", [binary]).to_grpc())  # a ModelInferRequest goes as it is
        await client.close()
        return typed, raw

    with serving(ModelServer(http_port=http, grpc_port=grpc), [model]):
        typed, raw = asyncio.run(call())
    assert typed.from_grpc is True and typed.id == "r1" and typed.outputs[0].data == [2.0, 4.0]
    assert raw.outputs[0].data == [] and raw.outputs[0].as_numpy().tolist() == [2.0, 4.0]  # raw: as KServe's reads it
    assert model.seen is list


@pytest.mark.parametrize("argv, given, status", [([], None, 404), (["--enable_docs_url", "true"], None, 200),
                                                 ([], True, 200)])
def test_docs_url_is_off_unless_asked(monkeypatch, argv, given, status):
    from gpuserve import ModelServer

    monkeypatch.setattr(sys, "argv", ["serve.py", *argv])
    monkeypatch.delenv("GPUSERVE_ENABLE_DOCS_URL", raising=False)
    http, grpc = free_ports(2)
    server = ModelServer(http_port=http, grpc_port=grpc, enable_grpc=False, enable_docs_url=given)
    assert server.enable_docs_url is (status == 200)
    with serving(server, [Announcing("m")]):
        assert httpx.get(f"http://127.0.0.1:{http}/docs").status_code == status
