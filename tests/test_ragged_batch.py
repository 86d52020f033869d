"""Triton's ragged batching for ONNX models: ragged inputs concatenated without padding, batch inputs the
server computes, outputs scattered back by their source input's shape, and requests of different
lengths sharing one batch."""

import asyncio

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.ragged_batch import BatchInput, batch_input_array
from gpuserve.repository import DiskRepository
from gpuserve.types import InferInput, InferRequest


def ragged_mean_onnx(path):
    """OUTPUT = 2 * INPUT (1-D, every request's elements in a row); MEAN[i] = the mean of request i's
    elements, found through OFFSETS (running counts from 0, INT32 as Triton allows) and COUNTS (element
    counts); QUAD = each element repeated into a 2x2 block ([elements, 2, 2])."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Shape", ["INPUT"], ["n1"]),
        helper.make_node("Squeeze", ["n1"], ["n"]),
        helper.make_node("Range", ["zero", "n", "one"], ["pos"]),
        helper.make_node("Cast", ["OFFSETS"], ["offsets"], to=TensorProto.INT64),
        helper.make_node("Slice", ["offsets", "first", "last"], ["starts"]),
        helper.make_node("Slice", ["offsets", "second", "end"], ["ends"]),
        helper.make_node("Unsqueeze", ["starts", "axis1"], ["starts2"]),
        helper.make_node("Unsqueeze", ["ends", "axis1"], ["ends2"]),
        helper.make_node("GreaterOrEqual", ["pos", "starts2"], ["ge"]),
        helper.make_node("Less", ["pos", "ends2"], ["lt"]),
        helper.make_node("And", ["ge", "lt"], ["inside"]),
        helper.make_node("Cast", ["inside"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["mask", "INPUT"], ["sums"]),
        helper.make_node("Div", ["sums", "COUNTS"], ["means"]),
        helper.make_node("Unsqueeze", ["means", "axis1"], ["MEAN"]),
        helper.make_node("Mul", ["INPUT", "two"], ["OUTPUT"]),
        helper.make_node("Unsqueeze", ["INPUT", "axes12"], ["column"]),
        helper.make_node("Expand", ["column", "block"], ["QUAD"]),
    ]
    constants = [helper.make_tensor("zero", TensorProto.INT64, [], [0]),
                 helper.make_tensor("one", TensorProto.INT64, [], [1]),
                 helper.make_tensor("first", TensorProto.INT64, [1], [0]),
                 helper.make_tensor("last", TensorProto.INT64, [1], [-1]),
                 helper.make_tensor("second", TensorProto.INT64, [1], [1]),
                 helper.make_tensor("end", TensorProto.INT64, [1], [2 ** 62]),
                 helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
                 helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
                 helper.make_tensor("axes12", TensorProto.INT64, [2], [1, 2]),
                 helper.make_tensor("block", TensorProto.INT64, [3], [1, 2, 2])]
    graph = helper.make_graph(
        nodes, "ragged_mean",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["elements"]),
         helper.make_tensor_value_info("OFFSETS", TensorProto.INT32, ["requests_plus_one"]),
         helper.make_tensor_value_info("COUNTS", TensorProto.FLOAT, ["requests"])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["elements"]),
         helper.make_tensor_value_info("MEAN", TensorProto.FLOAT, ["requests", 1]),
         helper.make_tensor_value_info("QUAD", TensorProto.FLOAT, ["elements", 2, 2])],
        constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


CONFIG = """
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ -1 ] allow_ragged_batch: true } ]
batch_input [
  { kind: BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO target_name: "OFFSETS" data_type: TYPE_INT32
    source_input: "INPUT" },
  { kind: BATCH_ELEMENT_COUNT target_name: "COUNTS" data_type: TYPE_FP32 source_input: "INPUT" }
]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "MEAN" data_type: TYPE_FP32 dims: [ 1 ] },
          { name: "QUAD" data_type: TYPE_FP32 dims: [ -1, 2, 2 ] } ]
batch_output [ { target_name: "OUTPUT" kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "INPUT" },
               { target_name: "QUAD" kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "INPUT" } ]
"""


@pytest.fixture
def registry(tmp_path):
    (tmp_path / "ragged" / "1").mkdir(parents=True)
    ragged_mean_onnx(tmp_path / "ragged" / "1" / "model.onnx")
    (tmp_path / "ragged" / "config.pbtxt").write_text(CONFIG)
    return DiskRepository(tmp_path).populate(ModelRepository())


def test_requests_of_different_lengths_share_a_batch_without_padding(registry):
    model = registry.get_model("ragged")
    model.load()
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=(1, n)).astype(np.float32) for n in (3, 1, 7, 4, 2, 5)]

    async def all_at_once():
        requests = [InferRequest("ragged", [InferInput("INPUT", list(x.shape), "FP32", x)]) for x in rows]
        return await asyncio.gather(*(model.predict(r) for r in requests))

    answers = asyncio.run(all_at_once())
    for x, answer in zip(rows, answers):
        out = {o.name: o.as_numpy() for o in answer.outputs}
        assert out["OUTPUT"].shape == x.shape and np.allclose(out["OUTPUT"], 2 * x)
        assert out["MEAN"].shape == (1, 1) and np.isclose(out["MEAN"][0, 0], x.mean(), atol=1e-5)
        # the config's dims [-1, 2, 2] with the batch dimension, each -1 from the input's own shape
        assert out["QUAD"].shape == x.shape + (2, 2) and np.array_equal(out["QUAD"][0, :, 1, 0], x[0])
    assert max(model.scheduler.batches_formed) > 1  # lengths 1-7 ran together
    model.stop()


def test_ragged_model_over_both_protocols_and_its_config(registry):
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            x = np.arange(5, dtype=np.float32).reshape(1, 5)
            tensor = httpclient.InferInput("INPUT", [1, 5], "FP32")
            tensor.set_data_from_numpy(x)
            result = client.infer("ragged", [tensor])
            assert np.allclose(result.as_numpy("OUTPUT"), 2 * x) and result.as_numpy("MEAN")[0, 0] == 2.0
            config = client.get_model_config("ragged")
            assert config["input"][0]["allow_ragged_batch"] is True and config["input"][0]["dims"] == [-1]
            assert [b["target_name"] for b in config["batch_input"]] == [["OFFSETS"], ["COUNTS"]]
            assert [i["name"] for i in client.get_model_metadata("ragged")["inputs"]] == ["INPUT"]
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            x = np.full((1, 3), 4.0, np.float32)
            tensor = grpcclient.InferInput("INPUT", [1, 3], "FP32")
            tensor.set_data_from_numpy(x)
            result = client.infer("ragged", [tensor], outputs=[grpcclient.InferRequestedOutput("MEAN")])
            assert result.as_numpy("MEAN")[0, 0] == 4.0 and result.as_numpy("OUTPUT") is None
            config = client.get_model_config("ragged").config
            assert config.batch_output[0].source_input == ["INPUT"] and config.input[0].allow_ragged_batch


def test_every_batch_input_kind_as_triton_fills_it():
    parts = [np.zeros((1, 3)), np.zeros((2, 2)), np.zeros((1, 5))]

    def value(kind, dtype=np.int32):
        return batch_input_array(BatchInput(kind, ("t",), dtype, "x"), parts).tolist()

    assert value("BATCH_ELEMENT_COUNT") == [3, 4, 5]
    assert value("BATCH_ACCUMULATED_ELEMENT_COUNT") == [3, 7, 12]
    assert value("BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO") == [0, 3, 7, 12]
    assert np.shape(value("BATCH_MAX_ELEMENT_COUNT_AS_SHAPE")) == (5,)
    assert value("BATCH_ITEM_SHAPE") == [[3], [2], [2], [5]]  # one per batch item, batch dim apart
    assert value("BATCH_ITEM_SHAPE_FLATTEN") == [3, 2, 2, 5]

    rows = [np.zeros(2), np.zeros(1)]  # a source with only its batch dimension: [batch, 0]
    assert batch_input_array(BatchInput("BATCH_ITEM_SHAPE", ("t",), np.int32, "x"), rows).shape == (3, 0)


def test_a_batch_input_of_another_data_type_is_refused_as_triton_does(tmp_path):
    (tmp_path / "ragged" / "1").mkdir(parents=True)
    ragged_mean_onnx(tmp_path / "ragged" / "1" / "model.onnx")
    (tmp_path / "ragged" / "config.pbtxt").write_text(CONFIG.replace("TYPE_INT32", "TYPE_INT64"))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    model = registry.get_model("ragged")
    with pytest.raises(Exception, match="TYPE_INT32 or TYPE_FP32"):
        model.load()
