"""Triton's scheduling as its qa suites see it (L0_batch_input, L0_rate_limiter, L0_dyna_sequence_batcher,
L0_sequence_corrid_batcher, L0_passive_instance): what a tritonclient user observes about which requests
share a batch, when an instance may run, and which instance a request reaches."""

import asyncio

import numpy as np
import pytest

from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.types import InferInput, InferRequest
from test_ragged_batch import ragged_mean_onnx

RAGGED_2D = """
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ -1, -1 ] allow_ragged_batch: true } ]
batch_input [
  { kind: BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO target_name: "OFFSETS" data_type: TYPE_INT32
    source_input: "INPUT" },
  { kind: BATCH_ELEMENT_COUNT target_name: "COUNTS" data_type: TYPE_FP32 source_input: "INPUT" }
]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ -1, -1 ] }, { name: "MEAN" data_type: TYPE_FP32 dims: [ 1 ] } ]
batch_output [ { target_name: "OUTPUT" kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "INPUT" } ]
dynamic_batching { max_queue_delay_microseconds: DELAY }
"""


def _ragged_model(tmp_path, delay_us):
    (tmp_path / "ragged" / "1").mkdir(parents=True)
    ragged_mean_onnx(tmp_path / "ragged" / "1" / "model.onnx")
    (tmp_path / "ragged" / "config.pbtxt").write_text(RAGGED_2D.replace("DELAY", str(delay_us)))
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("ragged")
    model.load()
    return model


def _predict_all(model, *bursts):
    """Each burst's requests sent together, one burst after the other; the last burst's outputs."""
    async def together(arrays):
        requests = [InferRequest("ragged", [InferInput("INPUT", list(x.shape), "FP32", x)]) for x in arrays]
        answers = await asyncio.gather(*(model.predict(r) for r in requests))
        return [{o.name: o.as_numpy() for o in answer.outputs} for answer in answers]

    async def in_turn():
        for arrays in bursts:
            outs = await together(arrays)
        return outs

    return asyncio.run(in_turn())


def test_ragged_inputs_of_any_shape_share_a_batch(tmp_path):
    """allow_ragged_batch lets every dim differ, not only the first after the batch dim (qa/L0_batch_input
    test_batch_item_shape_flatten: [1, 4, 1], [1, 1, 2] and [1, 2, 2] run as one batch)."""
    model = _ragged_model(tmp_path, 1_000_000)
    arrays = [np.arange(n, dtype=np.float32).reshape(shape) for n, shape in
              ((4, (1, 4, 1)), (2, (1, 1, 2)), (4, (1, 2, 2)))]
    try:
        for x, out in zip(arrays, _predict_all(model, arrays)):
            assert out["OUTPUT"].shape == x.shape and np.allclose(out["OUTPUT"], 2 * x)
            assert np.isclose(out["MEAN"][0, 0], x.mean())
        assert model.scheduler.batches_formed == {3: 1}  # one batch, not one per shape
    finally:
        model.stop()


def test_a_lone_request_waits_out_max_queue_delay_for_company(tmp_path):
    """With max_queue_delay set, the first request is held for more even once the model is known to be
    quick: the lone-client shortcut ran it at once, so a burst's first request always went alone
    (qa/L0_batch_input test_element_count after another test: [[2]] instead of [[2, 4, 1, 3]])."""
    model = _ragged_model(tmp_path, 500_000)
    try:
        outs = _predict_all(model, [np.ones((1, 1, 3), np.float32)],  # then the model's speed is known
                            [np.full((1, 1, n), n, np.float32) for n in (2, 4, 1, 3)])
        assert [out["OUTPUT"].shape for out in outs] == [(1, 1, 2), (1, 1, 4), (1, 1, 1), (1, 1, 3)]
        assert model.scheduler.batches_formed == {1: 1, 4: 1}
    finally:
        model.stop()
