"""KServe's client side under the new name: `InferenceRESTClient` (V1 and V2), `InferenceGRPCClient`, the V2
service stub module, and the module paths KServe scripts import (logging, constants, context,
predictor_config)."""

import asyncio

import numpy as np

from conftest import running_server
from gpuserve import InferInput, InferOutput, InferRequest, InferResponse, Model


class Echo(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            return InferResponse(payload.id, self.name, [InferOutput.from_numpy("y", payload.inputs[0].as_numpy() * 2)])
        return {"predictions": [x * 2 for x in payload["instances"]]}

    def explain(self, payload, headers=None):
        return {"explanations": ["because"]}


def request():
    tensor = InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32), binary_data=False)
    return InferRequest("echo", [tensor], request_id="r1")


def test_rest_and_grpc_clients():
    import gpuserve
    from gpuserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig

    async def call(server):
        url = f"http://127.0.0.1:{server.ports['http']}"
        v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
        assert await v1.is_server_live(url) and await v1.is_model_ready(url, "echo")
        assert await v1.infer(url, {"instances": [1, 2]}, model_name="echo") == {"predictions": [2, 4]}
        assert await v1.explain(url, "echo", {"instances": [1]}) == {"explanations": ["because"]}
        await v1.close()
        v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
        assert await v2.is_server_live(url) and await v2.is_server_ready(url) and await v2.is_model_ready(url, "echo")
        assert not await v2.is_model_ready(url, "missing")
        answer = await v2.infer(url, request(), model_name="echo")
        assert answer.id == "r1" and answer.outputs[0].as_numpy().tolist() == [2.0, 4.0]
        binary = request()
        binary.parameters["binary_data_output"] = True  # the answer's tensors follow its JSON header
        answer = await v2.infer(url, binary, model_name="echo")
        assert answer.outputs[0].as_numpy().tolist() == [2.0, 4.0]
        assert "binary_data_size" not in answer.outputs[0].parameters
        await v2.close()
        grpc_client = InferenceGRPCClient(f"127.0.0.1:{server.ports['grpc']}")
        assert await grpc_client.is_server_live() and await grpc_client.is_server_ready()
        assert await grpc_client.is_model_ready("echo")
        answer = await grpc_client.infer(request())
        assert answer.model_name == "echo" and answer.outputs[0].as_numpy().tolist() == [2.0, 4.0]
        await grpc_client.close()

    with running_server([Echo("echo")]) as server:
        asyncio.run(call(server))
    assert gpuserve.RESTConfig is RESTConfig


def test_kserve_module_paths_under_the_new_name():
    from gpuserve import constants, context, logging, predictor_config
    from gpuserve.constants import constants as inner
    from gpuserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    assert inner.KSERVE_LOGLEVEL == constants.KSERVE_LOGLEVEL and inner.PredictorProtocol.REST_V2.value == "v2"
    assert logging.logger.name == "gpuserve" and logging.trace_logger.name == "gpuserve.trace"
    assert callable(logging.configure_logging) and callable(GRPCInferenceServiceStub)
    config = predictor_config.PredictorConfig("host:80", "v2", predictor_request_timeout_seconds=5)
    assert (config.protocol, config.timeout, config.predictor_base_url) == ("v2", 5, "http://host:80")
    context.set_predictor_config(config)
    try:
        assert context.get_predictor_config() is config
    finally:
        context.set_predictor_config(None)
