"""KServe's transformer pattern over gRPC: a front server's Model forwards with protocol "grpc-v2" to a
predictor server's gRPC port (gpuserve.remote_grpc), and the predictor's errors keep their status."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import InferInput, InferOutput, InferRequest, InferResponse, Model, PredictorConfig
from gpuserve.errors import InvalidInput, RemotePredictorError

TIMEOUT = 30


class Predictor(Model):
    """y = 10 x for any numeric input, plus the BYTES input upper-cased; echoes request parameters."""

    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        x = payload.get_input_by_name("x")
        if x is None:
            raise InvalidInput("input 'x' is required")
        outputs = [InferOutput.from_numpy("y", x.as_numpy() * 10)]
        words = payload.get_input_by_name("words")
        if words is not None:
            upper = np.array([w.upper() for w in words.as_numpy().ravel()], dtype=object).reshape(words.shape)
            outputs.append(InferOutput("WORDS", list(upper.shape), "BYTES", upper))
        return InferResponse(payload.id, self.name, outputs, parameters={**payload.parameters, "by": "predictor"})


class Transformer(Model):
    """Adds 1 before the predictor, flags the response after it; predict() is the default forwarder."""

    def preprocess(self, payload, headers=None):
        inputs = []
        for tensor in payload.inputs:
            array = tensor.as_numpy()
            if tensor.name == "x":
                array = array + 1
            inputs.append(InferInput(tensor.name, list(array.shape), tensor.datatype, array))
        return InferRequest(self.name, inputs, request_id=payload.id, parameters=payload.parameters,
                            request_outputs=payload.request_outputs)

    def postprocess(self, result, headers=None):
        result.parameters["transformed"] = True
        return result


@pytest.fixture(scope="module")
def predictor():
    with running_server([Predictor("model")]) as server:
        yield server


def transformer_for(port, timeout=TIMEOUT):
    config = PredictorConfig(f"127.0.0.1:{port}", predictor_protocol="grpc-v2",
                             predictor_request_timeout_seconds=timeout)
    model = Transformer("model", predictor_config=config)
    model.ready = True
    return model


def test_transformer_forwards_over_grpc(predictor, serve):
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    words = np.array([b"ab", b"\xc3\xa9t\xc3\xa9"], dtype=object)
    transformer = transformer_for(predictor.ports["grpc"])
    direct = Predictor("model").predict(InferRequest.from_numpy("model", {"x": x + 1, "words": words}))
    with serve([transformer]) as front:
        with triton.InferenceServerClient(f"127.0.0.1:{front.ports['grpc']}") as client:
            tensors = [triton.InferInput("x", [2, 3], "INT32"), triton.InferInput("words", [2], "BYTES")]
            tensors[0].set_data_from_numpy(x)
            tensors[1].set_data_from_numpy(words)
            for _ in range(2):  # the second call reuses the cached channel
                result = client.infer("model", tensors, request_id="t-1", parameters={"k": 3},
                                      client_timeout=TIMEOUT)
                np.testing.assert_array_equal(result.as_numpy("y"), direct.outputs[0].as_numpy())
                assert result.as_numpy("y").dtype == np.int32
                assert list(result.as_numpy("WORDS")) == list(direct.outputs[1].as_numpy())
                response = result.get_response()
                assert response.id == "t-1"
                params = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.parameters.items()}
                assert params == {"k": 3, "by": "predictor", "transformed": True}
            only = client.infer("model", tensors, outputs=[triton.InferRequestedOutput("WORDS")])
            assert [o.name for o in only.get_response().outputs] == ["WORDS"]


def test_predictor_errors_keep_their_status(predictor, serve):
    with serve([transformer_for(predictor.ports["grpc"])]) as front:
        with triton.InferenceServerClient(f"127.0.0.1:{front.ports['grpc']}") as client:
            tensor = triton.InferInput("z", [1], "FP32")  # the predictor wants 'x'
            tensor.set_data_from_numpy(np.ones(1, dtype=np.float32))
            with pytest.raises(InferenceServerException) as excinfo:
                client.infer("model", [tensor], client_timeout=TIMEOUT)
            assert excinfo.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert "input 'x' is required" in excinfo.value.message()


async def test_grpc_infer_directly(predictor):
    from gpuserve.remote_grpc import close_channels, grpc_infer

    model = transformer_for(predictor.ports["grpc"])
    x = np.linspace(-1, 1, 8, dtype=np.float64).reshape(2, 4)
    response = await grpc_infer(model, InferRequest.from_numpy("model", {"x": x}, request_id="d1"), {})
    assert response.id == "d1" and response.model_name == "model"
    np.testing.assert_array_equal(response.get_output_by_name("y").as_numpy(), x * 10)

    # the payload names the predictor's model: a transformer of another name forwards to that one (KServe)
    renamed = transformer_for(predictor.ports["grpc"])
    renamed.name = "front-door"
    response = await grpc_infer(renamed, InferRequest.from_numpy("model", {"x": x}), {})
    assert response.model_name == "model"

    bad = InferRequest.from_numpy("model", {"q": x})
    with pytest.raises(RemotePredictorError) as excinfo:
        await grpc_infer(model, bad, {})
    assert excinfo.value.http == 400 and excinfo.value.grpc == "INVALID_ARGUMENT"
    await close_channels()


async def test_grpc_model_ready(predictor):
    from gpuserve.remote_grpc import close_channels, grpc_model_ready

    assert await grpc_model_ready(transformer_for(predictor.ports["grpc"])) is True
    other = transformer_for(predictor.ports["grpc"])
    other.name = "absent"
    assert await grpc_model_ready(other) is False
    assert await grpc_model_ready(transformer_for(9, timeout=5)) is False
    await close_channels()


async def test_unreachable_predictor_is_an_error():
    from gpuserve.remote_grpc import close_channels, grpc_infer

    model = transformer_for(9, timeout=5)  # nothing listens on the discard port
    with pytest.raises(RemotePredictorError) as excinfo:
        await grpc_infer(model, InferRequest.from_numpy("model", {"x": np.ones(2)}), {})
    assert excinfo.value.grpc == "UNAVAILABLE" and excinfo.value.http == 503
    assert "127.0.0.1:9" in str(excinfo.value)
    await close_channels()


def test_import_gpuserve_loads_no_grpc():
    import subprocess
    import sys

    code = ("import sys, gpuserve, gpuserve.remote, gpuserve.remote_grpc; "
            "assert not [m for m in sys.modules if m == 'grpc' or m.startswith('google.protobuf')], 'loaded'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
