"""A custom Python model in KServe's style: counts words and characters of each text it is sent."""

import numpy as np

from gpuserve import InferOutput, InferRequest, InferResponse, InvalidInput, Model


class TextStats(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            texts = [t.decode() if isinstance(t, bytes) else str(t) for t in payload.inputs[0].as_numpy().ravel()]
            counts = np.array([[len(t.split()), len(t)] for t in texts], dtype=np.int64).reshape(-1, 2)
            return InferResponse(payload.id, self.name, [InferOutput.from_numpy("counts", counts)])
        texts = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidInput('expected {"instances": [text, ...]}')  # a 400, as KServe's InvalidInput
        return {"predictions": [{"words": len(t.split()), "chars": len(t)} for t in texts]}

    def get_input_types(self):
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self):
        return [{"name": "counts", "datatype": "INT64", "shape": [-1, 2]}]
