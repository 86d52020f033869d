"""The whole JSON body of an MLServer-form model's V2 answer, as MLServer 1.7.1 writes it (bodies taken from
MLServer 1.7.1 serving the same folders): a top-level `"parameters"` object always, `{}` when the runtime set
none (MLServer's data plane moves CloudEvents headers through it), and an `id` made up for a request without
one, for custom runtimes and the scikit-learn runtime alike, batched or in workers. A KServe-form model's
answer keeps neither."""

from __future__ import annotations

import json
import textwrap

import httpx
import pytest

from conftest import running_server
from gpuserve import InferOutput, InferResponse, Model, ModelRepository
from gpuserve.repository import DiskRepository
from test_mlserver_runtimes import train_classifier

RUNTIME = """
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.types import InferenceResponse, Parameters, ResponseOutput


class Modes(MLModel):
    async def predict(self, payload):
        mode = int(payload.inputs[0].data[0])
        one = ResponseOutput(name="o", shape=[1], datatype="INT64", data=[1])
        if mode == 0:
            return InferenceResponse(model_name=self.name, outputs=[one])
        if mode == 1:
            return InferenceResponse(model_name=self.name, parameters=Parameters(headers={"x-h": "1"}), outputs=[one])
        if mode == 2:
            return InferenceResponse(model_name=self.name, parameters=Parameters(content_type="np", foo="bar"),
                                     outputs=[one])
        if mode == 3:
            return NumpyRequestCodec.encode_response(self.name, np.array([[1.5, 2.5]]))
        return InferenceResponse(model_name=self.name, model_version="7", id="not-the-request's",
                                 outputs=[NumpyCodec.encode_output("n", np.array([1.0]))])
"""

ONE = {"name": "o", "shape": [1], "datatype": "INT64", "data": [1]}


def _runtime(root, name, **settings):
    (root / name).mkdir()
    (root / name / "model-settings.json").write_text(json.dumps({"name": name, "implementation": "modes.Modes",
                                                                 **settings}))
    (root / name / "modes.py").write_text(textwrap.dedent(RUNTIME))


class Plain(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("y", payload.inputs[0].as_numpy())])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlserver-bodies")
    _runtime(root, "modes")
    _runtime(root, "batched", max_batch_size=4, max_batch_time=0.01)
    _runtime(root, "workers", parallel_workers=1)
    (root / "iris").mkdir()
    (root / "iris" / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v0.1.0"}}))
    train_classifier(root / "iris")
    registry = DiskRepository(root).populate(ModelRepository())
    registry.update(Plain("kserve-form"))
    with running_server(repository=registry) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=60) as http:
            yield http


def _infer(http, model, mode, **extra):
    reply = http.post(f"/v2/models/{model}/infer", json={
        "inputs": [{"name": "m", "shape": [1], "datatype": "INT64", "data": [mode]}], **extra})
    assert reply.status_code == 200, reply.text
    return reply


def _uuid(body):
    assert len(body.pop("id")) == 36
    return body


@pytest.mark.parametrize("model", ["modes", "batched", "workers"])
def test_custom_runtime_bodies(served, model):
    assert _uuid(_infer(served, model, 0).json()) == {"model_name": model, "parameters": {}, "outputs": [ONE]}
    headed = _infer(served, model, 1)
    assert headed.headers["x-h"] == "1"
    assert _uuid(headed.json()) == {"model_name": model, "parameters": {}, "outputs": [ONE]}
    assert _uuid(_infer(served, model, 2).json()) == {
        "model_name": model, "parameters": {"content_type": "np", "foo": "bar"}, "outputs": [ONE]}
    assert _uuid(_infer(served, model, 3).json()) == {
        "model_name": model, "parameters": {"content_type": "np"}, "outputs": [
            {"name": "output-1", "shape": [1, 2], "datatype": "FP64", "parameters": {"content_type": "np"},
             "data": [1.5, 2.5]}]}
    assert _infer(served, model, 4, id="r1").json() == {
        "model_name": model, "model_version": "7", "id": "r1", "parameters": {}, "outputs": [
            {"name": "n", "shape": [1, 1], "datatype": "FP64", "parameters": {"content_type": "np"},
             "data": [1.0]}]}


def test_sklearn_runtime_body(served):
    reply = served.post("/v2/models/iris/infer", json={"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [0.1, 0.2, 0.3, 0.4]}]}).json()
    assert list(reply) == ["model_name", "model_version", "id", "parameters", "outputs"]
    assert reply["parameters"] == {} and len(reply["id"]) == 36
    assert reply["outputs"][0]["parameters"] == {"content_type": "np"}


def test_kserve_form_answer_is_unchanged(served):
    reply = served.post("/v2/models/kserve-form/infer", json={"inputs": [
        {"name": "x", "shape": [1], "datatype": "INT64", "data": [5]}]}).json()
    assert reply == {"model_name": "kserve-form", "outputs": [{"name": "y", "shape": [1], "datatype": "INT64",
                                                               "data": [5]}]}
