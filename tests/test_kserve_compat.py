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
