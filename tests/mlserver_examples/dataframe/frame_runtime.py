from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse


class FrameRuntime(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        frame = self.decode_request(payload)  # a DataFrame: the model's content type is "pd"
        frame["total"] = frame["a"] + frame["b"]
        frame["name"] = [f"{name}!" for name in frame["name"]]
        return self.encode_response(frame)
