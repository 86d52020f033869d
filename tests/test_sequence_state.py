"""Stateful ONNX models (config.pbtxt sequence_batching): control inputs and implicit state kept by the
server per sequence, sequences sharing batches, Triton's errors, and the config as written."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.types import InferInput, InferRequest


def accumulator_onnx(path, with_start=True, corrid="UINT64", batched=True):
    """OUTPUT_STATE = INPUT if START else INPUT + INPUT_STATE; OUTPUT = OUTPUT_STATE * READY; CORR = CORRID
    (the shape of Triton's own implicit-state QA model, built here with the onnx helper API); without
    `batched` every tensor is [1], as Triton gives a max_batch_size 0 model its controls."""
    import onnx
    from onnx import TensorProto, helper

    def value(name, kind):
        return helper.make_tensor_value_info(name, kind, ["batch", 1] if batched else [1])

    inputs = [value("INPUT", TensorProto.INT32), value("INPUT_STATE", TensorProto.INT32)]
    outputs = [value("OUTPUT_STATE", TensorProto.INT32)]
    if with_start:
        nodes = [helper.make_node("Cast", ["START"], ["start_flag"], to=TensorProto.BOOL),
                 helper.make_node("Add", ["INPUT", "INPUT_STATE"], ["sum"]),
                 helper.make_node("Where", ["start_flag", "INPUT", "sum"], ["OUTPUT_STATE"]),
                 helper.make_node("Mul", ["OUTPUT_STATE", "READY"], ["OUTPUT"]),
                 helper.make_node("Identity", ["CORRID"], ["CORR"])]
        inputs += [value("START", TensorProto.INT32), value("READY", TensorProto.INT32),
                   value("CORRID", getattr(TensorProto, corrid))]
        outputs += [value("OUTPUT", TensorProto.INT32), value("CORR", getattr(TensorProto, corrid))]
    else:
        nodes = [helper.make_node("Add", ["INPUT", "INPUT_STATE"], ["OUTPUT_STATE"]),
                 helper.make_node("Identity", ["OUTPUT_STATE"], ["OUTPUT"])]
        outputs += [value("OUTPUT", TensorProto.INT32)]
    model = helper.make_model(helper.make_graph(nodes, "accumulate", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def output(response, name):
    """An output by name (a Triton repository's ONNX model answers its outputs sorted by name, as Triton)."""
    return next(o for o in response.outputs if o.name == name).as_numpy()


ACCUMULATOR = """
platform: "onnxruntime_onnx"
max_batch_size: 8
sequence_batching {
  max_sequence_idle_microseconds: %d
  oldest { max_candidate_sequences: 8 }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
  state [ { input_name: "INPUT_STATE" output_name: "OUTPUT_STATE" data_type: TYPE_INT32 dims: [ 1 ] } ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "CORR" data_type: TYPE_UINT64 dims: [ 1 ] } ]
"""

FROM_STATE = """
platform: "onnxruntime_onnx"
max_batch_size: 4
sequence_batching {
  state [ {
    input_name: "INPUT_STATE" output_name: "OUTPUT_STATE" data_type: TYPE_INT32 dims: [ -1 ]
    initial_state: { data_type: TYPE_INT32 dims: [ 1 ] %s name: "start" }
  } ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] },
         { name: "OUTPUT_STATE" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""


def write(root, name, config, with_start=True, **model):
    (root / name / "1").mkdir(parents=True)
    accumulator_onnx(root / name / "1" / "model.onnx", with_start, **model)
    (root / name / "config.pbtxt").write_text(config)
    return root / name


def one(number):
    tensor = grpcclient.InferInput("INPUT", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.array([[number]], np.int32))
    return [tensor]


def test_sequences_keep_their_state_on_the_server_and_share_batches(tmp_path):
    write(tmp_path, "acc", ACCUMULATOR % 5_000_000)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    model = registry.get_model("acc")
    with running_server(repository=registry) as server:
        assert model.ready, model.reason
        url = f"127.0.0.1:{server.ports['grpc']}"

        def run(sequence_id):
            seen, ids = [], set()
            with grpcclient.InferenceServerClient(url) as client:
                for step in range(1, 8):
                    result = client.infer("acc", one(step * sequence_id), sequence_id=sequence_id,
                                          sequence_start=step == 1, sequence_end=step == 7)
                    seen.append(int(result.as_numpy("OUTPUT")[0, 0]))
                    ids.add(int(result.as_numpy("CORR")[0, 0]))
            return seen, ids

        with ThreadPoolExecutor(6) as pool:
            outcomes = dict(zip(range(1, 7), pool.map(run, range(1, 7))))
        for sequence_id, (seen, ids) in outcomes.items():
            assert seen == [sequence_id * sum(range(1, k + 1)) for k in range(1, 8)]  # running sums, in order
            assert ids == {sequence_id}
        assert not model.sequences.router.active  # every sequence ended, its state dropped

        with grpcclient.InferenceServerClient(url) as client:
            config = client.get_model_config("acc").config
            assert [i.name for i in config.input] == ["INPUT"]  # controls and state are the server's
            assert [c.name for c in config.sequence_batching.control_input] == ["START", "READY", "CORRID"]
            assert config.sequence_batching.state[0].input_name == "INPUT_STATE"
            assert [i.name for i in client.get_model_metadata("acc").inputs] == ["INPUT"]
            assert "sequence" in client.get_server_metadata().extensions
            with pytest.raises(InferenceServerException, match="must specify the START flag") as caught:
                client.infer("acc", one(1), sequence_id=99)
            assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
            with pytest.raises(InferenceServerException, match="non-zero or non-empty correlation ID"):
                client.infer("acc", one(1))
            with pytest.raises(InferenceServerException, match="unexpected inference output"):
                client.infer("acc", one(1), sequence_id=5, sequence_start=True,
                             outputs=[grpcclient.InferRequestedOutput("OUTPUT_STATE")])
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            two = httpclient.InferInput("INPUT", [2, 1], "INT32")
            two.set_data_from_numpy(np.array([[1], [2]], np.int32))
            with pytest.raises(InferenceServerException, match="batch-size 1") as caught:
                client.infer("acc", [two], sequence_id=9, sequence_start=True)
            assert caught.value.status() == "400"
            tensor = httpclient.InferInput("INPUT", [1, 1], "INT32")
            tensor.set_data_from_numpy(np.array([[4]], np.int32))
            first = client.infer("acc", [tensor], sequence_id=42, sequence_start=True)
            again = client.infer("acc", [tensor], sequence_id=42, sequence_start=True)  # START restarts the state
            last = client.infer("acc", [tensor], sequence_id=42, sequence_end=True)
            assert [int(r.as_numpy("OUTPUT")[0, 0]) for r in (first, again, last)] == [4, 4, 8]


def test_sequences_of_concurrent_requests_run_in_one_batch(tmp_path):
    write(tmp_path, "acc", ACCUMULATOR % 5_000_000)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("acc")
    model.load()

    def request(sequence_id, number, start):
        tensor = InferInput("INPUT", [1, 1], "INT32", np.array([[number]], np.int32))
        return InferRequest("acc", [tensor], parameters={"sequence_id": sequence_id, "sequence_start": start})

    async def steps():
        totals = []
        for step in range(3):
            answers = await asyncio.gather(*(model.predict(request(s, s, step == 0)) for s in range(1, 9)))
            totals.append([int(output(a, "OUTPUT")[0, 0]) for a in answers])
        return totals

    totals = asyncio.run(steps())
    assert totals == [[s * k for s in range(1, 9)] for k in (1, 2, 3)]
    assert max(model.scheduler.batches_formed) > 1  # rows of different sequences shared a batch
    model.stop()


@pytest.mark.parametrize("initial, first", [("zero_data: true", 5), ('data_file: "start.bin"', 105)])
def test_initial_state_from_zero_or_from_a_file(tmp_path, initial, first):
    folder = write(tmp_path, "acc", FROM_STATE % initial, with_start=False)
    (folder / "initial_state").mkdir()
    (folder / "initial_state" / "start.bin").write_bytes(np.array([100], np.int32).tobytes())
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            outputs = [grpcclient.InferRequestedOutput("OUTPUT"), grpcclient.InferRequestedOutput("OUTPUT_STATE")]
            seen = []
            for step, start, end in ((5, True, False), (2, False, True), (1, True, True)):
                result = client.infer("acc", one(step), sequence_id="text-id", sequence_start=start,
                                      sequence_end=end, outputs=outputs)
                seen.append((int(result.as_numpy("OUTPUT")[0, 0]), int(result.as_numpy("OUTPUT_STATE")[0, 0])))
            assert seen == [(first, first), (first + 2, first + 2), (first - 4, first - 4)]


def test_an_idle_sequence_is_released(tmp_path):
    write(tmp_path, "acc", ACCUMULATOR % 50_000)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            client.infer("acc", one(1), sequence_id=7, sequence_start=True)
            import time

            time.sleep(0.2)
            with pytest.raises(InferenceServerException, match="must specify the START flag"):
                client.infer("acc", one(1), sequence_id=7)


def test_a_config_naming_tensors_the_model_lacks_is_not_ready_with_a_reason(tmp_path):
    write(tmp_path, "bad_state", (ACCUMULATOR % 1_000_000).replace('input_name: "INPUT_STATE"',
                                                                   'input_name: "HIDDEN"'))
    write(tmp_path, "no_controls", """
platform: "onnxruntime_onnx"
max_batch_size: 4
sequence_batching { }
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
""", with_start=False)
    write(tmp_path, "fine", ACCUMULATOR % 1_000_000)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry):
        bad = registry.get_model("bad_state")
        assert not bad.ready and "names input 'HIDDEN'" in bad.reason
        # no state declared: the state input is then the client's to send, and the config must declare it
        plain = registry.get_model("no_controls")
        assert not plain.ready and "INPUT_STATE" in plain.reason
        assert registry.get_model("fine").ready  # the others keep serving


TORCH_CONFIG = """
platform: "pytorch_libtorch"
max_batch_size: 4
sequence_batching {
  control_input [ { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] } ]
  state [ { input_name: "INPUT_STATE" output_name: "OUTPUT_STATE" data_type: TYPE_FP32 dims: [ 2 ] } ]
}
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""


def test_a_torchscript_model_keeps_its_state_the_same_way(tmp_path):
    torch = pytest.importorskip("torch")

    class Running(torch.nn.Module):  # an exponential moving average, reset at START
        # arguments in another order than the config lists them: passed by position, in the file's order
        def forward(self, START, INPUT_STATE, INPUT):  # noqa: N803 - the config's tensor names
            state = torch.where(START > 0.5, INPUT, 0.5 * INPUT_STATE + 0.5 * INPUT)
            return {"OUTPUT": state * 10.0, "OUTPUT_STATE": state}

    (tmp_path / "ema" / "1").mkdir(parents=True)
    torch.jit.script(Running()).save(str(tmp_path / "ema" / "1" / "model.pt"))
    (tmp_path / "ema" / "config.pbtxt").write_text(TORCH_CONFIG)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        assert registry.get_model("ema").ready, registry.get_model("ema").reason
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            seen, state = [], None
            for step, x in enumerate(([2.0, 4.0], [4.0, 0.0], [0.0, 8.0])):
                tensor = httpclient.InferInput("INPUT", [1, 2], "FP32")
                tensor.set_data_from_numpy(np.array([x], np.float32))
                result = client.infer("ema", [tensor], sequence_id=3, sequence_start=step == 0)
                seen.append(result.as_numpy("OUTPUT")[0].tolist())
                assert result.as_numpy("OUTPUT_STATE") is None  # not listed in the config: kept, not sent
                state = np.array(x) if state is None else 0.5 * state + 0.5 * np.array(x)
                assert np.allclose(seen[-1], state * 10)


def test_sequence_steps_sent_at_once_on_a_stream_run_in_order(tmp_path):
    """perf_analyzer --streaming with sequences: steps of two sequences sent without waiting."""
    import queue

    write(tmp_path, "acc", ACCUMULATOR % 5_000_000)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        answers: "queue.Queue" = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for sequence_id in (1, 2):
            for step in range(1, 21):
                client.async_stream_infer("acc", one(step), request_id=f"{sequence_id}-{step}",
                                          sequence_id=sequence_id, sequence_start=step == 1, sequence_end=step == 20)
        seen = {}
        for _ in range(40):
            result, error = answers.get(timeout=30)
            assert error is None, error
            seen[result.get_response().id] = int(result.as_numpy("OUTPUT")[0, 0])
        client.stop_stream()
        client.close()
    assert seen == {f"{s}-{k}": k * (k + 1) // 2 for s in (1, 2) for k in range(1, 21)}


ENSEMBLE = """
platform: "ensemble"
max_batch_size: 8
input [ { name: "VALUE" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "TOTAL" data_type: TYPE_INT32 dims: [ 1 ] } ]
ensemble_scheduling {
  step [ { model_name: "acc" model_version: -1 input_map { key: "INPUT" value: "VALUE" }
           output_map { key: "OUTPUT" value: "TOTAL" } } ]
}
"""


def test_an_ensemble_passes_its_sequence_to_a_stateful_step(tmp_path):
    write(tmp_path, "acc", ACCUMULATOR % 5_000_000)
    (tmp_path / "running" / "1").mkdir(parents=True)
    (tmp_path / "running" / "config.pbtxt").write_text(ENSEMBLE)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            totals = []
            for step in range(1, 5):
                tensor = grpcclient.InferInput("VALUE", [1, 1], "INT32")
                tensor.set_data_from_numpy(np.array([[step]], np.int32))
                result = client.infer("running", [tensor], sequence_id=77, sequence_start=step == 1,
                                      sequence_end=step == 4)
                totals.append(int(result.as_numpy("TOTAL")[0, 0]))
            assert totals == [1, 3, 6, 10]
