"""MLServer 1.7.1 custom runtime: one ONNX file (parameters.uri) through onnxruntime. Used by the
model-settings.json files run_mlserver.py writes (implementation "mlserver_runtime.OnnxRuntime");
imported inside .peers/mlserver with benchmarks/peers on PYTHONPATH."""

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

from ort_session import session


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self.settings)
        self.session = session(uri)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        y = self.session.run(None, {self.input_name: x})[0]
        return InferenceResponse(model_name=self.name, id=payload.id,
                                 outputs=[NumpyCodec.encode_output(self.output_name, y)])
