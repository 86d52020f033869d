"""KServe's own Model usage examples, with only the import line changed, served for real."""

import asyncio
import pickle
import threading

import numpy as np
import pytest

from conftest import running_server
from gpuserve import InferInput, InferOutput, InferRequest, InferResponse, Model, ModelServer, PredictorConfig
from gpuserve.errors import InvalidInput
from gpuserve.model import InferenceVerb


class NearestCentroid:
    """A scikit-learn-like estimator (fit/predict/predict_proba), pickled like a joblib artefact."""

    def fit(self, x, y):
        self.classes_ = np.unique(y)
        self.centroids_ = np.stack([x[y == c].mean(axis=0) for c in self.classes_])
        return self

    def predict_proba(self, x):
        d = -((np.asarray(x)[:, None, :] - self.centroids_[None]) ** 2).sum(-1)
        e = np.exp(d - d.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, x):
        return self.classes_[self.predict_proba(x).argmax(axis=1)]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    x = np.array([[0, 0], [0, 1], [5, 5], [5, 6]], dtype=float)
    path = tmp_path_factory.mktemp("m") / "model.pkl"
    path.write_bytes(pickle.dumps(NearestCentroid().fit(x, np.array([0, 0, 1, 1]))))
    return path


class SKLearnModel(Model):
    """The KServe docs' SKLearnModel: preprocess -> predict -> postprocess, all sync."""

    def __init__(self, name: str, path):
        super().__init__(name)
        self.path = path
        self.model = None
        self.ready = False

    def load(self):
        self.model = pickle.loads(self.path.read_bytes())
        self.ready = True

    def preprocess(self, body, headers=None):
        return {"instances": np.array(body["instances"])}

    def predict(self, payload, headers=None):
        instances = payload["instances"]
        return {"predictions": self.model.predict(instances).tolist(),
                "probabilities": self.model.predict_proba(instances).tolist()}

    def postprocess(self, response, headers=None):
        return {**response, "model_name": self.name, "model_version": "1.0.0"}


class AsyncModel(Model):
    async def load(self):
        await asyncio.sleep(0)
        self.ready = True

    async def predict(self, payload, headers=None):
        await asyncio.sleep(0)
        return {"predictions": [sum(row) for row in payload["instances"]]}


class HeaderModel(Model):
    def __init__(self, name: str):
        super().__init__(name, return_response_headers=True)
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        if response_headers is not None:
            response_headers["X-Model-Version"] = "1.0.0"
            response_headers["X-Echo-Request"] = headers.get("x-request-id", "")
        return {"predictions": payload["instances"]}

    def postprocess(self, result, headers=None, response_headers=None):
        response_headers["X-Postprocessed"] = "yes"
        return result


class ValidatedModel(Model):
    def load(self):
        self.ready = True

    def validate(self, payload):
        if "instances" not in payload:
            raise InvalidInput("Missing 'instances' key in payload")
        for i, instance in enumerate(payload["instances"]):
            if len(instance) != 4:
                raise InvalidInput(f"Instance {i} must have exactly 4 features")

    def get_input_types(self):
        return [{"name": "input-0", "shape": [-1, 4], "datatype": "FP32"}]

    def get_output_types(self):
        return [{"name": "output-0", "shape": [-1, 3], "datatype": "FP32"}]

    def predict(self, payload, headers=None):
        return {"predictions": [[float(sum(x))] * 3 for x in payload["instances"]]}


class ExplainableModel(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        return {"predictions": [2 * x for x in payload["instances"]]}

    def explain(self, payload, headers=None):
        return {"explanations": [[["x", 2.0]] for _ in payload["instances"]]}


class TensorModel(Model):
    """V2 model: InferRequest in, InferResponse out."""

    def load(self):
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None):
        x = payload.get_input_by_name("x").as_numpy()
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("y", x * 10)])


def test_sklearn_example_pipeline(model_file, http):
    model = SKLearnModel("sklearn-model", model_file)
    model.load()
    with running_server([model]) as server:
        reply = http(server).post("/v1/models/sklearn-model:predict", json={"instances": [[0, 0.5], [5, 5.5]]})
    assert reply.status_code == 200
    body = reply.json()
    assert body["predictions"] == [0, 1] and body["model_name"] == "sklearn-model"
    assert np.allclose(np.sum(body["probabilities"], axis=1), 1.0)


def test_model_loaded_by_start_when_not_loaded_yet(model_file, http):
    with running_server([SKLearnModel("lazy", model_file)]) as server:
        assert http(server).post("/v1/models/lazy:predict", json={"instances": [[5, 5]]}).json()["predictions"] == [1]


def test_multi_model_server_async_headers_validate_explain_v2(http):
    models = [AsyncModel("model-v1"), AsyncModel("model-v2"), HeaderModel("headers"), ValidatedModel("validated"),
              ExplainableModel("explainable"), TensorModel("tensor")]
    with running_server(models) as server:
        client = http(server)
        assert client.get("/v1/models").json()["models"] == [m.name for m in models]  # registration order, as KServe
        for name in ("model-v1", "model-v2"):
            assert client.post(f"/v1/models/{name}:predict", json={"instances": [[1, 2], [3]]}).json() == \
                {"predictions": [3, 3]}
        reply = client.post("/v1/models/headers:predict", json={"instances": [1]}, headers={"x-request-id": "abc"})
        assert reply.headers["x-model-version"] == "1.0.0" and reply.headers["x-echo-request"] == "abc"
        assert reply.headers["x-postprocessed"] == "yes"
        bad = client.post("/v1/models/validated:predict", json={"instances": [[1, 2, 3]]})
        assert bad.status_code == 400 and bad.json() == {"error": "Instance 0 must have exactly 4 features"}
        assert client.post("/v1/models/validated:predict", json={"rows": []}).status_code == 400
        assert client.post("/v1/models/validated:predict", json={"instances": [[1, 2, 3, 4]]}).json() == \
            {"predictions": [[10.0, 10.0, 10.0]]}
        assert client.get("/v2/models/validated").json()["inputs"] == [{"name": "input-0", "shape": [-1, 4],
                                                                        "datatype": "FP32"}]
        assert client.post("/v1/models/explainable:explain", json={"instances": [1]}).json() == \
            {"explanations": [[["x", 2.0]]]}
        out = client.post("/v2/models/tensor/infer", json={
            "id": "t1", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}]}).json()
        assert out["id"] == "t1" and out["outputs"][0]["data"] == [10, 20, 30, 40]


def test_sync_predict_does_not_block_the_event_loop(http):
    entered, release = threading.Event(), threading.Event()

    class Blocking(Model):
        def load(self):
            self.ready = True

        def predict(self, payload, headers=None):
            entered.set()
            release.wait(30)
            return {"predictions": [1]}

    with running_server([Blocking("slow")]) as server:
        client = http(server)
        result = {}
        worker = threading.Thread(target=lambda: result.setdefault(
            "r", client.post("/v1/models/slow:predict", json={"instances": [0]})))
        worker.start()
        assert entered.wait(30)
        import httpx

        # With predict blocking a thread, the loop must still answer health checks.
        assert httpx.get(f"http://127.0.0.1:{server.ports['http']}/v2/health/live", timeout=10).status_code == 200
        release.set()
        worker.join(30)
    assert result["r"].json() == {"predictions": [1]}


def test_registered_exception_handler(http):
    from starlette.responses import JSONResponse

    class Quota(Exception):
        pass

    class Limited(Model):
        def load(self):
            self.ready = True

        def predict(self, payload, headers=None):
            raise Quota("over quota")

    from gpuserve.settings import ServerSettings

    server = ModelServer(settings=ServerSettings.load(None, host="127.0.0.1", http_port=0, grpc_port=0,
                                                      metrics_port=0))
    server.register_exception_handler(Quota, lambda request, exc: JSONResponse({"error": str(exc)}, status_code=429))
    server.register_model(Limited("limited"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    assert server.started.wait(30)
    try:
        reply = http(server).post("/v1/models/limited:predict", json={"instances": [1]})
        assert reply.status_code == 429 and reply.json() == {"error": "over quota"}
    finally:
        server.stop()
        thread.join(30)


def test_register_model_needs_a_name():
    from gpuserve.settings import ServerSettings

    with pytest.raises(ValueError):
        ModelServer(settings=ServerSettings()).register_model(Model(""))
    assert isinstance(ModelServer(settings=ServerSettings()).model_registry.get_models(), dict)


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_transformer_forwards_to_predictor_host(protocol, http):
    """KServe's transformer: preprocess here, default predict() forwards to the predictor."""

    class Transformer(Model):
        def preprocess(self, payload, headers=None):
            if isinstance(payload, InferRequest):
                x = payload.inputs[0].as_numpy() + 1
                tensor = InferInput("x", list(x.shape), "INT32")
                tensor.set_data_from_numpy(x.astype(np.int32))
                return InferRequest(self.name, [tensor], request_id=payload.id)
            return {"instances": [[v + 1 for v in row] for row in payload["instances"]]}

        def postprocess(self, result, headers=None):
            if isinstance(result, InferResponse):
                result.parameters["transformed"] = True
                return result
            return {**result, "transformed": True}

    class Predictor(Model):
        def load(self):
            self.ready = True

        def predict(self, payload, headers=None):
            if isinstance(payload, InferRequest):
                return InferResponse(payload.id, self.name,
                                     [InferOutput.from_numpy("y", payload.inputs[0].as_numpy() * 10)])
            return {"predictions": [[v * 10 for v in row] for row in payload["instances"]]}

    with running_server([Predictor("model")]) as predictor:
        config = PredictorConfig(f"127.0.0.1:{predictor.ports['http']}", predictor_protocol=protocol,
                                 predictor_request_timeout_seconds=10, predictor_request_retries=1)
        transformer = Transformer("model", predictor_config=config)
        transformer.ready = True
        with running_server([transformer]) as front:
            client = http(front)
            if protocol == "v1":
                assert client.post("/v1/models/model:predict", json={"instances": [[1, 2]]}).json() == \
                    {"predictions": [[20, 30]], "transformed": True}
            else:
                out = client.post("/v2/models/model/infer", json={
                    "id": "f1", "inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2]}]}).json()
                assert out["id"] == "f1" and out["outputs"][0]["data"] == [20, 30]
                assert out["parameters"] == {"transformed": True}


def test_transformer_reports_unreachable_predictor(http):
    dead = Model("m", predictor_config=PredictorConfig("127.0.0.1:9", predictor_request_timeout_seconds=5))
    dead.ready = True
    with running_server([dead]) as server:
        reply = http(server).post("/v1/models/m:predict", json={"instances": [1]})
        assert reply.status_code == 502 and "unreachable" in reply.json()["error"]


async def test_call_pipeline_directly():
    model = SKLearnModel.__new__(SKLearnModel)
    Model.__init__(model, "direct")

    class Identity(Model):
        def predict(self, payload):  # one-argument hooks are called with one argument
            return payload

    result, headers = await Identity("i")({"instances": [1]})
    assert result == {"instances": [1]} and headers == {}
    with pytest.raises(NotImplementedError):
        await Model("bare")({"instances": [1]}, verb=InferenceVerb.PREDICT)


def test_predictor_health_check_follows_the_predictor(http):
    class Predictor(Model):
        def load(self):
            self.ready = True

    with running_server([Predictor("m")]) as predictor:
        host = f"127.0.0.1:{predictor.ports['http']}"
        checked = Model("m", predictor_config=PredictorConfig(host, "v2", predictor_health_check=True))
        checked.ready = True
        with running_server([checked]) as front:
            assert http(front).get("/v2/models/m/ready").status_code == 200
    # The predictor is gone now: the transformer must say it is not ready.
    assert asyncio.run(checked.healthy()) is False


def test_built_in_models_skip_the_hook_pipeline_only_while_no_hook_is_overridden():
    from gpuserve.dataplane import _plain_predict
    from gpuserve.ensemble import EnsembleModel
    from gpuserve.model import Model
    from gpuserve.runtimes import OnnxModel
    from gpuserve.runtimes_classic import SKLearnModel
    from gpuserve.triton_python import TritonPythonBackendModel

    class Scaled(OnnxModel):  # a user's subclass with its own preprocess keeps the pipeline
        def preprocess(self, payload, headers=None):
            return payload

    class Custom(Model):
        async def predict(self, payload, headers=None, response_headers=None):
            return payload

    class Narrower(SKLearnModel):  # a user's own predict on a built-in runtime: it may take fewer arguments
        async def predict(self, payload, headers=None):
            return payload

    assert _plain_predict(OnnxModel) and _plain_predict(TritonPythonBackendModel) and _plain_predict(EnsembleModel)
    assert _plain_predict(SKLearnModel)
    assert not _plain_predict(Scaled) and not _plain_predict(Custom) and not _plain_predict(Narrower)
