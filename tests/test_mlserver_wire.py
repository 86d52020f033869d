"""What an MLServer runtime receives and answers over V2 REST and gRPC, compared with MLServer 1.7.1:
content-type decoding (base64 that is not base64, `np` on BYTES) and the JSON example of MLServer's docs
(11.2.5), whose BYTES tensors are shaped by byte length rather than element count."""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import grpc
import httpx
import numpy as np
import pytest

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.datatypes import deserialize_bytes_tensor, serialize_bytes_tensor
from gpuserve.repository import DiskRepository
from gpuserve.server.grpc import inference_pb2 as pb
from gpuserve.server.grpc import inference_pb2_grpc as pb_grpc

TIMEOUT = 30

PROBE = """
import json
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceResponse


def describe(value):
    if hasattr(value, "dtype"):
        return {"dtype": value.dtype.str, "shape": list(value.shape), "values": repr(value.tolist())}
    return {"type": type(value).__name__, "values": repr(value)}


class Probe(MLModel):
    async def predict(self, payload):
        seen = {i.name: describe(self.decode(i)) for i in payload.inputs}
        return InferenceResponse(model_name=self.name, outputs=[StringCodec.encode_output("seen", [json.dumps(seen)])])
"""

JSON_HELLO = """
import json
from mlserver import MLModel, types
from mlserver.codecs import StringCodec


class JsonHelloWorldModel(MLModel):
    async def predict(self, payload):
        request = {i.name: json.loads("".join(self.decode(i, default_codec=StringCodec))) for i in payload.inputs}
        answer = json.dumps({"request": request, "server_response": "Got your request."}).encode("UTF-8")
        return types.InferenceResponse(id=payload.id, model_name=self.name, model_version=self.version, outputs=[
            types.ResponseOutput(name="echo_response", shape=[len(answer)], datatype="BYTES", data=[answer],
                                 parameters=types.Parameters(content_type="str"))])
"""


def _folder(root, name, implementation, source):
    folder = root / name
    folder.mkdir()
    (folder / "model-settings.json").write_text(json.dumps({"name": name, "implementation": implementation}))
    module = implementation.split(".")[0]
    (folder / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlserver-wire")
    _folder(root, "probe", "probe_runtime.Probe", PROBE)
    _folder(root, "json-hello-world", "jsonmodels.JsonHelloWorldModel", JSON_HELLO)
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=TIMEOUT) as http, \
                grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
            yield SimpleNamespace(http=http, stub=pb_grpc.GRPCInferenceServiceStub(channel))


def _rest_probe(served, tensor):
    reply = served.http.post("/v2/models/probe/infer", json={"inputs": [tensor]})
    assert reply.status_code == 200, reply.text
    return json.loads(reply.json()["outputs"][0]["data"][0])[tensor["name"]]


def _grpc_probe(served, name, shape, items, content_type, raw=False):
    request = pb.ModelInferRequest(model_name="probe")
    tensor = request.inputs.add(name=name, datatype="BYTES", shape=shape)
    tensor.parameters["content_type"].string_param = content_type
    if raw:
        request.raw_input_contents.append(serialize_bytes_tensor(np.array(items, dtype=object)))
    else:
        tensor.contents.bytes_contents.extend(items)
    reply = served.stub.ModelInfer(request, timeout=TIMEOUT)
    return json.loads(_bytes_output(reply)[0])[name]


def _bytes_output(reply):
    """The first output's BYTES elements: raw when the request was raw, typed when it was typed (as
    MLServer answers)."""
    if not reply.raw_output_contents:
        return list(reply.outputs[0].contents.bytes_contents)
    return list(deserialize_bytes_tensor(reply.raw_output_contents[0]))


def test_base64_that_is_not_base64_reaches_the_runtime_as_raw_bytes(served):
    # MLServer 1.5 and 1.7.1: Base64Codec passes what does not decode through unchanged.
    seen = _rest_probe(served, {"name": "b", "datatype": "BYTES", "shape": [2], "data": ["UHl0aG9u", "not base64!"],
                                "parameters": {"content_type": "base64"}})
    assert seen == {"type": "list", "values": repr([b"Python", b"not base64!"])}
    seen = _grpc_probe(served, "b", [2], [b"\x89PNG\r\n", b"UHl0aG9u"], "base64")
    assert seen == {"type": "list", "values": repr([b"\x89PNG\r\n", b"Python"])}


def test_np_on_json_strings_is_a_unicode_array_and_on_raw_bytes_a_bytes_array(served):
    seen = _rest_probe(served, {"name": "s", "datatype": "BYTES", "shape": [2, 1], "data": ["a", "bc"],
                                "parameters": {"content_type": "np"}})
    assert seen == {"dtype": "<U2", "shape": [2, 1], "values": repr([["a"], ["bc"]])}  # MLServer: dtype='<U2'
    for raw in (False, True):  # MLServer: array([[b'a'], [b'b']], dtype='|S1')
        seen = _grpc_probe(served, "s", [2, 1], [b"a", b"b"], "np", raw=raw)
        assert seen == {"dtype": "|S1", "shape": [2, 1], "values": repr([[b"a"], [b"b"]])}


def test_onehot_encoder_fit_on_strings_takes_a_json_request():
    sklearn = pytest.importorskip("sklearn.preprocessing")
    from gpuserve.mlserver.codecs import NumpyCodec
    from gpuserve.mlserver.types import RequestInput

    encoder = sklearn.OneHotEncoder().fit(np.array([["red"], ["green"]]))
    decoded = NumpyCodec.decode_input(RequestInput(name="c", datatype="BYTES", shape=[2, 1], data=["green", "red"]))
    assert encoder.transform(decoded).toarray().tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_json_example_with_byte_length_shapes_over_rest_and_grpc(served):
    # MLServer's docs 11.2.5: one JSON string sent with shape [its length]; the answer likewise.
    text = json.dumps({"name": "Foo Bar", "message": "Hello from Client!"})
    body = {"inputs": [{"name": "echo_request", "shape": [len(text)], "datatype": "BYTES", "data": [text]}]}
    reply = served.http.post("/v2/models/json-hello-world/infer", json=body)
    assert reply.status_code == 200, reply.text
    output = reply.json()["outputs"][0]
    answer = json.loads(output["data"][0])
    assert answer["request"] == {"echo_request": json.loads(text)}
    assert output["shape"] == [len(output["data"][0].encode())]  # as declared, as MLServer answers it

    for raw in (False, True):
        request = pb.ModelInferRequest(model_name="json-hello-world")
        tensor = request.inputs.add(name="echo_request", datatype="BYTES", shape=[len(text)])
        tensor.parameters["content_type"].string_param = "str"
        if raw:
            request.raw_input_contents.append(serialize_bytes_tensor(np.array([text.encode()], dtype=object)))
        else:
            tensor.contents.bytes_contents.append(text.encode())
        reply = served.stub.ModelInfer(request, timeout=TIMEOUT)
        assert bool(reply.raw_output_contents) == raw  # answered the way it asked
        data = _bytes_output(reply)
        assert json.loads(data[0])["request"] == {"echo_request": json.loads(text)}
        assert list(reply.outputs[0].shape) == [len(data[0])]
