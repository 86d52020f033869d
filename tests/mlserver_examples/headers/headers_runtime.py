from gpuserve.mlserver import MLModel
from gpuserve.mlserver.codecs import StringCodec
from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, Parameters


class CustomHeadersRuntime(MLModel):
    def predict(self, payload: InferenceRequest) -> InferenceResponse:  # a sync predict runs in a thread
        headers = payload.parameters.headers
        tag = headers.get("x-request-tag", "<none>")
        return InferenceResponse(
            model_name=self.name,
            outputs=[StringCodec.encode_output("tag", [tag])],
            parameters=Parameters(headers={"foo": "bar", "x-echo-tag": tag}),
        )
