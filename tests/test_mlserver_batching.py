"""`mlserver.context` and `mlserver.batching` as runtimes written for MLServer 1.7.1 use them: the model
context set around a runtime's load and predict, `BatchedRequests` merging and splitting, `load_batching`
with the `adaptive_batching` decorator, and the errors MLServer raises (expected values from MLServer 1.7.1
running the same calls)."""

from __future__ import annotations

import asyncio
import json
import textwrap

import httpx
import pytest

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.mlserver import MLModel
from gpuserve.mlserver.batching import AdaptiveBatcher, BatchedRequests, load_batching
from gpuserve.mlserver.batching.hooks import InvalidBatchingMethod, adaptive_batching
from gpuserve.mlserver.context import model_context, model_name_var, model_version_var
from gpuserve.mlserver.settings import ModelSettings
from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, Parameters, RequestInput, ResponseOutput
from gpuserve.repository import DiskRepository
from test_mlserver_api import _python


def test_names_import_under_the_mlserver_alias():
    out = _python(
        "from gpuserve.mlserver.alias import install\n"
        "assert install()\n"
        "import mlserver.batching, mlserver.context\n"
        "from mlserver.batching import AdaptiveBatcher, BatchedRequests, load_batching\n"
        "from mlserver.batching.hooks import adaptive_batching, InvalidBatchingMethod\n"
        "from mlserver.batching.requests import BatchedRequests as same\n"
        "from mlserver.context import model_context, model_name_var, model_version_var\n"
        "assert same is BatchedRequests\n"
        "print(sorted(mlserver.batching.__all__), sorted(mlserver.context.__all__))\n")
    assert out == ("['AdaptiveBatcher', 'BatchedRequests', 'load_batching'] "
                   "['model_context', 'model_name_var', 'model_version_var']")


def test_model_context_sets_and_restores():
    with pytest.raises(LookupError):
        model_name_var.get()
    with model_context(ModelSettings(name="ctx", implementation="a.B")):
        assert (model_name_var.get(), model_version_var.get()) == ("ctx", "")
        with model_context(ModelSettings(name="inner", implementation="a.B", parameters={"version": "v2"})):
            assert (model_name_var.get(), model_version_var.get()) == ("inner", "v2")
        assert model_name_var.get() == "ctx"
    assert model_name_var.get("none") == "none"


CONTEXT_RUNTIME = """
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.context import model_name_var, model_version_var
from mlserver.types import InferenceResponse


class Context(MLModel):
    async def load(self):
        self.at_load = model_name_var.get()
        return True

    def predict(self, payload):
        seen = f"{self.at_load} {model_name_var.get()} {model_version_var.get()!r}"
        return InferenceResponse(model_name=self.name, outputs=[StringCodec.encode_output("seen", [seen])])
"""


def test_served_runtime_sees_its_model_context(tmp_path):
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "model-settings.json").write_text(json.dumps({
        "name": "ctx", "implementation": "context_runtime.Context", "parameters": {"version": "v3"}}))
    (tmp_path / "ctx" / "context_runtime.py").write_text(textwrap.dedent(CONTEXT_RUNTIME))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        reply = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/ctx/infer", json={
            "inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}]}, timeout=30)
    assert reply.json()["outputs"][0]["data"] == ["ctx ctx 'v3'"]


def test_batched_requests_merge_and_split():
    first = InferenceRequest(id="a", parameters=Parameters(content_type="np"),
                             inputs=[RequestInput(name="x", shape=[1, 2], datatype="FP32", data=[1, 2])])
    second = InferenceRequest(parameters=Parameters(content_type="np"), inputs=[
        RequestInput(name="x", shape=[2, 2], datatype="FP32", data=[3, 4, 5, 6], parameters=Parameters(content_type="np"))])
    batched = BatchedRequests({"1": first, "2": second})
    merged = batched.merged_request
    assert merged.id is None and merged.parameters.content_type == "np"
    (tensor,) = merged.inputs
    assert (tensor.shape, list(tensor.data.root), tensor.parameters.content_type) == ([3, 2], [1, 2, 3, 4, 5, 6], "np")

    answer = InferenceResponse(model_name="m", model_version="v", id="batch", parameters=Parameters(content_type="np"),
                               outputs=[ResponseOutput(name="y", shape=[3, 1], datatype="FP32", data=[1, 2, 3],
                                                       parameters=Parameters(tag=["p", "q"]))])
    parts = batched.split_response(answer)
    assert list(parts) == ["1", "2"]
    assert [(p.id, p.model_name, p.model_version, p.parameters.content_type) for p in parts.values()] == [
        ("a", "m", "v", "np"), (None, "m", "v", "np")]
    assert [(p.outputs[0].shape, list(p.outputs[0].data.root), p.outputs[0].parameters.tag) for p in parts.values()] == [
        ([1, 1], [1.0], "p"), ([2, 1], [2.0, 3.0], "q")]
    assert BatchedRequests().merged_request.inputs == []


class Counting(MLModel):
    async def load(self):
        self.calls = []
        return True

    async def predict(self, payload):
        rows = payload.inputs[0].shape[0]
        self.calls.append(rows)
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="y", shape=[rows, 1], datatype="INT64", data=list(payload.inputs[0].data.root))])


def _request(i):
    return InferenceRequest(id=f"r{i}", inputs=[RequestInput(name="x", shape=[1, 1], datatype="INT64", data=[i])])


def test_load_batching_batches_predict():
    async def run():
        model = Counting(ModelSettings(name="m", implementation="a.B", max_batch_size=4, max_batch_time=0.2))
        await model.load()
        assert await load_batching(model) is model
        assert isinstance(getattr(model, "__adaptive_batching__"), AdaptiveBatcher)
        answers = await asyncio.gather(*(model.predict(_request(i)) for i in range(3)))
        await model.__adaptive_batching__.close()
        return model.calls, [(a.id, list(a.outputs[0].data.root)) for a in answers]

    calls, answers = asyncio.run(run())
    assert sum(calls) == 3 and len(calls) < 3  # some of the three ran together
    assert answers == [("r0", [0]), ("r1", [1]), ("r2", [2])]


def test_load_batching_leaves_unbatched_models_alone():
    async def run():
        model = Counting(ModelSettings(name="m", implementation="a.B", max_batch_size=4))  # no max_batch_time
        predict = model.predict
        await load_batching(model)
        assert model.predict == predict and not hasattr(model, "__adaptive_batching__")
        with pytest.raises(InvalidBatchingMethod) as raised:
            await adaptive_batching(model.predict)(_request(0))
        assert raised.value.status_code == 400
        assert str(raised.value) == "Method predict can't be used for adaptive batching: adaptive batching has not been loaded"

    asyncio.run(run())
