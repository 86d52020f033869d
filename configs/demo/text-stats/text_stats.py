"""A custom Python model in KServe's style: counts words and characters of each text it is sent."""

import numpy as np

from gpuserve import InferOutput, InferRequest, InferResponse, Model


class TextStats(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            texts = [t.decode() if isinstance(t, bytes) else str(t) for t in payload.inputs[0].as_numpy().ravel()]
            counts = np.array([[len(t.split()), len(t)] for t in texts], dtype=np.int64).reshape(-1, 2)
            return InferResponse(payload.id, self.name, [InferOutput.from_numpy("counts", counts)])
        texts = payload["instances"]
        return {"predictions": [{"words": len(t.split()), "chars": len(t)} for t in texts]}

    def get_input_types(self):
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self):
        return [{"name": "counts", "datatype": "INT64", "shape": [-1, 2]}]
