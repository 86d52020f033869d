"""KServe ModelServer with a kserve.Model subclass calling onnxruntime, one per ONNX file. Runs in
.peers/kserve:

    .peers/kserve/bin/python benchmarks/peers/kserve_server.py --model small=PATH --model mlp=PATH \
        --http_port 8080 --grpc_port 8081

V1 ({"instances": [...]}) and V2 (InferRequest) both answered by predict(). Latency logging and the
uvicorn access log are off, as in gpuserve's defaults.
"""

import argparse
import logging
import os
import sys
import uuid

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ort_session import session  # noqa: E402

import kserve  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.session = session(self.path)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            x = payload.inputs[0].as_numpy()
            y = self.session.run(None, {self.input_name: x})[0]
            out = InferOutput(name=self.output_name, shape=list(y.shape), datatype="FP32")
            out.set_data_from_numpy(y, binary_data=False)
            return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or str(uuid.uuid4()))
        x = np.asarray(payload["instances"], dtype=np.float32)
        y = self.session.run(None, {self.input_name: x})[0]
        return {"predictions": y.tolist()}


def main():
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser], conflict_handler="resolve")
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH.onnx")
    args, _ = parser.parse_known_args()
    models = [OnnxModel(*item.split("=", 1)) for item in args.model]
    server = kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, enable_latency_logging=False)
    logging.getLogger("uvicorn.access").disabled = True
    server.start(models)


if __name__ == "__main__":
    main()
