"""Adaptive batching of custom Python models: merge and split of rows and parameters (MLServer's
semantics), isolation of bad requests, and a row-count check on what the model returns."""

import asyncio
import threading

import numpy as np
import pytest

from gpuserve import InferInput, InferOutput, InferRequest, InferResponse, Model, ModelSettings
from gpuserve.adaptive import AdaptiveBatcher, merge_requests, split_response
from gpuserve.errors import InferenceError


def request(values, rid, **params):
    x = np.asarray(values, np.float32).reshape(-1, 2)
    tensor = InferInput("x", list(x.shape), "FP32", parameters={"content_type": "np", **params})
    tensor._array = x
    return InferRequest("m", [tensor], request_id=rid, parameters={"tag": rid})


def test_merge_and_split_of_rows_and_parameters():
    requests = [request([1, 2], "a", custom="v1"), request([3, 4, 5, 6], "b", custom="v2")]
    merged = merge_requests(requests)
    assert merged.inputs[0].shape == [3, 2]
    assert merged.inputs[0].parameters == {"content_type": "np", "custom": ["v1", "v2"]}
    assert merged.parameters == {"tag": ["a", "b"]}
    out = InferOutput.from_numpy("y", merged.inputs[0].as_numpy() * 10, parameters={"content_type": "np",
                                                                                     "foo": ["f1", "f2"], "bar": "x"})
    parts = split_response(InferResponse(merged.id, "m", [out], parameters={"n": ["p", "q"]}), requests, [1, 2], "m")
    assert [p.id for p in parts] == ["a", "b"]
    assert parts[0].outputs[0].as_numpy().tolist() == [[10, 20]] and parts[1].outputs[0].shape == [2, 2]
    assert parts[0].outputs[0].parameters == {"content_type": "np", "foo": "f1", "bar": "x"}
    assert parts[1].outputs[0].parameters["foo"] == "f2"
    assert parts[1].parameters == {"n": ["p", "q"]}  # as MLServer 1.7.1: the response's own are not split


def test_output_parameters_split_as_mlservers_docs_show():
    # MLServer 1.5 docs, "Merge and split of custom parameters": three requests, foo has two values
    requests = [request([1, 2], "a"), request([3, 4], "b"), request([5, 6], "c")]
    out = InferOutput.from_numpy("foo", np.zeros((3, 3), np.int32), parameters={
        "content_type": "np", "foo": ["foo_1", "foo_2"], "bar": ["bar_1", "bar_2", "bar_3"]})
    parts = split_response(InferResponse("x", "m", [out]), requests, [1, 1, 1], "m")
    assert [p.outputs[0].parameters for p in parts] == [
        {"content_type": "np", "foo": "foo_1", "bar": "bar_1"},
        {"content_type": "np", "foo": "foo_2", "bar": "bar_2"},
        {"content_type": "np", "bar": "bar_3"}]


def test_wrong_row_count_is_an_error():
    requests = [request([1, 2], "a"), request([3, 4], "b")]
    out = InferOutput.from_numpy("y", np.zeros((1, 2), np.float32))
    with pytest.raises(InferenceError, match="returned 1 rows"):
        split_response(InferResponse("m", "m", [out]), requests, [1, 1], "m")


class Summer(Model):
    def __init__(self, name):
        super().__init__(name)
        self.settings = ModelSettings(name=name, max_batch_size=16)
        self.gate, self.entered, self.seen = threading.Event(), threading.Event(), []

    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        x = payload.inputs[0].as_numpy()
        self.seen.append(x.shape[0])
        self.entered.set()
        self.gate.wait(30)
        if (x < 0).any():
            raise ValueError("negative")
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("y", x.sum(axis=1, keepdims=True))])


async def test_batches_form_while_busy_and_bad_requests_fail_alone():
    model = Summer("summer")
    model.load()
    batcher = AdaptiveBatcher(model, 16)
    first = asyncio.ensure_future(batcher.submit(request([0, 0], "r0"), {}))
    assert await asyncio.to_thread(model.entered.wait, 30)
    tasks = [asyncio.ensure_future(batcher.submit(request([i, -1 if i == 3 else 1], f"r{i}"), {}))
             for i in range(1, 7)]
    for _ in range(5):
        await asyncio.sleep(0)
    model.gate.set()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert batcher.batches_formed[6] == 1  # the six waiting requests formed one batch
    assert isinstance(results[3], ValueError)
    for i, result in enumerate(results):
        if i != 3:
            response, _ = result
            assert response.id == f"r{i}" and response.outputs[0].as_numpy().tolist() == [[i + 1 if i else 0]]
    await batcher.stop()


def test_adaptive_batching_over_rest(http):
    from conftest import running_server

    model = Summer("summer")
    model.gate.set()
    with running_server([model]) as server:
        client = http(server)
        bodies = [{"id": str(i), "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [i, 1]}]}
                  for i in range(20)]
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda b: client.post("/v2/models/summer/infer", json=b).json(), bodies))
    for i, reply in enumerate(replies):
        assert reply["id"] == str(i) and reply["outputs"][0]["data"] == [i + 1]


class Tasks(Model):
    """Records which task ran each call and holds the model busy until `gate` opens."""

    def __init__(self, name):
        super().__init__(name)
        self.gate, self.calls = asyncio.Event(), []

    def load(self):
        self.ready = True

    async def predict(self, payload, headers=None):
        x = payload.inputs[0].as_numpy()
        self.calls.append((asyncio.current_task(), x.shape[0]))
        await self.gate.wait()
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("y", x * 2)])


async def test_idle_model_runs_a_request_in_its_callers_task_and_batches_the_rest():
    model = Tasks("t")
    model.load()
    batcher = AdaptiveBatcher(model, 16)
    try:
        first = asyncio.ensure_future(batcher.submit(request([1, 2], "a"), {}))
        while not model.calls:
            await asyncio.sleep(0)
        assert model.calls[0][0] is first  # no hop through the batcher's task
        queued = [asyncio.ensure_future(batcher.submit(request([i, i], f"q{i}"), {})) for i in range(3)]
        gone = asyncio.ensure_future(batcher.submit(request([9, 9], "gone"), {}))
        await asyncio.sleep(0.01)
        gone.cancel()  # its caller left while it waited: it must not run
        assert len(model.calls) == 1  # the model is busy: the others wait, nothing runs beside it
        model.gate.set()
        assert (await first)[0].outputs[0].as_numpy().tolist() == [[2, 4]]
        answers = await asyncio.wait_for(asyncio.gather(*queued), 10)
        assert [a.outputs[0].as_numpy().tolist() for a, _ in answers] == [[[0, 0]], [[2, 2]], [[4, 4]]]
        assert [rows for _, rows in model.calls] == [1, 3]
        assert batcher.batches_formed == {1: 1, 3: 1}
    finally:
        await batcher.stop()


async def test_a_batch_window_keeps_every_request_on_the_batchers_task():
    model = Tasks("t")
    model.load()
    model.gate.set()
    batcher = AdaptiveBatcher(model, 16, max_batch_time=0.001)
    try:
        caller = asyncio.ensure_future(batcher.submit(request([1, 2], "a"), {}))
        await asyncio.wait_for(caller, 10)
        assert model.calls[0][0] is not caller
    finally:
        await batcher.stop()


async def test_a_model_that_never_suspends_still_batches_a_burst():
    model = Tasks("t")
    model.load()
    model.gate.set()  # an open Event's wait() returns without suspending: the call finishes in one go
    batcher = AdaptiveBatcher(model, 16)
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(request([i, i], f"r{i}"), {}) for i in range(8))), 10)
        assert [a.outputs[0].as_numpy().tolist() for a, _ in answers] == [[[2 * i, 2 * i]] for i in range(8)]
        assert batcher.batches_formed == {1: 1, 7: 1}  # the first ran at once, the rest queued behind it
    finally:
        await batcher.stop()


async def test_max_batch_size_counts_requests_not_rows():
    # MLServer: max_batch_size is "how many requests you want to group together"
    model = Summer("summer")
    model.load()
    batcher = AdaptiveBatcher(model, 4, max_batch_time=5.0)  # a wait for more would show as 5 s, not 0.5 s
    try:
        model.gate.set()
        started = asyncio.get_running_loop().time()
        answers = await asyncio.wait_for(asyncio.gather(
            *(batcher.submit(request([i, i, i, i], f"r{i}"), {}) for i in range(4))), 10)
        assert model.seen == [8]  # four requests of two rows each: one batch of 8 rows, no wait for more
        assert asyncio.get_running_loop().time() - started < 4  # a loaded machine may take a second or two
        assert [a.outputs[0].as_numpy().tolist() for a, _ in answers] == [[[2 * i], [2 * i]] for i in range(4)]
    finally:
        await batcher.stop()
