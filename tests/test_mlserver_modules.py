"""MLServer's module paths beyond the runtime API (1.7.1, mostly 1.5 too): logging, metrics, types.dataplane,
codecs.lists, numpy dtype helpers, utils.generate_uuid, __version__, and the gRPC stubs and converters a
client of MLServer's docs uses (example 11.2.5 over gRPC), against a real gpuserve."""

from __future__ import annotations

import json
import logging
import textwrap

import grpc
import numpy as np

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from test_mlserver_api import _python
from test_mlserver_wire import JSON_HELLO  # MLServer docs 11.2.5: the JSON hello-world runtime


def test_module_paths_import_under_the_mlserver_alias():
    out = _python(
        "from gpuserve.mlserver.alias import install\n"
        "assert install()\n"
        "import mlserver\n"
        "from mlserver.logging import logger, configure_logger\n"
        "from mlserver.types.dataplane import InferenceRequest\n"
        "from mlserver.types import InferenceRequest as same\n"
        "from mlserver.codecs.lists import is_list_of, as_list\n"
        "from mlserver.codecs.numpy import to_dtype, to_datatype\n"
        "from mlserver.utils import generate_uuid\n"
        "from mlserver.metrics import register, log\n"
        "import mlserver.grpc.converters as converters\n"
        "import mlserver.grpc.dataplane_pb2 as pb, mlserver.grpc.dataplane_pb2_grpc as stubs\n"
        "import mlserver.grpc.model_repository_pb2_grpc as repository\n"
        "assert InferenceRequest is same and configure_logger() is logger and logger.name == 'mlserver'\n"
        "assert register is mlserver.register and stubs.GRPCInferenceServiceStub and repository.ModelRepositoryServiceStub\n"
        "assert pb.ModelInferRequest and converters.ModelInferRequestConverter\n"
        "print(mlserver.__version__, len(generate_uuid()))\n")
    assert out == "1.5.0 36"


def test_list_and_dtype_helpers_answer_as_mlservers():
    from gpuserve.mlserver.codecs.lists import as_list, is_list_of
    from gpuserve.mlserver.codecs.numpy import to_datatype, to_dtype
    from gpuserve.mlserver.types import Datatype, RequestInput

    assert is_list_of(["a", "b"], str) and is_list_of([], str) and not is_list_of(("a",), str)
    assert list(as_list("a")) == ["a"] and list(as_list([b"a", b"b"])) == [b"a", b"b"]
    assert to_dtype(RequestInput(name="x", shape=[2], datatype="BYTES", data=["a", "b"])) == np.dtype(str)
    assert to_dtype(RequestInput(name="x", shape=[2, 3], datatype="BYTES", data=[b"abc", b"def"])) == np.dtype("S3")
    assert to_dtype(RequestInput(name="x", shape=[1], datatype="FP32", data=[1])) == np.float32
    assert to_datatype(np.dtype("<U3")) == Datatype.BYTES and to_datatype(np.dtype(np.int64)) == Datatype.INT64


def test_configure_logger_reaches_the_processes_handlers(caplog):
    from gpuserve.mlserver.logging import configure_logger, logger

    with caplog.at_level(logging.INFO):
        assert configure_logger() is logger
        logger.info("from a runtime")
    assert "from a runtime" in caplog.text


def test_grpc_client_of_mlservers_json_example(tmp_path):
    from gpuserve.mlserver.codecs.string import StringRequestCodec
    from gpuserve.mlserver.grpc import converters
    from gpuserve.mlserver.grpc import dataplane_pb2_grpc as dataplane
    from gpuserve.mlserver import types

    folder = tmp_path / "json-hello-world"
    folder.mkdir()
    (folder / "model-settings.json").write_text(json.dumps(
        {"name": "json-hello-world", "implementation": "jsonmodels.JsonHelloWorldModel"}))
    (folder / "jsonmodels.py").write_text(textwrap.dedent(JSON_HELLO))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    inputs = {"name": "Foo Bar", "message": "Hello from Client (gRPC)!"}
    inputs_bytes = json.dumps(inputs).encode("UTF-8")
    request = types.InferenceRequest(inputs=[types.RequestInput(
        name="echo_request", shape=[len(inputs_bytes)], datatype="BYTES", data=[inputs_bytes],
        parameters=types.Parameters(content_type="str"))])
    with running_server(repository=registry) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        stub = dataplane.GRPCInferenceServiceStub(channel)
        for use_raw in (False, True):
            message = converters.ModelInferRequestConverter.from_types(
                request, model_name="json-hello-world", model_version=None, use_raw=use_raw)
            assert list(message.inputs[0].shape) == [len(inputs_bytes)]
            response = converters.ModelInferResponseConverter.to_types(stub.ModelInfer(message))
            output = json.loads(StringRequestCodec.decode_response(response)[0])
            assert output["request"] == {"echo_request": inputs}
            assert response.id == ""  # as MLServer 1.7.1: only REST requests without an id get one made up
            assert response.outputs[0].shape == [len(json.dumps(output).encode())]


def test_converters_round_trip_typed_and_raw():
    from gpuserve.mlserver.grpc.converters import ModelInferRequestConverter, ModelInferResponseConverter
    from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, Parameters, RequestInput, ResponseOutput

    request = InferenceRequest(id="r", parameters=Parameters(content_type="pd"), inputs=[
        RequestInput(name="a", shape=[2, 2], datatype="FP32", data=[[1, 2], [3, 4]]),
        RequestInput(name="s", shape=[2], datatype="BYTES", data=["x", "yz"], parameters=Parameters(content_type="str"))])
    for use_raw in (False, True):
        back = ModelInferRequestConverter.to_types(ModelInferRequestConverter.from_types(request, "m", use_raw=use_raw))
        assert back.id == "r" and back.parameters.content_type == "pd"
        assert [(i.name, i.shape, i.datatype, list(i.data)) for i in back.inputs] == [
            ("a", [2, 2], "FP32", [1.0, 2.0, 3.0, 4.0]), ("s", [2], "BYTES", [b"x", b"yz"])]
        assert back.inputs[1].parameters.content_type == "str"
    response = InferenceResponse(model_name="m", model_version="2", outputs=[
        ResponseOutput(name="o", shape=[3], datatype="INT64", data=[1, 2, 3])])
    back = ModelInferResponseConverter.to_types(ModelInferResponseConverter.from_types(response))
    assert (back.model_name, back.model_version, list(back.outputs[0].data)) == ("m", "2", [1, 2, 3])


def test_utils_and_json_helpers_answer_as_mlservers(tmp_path):
    """mlserver.utils' and mlserver.codecs.json's helpers, each answer read off MLServer 1.7.1's for the same
    arguments."""
    import functools

    from gpuserve.mlserver.codecs.json import (JSONEncoderWithArray, decode_from_bytelike_json_to_dict,
                                               decode_json_input_or_output, encode_to_json, encode_to_json_bytes)
    from gpuserve.mlserver.settings import ModelSettings
    from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, Parameters, RequestInput
    from gpuserve.mlserver.utils import extract_headers, get_wrapped_method, insert_headers, to_absolute_path

    assert encode_to_json_bytes({"a": b"x", "b": [1, 2]}) == b'{"a":"x","b":[1,2]}'
    assert encode_to_json({"x": np.arange(3), "y": np.float32(0.5)}) == b'{"x":[0,1,2],"y":0.5}'
    assert encode_to_json({"x": np.int64(2)}, use_bytes=False) == '{"x":2}'
    assert json.loads(json.dumps(np.arange(2), cls=JSONEncoderWithArray)) == [0, 1]
    assert decode_from_bytelike_json_to_dict(b'{"k": 1}') == {"k": 1}
    tensor = RequestInput(name="a", shape=[2], datatype="BYTES", data=['{"k": 1}', "[1, 2]"])
    assert decode_json_input_or_output(tensor) == [{"k": 1}, [1, 2]]

    request = InferenceRequest(inputs=[])
    assert insert_headers(request, {"x-a": "1"}).parameters.headers == {"x-a": "1"}
    response = InferenceResponse(model_name="m", outputs=[], parameters=Parameters(headers={"x-b": "2"}))
    assert extract_headers(response) == {"x-b": "2"} and response.parameters.headers is None
    assert extract_headers(response) is None

    folder = tmp_path / "model"
    (folder).mkdir()
    (folder / "model-settings.json").write_text('{"name": "m"}')
    from_file = ModelSettings.from_file(folder / "model-settings.json")
    assert to_absolute_path(from_file, "weights/../model.bin") == str(folder / "model.bin")
    assert to_absolute_path(ModelSettings(name="n"), "model.bin") == "model.bin"  # no file: as given

    def inner():
        return 1

    wrapped = functools.wraps(inner)(lambda: 2)
    assert get_wrapped_method(functools.wraps(wrapped)(lambda: 3)) is inner
