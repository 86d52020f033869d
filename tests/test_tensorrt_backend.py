"""TensorRT on a machine without TensorRT: every repository form (Triton tensorrt_plan, bare model.plan,
MLServer implementation) is served by the TensorRT runtime and reported not ready with a clear reason,
next to a model that keeps serving. The engine-description and shape logic is checked against
`FakeEngine`, a hand-written stand-in with the few ICudaEngine methods that logic reads; it runs
nothing. The real engine path is checked on a GPU (tests/test_gpu.py's
test_tensorrt_engine_built_here_matches_onnxruntime, run by benchmarks/gpu/verify_all.sh where tensorrt is)."""

import importlib.util
import json
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import make_onnx_model, onnx_reference, running_server
from gpuserve import ModelRepository
from gpuserve.backends.base import TensorSpec
from gpuserve.backends.tensorrt import check_shape, describe, max_batch_size
from gpuserve.errors import InvalidInput
from gpuserve.repository import DiskRepository, runtime_for
from gpuserve.runtimes import TensorRTModel
from gpuserve.settings import ModelSettings

needs_no_tensorrt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                                       reason="checks the path where TensorRT is not installed")


def _enum(name):
    return SimpleNamespace(name=name)


class FakeEngine:
    """Not TensorRT: answers the ICudaEngine calls `describe` makes, from a table."""

    def __init__(self, tensors):
        self.tensors = tensors  # name -> (mode, dtype, shape, profile or None)

    @property
    def num_io_tensors(self):
        return len(self.tensors)

    def get_tensor_name(self, index):
        return list(self.tensors)[index]

    def get_tensor_mode(self, name):
        return _enum(self.tensors[name][0])

    def get_tensor_dtype(self, name):
        return _enum(self.tensors[name][1])

    def get_tensor_shape(self, name):
        return self.tensors[name][2]

    def get_tensor_profile_shape(self, name, profile):
        assert profile == 0
        return self.tensors[name][3]


ENGINE = FakeEngine({
    "images": ("INPUT", "HALF", [-1, 3, -1, -1], [(1, 3, 32, 32), (8, 3, 224, 224), (16, 3, 512, 512)]),
    "mask": ("INPUT", "BOOL", [-1, 4], [(1, 4), (8, 4), (32, 4)]),
    "scores": ("OUTPUT", "FLOAT", [-1, 1000], None),
    "ids": ("OUTPUT", "INT64", [-1, 5], None),
})


def test_describe_reads_specs_and_profiles():
    inputs, outputs, limits = describe(ENGINE)
    assert inputs == [TensorSpec("images", "FP16", [-1, 3, -1, -1]), TensorSpec("mask", "BOOL", [-1, 4])]
    assert outputs == [TensorSpec("scores", "FP32", [-1, 1000]), TensorSpec("ids", "INT64", [-1, 5])]
    assert limits["images"][2] == (16, 3, 512, 512)
    assert max_batch_size(inputs, limits) == 16  # the smallest profile max over the batched inputs


def test_unbatched_or_unsupported_engines():
    fixed = FakeEngine({"x": ("INPUT", "FLOAT", [1, 8], None), "y": ("OUTPUT", "FLOAT", [1, 2], None)})
    inputs, _, limits = describe(fixed)
    assert limits == {} and max_batch_size(inputs, limits) == 0
    with pytest.raises(ValueError, match="FP8"):
        describe(FakeEngine({"x": ("INPUT", "FP8", [-1, 8], [(1, 8), (1, 8), (4, 8)])}))


def test_shapes_outside_the_profile_are_refused_with_the_limit():
    inputs, _, limits = describe(ENGINE)
    images = inputs[0]
    check_shape(images, (16, 3, 224, 320), limits)
    with pytest.raises(InvalidInput, match=r"batch size 17 is outside .* profile \[1, 16\]"):
        check_shape(images, (17, 3, 224, 224), limits)
    with pytest.raises(InvalidInput, match=r"dimension 2 16 is outside"):
        check_shape(images, (2, 3, 16, 64), limits)
    with pytest.raises(InvalidInput, match="takes"):
        check_shape(images, (2, 4, 64, 64), limits)  # a fixed dimension differs
    with pytest.raises(InvalidInput, match="takes"):
        check_shape(images, (2, 3, 64), limits)


def test_every_form_maps_to_the_tensorrt_runtime(tmp_path):
    assert runtime_for(ModelSettings(name="a", implementation="tensorrt_plan")) is TensorRTModel
    assert runtime_for(ModelSettings(name="b", implementation="tensorrt")) is TensorRTModel
    (tmp_path / "model.plan").write_bytes(b"not an engine")
    assert runtime_for(ModelSettings(name="c", parameters={"uri": str(tmp_path / "model.plan")})) is TensorRTModel


@needs_no_tensorrt
def test_without_tensorrt_each_form_is_not_ready_with_the_reason(tmp_path, http):
    triton = tmp_path / "trt_triton"
    (triton / "1").mkdir(parents=True)
    (triton / "1" / "model.plan").write_bytes(b"engine bytes")
    (triton / "config.pbtxt").write_text('name: "trt_triton" backend: "tensorrt" max_batch_size: 8')
    (tmp_path / "trt_bare").mkdir()
    (tmp_path / "trt_bare" / "model.plan").write_bytes(b"engine bytes")
    (tmp_path / "trt_mlserver").mkdir()
    (tmp_path / "trt_mlserver" / "model.plan").write_bytes(b"engine bytes")
    (tmp_path / "trt_mlserver" / "model-settings.json").write_text(json.dumps(
        {"implementation": "tensorrt", "parameters": {"uri": "model.plan"}}))
    (tmp_path / "onnx").mkdir()
    weight, bias = make_onnx_model(tmp_path / "onnx" / "model.onnx")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        for name in ("trt_triton", "trt_bare", "trt_mlserver"):
            reply = client.get(f"/v2/models/{name}/ready")
            assert reply.status_code != 200
            assert "TensorRT is not installed" in reply.json()["error"], (name, reply.text)
        x = np.ones((2, 4), np.float32)
        reply = client.post("/v2/models/onnx/infer", json={
            "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}]})
        assert reply.status_code == 200
        np.testing.assert_allclose(np.array(reply.json()["outputs"][0]["data"]).reshape(2, 3),
                                   onnx_reference(x, weight, bias), rtol=1e-5, atol=1e-6)


class _ProfileLimitedBackend:
    """Not TensorRT: a NumPy stand-in with a profile limit, to check the model caps its batcher."""

    device, fallback, max_batch_size = "cuda:0", "", 8

    def __init__(self):
        self.inputs = [TensorSpec("x", "FP32", [-1, 2])]
        self.outputs = [TensorSpec("y", "FP32", [-1, 2])]

    def run(self, inputs, output_names=None):
        return {"y": inputs["x"] * 2}


def test_the_batcher_is_capped_at_the_profile_max(tmp_path, monkeypatch):
    (tmp_path / "model.plan").write_bytes(b"engine bytes")
    monkeypatch.setattr("gpuserve.runtimes._tensorrt_module", lambda: None)
    monkeypatch.setattr(TensorRTModel, "make_backend", lambda self, path, device, threads: _ProfileLimitedBackend())
    settings = ModelSettings(name="capped", device="cuda:0", max_batch_size=64, warmup_samples=[],
                             dynamic_batching={"preferred_batch_size": [4, 16]},
                             parameters={"uri": str(tmp_path / "model.plan")})
    model = TensorRTModel("capped", settings)
    try:
        assert model.load()
        assert model.scheduler.config.max_batch_size == 8
        assert model.scheduler.config.preferred_batch_sizes == (4,)
    finally:
        model.stop()


class _FakeContext:
    """Not TensorRT: records shapes and addresses and "executes" y = 2x between host arrays by id."""

    def __init__(self, engine, memory):
        self.engine, self.memory, self.shapes, self.addresses, self.runs = engine, memory, {}, {}, 0

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return [self.shapes["x"][0], *self.engine.tensors[name][2][1:]]

    refused = ()  # names whose address TensorRT refuses (its set_tensor_address returns False)

    def set_tensor_address(self, name, address):
        self.addresses[name] = address
        return name not in self.refused

    def execute_async_v3(self, stream_handle):
        assert stream_handle == 7 and _HostBuffers.current == 0
        self.runs += 1
        self.memory[self.addresses["y"]][...] = self.memory[self.addresses["x"]] * 2
        return True


class _HostBuffers:
    """Host arrays standing in for device buffers; an array's id is its "address"."""

    def __init__(self, memory):
        self.memory = memory

    def _keep(self, array):
        self.memory[id(array)] = array
        return array

    copies = 0  # device arrays copied to fresh (aligned) buffers

    def to_device(self, host):
        return self._keep(host.copy())

    def copy_of(self, device_array):
        from gpuserve.backends import device_arrays

        self.copies += 1
        return self._keep(self.memory[device_arrays.pointer(device_array)].copy())

    def empty(self, shape, dtype):
        return self._keep(np.empty(shape, dtype))

    @staticmethod
    def pointer(array):
        return id(array)

    def to_host(self, array):
        return array.copy()

    current = None  # the device a "CUDA call" would land on

    def on_device(self, index):
        import contextlib

        @contextlib.contextmanager
        def device():
            before, _HostBuffers.current = _HostBuffers.current, index
            try:
                yield
            finally:
                _HostBuffers.current = before

        return device()


def test_backend_orchestration_against_a_fake_runtime(tmp_path, monkeypatch):
    """The backend's own steps (deserialize, describe, shapes, addresses, execute, copy back, refuse past
    the profile) run against a fake runtime and host buffers: no TensorRT, no GPU, nothing computed by it."""
    import gpuserve.backends.tensorrt as trt_backend

    memory = {}
    engine = FakeEngine({"x": ("INPUT", "FLOAT", [-1, 3], [(1, 3), (4, 3), (8, 3)]),
                         "y": ("OUTPUT", "FLOAT", [-1, 3], None)})
    context = _FakeContext(engine, memory)
    def create_execution_context():
        assert _HostBuffers.current == 0, "the execution context must be made on the backend's device"
        return context

    def deserialize(data):
        assert _HostBuffers.current == 0, "the engine must be loaded onto the backend's device"
        return engine if data == b"plan" else None

    engine.create_execution_context = create_execution_context
    fake_trt = SimpleNamespace(Logger=lambda level: None, Runtime=lambda log: SimpleNamespace(
        deserialize_cuda_engine=deserialize))
    fake_trt.Logger.WARNING = 2
    monkeypatch.setattr(trt_backend, "_trt", lambda: fake_trt)
    monkeypatch.setattr(trt_backend.device_arrays, "Stream", lambda index: SimpleNamespace(
        handle=7, cupy_stream=None, torch_stream=None, synchronize=lambda: None))
    monkeypatch.setattr(trt_backend.TensorRTBackend, "_make_buffers", lambda self: _HostBuffers(memory))
    (tmp_path / "model.plan").write_bytes(b"plan")
    backend = trt_backend.TensorRTBackend(str(tmp_path / "model.plan"), device="cuda")
    assert backend.device == "cuda:0" and backend.max_batch_size == 8
    x = np.arange(6, dtype=np.float64).reshape(2, 3)  # cast to the engine's FP32 on the way in
    out = backend.run({"x": x})["y"]
    assert out.dtype == np.float32 and context.shapes == {"x": (2, 3)} and context.runs == 1
    np.testing.assert_array_equal(out, x.astype(np.float32) * 2)
    with pytest.raises(InvalidInput, match=r"batch size 9 is outside"):
        backend.run({"x": np.zeros((9, 3), np.float32)})
    assert context.runs == 1

    class DeviceArray:  # known by its __cuda_array_interface__ alone; its "address" is a key into `memory`
        def __init__(self, host, address=None):
            address = id(host) if address is None else address
            memory[address] = host
            self.__cuda_array_interface__ = {"shape": host.shape, "typestr": host.dtype.str, "data": (address, False),
                                             "strides": None, "version": 3}

    buffers = backend._buffers
    np.testing.assert_array_equal(backend.run({"x": DeviceArray(np.ones((3, 3), np.float32), 256 * 4096)})["y"], 2)
    assert context.runs == 2 and buffers.copies == 0 and context.addresses["x"] == 256 * 4096  # bound in place
    # TensorRT wants 256-byte aligned addresses: an offset view (x[1:]) is copied to a fresh buffer first
    np.testing.assert_array_equal(backend.run({"x": DeviceArray(np.full((2, 3), 3, np.float32), 256 * 4096 + 12)})
                                  ["y"], 6)
    assert buffers.copies == 1 and context.addresses["x"] % 256 != 12
    context.refused = ("y",)
    with pytest.raises(RuntimeError, match="refused the device address"):
        backend.run({"x": np.zeros((1, 3), np.float32)})
    context.refused = ()
    context.runs = 2
    with pytest.raises(InvalidInput, match="float64 device array; the TensorRT engine takes float32"):
        backend.run({"x": DeviceArray(np.ones((3, 3)))})  # bound by address, its bytes would be misread
    assert context.runs == 2
    (tmp_path / "bad.plan").write_bytes(b"other")
    with pytest.raises(RuntimeError, match="could not deserialize"):
        trt_backend.TensorRTBackend(str(tmp_path / "bad.plan"), device="cuda:0")
    with pytest.raises(RuntimeError, match="GPU only"):
        trt_backend.TensorRTBackend(str(tmp_path / "model.plan"), device="cpu")


def test_an_instance_groups_profile_selects_the_engines_optimization_profile(tmp_path):
    """Triton's `instance_group { profile: ["1"] }` runs a TensorRT engine on that optimization profile;
    the TensorRT model reads it as `optimization_profile` (the backend sets it on its context)."""
    from gpuserve.triton_config import parse_pbtxt, settings_from_config

    text = ('name: "t" platform: "tensorrt_plan" max_batch_size: 8 '
            'instance_group [ {{ kind: KIND_GPU profile: [ {p} ] }} ]')
    settings = settings_from_config(tmp_path, parse_pbtxt(text.format(p='"1"')), 1)
    assert settings["parameters"]["extra"]["optimization_profile"] == 1
    assert "optimization_profile" not in (settings_from_config(tmp_path, parse_pbtxt(
        'name: "t" platform: "tensorrt_plan"'), 1)["parameters"].get("extra") or {})
    from gpuserve.errors import InvalidSettings

    with pytest.raises(InvalidSettings, match="not a profile index"):
        settings_from_config(tmp_path, parse_pbtxt(text.format(p='"max"')), 1)


class _TwoOutputBackend(_ProfileLimitedBackend):
    """Not TensorRT: an engine whose I/O tensors are x, then outputs z and a (engine order, not name order)."""

    def __init__(self):
        self.inputs = [TensorSpec("x", "FP32", [-1, 2])]
        self.outputs = [TensorSpec("z", "FP32", [-1, 2]), TensorSpec("a", "FP32", [-1, 2])]

    def run(self, inputs, output_names=None):
        results = {"z": inputs["x"] * 2, "a": inputs["x"] * 3}
        return {name: results[name] for name in (output_names or results)}


@pytest.mark.parametrize("triton_form, expected", [(True, ["z", "a"]), (False, ["a", "z"])])
def test_a_triton_repository_engine_answers_in_engine_order(tmp_path, monkeypatch, triton_form, expected):
    """Triton's TensorRT backend walks the engine's I/O tensors (getIOTensorName) and answers the outputs asked
    for in that order; other forms keep the client's order."""
    import asyncio

    from gpuserve.types import InferInput, InferRequest, RequestedOutput

    (tmp_path / "model.plan").write_bytes(b"engine bytes")
    monkeypatch.setattr("gpuserve.runtimes._tensorrt_module", lambda: None)
    monkeypatch.setattr(TensorRTModel, "make_backend", lambda self, path, device, threads: _TwoOutputBackend())
    extra = {"triton_version_policy": {"latest": {"num_versions": 1}}} if triton_form else {}
    settings = ModelSettings(name="two", device="cuda:0", max_batch_size=8, warmup_samples=[],
                             parameters={"uri": str(tmp_path / "model.plan")}, **extra)
    model = TensorRTModel("two", settings)
    try:
        assert model.load()
        x = np.ones((1, 2), np.float32)
        request = InferRequest("two", [InferInput.from_numpy("x", x)],
                               request_outputs=[RequestedOutput("a"), RequestedOutput("z")])
        answer = asyncio.run(model.predict(request))
        assert [o.name for o in answer.outputs] == expected
    finally:
        model.stop()
