"""tritonclient.http (sync and asyncio) against a real gpuserve: every datatype as JSON and binary,
batch > 1, requested outputs, config, statistics and the repository extension."""

import asyncio

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from tritonclient.utils import InferenceServerException

from conftest import make_onnx_model, onnx_reference, running_server
from gpuserve import InferOutput, InferResponse, Model, ModelRepository
from gpuserve.repository import DiskRepository

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES"]


class Echo(Model):
    def load(self):
        self.ready = True

    async def predict(self, payload, headers=None):
        outputs = [InferOutput.from_numpy(t.name.replace("INPUT", "OUTPUT"), t.as_numpy()) for t in payload.inputs]
        for out, tensor in zip(outputs, payload.inputs):
            if tensor.datatype == "BF16":
                out._datatype = "BF16"
        return InferResponse(payload.id, self.name, outputs)


def sample(datatype, shape=(3, 4)):
    rng = np.random.default_rng(len(datatype))
    if datatype == "BYTES":
        return np.array([f"s{i}-é".encode() for i in range(int(np.prod(shape)))], dtype=object).reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(datatype)
    if dtype is not None:
        return rng.normal(size=shape).astype(dtype)
    info = np.iinfo(getattr(np, datatype.lower()))
    return rng.integers(info.min, info.max, shape, dtype=getattr(np, datatype.lower()), endpoint=True)


TRITON_CONFIG = """name: "tri"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "input" data_type: TYPE_FP32 dims: [ 6 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 3 ] } ]
dynamic_batching { }
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    (root / "mlp").mkdir()
    weights = make_onnx_model(root / "mlp" / "model.onnx", in_features=6, out_features=3)
    (root / "tri" / "1").mkdir(parents=True)  # the Triton form: config.pbtxt + 1/model.onnx
    make_onnx_model(root / "tri" / "1" / "model.onnx", in_features=6, out_features=3)
    (root / "tri" / "config.pbtxt").write_text(TRITON_CONFIG)
    registry = DiskRepository(root).populate(ModelRepository())
    registry.update(Echo("echo"))
    with running_server(repository=registry) as srv:
        srv.weights = weights
        yield srv


@pytest.fixture
def client(server):
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as c:
        yield c


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips(client, datatype, binary):
    array = sample(datatype)
    tensor = httpclient.InferInput("INPUT0", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    result = client.infer("echo", [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)])
    got = result.as_numpy("OUTPUT0")
    assert got.shape == array.shape
    if datatype == "BYTES":
        assert [g if isinstance(g, bytes) else g.encode() for g in got.ravel()] == list(array.ravel())
    else:
        assert got.dtype == array.dtype and np.array_equal(got, array)


def test_bf16_binary_round_trip(client):
    values = np.array([[1.0, -2.5, 3.140625]], dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", [1, 3], "BF16")
    try:
        tensor.set_data_from_numpy(values, binary_data=True)
    except InferenceServerException:
        import ml_dtypes

        tensor.set_data_from_numpy(values.astype(ml_dtypes.bfloat16), binary_data=True)
    result = client.infer("echo", [tensor])
    assert np.array_equal(np.asarray(result.as_numpy("OUTPUT0"), dtype=np.float32), values)


def test_default_outputs_come_back_binary_and_mixed_inputs(client):
    a, b = sample("INT32", (2, 2)), sample("FP32", (2, 5))
    first = httpclient.InferInput("INPUT0", [2, 2], "INT32")
    first.set_data_from_numpy(a, binary_data=False)
    second = httpclient.InferInput("INPUT1", [2, 5], "FP32")
    second.set_data_from_numpy(b, binary_data=True)
    result = client.infer("echo", [first, second], request_id="mix-1")
    assert result.get_response()["id"] == "mix-1"
    assert "binary_data_size" in result.get_output("OUTPUT0")["parameters"]
    assert np.array_equal(result.as_numpy("OUTPUT0"), a) and np.array_equal(result.as_numpy("OUTPUT1"), b)
    only = client.infer("echo", [first, second], outputs=[httpclient.InferRequestedOutput("OUTPUT1")])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["OUTPUT1"]


def test_onnx_model_batch_greater_than_one(client, server):
    x = np.random.default_rng(3).normal(size=(5, 6)).astype(np.float32)
    tensor = httpclient.InferInput("input", [5, 6], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("mlp", [tensor])
    assert np.allclose(result.as_numpy("output"), onnx_reference(x, *server.weights), rtol=1e-5, atol=1e-6)


def test_health_metadata_config(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and not client.is_model_ready("ghost")
    assert client.get_server_metadata()["name"] == "gpuserve"
    meta = client.get_model_metadata("mlp")
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 6]}
    config = client.get_model_config("mlp")
    assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == [6]
    assert config["input"][0]["data_type"] == "TYPE_FP32" and config["platform"] == "onnxruntime_onnx"
    with pytest.raises(InferenceServerException, match="ghost"):
        client.get_model_metadata("ghost")


def test_statistics(client):
    tensor = httpclient.InferInput("input", [1, 6], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 6), np.float32))
    client.infer("mlp", [tensor])
    stats = client.get_inference_statistics("mlp")["model_stats"][0]
    assert stats["name"] == "mlp" and stats["inference_stats"]["success"]["count"] >= 1
    assert stats["inference_count"] >= 1 and stats["batch_stats"]
    everyone = {s["name"]: s["version"] for s in client.get_inference_statistics()["model_stats"]}
    assert set(everyone) == {"echo", "mlp", "tri"}
    # perf_analyzer parses every entry's version as an integer: a KServe model without versions says "1"
    assert everyone["echo"] == "1" and all(version.isdigit() for version in everyone.values())
    assert client.get_inference_statistics("echo", "1")["model_stats"][0]["name"] == "echo"
    with pytest.raises(InferenceServerException):
        client.get_inference_statistics("ghost")


def test_repository_index_load_unload(client):
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["mlp"]["state"] == "READY"
    client.unload_model("mlp")
    assert not client.is_model_ready("mlp")
    # as Triton and MLServer: a model on disk stays in the index, UNAVAILABLE, once unloaded
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["mlp"] == {"name": "mlp", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}
    client.load_model("mlp")
    assert {m["name"]: m for m in client.get_model_repository_index()}["mlp"]["state"] == "READY"
    assert client.is_model_ready("mlp")
    with pytest.raises(InferenceServerException):
        client.load_model("ghost")


def test_bad_binary_requests_are_clear_errors(server, client):
    import httpx

    base = f"http://127.0.0.1:{server.ports['http']}/v2/models/echo/infer"
    header = b'{"inputs":[{"name":"INPUT0","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}}]}'
    cases = [
        (header + b"\x00" * 4, str(len(header)), "runs past the end"),
        (header + b"\x00" * 12, str(len(header)), "unexpected bytes"),
        (header + b"\x00" * 8, "-3", "outside the body"),
        (header + b"\x00" * 8, "abc", "invalid Inference-Header-Content-Length"),
        # a size that does not fit the shape: Triton's words, with the model's name
        (header.replace(b'"binary_data_size":8', b'"binary_data_size":12') + b"\x00" * 12, str(len(header) + 1),
         "input byte size mismatch for input 'INPUT0' for model 'echo'. Expected 8, got 12"),
    ]
    for body, length, message in cases:
        reply = httpx.post(base, content=body, headers={"Inference-Header-Content-Length": length})
        assert reply.status_code == 400 and message in reply.json()["error"]
    good = httpx.post(base, content=header + np.array([7, 8], np.int32).tobytes(),
                      headers={"Inference-Header-Content-Length": str(len(header))})
    assert good.status_code == 200 and good.json()["outputs"][0]["data"] == [7, 8]


def test_asyncio_client(server):
    async def scenario():
        async with aiohttpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as c:
            assert await c.is_server_ready()
            x = sample("INT64", (4, 2))
            tensor = aiohttpclient.InferInput("INPUT0", [4, 2], "INT64")
            tensor.set_data_from_numpy(x)
            results = await asyncio.gather(*(c.infer("echo", [tensor]) for _ in range(8)))
            assert all(np.array_equal(r.as_numpy("OUTPUT0"), x) for r in results)
            assert (await c.get_model_metadata("echo"))["name"] == "echo"

    asyncio.run(scenario())


def test_async_infer_sync_client(client):
    x = sample("FP64", (2, 2))
    tensor = httpclient.InferInput("INPUT0", [2, 2], "FP64")
    tensor.set_data_from_numpy(x)
    handle = client.async_infer("echo", [tensor])
    assert np.array_equal(handle.get_result().as_numpy("OUTPUT0"), x)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client, algorithm):
    x = sample("FP32", (4, 8))
    tensor = httpclient.InferInput("INPUT0", [4, 8], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("echo", [tensor], request_compression_algorithm=algorithm)
    assert np.array_equal(result.as_numpy("OUTPUT0"), x)


def test_bad_compressed_body_is_400(server):
    import httpx

    reply = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/echo/infer", content=b"not gzip",
                       headers={"Content-Encoding": "gzip"})
    assert reply.status_code == 400 and "gzip" in reply.json()["error"]


# -- behaviour checked against Triton 2.51 (benchmarks/peers/conformance.py) ---------------------

def _rows(n, name="input"):
    tensor = httpclient.InferInput(name, [n, 6], "FP32")
    tensor.set_data_from_numpy(np.ones((n, 6), np.float32))
    return tensor


def test_batch_over_config_max_batch_size_is_400(client):
    assert client.infer("tri", [_rows(4)]).as_numpy("output").shape == (4, 3)
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("tri", [_rows(5)])
    assert excinfo.value.status() == "400" and "batch-size must be <= 4 for 'tri'" in excinfo.value.message()
    # a bare artefact has no declared limit: its automatic max_batch_size only sizes batches
    assert client.infer("mlp", [_rows(70)]).as_numpy("output").shape == (70, 3)


def test_duplicate_input_is_400(client):
    first, second = (httpclient.InferInput("INPUT0", [2], "INT32") for _ in range(2))
    first.set_data_from_numpy(np.array([1, 2], np.int32))
    second.set_data_from_numpy(np.array([3, 4], np.int32))
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("echo", [first, second])
    assert excinfo.value.status() == "400" and "input 'INPUT0' already exists in request" in excinfo.value.message()


def test_statistics_of_unknown_model_or_version_are_400(client):
    for args, words in ((("ghost",), "requested model 'ghost' is not available"),
                        (("tri", "7"), "requested model version is not available for model 'tri'")):
        with pytest.raises(InferenceServerException) as excinfo:
            client.get_inference_statistics(*args)
        assert excinfo.value.status() == "400" and words in excinfo.value.message()
    entry = client.get_inference_statistics("tri", "1")["model_stats"][0]
    assert entry["version"] == "1" and entry["response_stats"] == {} and entry["memory_usage"] == []


def test_config_prints_triton_defaults(client):
    config = client.get_model_config("tri")
    assert config["name"] == "tri" and config["max_batch_size"] == 4 and config["platform"] == "onnxruntime_onnx"
    tensor = config["input"][0]
    assert tensor["name"] == "input" and tensor["dims"] == [6] and tensor["data_type"] == "TYPE_FP32"
    assert (tensor["format"], tensor["optional"], tensor["allow_ragged_batch"], tensor["is_shape_tensor"],
            tensor["is_non_linear_format_io"]) == ("FORMAT_NONE", False, False, False, False)
    assert config["output"][0]["label_filename"] == "" and config["output"][0]["is_shape_tensor"] is False
    assert (config["batch_input"], config["batch_output"], config["model_warmup"], config["metric_tags"]) == \
        ([], [], [], {})
    assert config["dynamic_batching"]["preserve_ordering"] is False
    assert config["dynamic_batching"]["priority_queue_policy"] == {}
    assert all(g["passive"] is False and g["secondary_devices"] == [] for g in config["instance_group"])
    assert "sequence_batching" not in config and "ensemble_scheduling" not in config  # unset messages stay out
    # the config.pbtxt's version policy (Triton's default: the latest one) and Triton's group names
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    assert [g["name"] for g in config["instance_group"]] == ["tri"]  # the group Triton adds is named so
    assert client.get_model_config("tri", "1") == config


def test_unregistered_shared_memory_region_is_404(client):
    tensor = httpclient.InferInput("INPUT0", [2], "INT32")
    tensor.set_shared_memory("never_registered", 8)
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("echo", [tensor])
    assert excinfo.value.status() == "404" and "never_registered" in excinfo.value.message()


def test_priority_and_timeout_follow_triton_queue_policy(client):
    # a priority beyond the model's levels runs at the default level
    assert client.infer("tri", [_rows(2)], priority=99).as_numpy("output").shape == (2, 3)
    # without allow_timeout_override in the config.pbtxt queue policy, a request's timeout is ignored
    for _ in range(5):
        assert client.infer("tri", [_rows(2)], timeout=1).as_numpy("output").shape == (2, 3)


def test_triton_config_queue_policy_defaults(tmp_path):
    from gpuserve.batching import batching_config
    from gpuserve.settings import ModelSettings
    from gpuserve.triton_config import settings_from_config

    base = {"name": "m", "platform": "onnxruntime_onnx", "max_batch_size": 4,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [2]}],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}]}
    cases = [({}, False), ({"dynamic_batching": {}}, False),
             ({"dynamic_batching": {"default_queue_policy": {"allow_timeout_override": True,
                                                             "default_timeout_microseconds": 500}}}, True)]
    for extra, allowed in cases:
        settings = ModelSettings(**settings_from_config(tmp_path, {**base, **extra}, 1))
        assert batching_config(settings, True).allow_timeout_override is allowed, extra
    assert ModelSettings(**settings_from_config(tmp_path, cases[2][0] | base, 1)).model_extra["triton_max_batch_size"] == 4


def _identity_model(root, name, onnx_type, dims, config_type, count=1, max_batch=8, extra=""):
    """An ONNX model passing `count` inputs INPUTi straight to OUTPUTi, with its config.pbtxt."""
    import onnx
    from onnx import helper

    batch = ["batch"] if max_batch else []
    shape = batch + [d if d != -1 else f"d{i}" for i, d in enumerate(dims)]
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"INPUT{i}"], [f"OUTPUT{i}"]) for i in range(count)], name,
        [helper.make_tensor_value_info(f"INPUT{i}", onnx_type, shape) for i in range(count)],
        [helper.make_tensor_value_info(f"OUTPUT{i}", onnx_type, shape) for i in range(count)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (root / name / "1").mkdir(parents=True)
    onnx.save(model, str(root / name / "1" / "model.onnx"))
    tensors = lambda kind: ", ".join(  # noqa: E731
        f'{{ name: "{kind}{i}" data_type: {config_type} dims: {list(dims)} }}' for i in range(count))
    (root / name / "config.pbtxt").write_text(
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch}\n'
        f"input [ {tensors('INPUT')} ]\noutput [ {tensors('OUTPUT')} ]\n{extra}")


@pytest.fixture(scope="module")
def identities_server(tmp_path_factory):
    from onnx import TensorProto

    root = tmp_path_factory.mktemp("identities")
    _identity_model(root, "fp32", TensorProto.FLOAT, [-1], "TYPE_FP32")
    _identity_model(root, "fp16_2d", TensorProto.FLOAT16, [-1, -1], "TYPE_FP16")
    _identity_model(root, "fp32_three", TensorProto.FLOAT, [-1], "TYPE_FP32", count=3)
    _identity_model(root, "string_one", TensorProto.STRING, [1], "TYPE_STRING")
    _identity_model(root, "string_many", TensorProto.STRING, [-1], "TYPE_STRING")
    _identity_model(root, "queued", TensorProto.FLOAT, [-1], "TYPE_FP32", extra=(
        "dynamic_batching { max_queue_delay_microseconds: 2000000 preferred_batch_size: [ 8 ] "
        "default_queue_policy { max_queue_size: 1 } }\n"))
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as srv:
        yield srv


@pytest.fixture(scope="module")
def identities(identities_server):
    return f"http://127.0.0.1:{identities_server.ports['http']}"


def test_raw_binary_body_is_the_only_input(identities):
    """Inference-Header-Content-Length: 0 makes the whole body the model's only input (curl's way)."""
    import httpx

    raw = {"Inference-Header-Content-Length": "0"}
    data = np.arange(8, dtype=np.float32).tobytes()
    reply = httpx.post(f"{identities}/v2/models/fp32/infer", content=data, headers=raw)
    assert reply.status_code == 200, reply.text
    header = int(reply.headers["Inference-Header-Content-Length"])
    assert reply.content[header:] == data  # every output answers binary
    assert b'"shape":[1,8]' in reply.content[:header]
    reply = httpx.post(f"{identities}/v2/models/string_one/infer", content=b"427", headers=raw)
    header = int(reply.headers["Inference-Header-Content-Length"])
    assert reply.status_code == 200 and reply.content[header:] == b"\x03\x00\x00\x00427"
    refusals = [("string_many", b"427", "For BYTE datatype raw input 'INPUT0', the model must have input shape [1]"),
                ("fp16_2d", np.ones(4, np.float16).tobytes(),
                 "The shape of the raw input 'INPUT0' can not be deduced because there are more than one "
                 "variable-sized dimension"),
                ("fp32_three", np.arange(24, dtype=np.float32).tobytes(),
                 "Raw request must only have 1 input (found 1) to be deduced but got 3 inputs in 'fp32_three'"),
                ("fp32", b"\x00" * 6, "input byte size mismatch")]
    for model, body, words in refusals:
        reply = httpx.post(f"{identities}/v2/models/{model}/infer", content=body, headers=raw)
        assert reply.status_code == 400 and words in reply.json()["error"], (model, reply.text)


def test_chunked_body_with_a_content_length_is_read_as_chunks(identities):
    """Triton reads such a request by its chunks; the connection closes after the answer (RFC 9112)."""
    import socket

    data = np.arange(8, dtype=np.float32).tobytes()
    chunked = f"{len(data):X}\r\n".encode() + data + b"\r\n0\r\n\r\n"
    host, port = identities.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/fp32/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 0\r\n"
                     b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % len(chunked) + chunked)
        answer = b""
        while chunk := sock.recv(65536):  # the server closes the connection
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
    assert body.endswith(data)


def test_requests_held_for_max_queue_delay_count_against_max_queue_size(identities, identities_server):
    """The request waiting for its batch to grow is still queued: with max_queue_size 1 the next is 503. The
    second is sent once the metrics show the first queued (a fixed 0.4 s sleep let a first request that reached
    the server late come second), well inside the 2 s max_queue_delay."""
    import threading
    import time

    import httpx

    def queued_now():
        text = httpx.get(f"http://127.0.0.1:{identities_server.ports['metrics']}/metrics").text
        return 'nv_inference_pending_request_count{model="queued",version="1"} 1' in text

    raw = {"Inference-Header-Content-Length": "0"}
    data = np.arange(8, dtype=np.float32).tobytes()
    first = []
    thread = threading.Thread(target=lambda: first.append(
        httpx.post(f"{identities}/v2/models/queued/infer", content=data, headers=raw, timeout=10)))
    thread.start()
    deadline = time.monotonic() + 30
    while not queued_now():
        assert time.monotonic() < deadline, "the first request was never queued"
        time.sleep(0.02)
    second = httpx.post(f"{identities}/v2/models/queued/infer", content=data, headers=raw, timeout=10)
    thread.join()
    assert first[0].status_code == 200
    assert second.status_code == 503, second.text
    assert second.json()["error"] == "[request id: <id_unknown>] Exceeds maximum queue size"  # Triton 2.51's words


def test_duplicate_requested_output_is_400(client):
    value = httpclient.InferInput("INPUT0", [2], "INT32")
    value.set_data_from_numpy(np.array([1, 2], np.int32))
    outputs = [httpclient.InferRequestedOutput("OUTPUT0") for _ in range(2)]
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("echo", [value], outputs=outputs)
    assert excinfo.value.status() == "400" and "output 'OUTPUT0' already exists in request" in excinfo.value.message()


def test_json_shapes_past_64_bits_and_deep_nesting_are_refused_in_tritons_words(server):
    import httpx

    url = f"http://127.0.0.1:{server.ports['http']}/v2/models/echo/infer"
    cases = [([16, 2**60 + 2], [1.0], "causes total element count to exceed maximum size of"),
             ([4, 2**60 + 2], [1.0], "byte size overflow for input 'INPUT0'")]
    nested = [1.0]
    for _ in range(120):
        nested = [nested]
    cases.append(([1, 1], nested, "JSON nesting depth exceeds maximum allowed limit (100)"))
    for shape, data, words in cases:
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": shape, "data": data}]}
        reply = httpx.post(url, json=body)
        assert reply.status_code == 400 and words in reply.json()["error"], reply.text
    fifty = [1.0]
    for _ in range(49):
        fifty = [fifty]
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": fifty}]}
    assert httpx.post(url, json=body).status_code == 200
