"""The kernels served end to end on the CPU path: ONNX models built here, settings in model-settings.json,
requests through the engine (in process) and over REST, answers compared with onnxruntime called
directly on the reference-preprocessed input."""

import asyncio
import json

import numpy as np
import pytest

from gpuserve.kernels.preprocess import Normalize, normalize_reference
from gpuserve.kernels.topk import topk_reference
from gpuserve.types import InferRequest, RequestedOutput

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def image_model(path, elem=TensorProto.FLOAT, size=8, classes=10, seed=0):
    """[batch, 3, size, size] (FP32 or FP16) -> logits [batch, classes]: a flatten and a dense layer."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(3 * size * size, classes)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["image"], ["x32"], to=TensorProto.FLOAT),
             helper.make_node("Flatten", ["x32"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["logits"])]
    save(helper.make_graph(nodes, "image", [helper.make_tensor_value_info("image", elem, ["batch", 3, size, size])],
                           [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
                           [numpy_helper.from_array(weight, "W")]), path)


def token_model(path, vocab=20, width=4, seed=1):
    """ids, mask [batch, seq] (INT64) -> tokens [batch, seq, width] (masked embeddings), pooled [batch, width]
    (their mean over the real positions)."""
    table = np.random.default_rng(seed).normal(size=(vocab, width)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["emb"]),
             helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
             helper.make_node("Mul", ["emb", "mask3"], ["tokens"]),
             helper.make_node("ReduceSum", ["tokens", "axis1"], ["summed"], keepdims=0),
             helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
             helper.make_node("Div", ["summed", "count"], ["pooled"])]
    inits = [numpy_helper.from_array(table, "E"), numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("ids", "mask")]
    outs = [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "seq", width]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", width])]
    save(helper.make_graph(nodes, "tokens", ins, outs, inits), path)


def packed_model(path, vocab=20, width=4, seed=1):
    """ids [positions] packed back to back, offsets [rows + 1] -> tokens [positions, width] (embeddings),
    lengths [rows] (read back from the offsets)."""
    table = np.random.default_rng(seed).normal(size=(vocab, width)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["tokens"]),
             helper.make_node("Slice", ["offsets", "one", "end"], ["high"]),
             helper.make_node("Slice", ["offsets", "zero", "minus_one"], ["low"]),
             helper.make_node("Sub", ["high", "low"], ["lengths"])]
    inits = [numpy_helper.from_array(table, "E")] + [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in
                                                     (("zero", 0), ("one", 1), ("minus_one", -1), ("end", 2**62))]
    ins = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["positions"]),
           helper.make_tensor_value_info("offsets", TensorProto.INT64, ["rows_plus_one"])]
    outs = [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["positions", width]),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["rows"])]
    save(helper.make_graph(nodes, "packed", ins, outs, inits), path)
    return table


def folder(root, name, settings, build):
    path = root / name
    path.mkdir()
    build(path / "model.onnx")
    (path / "model-settings.json").write_text(json.dumps({"name": name, "implementation": "onnx",
                                                          "parameters": {"uri": "./model.onnx"}, **settings}))
    return path


def load(path):
    from gpuserve.runtimes import OnnxModel
    from gpuserve.settings import ModelSettings

    settings = ModelSettings.from_file(path / "model-settings.json")
    model = OnnxModel(settings.name, settings)
    model.load()
    return model


def session(path):
    return ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    folder(root, "img", {"preprocess": {"input": "image", "layout": "NHWC", "mean": MEAN, "std": STD},
                         "max_batch_size": 16, "max_batch_time": 0.05}, image_model)
    folder(root, "img16", {"preprocess": {"input": "image", "layout": "NCHW", "scale": 0.5, "mean": [10],
                                          "std": [20]}}, lambda p: image_model(p, TensorProto.FLOAT16, size=4))
    folder(root, "tok", {"ragged": {"inputs": ["ids"], "mask_input": "mask", "outputs": ["tokens"]},
                         "max_batch_size": 16, "max_batch_time": 0.2}, token_model)
    folder(root, "packed", {"ragged": {"inputs": ["ids"], "mode": "packed", "offsets_input": "offsets",
                                       "outputs": ["tokens"]}, "max_batch_size": 16, "max_batch_time": 0.2},
           packed_model)
    folder(root, "badmean", {"preprocess": {"input": "image", "mean": [1, 2]}}, image_model)
    folder(root, "badname", {"ragged": {"inputs": ["nope"]}}, token_model)
    for name, value in (("triton_img", '{"input": "image", "mean": [0.5], "std": [0.25]}'), ("triton_bad", "{oops")):
        (root / name / "1").mkdir(parents=True)
        image_model(root / name / "1" / "model.onnx")
        (root / name / "config.pbtxt").write_text(TRITON_CONFIG.format(name=name, value=json.dumps(value)))
    return root


TRITON_CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "image" data_type: TYPE_FP32 dims: [ 3, 8, 8 ] }} ]
output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ 10 ] }} ]
parameters {{ key: "preprocess" value: {{ string_value: {value} }} }}
"""


def uint8_images(rng, n, size=8):
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# uint8 in, float out ----------------------------------------------------------------------------
def test_uint8_nhwc_requests_batched_equal_onnxruntime_on_the_reference_input(repo):
    model = load(repo / "img")
    spec = Normalize("NHWC", 1 / 255, tuple(MEAN), tuple(STD))
    assert model.get_input_types() == [{"name": "image", "datatype": "UINT8", "shape": [-1, 8, 8, 3]}]
    direct = session(repo / "img")
    rng = np.random.default_rng(0)
    xs = [uint8_images(rng, int(rng.integers(1, 4))) for _ in range(12)]

    async def run():
        try:
            return await asyncio.gather(*(model.predict(InferRequest.from_numpy("img", {"image": x})) for x in xs))
        finally:
            await model.aclose()

    for x, response in zip(xs, asyncio.run(run())):
        want = direct.run(None, {"image": normalize_reference(x, spec, np.float32)})[0]
        np.testing.assert_allclose(response.outputs[0].as_numpy(), want, rtol=1e-5, atol=1e-5)  # batch vs alone
    assert max(model.stats.as_dict()["batch_stats"], key=lambda b: b["batch_size"])["batch_size"] > 1


def test_fp16_nchw_model_gets_the_reference_fp16_input(repo):
    model = load(repo / "img16")
    assert model.get_input_types()[0] == {"name": "image", "datatype": "UINT8", "shape": [-1, 3, 4, 4]}
    x = np.random.default_rng(1).integers(0, 256, (3, 3, 4, 4), dtype=np.uint8)

    async def run():
        try:
            return await model.predict(InferRequest.from_numpy("img16", {"image": x}))
        finally:
            await model.aclose()

    got = asyncio.run(run()).outputs[0].as_numpy()
    fed = normalize_reference(x, Normalize("NCHW", 0.5, (10,), (20,)), np.float16)
    assert np.array_equal(got, session(repo / "img16").run(None, {"image": fed})[0])


# ragged -------------------------------------------------------------------------------------------
def test_ragged_requests_share_a_batch_and_equal_each_request_alone(repo):
    model = load(repo / "tok")
    assert [s["name"] for s in model.get_input_types()] == ["ids"]  # the mask is the stage's to fill
    assert model.get_input_types()[0]["shape"] == [-1, -1]
    direct = session(repo / "tok")
    rng = np.random.default_rng(2)
    xs = [rng.integers(0, 20, (int(rng.integers(1, 3)), int(rng.integers(1, 9)))).astype(np.int64) for _ in range(10)]
    assert len({x.shape[1] for x in xs}) > 2

    async def run():
        try:
            return await asyncio.gather(*(model.predict(InferRequest.from_numpy("tok", {"ids": x})) for x in xs))
        finally:
            await model.aclose()

    responses = asyncio.run(run())
    for x, response in zip(xs, responses):
        got = {o.name: o.as_numpy() for o in response.outputs}
        tokens, pooled = direct.run(None, {"ids": x, "mask": np.ones_like(x)})
        assert got["tokens"].shape == x.shape + (4,)  # un-padded to this request's length
        np.testing.assert_allclose(got["tokens"], tokens, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got["pooled"], pooled, rtol=1e-5, atol=1e-6)
    assert_a_batch_mixed_lengths(model, xs)


def assert_a_batch_mixed_lengths(model, xs):
    """A batch bigger than all requests of any one length together must have mixed lengths."""
    largest = max(b["batch_size"] for b in model.stats.as_dict()["batch_stats"])
    rows_per_length = {}
    for x in xs:
        rows_per_length[x.shape[1]] = rows_per_length.get(x.shape[1], 0) + len(x)
    assert largest > max(rows_per_length.values())


def test_packed_ragged_requests_share_a_batch_without_any_padding(repo):
    model = load(repo / "packed")
    assert model.get_input_types() == [{"name": "ids", "datatype": "INT64", "shape": [-1, -1]}]
    table = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)  # packed_model's embedding
    rng = np.random.default_rng(6)
    xs = [rng.integers(0, 20, (int(rng.integers(1, 3)), int(rng.integers(1, 7)))).astype(np.int64) for _ in range(8)]

    async def run():
        try:
            return await asyncio.gather(*(model.predict(InferRequest.from_numpy("packed", {"ids": x})) for x in xs))
        finally:
            await model.aclose()

    for x, response in zip(xs, asyncio.run(run())):
        got = {o.name: o.as_numpy() for o in response.outputs}
        assert np.array_equal(got["tokens"], table[x])  # [rows, length, width]: this request's own length
        assert got["lengths"].tolist() == [x.shape[1]] * len(x)
    assert_a_batch_mixed_lengths(model, xs)


def test_bad_kernel_settings_leave_the_model_unavailable_with_the_reason(repo):
    from gpuserve.errors import InvalidSettings

    with pytest.raises(InvalidSettings, match="mean has 2 values"):
        load(repo / "badmean")
    with pytest.raises(InvalidSettings, match="ragged input 'nope'"):
        load(repo / "badname")


# top-k --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ks, reduced_in_stage", [([3, 1, 5, 2, 4, 1], True), ([3, 1, None, 5, 2, None], False)])
def test_classification_is_reduced_in_the_stage_and_mixed_batches_stay_right(repo, monkeypatch, ks, reduced_in_stage):
    import gpuserve.kernels.stage as stage

    calls = []
    monkeypatch.setattr(stage, "topk_cpu", lambda *a: calls.append(a) or topk_reference(*a))
    model = load(repo / "img")
    spec = Normalize("NHWC", 1 / 255, tuple(MEAN), tuple(STD))
    direct = session(repo / "img")
    rng = np.random.default_rng(3)
    xs = [uint8_images(rng, 2) for _ in range(6)]  # None in ks: that request wants the whole output

    def request(x, k):
        wanted = [RequestedOutput("logits", {"classification": k} if k else {})]
        return InferRequest.from_numpy("img", {"image": x}, request_outputs=wanted)

    async def run():
        try:
            return await asyncio.gather(*(model.predict(request(x, k)) for x, k in zip(xs, ks)))
        finally:
            await model.aclose()

    for x, k, response in zip(xs, ks, asyncio.run(run())):
        logits = direct.run(None, {"image": normalize_reference(x, spec, np.float32)})[0]
        out = response.outputs[0]
        if k is None:
            np.testing.assert_allclose(out.as_numpy(), logits, rtol=1e-5, atol=1e-5)
            continue
        assert out.datatype == "BYTES" and out.shape == [2, k]
        _, index = topk_reference(logits, k)
        got = [[int(v.decode().split(":")[1]) for v in row] for row in out.as_numpy()]
        assert got == index.tolist()
    assert bool(calls) == reduced_in_stage  # a batch where someone wants the whole output is reduced per request


# over REST ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(repo):
    from conftest import running_server
    from gpuserve.model_repository import ModelRepository
    from gpuserve.repository import DiskRepository

    registry = DiskRepository(repo).populate(ModelRepository())
    with running_server(repository=registry) as srv:
        yield srv


def test_rest_uint8_binary_ragged_and_classification(server, repo):
    import tritonclient.http as httpclient

    spec = Normalize("NHWC", 1 / 255, tuple(MEAN), tuple(STD))
    x = uint8_images(np.random.default_rng(4), 2)
    logits = session(repo / "img").run(None, {"image": normalize_reference(x, spec, np.float32)})[0]
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        meta = client.get_model_metadata("img")
        assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 8, 8, 3]}]
        tensor = httpclient.InferInput("image", list(x.shape), "UINT8")
        tensor.set_data_from_numpy(x, binary_data=True)
        got = client.infer("img", [tensor]).as_numpy("logits")
        np.testing.assert_allclose(got, logits, rtol=1e-5, atol=1e-5)
        top = client.infer("img", [tensor], outputs=[httpclient.InferRequestedOutput("logits", class_count=2)])
        assert [[int(v.split(b":")[1]) for v in row] for row in top.as_numpy("logits")] == \
            topk_reference(logits, 2)[1].tolist()
        ids = np.array([[3, 1, 4, 1, 5]], np.int64)
        tokens = httpclient.InferInput("ids", list(ids.shape), "INT64")
        tokens.set_data_from_numpy(ids)
        out = client.infer("tok", [tokens]).as_numpy("tokens")
        assert out.shape == (1, 5, 4)
        assert not client.is_model_ready("badmean")
        # the same setting from a Triton config.pbtxt parameter
        assert client.get_model_metadata("triton_img")["inputs"][0]["datatype"] == "UINT8"
        got = client.infer("triton_img", [tensor]).as_numpy("logits")
        fed = normalize_reference(x, Normalize("NHWC", 1 / 255, (0.5,), (0.25,)), np.float32)
        np.testing.assert_allclose(got, session(repo / "triton_img" / "1").run(None, {"image": fed})[0], rtol=1e-5,
                                   atol=1e-5)
        assert not client.is_model_ready("triton_bad")


def test_rest_wrong_input_type_is_400(server, http):
    client = http(server)
    body = {"inputs": [{"name": "image", "shape": [1, 8, 8, 3], "datatype": "FP32", "data": [0.0] * 192}]}
    reply = client.post("/v2/models/img/infer", json=body)
    assert reply.status_code == 400 and "UINT8" in reply.json()["error"]
    body = {"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "UINT8", "data": [0] * 192}]}
    reply = client.post("/v2/models/img/infer", json=body)
    assert reply.status_code == 400 and "shape" in reply.json()["error"]
    body = {"inputs": [{"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]},
                       {"name": "mask", "shape": [1, 2], "datatype": "INT64", "data": [1, 1]}]}
    reply = client.post("/v2/models/tok/infer", json=body)
    assert reply.status_code == 400 and "mask" in reply.json()["error"]
