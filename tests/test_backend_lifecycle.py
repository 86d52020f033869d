"""Backend lifecycle: warmup at load (default, model-settings and Triton's model_warmup), a failing
warmup leaves that model not ready with the reason, CPU fallback when a device load runs out of
memory, and unload releases the backends and their memory."""

import gc
import json
import os
import time
import weakref

import numpy as np
import pytest

from conftest import make_onnx_model, onnx_reference, running_server
from gpuserve import ModelRepository
from gpuserve.backends.onnx import OnnxBackend
from gpuserve.repository import DiskRepository
from gpuserve.runtimes import OnnxModel, is_out_of_memory
from gpuserve.settings import ModelSettings
from gpuserve.triton_config import parse_pbtxt, settings_from_config
from gpuserve.warmup import warmup_samples


@pytest.fixture
def runs(monkeypatch):
    """Every OnnxBackend.run call as (input shapes, backend id), in order."""
    calls = []
    real = OnnxBackend.run

    def counting(self, inputs, output_names=None):
        calls.append(({k: tuple(v.shape) for k, v in inputs.items()}, id(self)))
        return real(self, inputs, output_names)

    monkeypatch.setattr(OnnxBackend, "run", counting)
    return calls


def _settings_folder(root, name, **settings):
    folder = root / name
    folder.mkdir()
    make_onnx_model(folder / "model.onnx")
    (folder / "model-settings.json").write_text(json.dumps({"implementation": "onnx",
                                                            "parameters": {"uri": "model.onnx"}, **settings}))
    return folder


def test_default_warmup_is_one_zero_request_per_instance(tmp_path, runs):
    _settings_folder(tmp_path, "m", instance_groups=[{"count": 2, "kind": "cpu"}])
    model = DiskRepository(tmp_path).build("m")[0]
    assert model.load() is True
    assert len(runs) == 2 and {shapes["input"] for shapes, _ in runs} == {(1, 4)}
    assert len({backend for _, backend in runs}) == 2  # each instance warmed once
    model.stop()


def test_warmup_off_and_unknown_shapes_run_nothing(tmp_path, runs):
    _settings_folder(tmp_path, "off", warmup=False)
    model = DiskRepository(tmp_path).build("off")[0]
    assert model.load() is True and runs == []
    model.stop()

    class Spec:
        def __init__(self, shape):
            self.name, self.datatype, self.shape = "x", "FP32", shape

    assert warmup_samples(ModelSettings(name="d"), [Spec([-1, -1])]) == []
    assert warmup_samples(ModelSettings(name="d"), [Spec([])]) == []
    [(name, count, arrays)] = warmup_samples(ModelSettings(name="d"), [Spec([-1, 3])])
    assert count == 1 and arrays["x"].shape == (1, 3) and not arrays["x"].any()


def test_explicit_warmup_samples_run_through_every_instance(tmp_path, runs):
    _settings_folder(tmp_path, "m", instance_groups=[{"count": 2, "kind": "cpu"}], warmup_samples=[
        {"name": "big", "batch_size": 8, "count": 3, "inputs": {"input": {"dims": [4], "random_data": True}}}])
    model = DiskRepository(tmp_path).build("m")[0]
    assert model.load() is True
    assert len(runs) == 6 and all(shapes == {"input": (8, 4)} for shapes, _ in runs)
    model.stop()


def test_a_warmup_sample_of_batch_zero_is_skipped_as_triton_skips_it(tmp_path, runs):
    """Triton's model_warmup leaves batch_size at its proto default 0 when a config omits it, and Triton
    skips such a sample; a wrong sample there must not make a model that Triton serves fail to load."""
    _settings_folder(tmp_path, "m", warmup_samples=[
        {"name": "zero", "batch_size": 0, "inputs": {"input": {"dims": [999], "zero_data": True}}},
        {"name": "one", "batch_size": 1, "inputs": {"input": {"dims": [4], "zero_data": True}}}])
    model = DiskRepository(tmp_path).build("m")[0]
    assert model.load() is True
    assert [shapes for shapes, _ in runs] == [{"input": (1, 4)}]
    model.stop()


TRITON = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [ {{ name: "input", data_type: TYPE_FP32, dims: [ 4 ] }} ]
output [ {{ name: "output", data_type: TYPE_FP32, dims: [ 3 ] }} ]
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
model_warmup [
  {{
    name: "zeros"
    batch_size: 4
    inputs {{ key: "input" value: {{ data_type: TYPE_FP32 dims: [ {dims} ] zero_data: true }} }}
  }},
  {{
    name: "from_file"
    batch_size: 2
    count: 2
    inputs {{ key: "input" value: {{ data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "raw_input" }} }}
  }}
]
"""


def _triton_model(root, name, dims="4"):
    (root / name / "1").mkdir(parents=True)
    (root / name / "warmup").mkdir()
    weight, bias = make_onnx_model(root / name / "1" / "model.onnx")
    (root / name / "warmup" / "raw_input").write_bytes(np.arange(8, dtype=np.float32).tobytes())
    (root / name / "config.pbtxt").write_text(TRITON.format(name=name, dims=dims))
    return weight, bias


def test_triton_model_warmup_is_mapped():
    config = parse_pbtxt(TRITON.format(name="t", dims="4"))
    settings = settings_from_config(__import__("pathlib").Path("/r/t"), config, 1)
    first, second = settings["warmup_samples"]
    assert first == {"name": "zeros", "batch_size": 4, "count": 1,
                     "inputs": {"input": {"data_type": "FP32", "dims": [4], "zero_data": True}}}
    assert second["count"] == 2 and second["inputs"]["input"]["input_data_file"] == "raw_input"


def test_triton_model_warmup_honoured_and_failing_warmup_not_ready(tmp_path, runs, http):
    weight, bias = _triton_model(tmp_path, "good")
    _triton_model(tmp_path, "bad", dims="5")  # the artefact takes 4 features; this warmup sends 5
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        shapes = [s["input"] for s, _ in runs]
        assert shapes.count((4, 4)) == 1 and shapes.count((2, 4)) == 2, shapes  # good's three warmup runs
        assert (4, 5) in shapes  # bad's warmup ran and failed
        client = http(server)
        index = {e["name"]: e for e in client.post("/v2/repository/index", json={}).json()}
        assert index["good"]["state"] == "READY"
        assert index["bad"]["state"] != "READY"
        assert "failed to run warmup sample 'zeros'" in index["bad"]["reason"], index["bad"]
        assert client.get("/v2/models/bad/ready").status_code != 200
        x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
        reply = client.post("/v2/models/good/infer", json={
            "inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": x.ravel().tolist()}]})
        assert reply.status_code == 200, reply.text
        out = np.array(reply.json()["outputs"][0]["data"], dtype=np.float32).reshape(3, 3)
        np.testing.assert_allclose(out, onnx_reference(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_warmup_file_contents_reach_the_backend(tmp_path, runs, monkeypatch):
    _triton_model(tmp_path, "t")
    seen = []
    real = OnnxBackend.run

    def keep(self, inputs, output_names=None):
        seen.append(inputs["input"].copy())
        return real(self, inputs, output_names)

    monkeypatch.setattr(OnnxBackend, "run", keep)
    model = DiskRepository(tmp_path).build("t")[0]
    assert model.load() is True
    # as Triton: the file is one request's data, and a sample of batch_size 2 is two such requests
    np.testing.assert_array_equal(seen[-1], np.tile(np.arange(4, dtype=np.float32), (2, 1)))
    model.stop()


# out of memory on the device ---------------------------------------------------------------------------

def test_is_out_of_memory_markers():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory"))
    assert is_out_of_memory(RuntimeError("CUDA_ERROR_OUT_OF_MEMORY"))
    assert not is_out_of_memory(RuntimeError("file not found"))

    class OutOfMemoryError(RuntimeError):
        pass

    assert is_out_of_memory(OutOfMemoryError("x"))


def _oom_on_device(monkeypatch, message):
    real = OnnxModel.make_backend
    devices = []

    def make_backend(self, path, device, threads):
        devices.append(device)
        if device != "cpu":
            raise RuntimeError(message)
        return real(self, path, device, threads)

    monkeypatch.setattr(OnnxModel, "make_backend", make_backend)
    return devices


def test_device_out_of_memory_falls_back_to_cpu(tmp_path, monkeypatch, http):
    devices = _oom_on_device(monkeypatch, "CUDA_ERROR_OUT_OF_MEMORY: out of memory")
    weight, bias = make_onnx_model(tmp_path / "model.onnx")
    settings = ModelSettings(name="oom", device="cuda:0", instance_groups=[{"count": 2}],
                             parameters={"uri": str(tmp_path / "model.onnx")})
    model = OnnxModel("oom", settings)
    with running_server([model]) as server:
        assert devices == ["cuda:0", "cpu", "cpu"]
        client = http(server)
        meta = client.get("/v2/models/oom").json()
        assert meta["parameters"]["device"] == "cpu"
        assert "out of memory on cuda:0" in meta["parameters"]["fallback"]
        x = np.ones((2, 4), dtype=np.float32)
        reply = client.post("/v2/models/oom/infer", json={
            "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}]})
        assert reply.status_code == 200, reply.text
        out = np.array(reply.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
        np.testing.assert_allclose(out, onnx_reference(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_other_device_errors_do_not_fall_back(tmp_path, monkeypatch):
    devices = _oom_on_device(monkeypatch, "CUDA driver version is insufficient")
    make_onnx_model(tmp_path / "model.onnx")
    model = OnnxModel("x", ModelSettings(name="x", device="cuda:0", parameters={"uri": str(tmp_path / "model.onnx")}))
    with pytest.raises(RuntimeError, match="driver version"):
        model.load()
    assert devices == ["cuda:0"] and not model.ready


# unload frees the model ------------------------------------------------------------------------------------

def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _big_onnx(path, size=2048):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])], "big",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", size])],
        [numpy_helper.from_array(weight, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _unload_and_check(tmp_path, http, name, handle):
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        assert client.get(f"/v2/models/{name}/ready").status_code == 200
        model = registry.get_model(name)
        refs = [weakref.ref(model), weakref.ref(model.backend)] + [weakref.ref(h) for h in handle(model.backend)]
        del model
        gc.collect()
        loaded = _rss_bytes()
        reply = client.post(f"/v2/repository/models/{name}/unload", json={})
        assert reply.status_code == 200, reply.text
        assert client.get(f"/v2/models/{name}/ready").status_code != 200
        # The unload answers once the model is closed; the worker thread that closed it may still hold
        # its call for a moment (under load, long enough to see), so wait for the references to go.
        deadline = time.monotonic() + 10
        while True:
            gc.collect()
            alive = [type(r()).__name__ for r in refs if r() is not None]
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert not alive, f"still referenced after unload: {alive} by " + \
            str([[type(x).__name__ for x in gc.get_referrers(r())] for r in refs if r() is not None])
        return loaded, _rss_bytes()


def test_unload_frees_onnx_model(tmp_path, http):
    (tmp_path / "big").mkdir()
    _big_onnx(tmp_path / "big" / "model.onnx")  # 16 MiB of weights
    loaded, unloaded = _unload_and_check(tmp_path, http, "big", lambda b: [b.session])
    assert unloaded < loaded, f"RSS after load {loaded / 2**20:.1f} MiB, after unload {unloaded / 2**20:.1f} MiB"


@pytest.mark.parametrize("form", ["model.pt", "model.pt2"])  # .pt2: cycles frozen by the server's gc.freeze
def test_unload_frees_torch_model(tmp_path, http, form):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU()).eval()
    (tmp_path / "tm").mkdir()
    if form == "model.pt":
        torch.jit.script(net).save(str(tmp_path / "tm" / form))
        (tmp_path / "tm" / "model-settings.json").write_text(json.dumps({
            "implementation": "torch", "parameters": {"uri": form},
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 256]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 256]}]}))
    else:
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.export.export(net, (torch.zeros(2, 256),), dynamic_shapes={"input": {0: batch}})
        torch.export.save(program, str(tmp_path / "tm" / form))
    _unload_and_check(tmp_path, http, "tm", lambda b: [b.module] if b.module is not None else [])
