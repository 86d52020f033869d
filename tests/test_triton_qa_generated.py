"""Models shaped like the ones Triton's qa generators write (qa/common/gen_qa_*.py), served from a
config.pbtxt repository and driven with tritonclient, for what Triton's qa tests (L0_infer,
L0_implicit_state, L0_sequence_batcher) found missing. Each model is built here, small."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

torch = pytest.importorskip("torch")

STRING_CONFIG = """
name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 0
input [ {{ name: "INPUT0", data_type: TYPE_STRING, dims: [ 4 ] }},
        {{ name: "INPUT1", data_type: TYPE_STRING, dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT__0", data_type: TYPE_STRING, dims: [ 4 ] }},
         {{ name: "OUTPUT__1", data_type: TYPE_INT32, dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU }} ]
"""


class _AddSubStrings(torch.nn.Module):
    """As gen_qa_models.py's libtorch string models: numbers as List[str] in, their sum as List[str]
    and their difference as an int32 tensor out."""

    def forward(self, INPUT0: List[str], INPUT1: List[str]) -> Tuple[List[str], torch.Tensor]:
        a = torch.tensor([int(x) for x in INPUT0], dtype=torch.int32)
        b = torch.tensor([int(x) for x in INPUT1], dtype=torch.int32)
        return [str(int(v)) for v in (a + b)], a - b


def _string_repo(root):
    folder = root / "libtorch_nobatch_object_object_int32"
    (folder / "1").mkdir(parents=True)
    torch.jit.script(_AddSubStrings()).save(str(folder / "1" / "model.pt"))
    (folder / "config.pbtxt").write_text(STRING_CONFIG.format(name=folder.name))
    return DiskRepository(root).populate(ModelRepository())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_libtorch_string_inputs_and_outputs(tmp_path, protocol):
    """A TYPE_STRING tensor reaches a TorchScript model as List[str] and a returned List[str] comes back
    as BYTES (Triton's libtorch backend does this; qa/L0_infer test_raw_oo* failed with 500 before)."""
    a = np.array([b"1", b"20", b"-3", b"7"], dtype=object)
    b = np.array([b"2", b"5", b"4", b"7"], dtype=object)
    with running_server(repository=_string_repo(tmp_path)) as server:
        mod = httpclient if protocol == "http" else grpcclient
        port = server.ports["http" if protocol == "http" else "grpc"]
        client = mod.InferenceServerClient(f"127.0.0.1:{port}")
        inputs = [mod.InferInput("INPUT0", [4], "BYTES"), mod.InferInput("INPUT1", [4], "BYTES")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("libtorch_nobatch_object_object_int32", inputs)
        summed = result.as_numpy("OUTPUT__0")
        assert summed.shape == (4,)
        assert [bytes(x) for x in summed] == [b"3", b"25", b"1", b"14"]
        np.testing.assert_array_equal(result.as_numpy("OUTPUT__1"), np.array([-1, 15, -7, 0], np.int32))


IMPLICIT_CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ {{ name: "INPUT", data_type: TYPE_INT32, dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT", data_type: TYPE_INT32, dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU }} ]
sequence_batching {{
  max_sequence_idle_microseconds: 5000000
  control_input [
    {{ name: "START", control [ {{ kind: CONTROL_SEQUENCE_START, int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "READY", control [ {{ kind: CONTROL_SEQUENCE_READY, int32_false_true: [ 0, 1 ] }} ] }}
  ]
  state [ {{ input_name: "INPUT_STATE", output_name: "OUTPUT_STATE", data_type: TYPE_INT32, dims: [ 1 ] }} ]
}}
"""


def _implicit_accumulator(path, batched=False):
    """As gen_qa_implicit_models.py's onnx_(nobatch_)sequence_int32: OUTPUT = OUTPUT_STATE = INPUT + the
    state (zeroed by START); START and READY are read so the graph takes them."""
    import onnx
    from onnx import TensorProto, helper

    def vi(name):
        return helper.make_tensor_value_info(name, TensorProto.INT32, ["B", 1] if batched else [1])

    nodes = [
        helper.make_node("Sub", ["START", "START"], ["zero"]),
        helper.make_node("Sub", ["START", "zero"], ["is_start"]),
        helper.make_node("Sub", ["READY", "READY"], ["zero_ready"]),
        helper.make_node("Equal", ["is_start", "zero"], ["keep"]),
        helper.make_node("Where", ["keep", "INPUT_STATE", "zero"], ["kept"]),
        helper.make_node("Add", ["kept", "INPUT"], ["sum"]),
        helper.make_node("Add", ["sum", "zero_ready"], ["OUTPUT"]),
        helper.make_node("Identity", ["OUTPUT"], ["OUTPUT_STATE"]),
    ]
    graph = helper.make_graph(nodes, "acc", [vi("INPUT"), vi("INPUT_STATE"), vi("START"), vi("READY")],
                              [vi("OUTPUT"), vi("OUTPUT_STATE")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _implicit_repo(root, name="onnx_nobatch_sequence_int32", extra=""):
    folder = root / name
    (folder / "1").mkdir(parents=True)
    _implicit_accumulator(folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(IMPLICIT_CONFIG.format(name=name) + extra)
    return DiskRepository(root).populate(ModelRepository())


def test_requesting_an_undeclared_state_output_is_refused_in_triton_words(tmp_path):
    """qa/L0_implicit_state test_request_output_not_allowed matches Triton's text, which names the output
    in quotes ("unexpected inference output 'OUTPUT_STATE' for model '...'"), not a Python list."""
    from tritonclient.utils import InferenceServerException

    with running_server(repository=_implicit_repo(tmp_path)) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        inputs = [httpclient.InferInput("INPUT", [1], "INT32")]
        inputs[0].set_data_from_numpy(np.array([1], np.int32))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("onnx_nobatch_sequence_int32", inputs,
                         outputs=[httpclient.InferRequestedOutput("OUTPUT_STATE")],
                         sequence_id=1, sequence_start=True, sequence_end=True)
        assert "unexpected inference output 'OUTPUT_STATE' for model 'onnx_nobatch_sequence_int32'" \
            in str(caught.value)
        result = client.infer("onnx_nobatch_sequence_int32", inputs, sequence_id=2, sequence_start=True)
        assert result.as_numpy("OUTPUT")[0] == 1
        result = client.infer("onnx_nobatch_sequence_int32", inputs, sequence_id=2, sequence_end=True)
        assert result.as_numpy("OUTPUT")[0] == 2


BOOL_CONTROLS = """
sequence_batching {
  control_input [
    { name: "START", control [ { kind: CONTROL_SEQUENCE_START, bool_false_true: [ 0, 1 ] } ] },
    { name: "READY", control [ { kind: CONTROL_SEQUENCE_READY, bool_false_true: [ 0, 1 ] } ] }
  ]
}
"""


def test_grpc_config_of_a_model_with_bool_written_as_0_1(tmp_path):
    """Protobuf's text format takes 0/1 for a bool, and gen_qa_sequence_models.py's bool models write
    `bool_false_true: [ 0, 1 ]`; the gRPC config call answered INTERNAL for them, and so every
    qa/L0_sequence_batcher case on *_sequence_bool failed at its first step (reading the config)."""
    folder = tmp_path / "seq_bool"
    (folder / "1").mkdir(parents=True)
    # a model that loads (a failed one's config is not served, as in Triton): its control inputs reach model.py
    (folder / "1" / "model.py").write_text(
        "import triton_python_backend_utils as pb_utils\n\nclass TritonPythonModel:\n"
        "    def execute(self, requests):\n"
        "        return [pb_utils.InferenceResponse([pb_utils.Tensor('output', pb_utils.get_input_tensor_by_name("
        "r, 'input').as_numpy())]) for r in requests]\n")
    (folder / "config.pbtxt").write_text('name: "seq_bool"\nbackend: "python"\nmax_batch_size: 4\n'
                                         'input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
                                         'output [ { name: "output" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
                                         + BOOL_CONTROLS)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        config = client.get_model_config("seq_bool").config
        controls = [c.control[0].bool_false_true for c in config.sequence_batching.control_input]
        assert [list(c) for c in controls] == [[False, True], [False, True]]
        import tritonclient.http as httpclient

        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            shown = client.get_model_config("seq_bool")["sequence_batching"]["control_input"]
        values = [c["control"][0]["bool_false_true"] for c in shown]
        assert values == [[False, True], [False, True]] and all(type(v) is bool for pair in values for v in pair)


DIRECT_DELAY = """
name: "direct_delay"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "INPUT", data_type: TYPE_INT32, dims: [ 1 ] } ]
output [ { name: "OUTPUT", data_type: TYPE_INT32, dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
sequence_batching {
  direct { max_queue_delay_microseconds: 600000000 %s }
  control_input [
    { name: "START", control [ { kind: CONTROL_SEQUENCE_START, int32_false_true: [ 0, 1 ] } ] },
    { name: "READY", control [ { kind: CONTROL_SEQUENCE_READY, int32_false_true: [ 0, 1 ] } ] }
  ]
  state [ { input_name: "INPUT_STATE", output_name: "OUTPUT_STATE", data_type: TYPE_INT32, dims: [ 1 ] } ]
}
"""


def _direct_repo(root, utilization=""):
    folder = root / "direct_delay"
    (folder / "1").mkdir(parents=True)
    _implicit_accumulator(folder / "1" / "model.onnx", batched=True)
    (folder / "config.pbtxt").write_text(DIRECT_DELAY % utilization)
    return DiskRepository(root).populate(ModelRepository())


def test_direct_sequence_request_is_not_held_for_max_queue_delay(tmp_path):
    """Triton's Direct strategy runs a batch once minimum_slot_utilization (default 0: any one slot) of its
    slots are ready; max_queue_delay only bounds the wait below that. gpuserve waited for a full batch, so
    a lone request here sat out the 600 s delay (qa/L0_sequence_batcher test_queue_delay_no_min_util took
    the delay, 3 s there). The client gives up after 60 s."""
    with running_server(repository=_direct_repo(tmp_path)) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}",
                                                  connection_timeout=60, network_timeout=60)
        inputs = [httpclient.InferInput("INPUT", [1, 1], "INT32")]
        inputs[0].set_data_from_numpy(np.array([[5]], np.int32))
        first = client.infer("direct_delay", inputs, sequence_id=7, sequence_start=True)
        last = client.infer("direct_delay", inputs, sequence_id=7, sequence_end=True)
        assert first.as_numpy("OUTPUT")[0][0] == 5 and last.as_numpy("OUTPUT")[0][0] == 10


def test_direct_minimum_slot_utilization_sets_the_rows_a_batch_waits_for():
    """minimum_slot_utilization 0.5 of 4 slots: a batch goes once 2 rows are there (the batcher stops
    waiting at a preferred size); 1.0: it waits for all 4; Oldest keeps its delay and sizes as written."""
    from gpuserve.engine.batcher import BatchingConfig
    from gpuserve.sequence_state import direct_batching

    config = BatchingConfig(max_batch_size=4, max_queue_delay_s=3.0)
    assert direct_batching(config, {}).max_queue_delay_s == 0.0
    half = direct_batching(config, {"direct": {"minimum_slot_utilization": 0.5}})
    assert half.preferred_batch_sizes == (2, 3, 4) and half.max_queue_delay_s == 3.0
    assert direct_batching(config, {"direct": {"minimum_slot_utilization": 1}}).preferred_batch_sizes == (4,)
    assert direct_batching(config, {"oldest": {}}) is config
    assert direct_batching(config, None) is config


TORCH_IMPLICIT = """
name: "libtorch_nobatch_sequence_int32"
platform: "pytorch_libtorch"
max_batch_size: 0
input [ { name: "INPUT__0", data_type: TYPE_INT32, dims: [ 1 ] } ]
output [ { name: "OUTPUT__0", data_type: TYPE_INT32, dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU } ]
sequence_batching {
  control_input [
    { name: "START__2", control [ { kind: CONTROL_SEQUENCE_START, int32_false_true: [ 0, 1 ] } ] },
    { name: "READY__3", control [ { kind: CONTROL_SEQUENCE_READY, int32_false_true: [ 0, 1 ] } ] }
  ]
  state [ { input_name: "INPUT_STATE__1", output_name: "OUTPUT_STATE__1", data_type: TYPE_INT32, dims: [ 1 ] } ]
}
"""


class _TorchAccumulator(torch.nn.Module):
    """As gen_qa_implicit_models.py's libtorch models: forward(input0, input0_state, start0, ready0), the
    tensors named INPUT__0, INPUT_STATE__1, START__2, READY__3 by their position."""

    def forward(self, input0, input0_state, start0, ready0):
        kept = torch.where(start0 == 1, torch.zeros_like(input0_state), input0_state)
        result = (kept + input0) * ready0
        return result, result


def test_libtorch_sequence_tensors_go_by_their_index_suffix(tmp_path):
    """Triton's libtorch backend places NAME__N at argument N. A stateful model's START__2 and
    INPUT_STATE__1 are listed in the config apart from its inputs; taken in listed order START reached
    the state argument (qa/L0_sequence_batcher, libtorch implicit-state models: wrong sums, and List[str]
    refusals on the string ones)."""
    folder = tmp_path / "libtorch_nobatch_sequence_int32"
    (folder / "1").mkdir(parents=True)
    torch.jit.script(_TorchAccumulator()).save(str(folder / "1" / "model.pt"))
    (folder / "config.pbtxt").write_text(TORCH_IMPLICIT)
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        got = []
        for value, flags in ((3, {"sequence_start": True}), (4, {}), (5, {"sequence_end": True})):
            inputs = [httpclient.InferInput("INPUT__0", [1], "INT32")]
            inputs[0].set_data_from_numpy(np.array([value], np.int32))
            got.append(int(client.infer(folder.name, inputs, sequence_id=11, **flags).as_numpy("OUTPUT__0")[0]))
        assert got == [3, 7, 12]


def _engine_scheduler(**config):
    """The engine alone, a doubling CPU backend that answers at once (tests/test_engine.py's scheduler)."""
    from test_engine import GatedBackend, scheduler_for

    backend = GatedBackend()
    backend.gate.set()
    scheduler, _ = scheduler_for(backend, **config)
    return scheduler


async def _held_then(scheduler, first_rows, later):
    """Submit `first_rows`, let the batcher hold it, then submit each of `later` (rows, 2-D width)."""
    import asyncio

    tasks = [asyncio.ensure_future(scheduler.submit({"x": np.ones((first_rows, 2), np.float32)}))]
    for _ in range(5):
        await asyncio.sleep(0)
    for rows, width in later:
        tasks.append(asyncio.ensure_future(scheduler.submit({"x": np.ones((rows, width), np.float32)})))
    return tasks


async def test_a_held_batch_goes_when_the_next_request_cannot_join():
    """qa/L0_batcher test_multi_batch_gt_max_preferred: 3 rows held (preferred 2, 6; max 8), then 7 rows
    that cannot join: Triton sends the 3 at once and the 7 after; gpuserve held the 3 for the whole delay
    (600 s here, so the old code never answers within the test's 60 s)."""
    import asyncio

    scheduler = _engine_scheduler(max_batch_size=8, preferred_batch_sizes=(2, 6), max_queue_delay_s=600.0)
    tasks = await _held_then(scheduler, 3, [(7, 2)])
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert scheduler.batches_formed == {3: 1, 7: 1}
    await scheduler.stop()


async def test_a_held_batch_goes_when_the_next_request_has_another_shape():
    """qa/L0_batcher test_multi_batch_not_preferred_different_shape: a request of another shape behind a
    held one cannot join it, so the held one goes (Triton), instead of waiting out the delay."""
    import asyncio

    scheduler = _engine_scheduler(max_batch_size=8, preferred_batch_sizes=(2, 6), max_queue_delay_s=600.0)
    tasks = await _held_then(scheduler, 1, [(1, 3)])
    await asyncio.wait_for(asyncio.gather(*tasks[:1]), 60)
    await scheduler.stop()


async def test_a_held_batch_does_not_grow_past_the_largest_preferred_size():
    """qa/L0_batcher test_multi_batch_sum_gt_max_preferred: 3 rows held, then 4 (3 + 4 > 6, the largest
    preferred size): the 3 go alone at once, the 4 wait on (Triton); gpuserve ran them as one batch of 7."""
    import asyncio

    scheduler = _engine_scheduler(max_batch_size=8, preferred_batch_sizes=(2, 6), max_queue_delay_s=600.0)
    tasks = await _held_then(scheduler, 3, [(4, 2)])
    await asyncio.wait_for(tasks[0], 60)
    assert scheduler.batches_formed == {3: 1} and not tasks[1].done()
    tasks[1].cancel()
    await scheduler.stop()
