"""A sticky CUDA error (gpuserve/device_health.py) ends the model's and the server's service: the request
that met it fails with the error, the model is no longer ready (the reason says why and to restart), and
the server is not live over REST (503, as liveness probes need) and gRPC. Other errors change nothing.
The GPU is stood in for by a CPU ONNX model whose backend says it runs on cuda:0 and raises CUDA's text."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import make_onnx_model, running_server
from gpuserve import device_health
from gpuserve.model_repository import ModelRepository
from gpuserve.repository import DiskRepository

TORCH_TEXT = ("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be asynchronously "
              "reported at some other API call, so the stacktrace below might be incorrect.")
ORT_TEXT = ("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal memory access was encountered ; "
            "GPU=0 ; hostname=h ; file=cuda_call.cc ; line=129 ; expr=cudaStreamSynchronize(stream);")


@pytest.fixture(autouse=True)
def forget_reports():
    device_health.clear()
    yield
    device_health.clear()


def test_sticky_cuda_errors_are_told_from_others():
    assert device_health.fatal_reason(RuntimeError(TORCH_TEXT)) == \
        "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert "CUDA failure 700" in device_health.fatal_reason(RuntimeError(ORT_TEXT))
    for text in ("CUDA error: device-side assert triggered", "CUDA error: unspecified launch failure",
                 "CUDA_ERROR_ILLEGAL_ADDRESS", "cudaErrorIllegalAddress: an illegal memory access"):
        assert device_health.fatal_reason(RuntimeError(text)), text
    try:
        try:
            raise RuntimeError(TORCH_TEXT)
        except RuntimeError as inner:
            raise ValueError("batch failed") from inner
    except ValueError as outer:
        assert device_health.fatal_reason(outer).startswith("RuntimeError: CUDA error")
    for text in ("CUDA out of memory. Tried to allocate 2.00 GiB", "input has shape [1, 5]", ""):
        assert device_health.fatal_reason(RuntimeError(text)) is None


@pytest.mark.parametrize("text,fatal", [(TORCH_TEXT, True), (ORT_TEXT, True), ("shape mismatch", False)])
def test_a_sticky_error_makes_the_model_unready_and_the_server_not_live(tmp_path, http, text, fatal):
    (tmp_path / "mlp").mkdir()
    make_onnx_model(tmp_path / "mlp" / "model.onnx")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        model = registry.get_model("mlp")
        backend = model.scheduler.instances[0].backend
        backend.device = "cuda:0"  # as if it ran there

        def broken(inputs, output_names=None):
            raise RuntimeError(text)

        backend.run = broken
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        first = client.post("/v2/models/mlp/infer", json=body)
        assert first.status_code == 500 and text.splitlines()[0][:40] in first.json()["error"]
        second = client.post("/v2/models/mlp/infer", json=body)
        live = client.get("/v2/health/live")
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        triton_http = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        try:
            if fatal:
                assert second.status_code == 503 and "unrecoverable" in second.json()["error"]
                assert "restart" in second.json()["error"]
                assert live.status_code == 503 and "cuda:0" in live.json()["error"]
                assert client.get("/v2/health/ready").status_code == 503  # out of rotation until restarted
                assert not client.get("/v2/models/mlp/ready").is_success
                assert not grpc.is_server_live() and not triton_http.is_server_live()
                assert not grpc.is_server_ready() and not triton_http.is_server_ready()
                assert list(device_health.lost()) == ["cuda:0"]
                assert 'gpuserve_device_lost{device="cuda:0"} 1' in client.get("/metrics").text
            else:
                assert second.status_code == 500  # an ordinary failure: the next request is tried again
                assert live.status_code == 200 and live.json() == {"live": True}
                assert client.get("/v2/health/ready").status_code == 200
                assert grpc.is_server_live() and triton_http.is_server_live() and model.ready
                assert device_health.lost() == {} and "gpuserve_device_lost" not in client.get("/metrics").text
        finally:
            grpc.close()
            triton_http.close()


def test_cpu_models_never_report_the_device_lost(tmp_path):
    (tmp_path / "mlp").mkdir()
    make_onnx_model(tmp_path / "mlp" / "model.onnx")
    model = DiskRepository(tmp_path).build("mlp")[0]
    assert model.load() is True
    model._check_device(RuntimeError(TORCH_TEXT))  # text alone: a CPU model's error is not CUDA's
    assert model.ready and device_health.lost() == {}
    x = np.ones((1, 4), np.float32)
    assert model.backend.run({"input": x})
    model.stop()
