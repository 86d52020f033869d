"""A model's malformed output (data that does not fit its shape or datatype) is the server's fault:
500 over REST (V1 and V2) and INTERNAL over gRPC, never a 200 with a malformed body nor a 400."""

import numpy as np
import pytest

from conftest import running_server
from gpuserve import InferOutput, InferResponse, Model

V2_BODY = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]}]}


class Malformed(Model):
    def __init__(self, name, output):
        super().__init__(name)
        self.output = output

    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        return InferResponse("r", self.name, [self.output()])


MODELS = {"short": lambda: InferOutput("o", [3], "FP32", [1.0]),
          "notanumber": lambda: InferOutput("o", [1], "FP32", ["notanumber"])}


def test_malformed_outputs_are_server_errors(http):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with running_server([Malformed(name, make) for name, make in MODELS.items()]) as server:
        client = http(server)
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as grpc_client:
            for name in MODELS:
                v2 = client.post(f"/v2/models/{name}/infer", json=V2_BODY)
                assert v2.status_code == 500 and "malformed output" in v2.json()["error"], v2.text
                v1 = client.post(f"/v1/models/{name}:predict", json={"instances": [1]})
                assert v1.status_code == 500 and "malformed output" in v1.json()["error"], v1.text
                tensor = grpcclient.InferInput("a", [1], "FP32")
                tensor.set_data_from_numpy(np.array([1.0], dtype=np.float32))
                with pytest.raises(InferenceServerException) as caught:
                    grpc_client.infer(name, [tensor], client_timeout=20)
                assert caught.value.status() == "StatusCode.INTERNAL" and "malformed" in caught.value.message()
