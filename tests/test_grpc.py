"""The gRPC V2 service driven by tritonclient (sync and asyncio) and by the raw stubs: every RPC,
every datatype, streaming, the repository extension, and every bad request mapped to its status."""

from __future__ import annotations

import asyncio
import base64
import queue
import socket
import subprocess
import sys

import grpc
import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import InferInput, InferOutput, InferRequest, InferResponse, Model
from gpuserve.datatypes import DATATYPES
from gpuserve.errors import InvalidInput
from gpuserve.remote_grpc import contents_to_numpy
from gpuserve.server.grpc import inference_pb2 as pb
from gpuserve.server.grpc import inference_pb2_grpc as pb_grpc

TIMEOUT = 30  # seconds; a hung call fails the test instead of blocking it


class Echo(Model):
    """OUTPUT0 is INPUT0 as it came, in any datatype; request parameters come back on the response."""

    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        tensor = payload.get_input_by_name("INPUT0")
        if tensor is None:
            raise InvalidInput("input 'INPUT0' is required")
        array = tensor.as_numpy()
        return InferResponse(payload.id, self.name, [InferOutput("OUTPUT0", list(array.shape), tensor.datatype, array)],
                             parameters=dict(payload.parameters))


class Affine(Model):
    """FP32 [batch, 4]: OUTPUT0 = 2x + 1, OUTPUT1 = the row sums."""

    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        x = payload.get_input_by_name("INPUT0").as_numpy()
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 4:
            raise InvalidInput(f"INPUT0 must be FP32 [batch, 4], got {x.dtype} {list(x.shape)}")
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("OUTPUT0", x * 2 + 1),
                                                     InferOutput.from_numpy("OUTPUT1", x.sum(axis=1))])

    def get_input_types(self):
        return [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}]

    def get_output_types(self):
        return [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]},
                {"name": "OUTPUT1", "datatype": "FP32", "shape": [-1]}]


class Crash(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        raise RuntimeError("the model fell over")


class NeverReady(Model):
    def load(self):
        raise RuntimeError("weights are corrupt")


def direct(model, arrays, datatypes=None, **kwargs):
    """The model's own answer, called in-process: what every gRPC result must equal."""
    datatypes = datatypes or {}
    inputs = []
    for name, array in arrays.items():
        datatype = datatypes.get(name) or InferInput.from_numpy(name, array).datatype
        inputs.append(InferInput(name, list(array.shape), datatype, array))
    response = model.predict(InferRequest(model.name, inputs, **kwargs))
    return {o.name: o.as_numpy() for o in response.outputs}


def sample(datatype, shape=(2, 3)):
    """Values that stress each datatype: extremes, NaN/inf, NUL and non-UTF-8 bytes."""
    count = int(np.prod(shape))
    if datatype == "BOOL":
        flat = np.array([True, False, True, True, False, False][:count])
    elif datatype == "BYTES":
        flat = np.empty(count, dtype=object)
        flat[:] = [b"", b"a\x00b", "h\u00e9llo".encode(), b"\xff\xfe", b"x" * 300, b"0"][:count]
    elif datatype == "BF16":
        flat = np.array([0.0, -1.5, np.inf, -np.inf, np.nan, 3.0e38][:count], dtype=ml_dtypes.bfloat16)
    else:
        dtype = np.dtype(datatype.lower().replace("fp", "float"))
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            flat = np.array([info.min, info.max, 0, 1, info.max // 3, 7][:count], dtype=dtype)
        else:
            flat = np.array([0.0, -1.5, np.inf, -np.inf, np.nan, np.finfo(dtype).max][:count], dtype=dtype)
    return flat.reshape(shape)


def expected_output(model, array, datatype):
    """Echo's direct output; BF16 is held as float32 inside gpuserve, as bfloat16 by tritonclient."""
    held = array.astype(np.float32) if datatype == "BF16" else array
    return direct(model, {"INPUT0": held}, {"INPUT0": datatype})["OUTPUT0"]


def check_equal(got, want, datatype):
    if datatype == "BF16":
        got = got.astype(np.float32)
    if datatype == "BYTES":
        assert got.dtype == object and got.shape == want.shape and list(got.ravel()) == list(want.ravel())
    else:
        assert got.dtype == want.dtype or datatype == "BF16"
        np.testing.assert_array_equal(got, want)


def status_of(excinfo) -> str:
    return excinfo.value.status()


@pytest.fixture(scope="module")
def models():
    return {"echo": Echo("echo"), "affine": Affine("affine"), "crash": Crash("crash"), "broken": NeverReady("broken")}


@pytest.fixture(scope="module", params=["grpcio", "native"])
def server(models, request):
    """Every test below runs against both gRPC transports (settings.grpc_transport)."""
    with running_server(list(models.values()), grpc_transport=request.param) as srv:
        yield srv


@pytest.fixture(scope="module")
def url(server):
    return f"127.0.0.1:{server.ports['grpc']}"


@pytest.fixture(scope="module")
def client(url):
    with triton.InferenceServerClient(url) as c:
        yield c


@pytest.fixture(scope="module")
def stub(url):
    channel = grpc.insecure_channel(url)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def fp32_input(name, array):
    tensor = triton.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


# -- health, metadata, configuration --------------------------------------------------------------

def test_health_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "gpuserve" and meta["version"] and "model_repository" in meta["extensions"]


def test_model_ready_metadata_and_config(client):
    assert client.is_model_ready("echo") and client.is_model_ready("affine")
    assert client.is_model_ready("broken") is False
    # as Triton: an unknown model or version is not ready (ready=false), not an error
    assert client.is_model_ready("nope") is False

    meta = client.get_model_metadata("affine")
    assert meta.name == "affine"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("INPUT0", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("OUTPUT0", "FP32", [-1, 4]),
                                                                           ("OUTPUT1", "FP32", [-1])]
    config = client.get_model_config("affine").config
    assert config.name == "affine" and config.max_batch_size == 0
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("INPUT0", triton.model_config_pb2.TYPE_FP32,
                                                                            [-1, 4])]
    assert [t.name for t in config.output] == ["OUTPUT0", "OUTPUT1"]
    assert client.get_model_config("affine", as_json=True)["config"]["input"][0]["data_type"] == "TYPE_FP32"
    with pytest.raises(InferenceServerException) as excinfo:
        client.get_model_config("nope")
    assert status_of(excinfo) == "StatusCode.NOT_FOUND"


def test_config_types_cover_every_datatype():
    from gpuserve.model_config import CONFIG_TYPES

    assert set(CONFIG_TYPES) == set(DATATYPES)
    assert {pb.DataType.Value(v) for v in CONFIG_TYPES.values()}  # every name exists in the proto enum
    assert set(CONFIG_TYPES.values()) == {f"TYPE_{d}" for d in DATATYPES if d != "BYTES"} | {"TYPE_STRING"}


def test_config_from_model_settings():
    from gpuserve.model_config import model_config
    from gpuserve.server.grpc.convert import config_to_proto
    from gpuserve.settings import InstanceGroup, ModelSettings

    meta = Affine("affine").metadata()
    settings = ModelSettings(name="affine", max_batch_size=8, max_batch_time=0.002,
                             instance_groups=[InstanceGroup(count=2, kind="cpu")])
    config = config_to_proto(model_config(meta, settings))
    assert config.max_batch_size == 8 and [list(t.dims) for t in config.input] == [[4]]
    assert [list(t.dims) for t in config.output] == [[4], []]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, pb.ModelInstanceGroup.KIND_CPU)]
    fixed = {**meta, "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [3, 4]}]}
    config = config_to_proto(model_config(fixed, settings))  # no batch dimension to leave out
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [3, 4]
    assert not config.HasField("dynamic_batching")


# -- inference ------------------------------------------------------------------------------------

@pytest.mark.parametrize("datatype", DATATYPES)
def test_infer_every_datatype(client, models, datatype):
    array = sample(datatype)
    tensor = triton.InferInput("INPUT0", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    result = client.infer("echo", [tensor], client_timeout=TIMEOUT)
    output = result.get_output("OUTPUT0")
    assert output.datatype == datatype and list(output.shape) == [2, 3]
    assert len(result.get_response().raw_output_contents) == 1  # Triton answers raw
    check_equal(result.as_numpy("OUTPUT0"), expected_output(models["echo"], array, datatype), datatype)


async def test_infer_every_datatype_aio(url, models):
    async with triton_aio.InferenceServerClient(url) as aio_client:
        assert await aio_client.is_server_live() and await aio_client.is_server_ready()
        assert await aio_client.is_model_ready("echo")
        assert (await aio_client.get_server_metadata()).name == "gpuserve"
        assert (await aio_client.get_model_metadata("affine")).inputs[0].name == "INPUT0"
        assert (await aio_client.get_model_config("affine")).config.input[0].dims == [-1, 4]
        for datatype in DATATYPES:
            array = sample(datatype, (3, 2))
            tensor = triton_aio.InferInput("INPUT0", [3, 2], datatype)
            tensor.set_data_from_numpy(array)
            result = await aio_client.infer("echo", [tensor], request_id=f"aio-{datatype}", client_timeout=TIMEOUT)
            assert result.get_response().id == f"aio-{datatype}"
            check_equal(result.as_numpy("OUTPUT0"), expected_output(models["echo"], array, datatype), datatype)
        with pytest.raises(InferenceServerException) as excinfo:
            await aio_client.infer("nope", [tensor])
        assert status_of(excinfo) == "StatusCode.NOT_FOUND"


def test_batch_and_requested_outputs(client, models):
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    want = direct(models["affine"], {"INPUT0": x})

    result = client.infer("affine", [fp32_input("INPUT0", x)])
    assert [o.name for o in result.get_response().outputs] == ["OUTPUT0", "OUTPUT1"]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), want["OUTPUT0"])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), want["OUTPUT1"])

    only = client.infer("affine", [fp32_input("INPUT0", x)], outputs=[triton.InferRequestedOutput("OUTPUT1")])
    assert [o.name for o in only.get_response().outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(only.as_numpy("OUTPUT1"), want["OUTPUT1"])

    both = client.infer("affine", [fp32_input("INPUT0", x)],
                        outputs=[triton.InferRequestedOutput("OUTPUT1"), triton.InferRequestedOutput("OUTPUT0")])
    assert [o.name for o in both.get_response().outputs] == ["OUTPUT1", "OUTPUT0"]

    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("affine", [fp32_input("INPUT0", x)], outputs=[triton.InferRequestedOutput("OUTPUT9")])
    assert status_of(excinfo) == "StatusCode.INVALID_ARGUMENT" and "OUTPUT9" in excinfo.value.message()


def test_large_tensor_passes_the_4mb_default(client, models):
    x = np.arange(400_000 * 4, dtype=np.float32).reshape(-1, 4)  # 6.4 MB each way
    result = client.infer("affine", [fp32_input("INPUT0", x)], client_timeout=TIMEOUT)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), direct(models["affine"], {"INPUT0": x})["OUTPUT0"])


def test_request_id_and_parameters_round_trip(client):
    x = sample("INT32")
    tensor = triton.InferInput("INPUT0", list(x.shape), "INT32")
    tensor.set_data_from_numpy(x)
    params = {"flag": True, "count": -3, "name": "abc", "scale": 0.25}
    result = client.infer("echo", [tensor], request_id="req-42", parameters=params)
    response = result.get_response()
    assert response.id == "req-42" and response.model_name == "echo"
    got = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.parameters.items()}
    assert got == params


def test_raw_stub_parameters_every_kind(stub):
    request = pb.ModelInferRequest(model_name="echo", id="p1")
    request.inputs.add(name="INPUT0", datatype="UINT64", shape=[1],
                       contents=pb.InferTensorContents(uint64_contents=[5]))
    request.parameters["b"].bool_param = False
    request.parameters["i"].int64_param = -(2**63)
    request.parameters["s"].string_param = "\u00e9"
    request.parameters["d"].double_param = -2.5
    request.parameters["u"].uint64_param = 2**64 - 1
    reply = stub.ModelInfer(request, timeout=TIMEOUT)
    assert reply.id == "p1" and dict(reply.parameters) == dict(request.parameters)
    # typed in, typed out (as MLServer answers; tritonclient sends raw and gets raw, as from Triton)
    assert not reply.raw_output_contents and list(reply.outputs[0].contents.uint64_contents) == [5]


TYPED = {"BOOL": ("bool_contents", [True, False, True]), "INT8": ("int_contents", [-128, 127, 0]),
         "INT16": ("int_contents", [-32768, 32767, 1]), "INT32": ("int_contents", [-(2**31), 2**31 - 1, 2]),
         "INT64": ("int64_contents", [-(2**63), 2**63 - 1, 3]), "UINT8": ("uint_contents", [0, 255, 4]),
         "UINT16": ("uint_contents", [0, 65535, 5]), "UINT32": ("uint_contents", [0, 2**32 - 1, 6]),
         "UINT64": ("uint64_contents", [0, 2**64 - 1, 7]), "FP16": ("fp32_contents", [0.5, -2.0, 65504.0]),
         "FP32": ("fp32_contents", [0.5, -2.0, 1.0e38]), "BF16": ("fp32_contents", [0.5, -2.0, 256.0]),
         "FP64": ("fp64_contents", [0.1, -2.0, 1.0e300]), "BYTES": ("bytes_contents", [b"", b"a\x00", b"\xff"])}


def test_typed_contents_table_covers_every_datatype():
    assert set(TYPED) == set(DATATYPES)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_typed_contents_every_datatype(stub, models, datatype):
    field, values = TYPED[datatype]
    request = pb.ModelInferRequest(model_name="echo", id=f"typed-{datatype}")
    request.inputs.add(name="INPUT0", datatype=datatype, shape=[3],
                       contents=pb.InferTensorContents(**{field: values}))
    reply = stub.ModelInfer(request, timeout=TIMEOUT)
    assert reply.id == f"typed-{datatype}" and reply.outputs[0].datatype == datatype
    # typed in, typed out, in the same field (as MLServer answers; clients built from the proto read it)
    assert list(reply.outputs[0].shape) == [3] and not reply.raw_output_contents
    assert len(getattr(reply.outputs[0].contents, field)) == 3
    got = contents_to_numpy(reply.outputs[0].contents, datatype, [3], "OUTPUT0")
    if datatype == "BYTES":
        want = np.empty(3, dtype=object)
        want[:] = values
    else:
        want = np.array(values, dtype=np.float32 if datatype == "BF16" else datatype.lower().replace("fp", "float"))
    check_equal(got, expected_output(models["echo"], want, datatype), datatype)


def _infer_request(**tensor):
    request = pb.ModelInferRequest(model_name="echo")
    request.inputs.add(name="INPUT0", **tensor)
    return request


BAD_REQUESTS = {
    "unknown datatype": (_infer_request(datatype="FP8", shape=[1], contents=pb.InferTensorContents(fp32_contents=[1])),
                         "unknown datatype"),
    "raw size off": (pb.ModelInferRequest(model_name="echo", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="INPUT0", datatype="FP32", shape=[2])], raw_input_contents=[b"\x00" * 7]),
        "input byte size mismatch for input 'INPUT0' for model 'echo'. Expected 8, got 7"),  # Triton's words
    "raw count off": (pb.ModelInferRequest(model_name="echo", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="INPUT0", datatype="FP32", shape=[1])], raw_input_contents=[b"\x00" * 4] * 2), "2 entries for 1"),
    "raw and contents": (pb.ModelInferRequest(model_name="echo", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="INPUT0", datatype="FP32", shape=[1], contents=pb.InferTensorContents(fp32_contents=[1]))],
        raw_input_contents=[b"\x00" * 4]), "contents field must not be specified when using raw_input_contents"),
    "count off": (_infer_request(datatype="INT32", shape=[2, 2], contents=pb.InferTensorContents(int_contents=[1])),
                  "needs 4 elements"),
    "bytes count off": (_infer_request(datatype="BYTES", shape=[3], contents=pb.InferTensorContents(
        bytes_contents=[b"abc"])), "needs 3 elements"),  # strict here; lenient only for MLServer runtimes
    "raw bytes count off": (pb.ModelInferRequest(model_name="echo", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="INPUT0", datatype="BYTES", shape=[3])], raw_input_contents=[b"\x03\x00\x00\x00abc"]), "needs 3 elements"),
    "wrong field": (_infer_request(datatype="INT64", shape=[1], contents=pb.InferTensorContents(int_contents=[1])),
                    "int64_contents"),
    "overflow": (_infer_request(datatype="INT8", shape=[1], contents=pb.InferTensorContents(int_contents=[300])),
                 "INT8"),
    "no data": (_infer_request(datatype="FP32", shape=[1]), "no data"),
    "no name": (pb.ModelInferRequest(model_name="echo", inputs=[pb.ModelInferRequest.InferInputTensor(
        datatype="FP32", shape=[1], contents=pb.InferTensorContents(fp32_contents=[1]))]), "'name' is required"),
    "no inputs": (pb.ModelInferRequest(model_name="echo"), "at least one input"),
    "truncated bytes": (pb.ModelInferRequest(model_name="echo", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="INPUT0", datatype="BYTES", shape=[1])], raw_input_contents=[b"\x09\x00\x00\x00ab"]), "truncated"),
    "model rejects": (pb.ModelInferRequest(model_name="affine", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="INPUT0", datatype="FP32", shape=[1, 3], contents=pb.InferTensorContents(fp32_contents=[1, 2, 3]))]),
        "FP32 [batch, 4]"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_are_invalid_argument(stub, case):
    request, words = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.ModelInfer(request, timeout=TIMEOUT)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT, excinfo.value.details()
    assert words in excinfo.value.details()


def test_an_unknown_model_is_not_found_before_its_inputs_are_checked(stub):
    with pytest.raises(grpc.RpcError) as excinfo:  # as Triton: NOT_FOUND, not "needs an input"
        stub.ModelInfer(pb.ModelInferRequest(model_name="nowhere"), timeout=TIMEOUT)
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND


def test_error_table_statuses(client, stub):
    x = np.ones((1, 4), dtype=np.float32)
    cases = [("nope", "StatusCode.NOT_FOUND", "nope"), ("crash", "StatusCode.INTERNAL", "the model fell over"),
             ("broken", "StatusCode.UNAVAILABLE", "weights are corrupt")]
    for model, status, words in cases:
        with pytest.raises(InferenceServerException) as excinfo:
            client.infer(model, [fp32_input("INPUT0", x)])
        assert status_of(excinfo) == status and words in excinfo.value.message(), model
    wrong = triton.InferInput("INPUT0", [1, 4], "FP64")
    wrong.set_data_from_numpy(x.astype(np.float64))
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("affine", [wrong])
    assert status_of(excinfo) == "StatusCode.INVALID_ARGUMENT"
    shm = _infer_request(datatype="FP32", shape=[1])
    shm.inputs[0].parameters["shared_memory_region"].string_param = "region"
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.ModelInfer(shm, timeout=TIMEOUT)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shared_memory_byte_size" in excinfo.value.details()
    shm.inputs[0].parameters["shared_memory_byte_size"].int64_param = 4
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.ModelInfer(shm, timeout=TIMEOUT)
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND and "'region'" in excinfo.value.details()  # as Triton
    assert client.is_server_live()  # still serving


# -- streaming ------------------------------------------------------------------------------------

def test_stream_infer_sync_continues_after_a_bad_request(url, models):
    answers: queue.Queue = queue.Queue()
    arrays = [np.full((i + 1, 4), i, dtype=np.float32) for i in range(5)]
    with triton.InferenceServerClient(url) as stream_client:
        stream_client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for i, x in enumerate(arrays):
            if i == 2:  # a bad one in the middle: wrong width
                stream_client.async_stream_infer("affine", [fp32_input("INPUT0", x[:, :3].copy())], request_id="s2")
            else:
                stream_client.async_stream_infer("affine", [fp32_input("INPUT0", x)], request_id=f"s{i}")
        stream_client.async_stream_infer("nope", [fp32_input("INPUT0", arrays[0])], request_id="s5")
        got = [answers.get(timeout=TIMEOUT) for _ in range(6)]
        stream_client.stop_stream()
    for i, (result, error) in enumerate(got[:5]):
        if i == 2:
            assert result is None and "FP32 [batch, 4]" in error.message()
            continue
        assert error is None and result.get_response().id == f"s{i}"  # answered in request order
        # as Triton: every stream answer of a non-decoupled model says it is the request's last
        assert result.get_response().parameters["triton_final_response"].bool_param is True
        want = direct(models["affine"], {"INPUT0": arrays[i]})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), want["OUTPUT0"])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), want["OUTPUT1"])
    assert got[5][0] is None and "nope" in got[5][1].message()


async def test_stream_infer_aio(url, models):
    arrays = [np.full((2, 4), i, dtype=np.float32) for i in range(4)]

    async def requests():
        for i, x in enumerate(arrays):
            tensor = triton_aio.InferInput("INPUT0", [2, 4] if i != 1 else [2, 3], "FP32")
            tensor.set_data_from_numpy(x if i != 1 else x[:, :3].copy())
            yield {"model_name": "affine", "inputs": [tensor], "request_id": f"a{i}",
                   "outputs": [triton_aio.InferRequestedOutput("OUTPUT1")]}

    async with triton_aio.InferenceServerClient(url) as aio_client:
        answers = []

        async def consume():
            async for result, error in aio_client.stream_infer(requests(), stream_timeout=TIMEOUT):
                answers.append((result, error))
                if len(answers) == len(arrays):
                    break

        await asyncio.wait_for(consume(), TIMEOUT)
    assert answers[1][0] is None and "FP32 [batch, 4]" in answers[1][1].message()
    for i in (0, 2, 3):
        result, error = answers[i]
        assert error is None and result.get_response().id == f"a{i}"
        assert [o.name for o in result.get_response().outputs] == ["OUTPUT1"]
        want = direct(models["affine"], {"INPUT0": arrays[i]})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), want["OUTPUT1"])


def test_stream_many_requests_in_order(stub, models):
    """Requests of one stream run concurrently but are answered in order."""
    arrays = [np.full((1, 4), i, dtype=np.float32) for i in range(50)]

    def requests():
        for i, x in enumerate(arrays):
            request = pb.ModelInferRequest(model_name="affine", id=str(i), raw_input_contents=[x.tobytes()])
            request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 4])
            yield request

    replies = list(stub.ModelStreamInfer(requests(), timeout=TIMEOUT))
    assert [r.infer_response.id for r in replies] == [str(i) for i in range(50)]
    assert all(not r.error_message for r in replies)
    assert np.frombuffer(replies[7].infer_response.raw_output_contents[1], np.float32).tolist() == [28.0]


def test_stream_requests_run_concurrently(serve):
    """Three requests that each wait for all three to arrive: answered only if run side by side."""

    class Gather(Model):
        def load(self):
            self.ready = True
            self.arrived, self.all_here = 0, None

        async def predict(self, payload, headers=None):
            if self.all_here is None:
                self.all_here = asyncio.Event()
            self.arrived += 1
            if self.arrived == 3:
                self.all_here.set()
            await asyncio.wait_for(self.all_here.wait(), TIMEOUT)
            output = InferOutput.from_numpy("OUTPUT0", payload.inputs[0].as_numpy())
            return InferResponse(payload.id, self.name, [output])

    def requests():
        for i in range(3):
            yield _infer_request(datatype="INT32", shape=[1], contents=pb.InferTensorContents(int_contents=[i]))

    with serve([Gather("echo")]) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
            replies = list(pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests(), timeout=TIMEOUT))
    assert [r.infer_response.outputs[0].contents.int_contents[0] for r in replies] == [0, 1, 2]  # typed, as sent


def test_cancelled_stream_cancels_its_requests(serve):
    import threading

    started, cancelled = threading.Event(), threading.Event()

    class Hang(Model):
        def load(self):
            self.ready = True

        async def predict(self, payload, headers=None):
            started.set()
            try:
                await asyncio.Event().wait()  # never answers
            except asyncio.CancelledError:
                cancelled.set()
                raise

    with serve([Hang("hang"), Echo("echo")]) as server:
        with triton.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as c:
            c.start_stream(callback=lambda result, error: None)
            c.async_stream_infer("hang", [fp32_input("INPUT0", np.ones((1, 4), np.float32))])
            assert started.wait(TIMEOUT)
            c.stop_stream(cancel_requests=True)
            assert cancelled.wait(TIMEOUT)
            assert c.is_model_ready("echo")  # the server goes on


# -- statistics, repository, extensions -----------------------------------------------------------

def test_statistics_and_repository_index(client):
    stats = client.get_inference_statistics()
    names = [s.name for s in stats.model_stats]
    assert names == ["affine", "crash", "echo"]  # every ready model
    one = client.get_inference_statistics("echo", as_json=True)
    assert [s["name"] for s in one["model_stats"]] == ["echo"]
    assert set(one["model_stats"][0]["inference_stats"]) >= {"success", "fail", "queue", "compute_infer"}
    # as Triton: statistics of an unknown model or version are INVALID_ARGUMENT
    with pytest.raises(InferenceServerException) as excinfo:
        client.get_inference_statistics("nope")
    assert status_of(excinfo) == "StatusCode.INVALID_ARGUMENT" and "'nope' is not available" in excinfo.value.message()

    index = {m.name: m for m in client.get_model_repository_index().models}
    assert set(index) == {"affine", "broken", "crash", "echo"}
    assert index["echo"].state == "READY" and index["broken"].state == "UNAVAILABLE"
    assert "weights are corrupt" in index["broken"].reason
    ready_only = client.get_model_repository_index(as_json=True)
    assert {m["name"] for m in ready_only["models"]} == set(index)


def test_repository_index_ready_only(stub):
    reply = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True), timeout=TIMEOUT)
    assert {m.name for m in reply.models} == {"affine", "crash", "echo"}


def test_load_and_unload(serve):
    class Flaky(Model):
        def load(self):
            raise RuntimeError("no weights here")

    with serve([Echo("echo"), Flaky("flaky")]) as server:
        with triton.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as c:
            c.load_model("echo")  # reload in place
            assert c.is_model_ready("echo")
            with pytest.raises(InferenceServerException) as excinfo:
                c.load_model("flaky")
            assert status_of(excinfo) == "StatusCode.INTERNAL" and "no weights here" in excinfo.value.message()
            with pytest.raises(InferenceServerException) as excinfo:
                c.load_model("nope")
            assert status_of(excinfo) == "StatusCode.NOT_FOUND"
            with pytest.raises(InferenceServerException) as excinfo:
                c.load_model("echo", config='{"max_batch_size": 8}')
            # a config given at load time needs a repository folder to build from (tests/test_load_override.py)
            assert status_of(excinfo) == "StatusCode.INVALID_ARGUMENT" and "repository folder" in excinfo.value.message()
            c.unload_model("echo")
            assert c.is_model_ready("echo") is False  # as Triton: an unloaded model is not ready
            assert [m.name for m in c.get_model_repository_index().models] == ["flaky"]
            with pytest.raises(InferenceServerException) as excinfo:
                c.unload_model("echo")
            assert status_of(excinfo) == "StatusCode.NOT_FOUND"


def test_shared_memory_and_settings_extensions(client):
    assert len(client.get_system_shared_memory_status().regions) == 0
    assert len(client.get_cuda_shared_memory_status().regions) == 0
    client.unregister_system_shared_memory()
    client.unregister_cuda_shared_memory()
    cases = [(lambda: client.register_system_shared_memory("r", "/gpuserve-none", 64),
              "StatusCode.INTERNAL", "Unable to open"),  # as Triton 2.51
             (lambda: client.register_cuda_shared_memory("r", base64.b64encode(b"\x01" * 64), 0, 64),
              "StatusCode.UNIMPLEMENTED", "CUDA shared memory region 'r'"),  # no GPU in this process
             (lambda: client.register_cuda_shared_memory("r", base64.b64encode(b"\x01" * 8), 0, 64),
              "StatusCode.INVALID_ARGUMENT", "64-byte"),
             # a nameless CUDA region: Triton's words, which its qa aio test matches
             (lambda: client.register_cuda_shared_memory("", b"", 0, 0),
              "StatusCode.INVALID_ARGUMENT", "failed to register shared memory region: invalid args")]
    for call, status, words in cases:
        with pytest.raises(InferenceServerException) as excinfo:
            call()
        assert status_of(excinfo) == status and words in excinfo.value.message()
    with pytest.raises(InferenceServerException) as excinfo:
        client.get_system_shared_memory_status("r")
    assert status_of(excinfo) == "StatusCode.NOT_FOUND"
    assert client.get_trace_settings(as_json=True)["settings"]["trace_level"]["value"] == ["OFF"]
    assert "log_verbose_level" in client.get_log_settings(as_json=True)["settings"]


async def test_extensions_aio(url):
    async with triton_aio.InferenceServerClient(url) as aio_client:
        assert {m.name for m in (await aio_client.get_model_repository_index()).models} >= {"echo"}
        assert (await aio_client.get_inference_statistics("echo")).model_stats[0].name == "echo"
        with pytest.raises(InferenceServerException) as excinfo:
            await aio_client.register_system_shared_memory("r", "/gpuserve-none", 64)
        assert status_of(excinfo) == "StatusCode.INTERNAL"  # as Triton 2.51


# -- server settings ------------------------------------------------------------------------------

def test_message_limit_from_settings(serve):
    with serve([Echo("echo")], grpc_max_message_bytes=64 * 1024) as server:
        with triton.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as c:
            small = sample("FP32")
            tensor = triton.InferInput("INPUT0", [2, 3], "FP32")
            tensor.set_data_from_numpy(small)
            np.testing.assert_array_equal(c.infer("echo", [tensor]).as_numpy("OUTPUT0"), small)
            big = np.zeros(128 * 1024, dtype=np.uint8)
            tensor = triton.InferInput("INPUT0", [big.size], "UINT8")
            tensor.set_data_from_numpy(big)
            with pytest.raises(InferenceServerException) as excinfo:
                c.infer("echo", [tensor])
            assert status_of(excinfo) == "StatusCode.RESOURCE_EXHAUSTED"


async def test_port_in_use_is_a_clear_error():
    from gpuserve.dataplane import DataPlane
    from gpuserve.errors import InvalidSettings
    from gpuserve.model_repository import ModelRepository
    from gpuserve.server.grpc.service import start_grpc_server
    from gpuserve.settings import ServerSettings

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        port = holder.getsockname()[1]
        settings = ServerSettings.load(None, host="127.0.0.1", grpc_port=port)
        with pytest.raises(InvalidSettings, match=f"127.0.0.1:{port}"):
            await start_grpc_server(DataPlane(ModelRepository()), settings)
    finally:
        holder.close()
    server, bound = await start_grpc_server(DataPlane(ModelRepository()), ServerSettings.load(None, host="127.0.0.1",
                                                                                             grpc_port=0))
    try:
        assert bound > 0
    finally:
        await server.stop(None)


def test_health_service(url):
    pytest.importorskip("grpc_health.v1")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_health_watch_starts_with_the_current_status(url):
    pytest.importorskip("grpc_health.v1")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(url) as channel:
        replies = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert next(replies).status == health_pb2.HealthCheckResponse.SERVING
        replies.cancel()


def test_unknown_method_is_unimplemented(url):
    with grpc.insecure_channel(url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/NoSuchRpc", request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as excinfo:
            call(b"", timeout=TIMEOUT)
        assert excinfo.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- the generated modules ------------------------------------------------------------------------

def test_every_triton_rpc_is_served():
    served = {m.name for m in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
    triton_rpcs = {m.name for m in triton.service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
    assert triton_rpcs <= served


def _fields(descriptor, depth=0):
    """{field: (number, type, repeated, sub-message fields)} down the message tree."""
    assert depth < 8
    return {f.name: (f.number, f.type, f.is_repeated,
                     None if f.message_type is None else _fields(f.message_type, depth + 1))
            for f in descriptor.fields}


def _assert_subset(mine, theirs, where):
    """Each of our fields exists in theirs with the same number, type and repetition."""
    for name, (number, kind, repeated, sub) in mine.items():
        assert name in theirs, f"{where}.{name} is not in Triton's message"
        assert theirs[name][:3] == (number, kind, repeated), f"{where}.{name}"
        if sub is not None:
            _assert_subset(sub, theirs[name][3], f"{where}.{name}")


def test_wire_compatible_with_tritonclient_messages():
    """Field names, numbers and types of every message tritonclient sends or reads match ours;
    the service messages in full, the model configuration as a subset of Triton's."""
    theirs = triton.service_pb2.DESCRIPTOR.message_types_by_name
    shared = [name for name in pb.DESCRIPTOR.message_types_by_name if name in theirs]
    assert set(shared) == set(theirs)  # every service message is modelled
    for name in shared:
        mine, other = _fields(pb.DESCRIPTOR.message_types_by_name[name]), _fields(theirs[name])
        _assert_subset(mine, other, name)
        if name != "ModelConfigResponse":
            assert mine == other, name
    _assert_subset(_fields(pb.ModelConfig.DESCRIPTOR), _fields(triton.model_config_pb2.ModelConfig.DESCRIPTOR),
                   "ModelConfig")
    assert dict(pb.DataType.items()) == dict(triton.model_config_pb2.DataType.items())


def test_client_messages_match_server_proto():
    from gpuserve.remote_grpc import client_messages

    for name, message in client_messages().items():
        assert _fields(message.DESCRIPTOR) == _fields(pb.DESCRIPTOR.message_types_by_name[name]), name


@pytest.mark.parametrize("first", ["tritonclient.grpc", "gpuserve.server.grpc.service"])
def test_stubs_coexist_with_tritonclient(first):
    """Both define `inference.*` messages; ours live in a private pool, so either import order works."""
    second = "gpuserve.server.grpc.service" if first == "tritonclient.grpc" else "tritonclient.grpc"
    code = (f"import {first}, {second}, gpuserve.remote_grpc as r; r.client_messages(); "
            "import gpuserve.server.grpc.inference_pb2_grpc")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- behaviour checked against Triton 2.51 (benchmarks/peers/conformance.py) ---------------------

TRITON_CONFIG = """name: "tri"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "input" data_type: TYPE_FP32 dims: [ 6 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""


def test_triton_form_model_statuses(serve, tmp_path):
    from conftest import make_onnx_model
    from gpuserve import ModelRepository
    from gpuserve.repository import DiskRepository

    (tmp_path / "tri" / "1").mkdir(parents=True)
    make_onnx_model(tmp_path / "tri" / "1" / "model.onnx", in_features=6, out_features=3)
    (tmp_path / "tri" / "config.pbtxt").write_text(TRITON_CONFIG)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    registry.update(Echo("echo"))

    def rows(n):
        return fp32_input("input", np.ones((n, 6), np.float32))

    def fails(call, code, words):
        with pytest.raises(InferenceServerException) as excinfo:
            call()
        assert status_of(excinfo) == code and words in excinfo.value.message()

    with serve(repository=registry) as server, \
            triton.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as c:
        assert c.infer("tri", [rows(4)]).as_numpy("output").shape == (4, 3)
        fails(lambda: c.infer("tri", [rows(5)]), "StatusCode.INVALID_ARGUMENT", "batch-size must be <= 4 for 'tri'")
        dup = [fp32_input("INPUT0", np.ones((1, 4), np.float32)) for _ in range(2)]
        fails(lambda: c.infer("echo", dup), "StatusCode.INVALID_ARGUMENT", "input 'INPUT0' already exists")
        fails(lambda: c.get_inference_statistics("tri", "7"), "StatusCode.INVALID_ARGUMENT",
              "requested model version is not available for model 'tri'")
        assert c.is_model_ready("tri", "1") is True and c.is_model_ready("tri", "7") is False
        assert c.get_inference_statistics("tri", "1").model_stats[0].version == "1"
        fails(lambda: c.infer("tri", [rows(1)], model_version="abc"), "StatusCode.INVALID_ARGUMENT",
              "version should be an integral value > 0")
        fails(lambda: c.infer("tri", [rows(1)], model_version="7"), "StatusCode.NOT_FOUND", "tri")
        # unloaded, a model on disk stays in the index as UNAVAILABLE (not in the ready-only one)
        c.unload_model("tri")
        index = {m.name: m for m in c.get_model_repository_index().models}
        assert (index["tri"].version, index["tri"].state, index["tri"].reason) == ("1", "UNAVAILABLE", "unloaded")
        ready = pb.RepositoryIndexRequest(ready=True)
        with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
            reply = pb_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(ready, timeout=TIMEOUT)
        assert "tri" not in {m.name for m in reply.models} and "echo" in {m.name for m in reply.models}
        c.load_model("tri")
        assert c.is_model_ready("tri", "1")



def test_raw_input_that_does_not_fit_its_shape_is_refused_in_tritons_words(client):
    """A client that says [1, 4] INT32 but sends 6 or 3 values: 400-class refusal worded as Triton words it
    (with the model's name), before any model sees the request."""
    for count, got in ((6, 24), (3, 12)):
        tensor = triton.InferInput("INPUT0", [1, count], "INT32")
        tensor.set_data_from_numpy(np.arange(count, dtype=np.int32).reshape(1, count))
        tensor.set_shape([1, 4])
        with pytest.raises(InferenceServerException) as excinfo:
            client.infer("echo", [tensor])
        assert status_of(excinfo) == "StatusCode.INVALID_ARGUMENT"
        assert excinfo.value.message() == (f"[request id: <id_unknown>] input byte size mismatch for input 'INPUT0' "
                                           f"for model 'echo'. Expected 16, got {got}")  # Triton 2.51's words
