import numpy as np

from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec, register_input_codec
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput, RequestOutput


@register_input_codec
class TenthsCodec(NumpyCodec):
    """A custom content type in the manner of the docs' PillowCodec: NumPy data, scaled."""

    ContentType = "tenths"

    @classmethod
    def decode_input(cls, request_input: RequestInput) -> np.ndarray:
        return super().decode_input(request_input) / 10.0


class WeightedSum(MLModel):
    async def load(self) -> bool:
        self._weights = np.asarray(self.settings.parameters.extra["weights"], dtype=np.float64)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = []
        for request_input in payload.inputs:
            decoded = self.decode(request_input, default_codec=NumpyCodec)
            if request_input.name == "labels":  # str by the model's metadata
                outputs.append(StringCodec.encode_output("labels", [label.upper() for label in decoded]))
            else:
                scores = np.asarray(decoded, dtype=np.float64) @ self._weights
                outputs.append(self.encode(scores, RequestOutput(name="scores"), default_codec=NumpyCodec))
        return InferenceResponse(id=payload.id, model_name=self.name, model_version=self.version, outputs=outputs)
