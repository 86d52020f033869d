"""Triton's scheduling as its qa suites see it (L0_batch_input, L0_rate_limiter, L0_dyna_sequence_batcher,
L0_sequence_corrid_batcher, L0_passive_instance): what a tritonclient user observes about which requests
share a batch, when an instance may run, and which instance a request reaches."""

import asyncio
import time

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


# Triton's rate limiter (qa/L0_rate_limiter) ---------------------------------------------------------------

from gpuserve.engine import rate_limiter  # noqa: E402
from gpuserve.engine.batcher import BatchingConfig, Scheduler  # noqa: E402
from gpuserve.engine.instance import Instance  # noqa: E402
from gpuserve.errors import InvalidInput, InvalidSettings  # noqa: E402


class Recorder:
    """A CPU backend that records which model ran when, and how many ran at once."""

    device = "cpu"

    def __init__(self, name, log, seconds=0.01):
        self.name, self.log, self.seconds = name, log, seconds
        self.inputs = self.outputs = ()

    def run(self, arrays, outputs=None):
        import time

        self.log["now"] = self.log.get("now", 0) + 1
        self.log["most"] = max(self.log.get("most", 0), self.log["now"])
        self.log.setdefault("order", []).append(self.name)
        time.sleep(self.seconds)
        self.log["now"] -= 1
        return {"y": arrays["x"]}


def _limited(limiter, name, groups, log):
    """A scheduler over one instance per group's instance, each with its rate limiter ticket."""
    tickets = limiter.tickets_for(name, groups)
    instances = []
    for i, ticket in enumerate(tickets):
        instance = Instance(Recorder(name, log), f"{name}-{i}", slots=1)
        instance.ticket = ticket
        instances.append(instance)
    return Scheduler(name, instances, BatchingConfig(inline_below_s=0.0))


def _group(count=1, priority=0, **resources):
    spec = [{"name": n, "count": c, "global": g} for n, (c, g) in resources.items()]
    return {"count": count, "rate_limiter": {"resources": spec, "priority": priority}}


def _run_all(schedulers_and_counts):
    async def go():
        x = {"x": np.zeros((1, 1), np.float32)}
        await asyncio.gather(*(s.submit(x) for s, n in schedulers_and_counts for _ in range(n)))
        for s, _ in schedulers_and_counts:
            await s.stop()

    asyncio.run(go())


def test_rate_limiter_serves_priority_one_twice_as_often_as_priority_two():
    """Instances that cannot run together take turns lowest `runs x priority` first (qa
    test_cross_model_prioritization_limited_resource: a ratio over 1.8 between the two models)."""
    limiter, log = rate_limiter.RateLimiter(), {}
    one = _limited(limiter, "one", [_group(resource1=(4, False))], log)
    two = _limited(limiter, "two", [_group(priority=2, resource1=(2, False), resource2=(2, True))], log)
    _run_all([(one, 12), (two, 12)])
    assert log["most"] == 1  # resource1 is 4 (the most any instance needs): never both at once
    first = log["order"][:12]
    assert first.count("one") == 8 and first.count("two") == 4, first


def test_rate_limiter_lets_instances_run_together_when_resources_allow():
    log = {}
    limiter = rate_limiter.RateLimiter(rate_limiter.parse_resources(["resource1:6", "resource2:2"]))
    model = _limited(limiter, "m", [_group(resource1=(4, False)), _group(priority=2, resource1=(2, False),
                                                                         resource2=(2, True))], log)
    _run_all([(model, 16)])
    assert log["most"] == 2
    limited, log = rate_limiter.RateLimiter(), {}
    model = _limited(limited, "m", [_group(resource1=(4, False)), _group(priority=2, resource1=(2, False),
                                                                         resource2=(2, True))], log)
    _run_all([(model, 16)])
    assert log["most"] == 1 and not any(limited.taken.values())


@pytest.mark.parametrize("flags, message", [
    (["resource1:1"], 'Resource count for "resource1" is limited to 1 which will prevent scheduling of one or more '
                      "model instances, the minimum required count is 4"),
    (["resource1:10:10", "resource2:2"], 'Resource count for "resource1" is limited to 0 which will prevent '
                                         "scheduling of one or more model instances, the minimum required count is 4"),
])
def test_rate_limiter_refuses_a_model_that_needs_more_than_the_flags_give(flags, message):
    limiter = rate_limiter.RateLimiter(rate_limiter.parse_resources(flags))
    with pytest.raises(InvalidSettings) as info:
        limiter.tickets_for("m", [_group(resource1=(4, False))])
    assert str(info.value).endswith(message)
    assert not limiter.tickets


def test_rate_limiter_refuses_a_resource_both_global_and_per_device():
    limiter = rate_limiter.RateLimiter()
    limiter.tickets_for("a", [_group(resource2=(2, True))])
    with pytest.raises(InvalidSettings, match='Resource "resource2" is present as both global and device-specific '
                                              "resource in the model configuration."):
        limiter.tickets_for("b", [_group(resource2=(2, False))])
    with pytest.raises(InvalidSettings, match="expected <name>:<count>"):
        rate_limiter.parse_resources(["resource1"])


# Passive instances (qa/L0_passive_instance) ---------------------------------------------------------------

WHO = '''
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_instance_name"]

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("WHO", np.array([self.name.encode()], object))])
                for _ in requests]
'''

WHO_CONFIG = '''
backend: "python"
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "WHO" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { name: "active" kind: KIND_CPU }, { name: "idle" kind: KIND_CPU count: 2 passive: true } ]
'''


def _write_python(root, name, code, config):
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(config)
    (root / name / "1" / "model.py").write_text(code)


def test_passive_instances_load_but_take_no_requests(tmp_path):
    """As Triton: a `passive: true` group's instances are loaded and initialized, and the scheduler sends
    them nothing (qa/L0_passive_instance: no request reaches the passive KIND_GPU instance)."""
    _write_python(tmp_path, "who", WHO, WHO_CONFIG)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("who")
    model.load()

    async def many():
        x = np.zeros((1,), np.float32)
        answers = await asyncio.gather(*(model.predict(InferRequest("who", [InferInput("X", [1], "FP32", x)]))
                                         for _ in range(12)))
        return {a.outputs[0].as_numpy()[0] for a in answers}

    try:
        assert len(model.instances) == 3
        assert asyncio.run(many()) == {b"active_0"}
    finally:
        model.stop()


RAGGED_PY = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("N", np.array([[len(requests)]], np.int32))])
                for _ in requests]
'''

RAGGED_PY_CONFIG = '''
backend: "python"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] allow_ragged_batch: true } ]
output [ { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 2000000 preferred_batch_size: [ 4 ] }
'''


def test_a_python_model_batches_ragged_requests_together(tmp_path):
    """allow_ragged_batch on a Python model lets requests of different shapes share one execute, as Triton
    (qa/L0_dyna_sequence_batcher test_multi_sequence_different_shape_allow_ragged: batches of 4 and 3)."""
    _write_python(tmp_path, "rag", RAGGED_PY, RAGGED_PY_CONFIG)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("rag")
    model.load()

    async def four():
        xs = [np.zeros((1, n), np.float32) for n in (4, 3, 1, 2)]
        answers = await asyncio.gather(*(model.predict(InferRequest("rag", [InferInput("X", list(x.shape), "FP32", x)]))
                                         for x in xs))
        return [int(a.outputs[0].as_numpy()[0, 0]) for a in answers]

    try:
        assert asyncio.run(four()) == [4, 4, 4, 4]
    finally:
        model.stop()


# CORRID data types (qa/L0_sequence_corrid_batcher test_corrid_data_type) ------------------------------------

ECHO_SEQ = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
'''


@pytest.mark.parametrize("corrid_type, good, bad, words", [
    ("TYPE_STRING", "corrid", 123, "data-type is 'UINT64', but model 'seq' expects 'BYTES'"),
    ("TYPE_UINT32", 123, "corrid", "data-type is 'BYTES', but model 'seq' expects 'UINT32'"),
    ("TYPE_INT64", 123, "corrid", "data-type is 'BYTES', but model 'seq' expects 'INT64'"),
])
def test_a_correlation_id_of_the_wrong_type_is_refused_in_tritons_words(tmp_path, corrid_type, good, bad, words):
    config = ('backend: "python"\ninput [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
              'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
              'sequence_batching { control_input [ { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID '
              f'data_type: {corrid_type} }} ] }} ] }}\n')
    _write_python(tmp_path, "seq", ECHO_SEQ, config)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("seq")
    model.load()

    def request(corrid):
        x = np.ones((1,), np.float32)
        return InferRequest("seq", [InferInput("X", [1], "FP32", x)],
                            parameters={"sequence_id": corrid, "sequence_start": True, "sequence_end": True})

    async def both():
        answer = await model.predict(request(good))
        assert answer.outputs[0].as_numpy()[0] == 1.0
        with pytest.raises(InvalidInput, match=f"sequence batching control 'CORRID' {words}"):
            await model.predict(request(bad))

    try:
        asyncio.run(both())
    finally:
        model.stop()


def test_oldest_sequences_past_max_candidate_sequences_wait_in_the_backlog(tmp_path):
    """As Triton's Oldest strategy: with every candidate slot taken, a new sequence waits until one ends
    (qa/L0_dyna_sequence_batcher test_backlog: the fifth of five sequences runs alone, after the others)."""
    config = ('backend: "python"\nmax_batch_size: 4\ninput [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
              'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
              'sequence_batching { max_sequence_idle_microseconds: 5000000 oldest { max_candidate_sequences: 1 } }\n')
    _write_python(tmp_path, "seq", ECHO_SEQ, config)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("seq")
    model.load()

    def request(corrid, start=False, end=False):
        x = np.full((1, 1), corrid, np.float32)
        return InferRequest("seq", [InferInput("X", [1, 1], "FP32", x)],
                            parameters={"sequence_id": corrid, "sequence_start": start, "sequence_end": end})

    async def two():
        await model.predict(request(1, start=True))
        second = asyncio.ensure_future(model.predict(request(2, start=True, end=True)))
        await asyncio.sleep(0.3)
        assert not second.done()  # sequence 1 holds the only slot
        await model.predict(request(1, end=True))
        answer = await asyncio.wait_for(second, 5)
        return answer.outputs[0].as_numpy()[0, 0]

    try:
        assert asyncio.run(two()) == 2.0
    finally:
        model.stop()


def test_rate_limiter_takes_model_files_too(tmp_path):
    """An ONNX model's instance groups get rate limiter tickets as Python models' do: a model needing more of
    a resource than --rate-limit-resource gives fails to load in Triton's words, one that fits runs one batch
    at a time per instance with its ticket, and unloading gives its resources back (before, model files ran
    unlimited whatever --rate-limit said)."""
    from conftest import make_onnx_model
    from gpuserve.repository import DiskRepository
    from gpuserve import ModelRepository
    from gpuserve.model_repository import run_load

    def model(name, need):
        (tmp_path / name / "1").mkdir(parents=True)
        make_onnx_model(tmp_path / name / "1" / "model.onnx")
        (tmp_path / name / "config.pbtxt").write_text(
            f'platform: "onnxruntime_onnx"\nmax_batch_size: 8\ninstance_group [ {{ count: 2 kind: KIND_CPU '
            f'rate_limiter {{ resources [ {{ name: "R1" count: {need} }} ] }} }} ]\n')

    model("fits", 1)
    model("too_big", 3)
    rate_limiter.configure("execution_count", ["R1:2"])
    try:
        registry = DiskRepository(str(tmp_path)).populate(ModelRepository())

        async def go():
            for name in ("fits", "too_big"):
                await run_load(registry.get_model(name))
            big = registry.get_model("too_big")
            assert not big.ready and "R1" in big.reason
            fits = registry.get_model("fits")
            assert fits.ready
            engine = fits.scheduler.instances
            assert len(engine) == 2 and all(i.ticket is not None and i.slots == 1 for i in engine)
            assert len(rate_limiter.limiter().tickets) == 2
            x = np.ones((1, 4), np.float32)
            answers = await asyncio.gather(*(fits.scheduler.submit({"input": x}) for _ in range(6)))
            assert all(a["output"].shape == (1, 3) for a in answers)
            await fits.aclose()
            assert rate_limiter.limiter().tickets == []

        asyncio.run(go())
    finally:
        rate_limiter.configure(None)


def _held_onnx(tmp_path, monkeypatch, held, dynamic):
    """An ONNX model whose batcher waits for `held` queued requests (TRITONSERVER_DELAY_SCHEDULER)."""
    from conftest import make_onnx_model

    monkeypatch.setenv("TRITONSERVER_DELAY_SCHEDULER", str(held))
    (tmp_path / "m" / "1").mkdir(parents=True)
    make_onnx_model(tmp_path / "m" / "1" / "model.onnx")
    (tmp_path / "m" / "config.pbtxt").write_text(
        f'platform: "onnxruntime_onnx"\nmax_batch_size: 8\ndynamic_batching {{ {dynamic} }}\n')
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("m")
    model.load()
    return model


async def _send(model, rows):
    x = np.ones((rows, 4), np.float32)
    answer = await model.predict(InferRequest("m", [InferInput("input", [rows, 4], "FP32", x)]))
    return answer.outputs[0].as_numpy().shape[0]


def test_delay_scheduler_holds_the_first_batch_until_that_many_are_queued(tmp_path, monkeypatch):
    """Triton's TRITONSERVER_DELAY_SCHEDULER=N: nothing runs until N requests wait, then they batch (qa/L0_batcher
    fills the queue so before it checks how the batcher cuts it); before, the first request ran alone."""
    model = _held_onnx(tmp_path, monkeypatch, 3, "")

    async def go():
        sent = []
        for _ in range(3):
            sent.append(asyncio.ensure_future(_send(model, 1)))
            await asyncio.sleep(0.1)
            if len(sent) < 3:
                assert not any(s.done() for s in sent)
        assert await asyncio.wait_for(asyncio.gather(*sent), 5) == [1, 1, 1]

    try:
        asyncio.run(go())
        assert model.scheduler.batches_formed == {3: 1}
    finally:
        model.stop()


def test_a_queue_past_the_largest_preferred_size_is_cut_before_it(tmp_path, monkeypatch):
    """As Triton's dynamic batcher: with preferred sizes [2, 6], queued requests of 3 and 4 rows run apart, the 3
    at once and the 4 after max_queue_delay (qa/L0_batcher test_multi_batch_delayed_sum_gt_max_preferred); once
    the delay is over, everything queued goes together up to max_batch_size (test_multi_batch_delayed_use_max_batch).
    Before, 3 + 4 ran as one batch of 7. The 3 s delay leaves the 3 (answered in ~0.1 s) 2.5 s on a loaded
    machine before its answer could be mistaken for one held for the delay (1 s left 0.8 s)."""
    model = _held_onnx(tmp_path, monkeypatch, 2, "preferred_batch_size: [ 2, 6 ] max_queue_delay_microseconds: 3000000")

    async def apart():
        start = time.monotonic()
        three = asyncio.ensure_future(_send(model, 3))
        await asyncio.sleep(0.1)
        four = asyncio.ensure_future(_send(model, 4))
        assert await asyncio.wait_for(three, 5) == 3
        assert time.monotonic() - start < 2.5 and not four.done()
        assert await asyncio.wait_for(four, 10) == 4
        assert time.monotonic() - start >= 3.0

    try:
        asyncio.run(apart())
        assert model.scheduler.batches_formed == {3: 1, 4: 1}
    finally:
        model.stop()
    model = _held_onnx(tmp_path / "again", monkeypatch, 3,
                       "preferred_batch_size: [ 2, 6 ] max_queue_delay_microseconds: 500000")

    async def together():
        first = [asyncio.ensure_future(_send(model, rows)) for rows in (3, 4)]
        await asyncio.sleep(0.7)
        return await asyncio.wait_for(asyncio.gather(*first, _send(model, 1)), 5)

    try:
        assert asyncio.run(together()) == [3, 4, 1]
        assert model.scheduler.batches_formed == {8: 1}
    finally:
        model.stop()


@pytest.mark.parametrize("extra, reason", [
    ('dynamic_batching { }\nparameters: { key: "TRITON_BATCH_STRATEGY_PATH" value: { string_value: "NOPE.so" } }',
     "Not found: Batching library path not found: NOPE.so"),
    ('sequence_batching { }\nparameters: { key: "TRITON_BATCH_STRATEGY_PATH" value: { string_value: "x.so" } }',
     "Invalid argument: TRITON_BATCH_STRATEGY_PATH cannot be specified with sequence batcher, using default "
     "batching strategy"),
    ("dynamic_batching { }", "Unsupported: custom batching strategy '"),
])
def test_a_custom_batching_strategy_is_refused_with_its_reason(tmp_path, extra, reason):
    """Triton's custom batching strategies are C++ libraries (qa/L0_batch_custom): a model naming a missing one,
    or one beside sequence_batching, fails to load in Triton's words (checked against Triton 2.51), and one
    found (batchstrategy.so in the model folder) is refused as not loadable here; before, all three loaded and
    batched by other rules than the config asked."""
    from conftest import make_onnx_model
    from gpuserve.model_repository import run_load

    (tmp_path / "m" / "1").mkdir(parents=True)
    make_onnx_model(tmp_path / "m" / "1" / "model.onnx")
    (tmp_path / "m" / "batchstrategy.so").write_bytes(b"\x7fELF")
    (tmp_path / "m" / "config.pbtxt").write_text(f'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n{extra}\n')
    model = DiskRepository(str(tmp_path)).populate(ModelRepository()).get_model("m")
    asyncio.run(run_load(model))
    assert not model.ready and reason in model.reason


# Request rescheduling and iterative sequence batching (qa/L0_iterative_sequence,
# qa/L0_backend_python/request_rescheduling) ----------------------------------------------------------------

ITERATE = '''
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """qa's iterative_sequence: IN says how many responses; each execute sends the next and reschedules."""

    def initialize(self, args):
        self.left = {}

    def execute(self, requests):
        for request in requests:
            corrid = request.correlation_id()
            left = self.left.setdefault(corrid, int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0]))
            self.left[corrid] = left = left - 1
            time.sleep(SLEEP)
            out = pb_utils.Tensor("OUT", np.array([left, corrid, request.flags()], np.int32))
            if left > 0:
                request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
            request.get_response_sender().send(pb_utils.InferenceResponse([out]),
                                               flags=0 if left > 0 else pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''

ITERATE_CONFIG = '''
backend: "python"
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 3 ] } ]
SCHEDULER
'''

ADDSUB_ONCE = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """qa's request_rescheduling_addsub: the first request it sees is rescheduled, RETURNED for it."""

    def initialize(self, args):
        self.first = True

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            response = pb_utils.InferenceResponse([pb_utils.Tensor("Y", x + 1)])
            if self.first:
                self.first = False
                request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
                response = RETURNED
            responses.append(response)
        return responses
'''


def _iterative_model(tmp_path, scheduler, sleep=0.0):
    _write_python(tmp_path, "iter", ITERATE.replace("SLEEP", str(sleep)),
                  ITERATE_CONFIG.replace("SCHEDULER", scheduler))
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("iter")
    model.load()
    return model


async def _stream_of(model, value, **parameters):
    """The responses (or the error that ends them) of one request to a decoupled model, as a stream sees them."""
    from gpuserve.dataplane import STREAMING

    STREAMING.set(True)
    x = np.array([value], np.int32)
    got = []
    try:
        async for response in await model.predict(InferRequest("iter", [InferInput("IN", [1], "INT32", x)],
                                                               parameters=parameters)):
            got.append(response if isinstance(response, Exception) else response.outputs[0].as_numpy().tolist())
    except Exception as exc:  # noqa: BLE001 - the stream's error is what the test looks at
        got.append(exc)
    return got


def test_iterative_sequence_runs_a_rescheduled_request_again_in_its_own_sequence(tmp_path):
    """As Triton's iterative sequencer: a request without a correlation ID gets one of the scheduler's own
    (from 1) and START; each time execute releases it with RESCHEDULE it runs again, with the same ID and
    no flags, until it is released for good (qa L0_iterative_sequence test_grpc_stream, test_backlog_fill;
    gpuserve refused set_release_flags(RESCHEDULE) and a decoupled model with sequence_batching)."""
    model = _iterative_model(tmp_path, "sequence_batching { iterative_sequence: true }")

    async def two():
        return await asyncio.gather(_stream_of(model, 3), _stream_of(model, 2))

    try:
        first, second = asyncio.run(two())
    finally:
        model.stop()
    assert [row[0] for row in first] == [2, 1, 0] and [row[0] for row in second] == [1, 0]
    assert {first[0][1], second[0][1]} == {1, 2}  # a correlation ID each
    assert [row[2] for row in first] == [1, 0, 0]  # START, then neither START nor END
    assert len({row[1] for row in first}) == 1


@pytest.mark.parametrize("scheduler, parameters", [
    ("dynamic_batching { }", {}),
    ("sequence_batching { direct { } }", {"sequence_id": 7, "sequence_start": True}),
])
def test_a_rescheduled_request_without_iterative_sequence_batching_fails_in_tritons_words(
        tmp_path, scheduler, parameters):
    """qa L0_iterative_sequence test_unsupported_dynamic_scheduler / _sequence_scheduler: the response sent
    before the release arrives, then the stream ends with Triton core's error."""
    model = _iterative_model(tmp_path, scheduler)
    try:
        got = asyncio.run(_stream_of(model, 2, **parameters))
    finally:
        model.stop()
    assert got[0][0] == 1 and isinstance(got[1], InvalidInput)
    assert "Request is released with TRITONSERVER_REQUEST_RELEASE_RESCHEDULE, while the model is not configured " \
           "to handle such a flag." in str(got[1])


def test_a_rescheduled_request_of_a_sequence_that_idled_out_meanwhile_needs_start(tmp_path):
    """qa L0_iterative_sequence test_reschedule_error: execute takes longer than max_sequence_idle, so the
    sequence is gone when its request comes back."""
    model = _iterative_model(tmp_path, "sequence_batching { iterative_sequence: true "
                                       "max_sequence_idle_microseconds: 100000 }", sleep=0.3)
    try:
        got = asyncio.run(_stream_of(model, 2))
    finally:
        model.stop()
    assert got[0][0] == 1
    assert "inference request for sequence 1 to model 'iter' must specify the START flag on the first request " \
           "of the sequence" in str(got[1])


@pytest.mark.parametrize("returned, scheduler, answer", [
    ("None", "sequence_batching { iterative_sequence: true }", 2.0),
    ("None", "dynamic_batching { }", "not configured to handle such a flag"),
    ("response", "sequence_batching { iterative_sequence: true }",
     "Expected a None object in the execute function return list for reschduled request, found type"),
])
def test_a_non_decoupled_model_answers_a_rescheduled_request_once(tmp_path, returned, scheduler, answer):
    """qa L0_backend_python request_rescheduling (test_non_decoupled_e2e, test_wrong_return_type): the
    rescheduled request's slot in execute's list holds None, and its answer comes from the next execute."""
    config = ('backend: "python"\ninput [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
              f'output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 1 ] }} ]\n{scheduler}\n')
    _write_python(tmp_path, "addsub", ADDSUB_ONCE.replace("RETURNED", returned), config)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("addsub")
    model.load()
    x = np.ones((1,), np.float32)
    try:
        if isinstance(answer, float):
            got = asyncio.run(model.predict(InferRequest("addsub", [InferInput("X", [1], "FP32", x)])))
            assert got.outputs[0].as_numpy().tolist() == [answer]
        else:
            with pytest.raises(Exception, match=answer):
                asyncio.run(model.predict(InferRequest("addsub", [InferInput("X", [1], "FP32", x)])))
    finally:
        model.stop()


def test_a_load_override_may_leave_object_keys_unquoted():
    """protobuf's JSON parser, which reads Triton's config override, takes bare keys (qa L0_iterative_sequence
    test_backlog_fill loads `direct: { ... }`); gpuserve refused the load as invalid JSON."""
    from gpuserve.load_override import _config

    config = _config("m", '{"backend": "python", "note": "a, b: c", sequence_batching: {direct: {}}}')
    assert config["sequence_batching"] == {"direct": {}} and config["note"] == "a, b: c"
    with pytest.raises(InvalidInput, match="not valid JSON"):
        _config("m", '{backend "python"}')


def _identity_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], "identity",
                              [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


IDENTITY_PY = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0",
                pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]) for r in requests]
'''


@pytest.mark.parametrize("form", ["python", "onnx"])
def test_a_direct_sequence_holds_one_of_max_batch_size_slots_per_instance(tmp_path, form):
    """Triton's Direct strategy gives each instance max(1, max_batch_size) sequence slots and a sequence
    holds one until it ends or idles out; one started while all are taken waits in the backlog (qa
    L0_lifecycle test_concurrent_model_instance_load_sanity: with 5 instances and max_batch_size 0 the
    sixth sequence's request times out). gpuserve started any number of Direct sequences at once."""
    tensors = ('max_batch_size: 0\ninput [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
               'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
               'instance_group [ { count: 2 kind: KIND_CPU } ]\n'
               'sequence_batching { direct { } max_sequence_idle_microseconds: 10000000 }\n')
    if form == "python":
        _write_python(tmp_path, "m", IDENTITY_PY, 'backend: "python"\n' + tensors)
    else:
        _identity_onnx(tmp_path / "m" / "1" / "model.onnx")
        (tmp_path / "m" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\n' + tensors)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("m")
    model.load()

    def step(sequence, **flags):
        x = np.full((4,), sequence, np.float32)
        return model.predict(InferRequest("m", [InferInput("INPUT0", [4], "FP32", x)],
                                          parameters={"sequence_id": sequence, **flags}))

    async def three():
        await step(1, sequence_start=True)
        await step(2, sequence_start=True)
        third = asyncio.ensure_future(step(3, sequence_start=True))
        await asyncio.sleep(0.5)
        assert not third.done()  # both slots are held
        await step(1, sequence_end=True)
        answer = await asyncio.wait_for(third, 5)
        assert answer.outputs[0].as_numpy().tolist() == [3.0] * 4

    try:
        asyncio.run(three())
    finally:
        model.stop()


DIRECT_ONNX = '''
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  direct { }
  control_input [ { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
                  { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] } ]
}
'''


def _direct_onnx(tmp_path, max_batch_size=4, instances=1):
    """OUTPUT = INPUT + 10 * READY + 100 * START: a row shows the controls it was given."""
    import onnx
    from onnx import TensorProto, helper

    def tensor(name):
        return helper.make_tensor_value_info(name, TensorProto.INT32, [-1, 1])

    ten = helper.make_tensor("ten", TensorProto.INT32, [], [10])
    hundred = helper.make_tensor("hundred", TensorProto.INT32, [], [100])
    nodes = [helper.make_node("Mul", ["READY", "ten"], ["r"]), helper.make_node("Mul", ["START", "hundred"], ["s"]),
             helper.make_node("Add", ["INPUT", "r"], ["ir"]), helper.make_node("Add", ["ir", "s"], ["OUTPUT"])]
    graph = helper.make_graph(nodes, "direct", [tensor("INPUT"), tensor("START"), tensor("READY")],
                              [tensor("OUTPUT")], [ten, hundred])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (tmp_path / "direct" / "1").mkdir(parents=True)
    onnx.save(model, str(tmp_path / "direct" / "1" / "model.onnx"))
    (tmp_path / "direct" / "config.pbtxt").write_text(DIRECT_ONNX.replace(
        "max_batch_size: 4", f"max_batch_size: {max_batch_size}").replace("count: 1", f"count: {instances}"))


def test_a_direct_batch_keeps_each_sequence_in_its_slot_and_pads_the_gaps(tmp_path, monkeypatch):
    """Triton's Direct batcher: a batch runs every slot up to the highest ready one, a slot whose sequence
    has no request waiting gets a not-ready row, and TRITONSERVER_DELAY_SCHEDULER holds the first batch
    until that many requests are queued (qa L0_sequence_batcher test_queue_delay_no_min_util: batches
    {2: 2} for 3 requests, the second 'null, sequence 2'; gpuserve ran 3 batches of the ready rows only)."""
    monkeypatch.setenv("TRITONSERVER_DELAY_SCHEDULER", "2")
    _direct_onnx(tmp_path)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("direct")
    model.load()

    def step(sequence, value, **flags):
        x = np.array([[value]], np.int32)
        return model.predict(InferRequest("direct", [InferInput("INPUT", [1, 1], "INT32", x)],
                                          parameters={"sequence_id": sequence, **flags}))

    async def run():
        first = asyncio.ensure_future(step(1001, 1, sequence_start=True))
        await asyncio.sleep(0.3)
        assert not first.done()  # held: one request queued of the two the hook waits for
        second = await step(1002, 11, sequence_start=True)
        third = await step(1002, 12)
        return [(await first).outputs[0].as_numpy()[0, 0], second.outputs[0].as_numpy()[0, 0],
                third.outputs[0].as_numpy()[0, 0]]

    try:
        assert asyncio.run(run()) == [111, 121, 22]
        stats = model.stats
        assert {size: b.compute_infer.count for size, b in stats.batches.items()} == {2: 2}
        assert (stats.execution_count, stats.inference_count) == (2, 3)
    finally:
        model.stop()


def test_a_direct_sequences_end_hands_its_slot_to_the_backlog_as_its_batch_forms(tmp_path, monkeypatch):
    """As Triton: the slot of a sequence whose END request enters a batch goes to the oldest backlog
    sequence at once, so that sequence's request joins the very next batch (qa L0_sequence_batcher
    test_backlog_fill: 3 batches of 4; gpuserve freed the slot once the END request had been answered,
    and the next batch ran padded without the backlog's request, then one more batch)."""
    monkeypatch.setenv("TRITONSERVER_DELAY_SCHEDULER", "5")
    monkeypatch.setenv("TRITONSERVER_BACKLOG_DELAY_SCHEDULER", "1")
    _direct_onnx(tmp_path, max_batch_size=2)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("direct")
    model.load()
    instance = model.scheduler.instances[0]  # batches answered at once: the backlog's request must not be late
    instance.submit = lambda jobs, batched, outputs, done: done(instance.run(jobs, batched, outputs), None)

    def step(sequence, value, **flags):
        x = np.array([[value]], np.int32)
        return asyncio.ensure_future(model.predict(InferRequest(
            "direct", [InferInput("INPUT", [1, 1], "INT32", x)], parameters={"sequence_id": sequence, **flags})))

    async def run():
        tasks = [step(1, 1, sequence_start=True), step(1, 2, sequence_end=True), step(2, 3, sequence_start=True),
                 step(2, 4), step(2, 5, sequence_end=True)]
        await asyncio.sleep(0.2)
        tasks.append(step(3, 6, sequence_start=True, sequence_end=True))  # no slot left: the backlog
        return [int(answer.outputs[0].as_numpy()[0, 0]) for answer in await asyncio.gather(*tasks)]

    try:
        assert asyncio.run(run()) == [111, 12, 113, 14, 15, 116]
        stats = model.stats
        assert {size: b.compute_infer.count for size, b in stats.batches.items()} == {2: 3}
        assert (stats.execution_count, stats.inference_count) == (3, 6)
    finally:
        model.stop()


def test_the_delay_hook_lets_every_direct_instance_start(tmp_path, monkeypatch):
    """TRITONSERVER_DELAY_SCHEDULER over several instances: each batcher adds what the others counted while
    they were held, as Triton's do, so the second starts after the first has taken its requests (qa
    L0_sequence_batcher test_half_batch on 2 instances: {1: 8}; the second instance's requests hung)."""
    monkeypatch.setenv("TRITONSERVER_DELAY_SCHEDULER", "4")
    _direct_onnx(tmp_path, max_batch_size=2, instances=2)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("direct")
    model.load()

    def step(sequence, value, **flags):
        x = np.array([[value]], np.int32)
        return asyncio.ensure_future(model.predict(InferRequest(
            "direct", [InferInput("INPUT", [1, 1], "INT32", x)], parameters={"sequence_id": sequence, **flags})))

    async def run():
        tasks = [step(1, 1, sequence_start=True), step(2, 2, sequence_start=True), step(1, 3, sequence_end=True),
                 step(2, 4, sequence_end=True)]
        return [int(a.outputs[0].as_numpy()[0, 0]) for a in await asyncio.wait_for(asyncio.gather(*tasks), 10)]

    try:
        assert asyncio.run(run()) == [111, 112, 13, 14]
        stats = model.stats
        assert {size: b.compute_infer.count for size, b in stats.batches.items()} == {1: 4}
    finally:
        model.stop()


@pytest.mark.parametrize("form", ["python", "onnx"])
def test_a_backlog_sequence_past_its_request_timeout_is_refused_whole(tmp_path, form):
    """As Triton's reaper: a sequence waiting in the backlog longer than its requests' `timeout` is refused
    with 'timeout of the corresponding sequence has been expired' (UNAVAILABLE) and forgotten, so its next
    request needs START (qa L0_sequence_batcher SequenceBatcherRequestTimeoutTest; gpuserve held it until a
    slot freed, then ran it)."""
    from gpuserve.errors import QueueTimeout

    tensors = ('max_batch_size: 1\ninput [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
               'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
               'sequence_batching { max_sequence_idle_microseconds: 10000000 }\n')
    if form == "python":
        _write_python(tmp_path, "m", IDENTITY_PY, 'backend: "python"\n' + tensors)
    else:
        import onnx

        _identity_onnx(tmp_path / "m" / "1" / "model.onnx")
        path = str(tmp_path / "m" / "1" / "model.onnx")
        model_file = onnx.load(path)
        for value in list(model_file.graph.input) + list(model_file.graph.output):
            value.type.tensor_type.shape.dim.insert(0, onnx.TensorShapeProto.Dimension(dim_param="batch"))
        onnx.save(model_file, path)
        (tmp_path / "m" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\n' + tensors)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("m")
    model.load()

    def step(sequence, **parameters):
        x = np.ones((1, 4), np.float32)
        return model.predict(InferRequest("m", [InferInput("INPUT0", [1, 4], "FP32", x)],
                                          parameters={"sequence_id": sequence, **parameters}))

    async def run():
        await step(1, sequence_start=True)  # holds the one slot
        started = time.monotonic()
        with pytest.raises(QueueTimeout, match="timeout of the corresponding sequence has been expired"):
            await asyncio.wait_for(step(2, sequence_start=True, timeout=300000), 5)
        assert time.monotonic() - started < 3
        with pytest.raises(InvalidInput, match="must specify the START flag"):
            await step(2)

    try:
        asyncio.run(run())
    finally:
        model.stop()


def test_unloading_a_direct_model_answers_its_queued_requests(tmp_path, monkeypatch):
    """Requests still in a Direct batcher's slot queues when the model unloads fail as not ready, not hang."""
    from gpuserve.errors import ModelNotReady

    monkeypatch.setenv("TRITONSERVER_DELAY_SCHEDULER", "10")  # nothing runs: both stay queued
    _direct_onnx(tmp_path)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("direct")
    model.load()

    async def run():
        x = np.array([[1]], np.int32)
        tasks = [asyncio.ensure_future(model.predict(InferRequest(
            "direct", [InferInput("INPUT", [1, 1], "INT32", x)], parameters={"sequence_id": n, "sequence_start": True})))
            for n in (1, 2)]
        await asyncio.sleep(0.2)
        await model.aclose()
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

    answers = asyncio.run(run())
    assert all(isinstance(answer, ModelNotReady) for answer in answers)
