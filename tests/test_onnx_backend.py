"""ONNX Runtime backend on the CPU: execution provider choice and fallback (TensorRT -> CUDA -> CPU),
provider options, the fallback reported in model metadata, Triton's TensorRT accelerator mapping, and
the run_on_device contract's clear errors. The CUDA/IOBinding path itself runs in tests/test_gpu.py."""

import importlib.util

import numpy as np
import pytest

from conftest import make_onnx_model, onnx_reference
from gpuserve.backends import device_arrays
from gpuserve.backends.onnx import OnnxBackend, provider_chain, provider_options, wanted_providers
from gpuserve.runtimes import OnnxModel
from gpuserve.settings import ModelSettings
from gpuserve.triton_config import parse_pbtxt, settings_from_config

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def test_wanted_providers_from_settings():
    assert wanted_providers("cpu") == [CPU]
    assert wanted_providers("cuda:0") == [CUDA, CPU]
    assert wanted_providers("cuda:0", "tensorrt") == [TRT, CUDA, CPU]
    assert wanted_providers("cuda:1", "CPU") == [CPU]
    assert wanted_providers("cuda:0", providers=["tensorrt", "cpu", "cuda"]) == [TRT, CUDA, CPU]
    with pytest.raises(ValueError, match="execution_provider must be one of"):
        wanted_providers("cuda:0", "rocm")


def test_provider_chain_falls_back_and_says_why():
    assert provider_chain([TRT, CUDA, CPU], [TRT, CUDA, CPU], "cuda:0") == ([TRT, CUDA, CPU], "")
    chain, why = provider_chain([TRT, CUDA, CPU], [CUDA, CPU], "cuda:0")
    assert chain == [CUDA, CPU] and TRT in why and why.endswith(f"using {CUDA}")
    chain, why = provider_chain([TRT, CUDA, CPU], [CPU], "cuda:0")
    assert chain == [CPU] and why.endswith(f"using {CPU}") and CUDA in why
    chain, why = provider_chain([CUDA, CPU], [CUDA, CPU], "cpu")
    assert chain == [CPU] and "runs on cpu" in why
    assert provider_chain([CPU], [CPU], "cpu") == ([CPU], "")


class _FakeOrt:
    def __init__(self, providers, fails=False):
        self.providers, self.fails, self.preloads = providers, fails, 0

    def get_available_providers(self):
        return self.providers

    def preload_dlls(self):
        self.preloads += 1
        if self.fails:
            raise RuntimeError("Invalid parameter of directory")


def test_cuda_libraries_preloaded_once_where_the_cuda_provider_exists(monkeypatch, caplog):
    from gpuserve.backends import onnx as backend_module

    monkeypatch.setattr(backend_module, "_CUDA_LIBRARIES_TRIED", False)
    cpu_build = _FakeOrt([CPU])
    backend_module.load_cuda_libraries(cpu_build)
    assert cpu_build.preloads == 0  # a CPU build has nothing to preload
    monkeypatch.setattr(backend_module, "_CUDA_LIBRARIES_TRIED", False)
    gpu_build = _FakeOrt([CUDA, CPU])
    backend_module.load_cuda_libraries(gpu_build)
    backend_module.load_cuda_libraries(gpu_build)
    assert gpu_build.preloads == 1
    monkeypatch.setattr(backend_module, "_CUDA_LIBRARIES_TRIED", False)
    failing = _FakeOrt([CUDA, CPU], fails=True)
    backend_module.load_cuda_libraries(failing)  # logged; the session then reports its own fallback
    assert failing.preloads == 1 and "could not preload the CUDA libraries" in caplog.text


def test_a_cpu_model_never_preloads_cuda_libraries(tmp_path, monkeypatch):
    from gpuserve.backends import onnx as backend_module

    monkeypatch.setattr(backend_module, "_CUDA_LIBRARIES_TRIED", False)
    calls = []
    monkeypatch.setattr(backend_module, "load_cuda_libraries", lambda ort: calls.append(ort))
    path = tmp_path / "m.onnx"
    make_onnx_model(path)
    OnnxBackend(str(path), device="cpu")
    assert calls == []
    OnnxBackend(str(path), device="cuda:0")  # asked for CUDA: tried, whatever this build has
    assert len(calls) == 1


def test_provider_options_carry_stream_and_tensorrt_settings(tmp_path):
    cache = tmp_path / "trt-cache"
    options = provider_options(TRT, 1, 0xABC0, trt_fp16=True, trt_engine_cache_path=str(cache),
                               extra={"trt_max_workspace_size": 1 << 30, "trt_dump_subgraphs": False})
    # The TensorRT provider's parser (onnxruntime-gpu 1.31.1) refuses has_user_compute_stream and 0/1
    # booleans: either would fail the provider and drop the session to CUDA defaults without our stream.
    assert options["device_id"] == "1"
    assert "has_user_compute_stream" not in options and options["user_compute_stream"] == str(0xABC0)
    assert options["trt_fp16_enable"] == "True" and options["trt_engine_cache_enable"] == "True"
    assert options["trt_timing_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == str(cache) and cache.is_dir()
    assert options["trt_max_workspace_size"] == str(1 << 30) and options["trt_dump_subgraphs"] == "False"
    assert provider_options(TRT, 0, None)["trt_fp16_enable"] == "False"
    cuda = provider_options(CUDA, 0, None)
    assert cuda == {"device_id": "0"}  # no stream: ORT's own; and no TensorRT keys on CUDA
    cuda = provider_options(CUDA, 2, 0xABC0, extra={"use_tf32": False, "cudnn_conv_algo_search": "HEURISTIC"})
    assert cuda == {"device_id": "2", "has_user_compute_stream": "1", "user_compute_stream": str(0xABC0),
                    "use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"}


def test_backend_without_gpu_falls_back_to_cpu_and_serves(tmp_path):
    weight, bias = make_onnx_model(tmp_path / "model.onnx")
    backend = OnnxBackend(str(tmp_path / "model.onnx"), device="cuda:0", execution_provider="tensorrt")
    assert backend.device == "cpu" and backend.provider == CPU and backend.stream is None
    assert TRT in backend.fallback and backend.fallback.endswith(f"using {CPU}")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(backend.run({"input": x})["output"], onnx_reference(x, weight, bias), rtol=1e-5,
                               atol=1e-6)
    plain = OnnxBackend(str(tmp_path / "model.onnx"))
    assert plain.fallback == "" and plain.device == "cpu"


def test_fallback_is_reported_in_model_metadata(tmp_path):
    make_onnx_model(tmp_path / "model.onnx")
    settings = ModelSettings(name="trt", device="cuda:0",
                             parameters={"uri": str(tmp_path / "model.onnx"),
                                         "extra": {"execution_provider": "tensorrt", "trt_fp16": True}})
    model = OnnxModel("trt", settings)
    try:
        assert model.load()
        meta = model.metadata()["parameters"]
        assert meta["device"] == "cpu" and TRT in meta["fallback"]
    finally:
        model.stop()


def test_run_on_device_on_a_cpu_backend_is_a_clear_error(tmp_path):
    make_onnx_model(tmp_path / "model.onnx")
    backend = OnnxBackend(str(tmp_path / "model.onnx"))
    with pytest.raises(device_arrays.DeviceUnavailable, match="needs a model loaded on CUDA"):
        backend.run_on_device({"input": np.ones((1, 4), np.float32)})


def test_triton_tensorrt_accelerator_maps_to_provider_settings(tmp_path):
    config = parse_pbtxt("""name: "m" platform: "onnxruntime_onnx" max_batch_size: 8
      input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]
      output [ { name: "output" data_type: TYPE_FP32 dims: [ 3 ] } ]
      optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt"
        parameters { key: "precision_mode" value: "FP16" }
        parameters { key: "max_workspace_size_bytes" value: "1073741824" } } ] } }""")
    extra = settings_from_config(tmp_path, config, 1)["parameters"]["extra"]
    assert extra["execution_provider"] == "tensorrt" and extra["trt_fp16"] is True
    assert extra["provider_options"] == {"tensorrt": {"trt_max_workspace_size": "1073741824"}}
    graphs = parse_pbtxt('name: "t" platform: "pytorch_libtorch" optimization { cuda { graphs: true } }')
    assert settings_from_config(tmp_path, graphs, 1)["parameters"]["extra"] == {"cuda_graphs": True}


class _FakeDeviceArray:
    """Only a `__cuda_array_interface__` dict: enough for the pure checks, no device behind it."""

    def __init__(self, shape, typestr="<f4", strides=None, stream=None):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (0xD000, False),
                                         "strides": strides, "version": 3, "stream": stream}


def test_device_array_interface_helpers():
    packed = _FakeDeviceArray((2, 3))
    assert device_arrays.is_device_array(packed) and not device_arrays.is_device_array(np.ones(2))
    assert device_arrays.pointer(packed) == 0xD000
    assert device_arrays.contiguous(packed) is packed
    explicit = _FakeDeviceArray((2, 3), strides=(12, 4))
    assert device_arrays.contiguous(explicit) is explicit
    device_arrays.wait_for_producer(packed)  # no producer stream named: nothing to wait for
    if importlib.util.find_spec("cupy") is not None:
        return  # with CuPy the copy below would be attempted on a fake pointer
    with pytest.raises(device_arrays.DeviceUnavailable, match="CuPy|CUDA"):
        device_arrays.contiguous(_FakeDeviceArray((2, 3), strides=(4, 8)))  # transposed needs a copy


def test_iobinding_path_binds_host_inputs_and_outputs(tmp_path):
    """The CUDA path's binding code, driven on the CPU provider (outputs bound on the host here): inputs
    bound from host arrays, including a non-contiguous one, outputs in the order asked for."""
    weight, bias = make_onnx_model(tmp_path / "model.onnx")
    backend = OnnxBackend(str(tmp_path / "model.onnx"))
    x = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)[:, ::2]  # strided view
    binding = backend._bound_run({"input": x}, ["output"])
    (out,) = binding.copy_outputs_to_cpu()
    np.testing.assert_allclose(out, onnx_reference(x, weight, bias), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, backend.run({"input": x})["output"], rtol=1e-6)


def test_bf16_served_fp8_refused_at_load_and_non_utf8_strings_are_client_errors(tmp_path, http):
    # a BF16 model loaded READY and failed every request (its inputs arrive as float32, NumPy having no
    # bfloat16): they now cross as 16-bit patterns; FP8 is refused at load; an ONNX string tensor fed bytes
    # that are not UTF-8 was a 500
    import onnx
    from onnx import TensorProto, helper

    from conftest import running_server
    from gpuserve import ModelRepository
    from gpuserve.repository import DiskRepository

    def save(name, nodes, kind):
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", kind, [-1])],
                                  [helper.make_tensor_value_info("y", kind, [-1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
        model.ir_version = 9
        (tmp_path / name).mkdir()
        onnx.save(model, str(tmp_path / name / "model.onnx"))

    save("bf16", [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT), helper.make_node("Mul", ["f", "f"], ["s"]),
                  helper.make_node("Cast", ["s"], ["y"], to=TensorProto.BFLOAT16)], TensorProto.BFLOAT16)
    save("fp8", [helper.make_node("Identity", ["x"], ["y"])], TensorProto.FLOAT8E4M3FN)
    save("text", [helper.make_node("Identity", ["x"], ["y"])], TensorProto.STRING)
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        client = http(server)
        index = {m["name"]: m for m in client.post("/v2/repository/index", json={}).json()}
        assert index["fp8"]["state"] == "UNAVAILABLE" and "float8e4m3fn" in index["fp8"]["reason"]
        squared = client.post("/v2/models/bf16/infer", json={"inputs": [
            {"name": "x", "shape": [3], "datatype": "BF16", "data": [1.5, 2.0, -3.25]}]})
        assert squared.status_code == 200, squared.text
        assert squared.json()["outputs"][0] == {"name": "y", "datatype": "BF16", "shape": [3],
                                                "data": [2.25, 4.0, 10.5625]}
        header = b'{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}'
        body = header + (2).to_bytes(4, "little") + b"\xff\xfe"
        reply = client.post("/v2/models/text/infer", content=body,
                            headers={"Inference-Header-Content-Length": str(len(header))})
        assert reply.status_code == 400 and "UTF-8" in reply.json()["error"], reply.text
        ok = client.post("/v2/models/text/infer", json={"inputs": [
            {"name": "x", "shape": [1], "datatype": "BYTES", "data": ["héllo"]}]})
        assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == ["héllo"]
