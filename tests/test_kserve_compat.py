"""KServe's module paths and helpers that user code imports, with only `kserve` changed to `gpuserve`:
kserve.protocol.infer_type, kserve.protocol.grpc.grpc_predict_v2_pb2, kserve.model_server.parser,
kserve.ray.RayModel; and KServe's default validation of V1 `instances`."""

import argparse

from conftest import running_server
from gpuserve import Model


class Doubler(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        return {"predictions": [2 * x for x in payload["instances"]]}


def test_kserve_module_paths_import():
    from gpuserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest, ModelInferResponse
    from gpuserve.protocol.infer_type import InferInput, InferRequest, InferResponse

    request = InferRequest("m", [InferInput("x", [1], "FP32", [1.0])])
    assert request.model_name == "m" and InferResponse and ModelInferResponse
    assert ModelInferRequest(model_name="m").model_name == "m"


def test_model_server_parser_is_a_parent_parser():
    from gpuserve import model_server

    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--my_option", default="x")
    args = parser.parse_args(["--http_port", "9000", "--my_option", "y", "--enable_grpc", "false"])
    assert args.http_port == 9000 and args.my_option == "y" and args.enable_grpc is False
    assert model_server.ModelServer.__name__ == "ModelServer"


def test_v1_instances_must_be_a_list(http):
    with running_server([Doubler("doubler")]) as server:
        client = http(server)
        bad = client.post("/v1/models/doubler:predict", json={"instances": "notalist"})
        assert bad.status_code == 400 and "list" in bad.json()["error"]
        assert client.post("/v1/models/doubler:predict", json={"instances": [1, 2]}).json() == {"predictions": [2, 4]}


class _Remote:
    """What a Ray Serve deployment handle offers RayModel: `.remote(...)` (and `.explain.remote`) awaitables."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def remote(self, *args, **kwargs):
        self.calls.append(kwargs)

        async def run():
            return self.fn(*args, **kwargs)

        return run()


def test_ray_model_forwards_to_its_deployment_handle(http):
    from gpuserve.ray import RayModel

    with_headers = _Remote(lambda body, headers=None: {"predictions": [x + 1 for x in body["instances"]]})
    with_headers.explain = _Remote(lambda body, headers=None: {"explanations": ["why"]})
    body_only = _Remote(lambda body: {"predictions": [x * 3 for x in body["instances"]]})  # the docs' __call__
    with running_server([RayModel("ray-model", with_headers), RayModel("ray-plain", body_only)]) as server:
        client = http(server)
        assert client.post("/v1/models/ray-model:predict", json={"instances": [1, 2]}).json() == {"predictions": [2, 3]}
        assert client.post("/v1/models/ray-model:explain", json={"instances": [1]}).json() == {"explanations": ["why"]}
        assert client.post("/v1/models/ray-plain:predict", json={"instances": [1, 2]}).json() == {"predictions": [3, 6]}
        assert client.get("/v2/models/ray-model/ready").status_code == 200
    assert "headers" in with_headers.calls[0]


def test_root_is_kserves_v1_liveness(http):
    with running_server([Doubler("doubler")]) as server:
        reply = http(server).get("/")
        assert reply.status_code == 200 and reply.json() == {"status": "alive"}


class V2Answer(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        from gpuserve import InferOutput, InferResponse

        return InferResponse("r1", self.name, [InferOutput("o", [2], "FP32", [1.0, 2.0])])


def test_v1_predict_sends_a_user_models_infer_response_as_v2(http):
    with running_server([V2Answer("v2-answer")]) as server:
        reply = http(server).post("/v1/models/v2-answer:predict", json={"instances": [1]})
        assert reply.status_code == 200
        assert reply.json() == {"id": "r1", "model_name": "v2-answer", "model_version": None,
                                "outputs": [{"name": "o", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}


class Unhealthy(Doubler):
    async def healthy(self):
        return False


def test_predict_and_infer_answer_503_while_healthy_says_false(http):
    v2_body = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    with running_server([Unhealthy("sick")]) as server:
        client = http(server)
        for reply in (client.post("/v1/models/sick:predict", json={"instances": [1]}),
                      client.post("/v2/models/sick/infer", json=v2_body), client.get("/v1/models/sick")):
            assert reply.status_code == 503 and "not ready" in reply.json()["error"], reply.text


def test_one_model_registered_under_more_names():
    """KServe 0.16: `ModelServer.register_model(model, name)` / `ModelRepository.update(model, name)` serve
    one model under another name too."""
    import asyncio

    import numpy as np

    from gpuserve import InferInput, InferOutput, InferRequest, InferResponse, Model, ModelRepository, ModelServer
    from gpuserve.dataplane import DataPlane

    class Twice(Model):
        def load(self):
            self.ready = True
            return True

        def predict(self, payload, headers=None):
            x = payload.inputs[0].as_numpy()
            return InferResponse(payload.id, self.name, [InferOutput.from_numpy("y", x * 2)])

    model = Twice("twice")
    model.load()
    server = ModelServer()
    server.register_model(model)
    server.register_model(model, "double")
    repository = server.registered_models
    assert repository.get_model("double") is model and repository.get_model("twice") is model
    alone = ModelRepository()
    alone.update(model, "other")
    assert alone.get_model("other") is model and alone.get_model("twice") is None
    request = InferRequest("double", [InferInput.from_numpy("x", np.array([1.0, 2.0], np.float32))])
    response, _ = asyncio.run(DataPlane(repository).infer(request))
    assert response.outputs[0].as_numpy().tolist() == [2.0, 4.0]


class Halver(Model):
    """A KServe-style model written around kserve.utils.utils' two helpers, as KServe's examples are."""

    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        from gpuserve.utils.utils import get_predict_input, get_predict_response

        return get_predict_response(payload, get_predict_input(payload) / 2, self.name)


def test_utils_helpers_answer_v1_and_v2_in_the_protocol_asked(http):
    with running_server([Halver("half"), Doubler("double")]) as server:
        client = http(server)
        v1 = client.post("/v1/models/half:predict", json={"instances": [[2, 4]]})
        assert v1.json() == {"predictions": [[1.0, 2.0]]}
        body = {"id": "r1", "inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [3, 5]}]}
        v2 = client.post("/v2/models/half/infer", json=body).json()
        assert v2["id"] == "r1" and v2["outputs"][0]["name"] == "output-0"
        assert v2["outputs"][0]["datatype"] == "FP64" and v2["outputs"][0]["data"] == [1.5, 2.5]
        # Both lists keep the order the models were registered in, and KServe's /v2/models gives it too.
        assert client.get("/v1/models").json() == {"models": ["half", "double"]}
        assert client.get("/v2/models").json() == {"models": ["half", "double"]}


def test_utils_helpers_without_a_server():
    import numpy as np

    from gpuserve import InferInput, InferRequest
    from gpuserve.utils.numpy_codec import from_np_dtype, to_np_dtype
    from gpuserve.utils.utils import generate_uuid, get_predict_input, get_predict_response, strtobool

    records = get_predict_input({"instances": [[{"a": 1, "b": 2}, {"a": 3, "b": 4}]]})
    assert list(records.columns) == ["a", "b"] and records["b"].tolist() == [2, 4]
    assert get_predict_input({"instances": ["x", "y"]}) == ["x", "y"]
    request = InferRequest("m", [InferInput("s", [2], "BYTES", ["p", "q"])], request_id="7")
    assert get_predict_input(request) == ["p", "q"]
    answer = get_predict_response(request, ["P", "Q"], "m")
    assert answer.id == "7" and answer.outputs[0].datatype == "BYTES" and answer.outputs[0].shape == [2]
    assert to_np_dtype("BYTES") is np.object_ and to_np_dtype("NOPE") is None
    assert from_np_dtype(np.dtype("float16")) == "FP16" and from_np_dtype(np.dtype("datetime64[s]")) == "BYTES"
    assert strtobool("Yes") is True and strtobool("off") is False and len(generate_uuid()) == 36


def test_default_validate_checks_v2_inputs_when_forwarding_v2():
    import pytest

    from gpuserve import PredictorConfig
    from gpuserve.errors import InvalidInput
    from gpuserve.model import PredictorProtocol

    plain = Doubler("plain")
    assert plain.validate({"inputs": "anything"}) == {"inputs": "anything"}  # V1: "inputs" is not checked
    forwarding = Model("t", predictor_config=PredictorConfig("predictor:80", PredictorProtocol.REST_V2.value))
    with pytest.raises(InvalidInput, match="inputs"):
        forwarding.validate({"inputs": "not a list"})
    assert forwarding.validate({"inputs": []}) == {"inputs": []}


def test_repository_is_model_ready_is_awaited_and_asks_healthy():
    import asyncio

    from gpuserve import ModelRepository

    class Moody(Doubler):
        mood = True

        async def healthy(self):
            return self.ready and self.mood

    repository = ModelRepository()
    model = Moody("moody")
    repository.update(model)
    assert asyncio.run(repository.is_model_ready("absent")) is False
    assert asyncio.run(repository.is_model_ready("moody")) is False
    model.load()
    assert asyncio.run(repository.is_model_ready("moody")) is True
    model.mood = False
    assert asyncio.run(repository.is_model_ready("moody")) is False


def test_repository_subclass_load_and_unload_drive_the_repository_endpoints(http):
    from gpuserve import ModelRepository

    class OnDemand(ModelRepository):
        """Builds a model the first time the repository endpoint asks for it, as KServe subclasses do."""

        def __init__(self, works):
            super().__init__()
            self.works = works

        async def load(self, name):
            if self.works == "raise":
                raise RuntimeError("storage unreachable")
            if not self.works:
                return False
            model = Doubler(name)
            model.load()
            self.update(model)
            return True

    with running_server(repository=OnDemand(True)) as server:
        client = http(server)
        assert client.post("/v2/repository/models/fresh/load").status_code == 200
        assert client.post("/v1/models/fresh:predict", json={"instances": [1]}).json() == {"predictions": [2]}
        assert client.post("/v2/repository/models/fresh/unload").status_code == 200
        assert client.get("/v1/models/fresh").status_code == 404
        assert client.post("/v2/repository/models/never/unload").status_code == 404
    for failing in (False, "raise"):
        with running_server(repository=OnDemand(failing)) as server:
            assert http(server).post("/v2/repository/models/fresh/load").status_code == 503



def test_infer_response_from_rest_takes_the_response_keyword():
    from gpuserve import InferResponse

    body = {"id": "1", "model_name": "m", "outputs": [{"name": "y", "shape": [1], "datatype": "INT32", "data": [4]}]}
    parsed = InferResponse.from_rest(response=body)
    assert parsed.model_name == "m" and parsed.outputs[0].as_numpy().tolist() == [4]
