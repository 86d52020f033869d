"""Stateful models where Triton's sequence batcher and backends are exact: control tensors' types and
shapes checked at load, a narrow or string CORRID, the ID freed as its END arrives, START resetting the
state even when its request fails, and model_warmup that lists the control and state tensors."""

import asyncio

import numpy as np
import pytest

from test_sequence_state import ACCUMULATOR, output, write
from gpuserve import ModelRepository
from gpuserve.errors import InvalidInput
from gpuserve.repository import DiskRepository
from gpuserve.sequence_state import SequenceInputs
from gpuserve.types import InferInput, InferRequest

CORRID_UINT64 = "data_type: TYPE_UINT64 }"


def request(sequence_id, number, start=False, end=False, shape=(1, 1)):
    tensor = InferInput("INPUT", list(shape), "INT32", np.full(shape, number, np.int32))
    return InferRequest("m", [tensor], parameters={"sequence_id": sequence_id, "sequence_start": start,
                                                  "sequence_end": end})


def unbatched(corrid):
    return (ACCUMULATOR % 1_000_000).replace("max_batch_size: 8", "max_batch_size: 0").replace(
        CORRID_UINT64, f"data_type: TYPE_{corrid} }}").replace('"CORR" data_type: TYPE_UINT64',
                                                               f'"CORR" data_type: TYPE_{corrid}')


@pytest.mark.parametrize("corrid, sequence_id, seen", [("INT32", 3_000_000_000, -1_294_967_296),
                                                       ("UINT32", 2 ** 32 + 5, 5), ("STRING", "seq-a", "seq-a")])
def test_max_batch_size_0_controls_are_1d_and_corrid_takes_triton_types(tmp_path, corrid, sequence_id, seen):
    write(tmp_path, "m", unbatched(corrid), corrid=corrid, batched=False)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("m")
    model.load()

    async def steps():
        first = await model.predict(request(sequence_id, 3, start=True, shape=(1,)))
        last = await model.predict(request(sequence_id, 4, end=True, shape=(1,)))
        return [{o.name: o.as_numpy() for o in answer.outputs} for answer in (first, last)]

    first, last = asyncio.run(steps())
    assert first["OUTPUT"].tolist() == [3] and last["OUTPUT"].tolist() == [7]
    assert last["CORR"].tolist() == [seen]  # an integer ID's low bytes, as Triton copies them
    model.stop()


@pytest.mark.parametrize("name, config, model, reason", [
    ("float_corrid", (ACCUMULATOR % 1).replace(CORRID_UINT64, "data_type: TYPE_FP32 }"), {},
     "unexpected data type for control CONTROL_SEQUENCE_CORRID for float_corrid. Allowed data types are "
     "TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING"),
    ("string_corrid", (ACCUMULATOR % 1).replace(CORRID_UINT64, "data_type: TYPE_STRING }"), {},
     "model expects data-type UINT64 but the model configuration specifies data-type TYPE_STRING"),
    ("batched_controls", (ACCUMULATOR % 1).replace("max_batch_size: 8", "max_batch_size: 0").replace(
        "dims: [ 1 ]", "dims: [ -1, 1 ]"), {}, "'START' in model has dims [-1, 1] but dims [1] is expected"),
])
def test_controls_the_model_cannot_take_leave_it_not_ready(tmp_path, name, config, model, reason):
    write(tmp_path, name, config, **model)
    loaded = DiskRepository(tmp_path).populate(ModelRepository()).get_model(name)
    try:  # refused when its file loads, or already when its config is read (Triton's config checks)
        ready = loaded.load()
    except Exception as exc:
        said = str(exc)
    else:
        assert not ready
        said = loaded.reason
    assert reason in said


def test_after_its_end_arrives_the_id_needs_start_again(tmp_path):
    write(tmp_path, "m", ACCUMULATOR % 5_000_000)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("m")
    model.load()

    async def steps():
        await model.predict(request(4, 1, start=True))
        ending = asyncio.ensure_future(model.predict(request(4, 2, end=True)))
        await asyncio.sleep(0)  # the END is in, not yet run
        with pytest.raises(InvalidInput, match="must specify the START flag"):
            await model.predict(request(4, 3))
        return await ending

    assert int(output(asyncio.run(steps()), "OUTPUT")[0, 0]) == 3
    model.stop()


def test_a_start_that_fails_still_resets_the_state():
    sequences = SequenceInputs("m", {"state": [{"input_name": "IN_STATE", "output_name": "OUT_STATE",
                                                "data_type": "TYPE_INT32", "dims": [1]}]}, None, True)
    given, gate = [], asyncio.Event()

    async def submit(arrays, outputs):
        given.append(int(arrays["IN_STATE"][0, 0]))
        await gate.wait()
        if arrays["x"][0, 0] < 0:
            raise RuntimeError("the model failed")
        return {"OUT_STATE": arrays["IN_STATE"] + arrays["x"], "y": arrays["x"]}

    def step(x, start):
        return asyncio.ensure_future(sequences.run(submit, {"x": np.array([[x]], np.int32)},
                                                   {"sequence_id": 1, "sequence_start": start}, None, ["y"]))

    async def steps():
        first = step(5, True)
        await asyncio.sleep(0)
        restart = step(-1, True)  # a new START while the first still runs: Triton's ID conflict
        gate.set()
        await first
        with pytest.raises(RuntimeError):
            await restart
        await step(2, False)

    asyncio.run(steps())
    assert given == [0, 0, 0]  # after the failed START, its fresh state, not the earlier sequence's 5


def test_model_warmup_may_list_the_control_and_state_tensors(tmp_path):
    warmup = """
model_warmup [ { name: "controls" batch_size: 2
  inputs { key: "INPUT" value { data_type: TYPE_INT32 dims: [ 1 ] random_data: true } }
  inputs { key: "START" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } }
  inputs { key: "READY" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } }
  inputs { key: "CORRID" value { data_type: TYPE_UINT64 dims: [ 1 ] zero_data: true } }
  inputs { key: "INPUT_STATE" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } } ]
"""
    write(tmp_path, "m", ACCUMULATOR % 1_000_000 + warmup)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("m")
    assert model.load() and model.ready
    model.stop()


def test_the_config_shows_the_sequence_defaults_triton_completes(tmp_path):
    from gpuserve.model_config import model_config
    from gpuserve.settings import ModelSettings
    from gpuserve.triton_config import parse_pbtxt, settings_from_config

    written = (ACCUMULATOR % 0).replace("max_sequence_idle_microseconds: 0", "")
    settings = ModelSettings(**settings_from_config(tmp_path, parse_pbtxt('name: "m"\n' + written), 1))
    meta = {"name": "m", "inputs": [{"name": "INPUT", "datatype": "INT32", "shape": [-1, 1]}], "outputs": []}
    shown = model_config(meta, settings)["sequence_batching"]
    assert shown["max_sequence_idle_microseconds"] == 1_000_000  # what Triton applies and shows
    assert shown["oldest"] == {"max_candidate_sequences": 8, "preferred_batch_size": [8]}
