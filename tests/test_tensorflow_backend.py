"""TensorFlow models (backends/tensorflow.py, gpuserve/runtimes_tensorflow.py) served from one repository of
every form: Triton SavedModel and GraphDef configs, a config without tensors, no config at all, a bare
TFServing folder, an MLServer model-settings.json, a second signature, and a broken SavedModel. Answers are
checked against TensorFlow's own call of the same function, in process through the engine and over real
HTTP and gRPC. Skipped where tensorflow is not installed (gpuserve[tensorflow])."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402

import tf_models  # noqa: E402
from conftest import running_server  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.errors import ModelLoadError  # noqa: E402
from gpuserve.model_repository import stop_model  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402
from gpuserve.types import InferRequest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DENSE = """platform: "tensorflow_savedmodel"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 200000 }
instance_group [ { count: 2, kind: KIND_CPU } ]
parameters { key: "TF_NUM_INTRA_THREADS" value: { string_value: "2" } }
"""
GRAPHDEF = """platform: "tensorflow_graphdef"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] }, { name: "z" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""
SIGNATURE = """platform: "tensorflow_savedmodel"
max_batch_size: 8
parameters { key: "TF_SIGNATURE_DEF" value: { string_value: "double" } }
"""


def _rows(batch: int, width: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, width)).astype(np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf-repo")
    refs = {}
    (root / "dense" / "1").mkdir(parents=True)
    refs["dense"] = tf_models.dense_savedmodel(root / "dense" / "1" / "model.savedmodel")
    (root / "dense" / "config.pbtxt").write_text(DENSE)
    (root / "tfs" / "1").mkdir(parents=True)  # TFServing's layout, no config
    refs["tfs"] = tf_models.two_io_savedmodel(root / "tfs" / "1")
    (root / "sig" / "1").mkdir(parents=True)
    tf_models.two_io_savedmodel(root / "sig" / "1" / "model.savedmodel")
    (root / "sig" / "config.pbtxt").write_text(SIGNATURE)
    (root / "gd" / "1").mkdir(parents=True)
    refs["gd"] = tf_models.frozen_graphdef(root / "gd" / "1" / "model.graphdef")
    (root / "gd" / "config.pbtxt").write_text(GRAPHDEF)
    (root / "dyn" / "1").mkdir(parents=True)  # backend only: platform and tensors completed from the files
    refs["dyn"] = tf_models.dynamic_savedmodel(root / "dyn" / "1" / "model.savedmodel")
    (root / "dyn" / "config.pbtxt").write_text('backend: "tensorflow"\n')
    (root / "words").mkdir()  # MLServer's form
    refs["words"] = tf_models.strings_savedmodel(root / "words" / "saved")
    (root / "words" / "model-settings.json").write_text(json.dumps(
        {"name": "words", "implementation": "gpuserve.runtimes.TensorFlowModel", "parameters": {"uri": "./saved"}}))
    (root / "broken" / "1" / "model.savedmodel").mkdir(parents=True)
    (root / "broken" / "1" / "model.savedmodel" / "saved_model.pb").write_bytes(b"not a protobuf at all")
    (root / "broken" / "config.pbtxt").write_text('platform: "tensorflow_savedmodel"\n')
    return root, refs


@pytest.fixture(scope="module")
def server(repo):
    root, refs = repo
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as srv:
        srv.refs, srv.registry = refs, registry
        yield srv


@pytest.fixture
def http_client(server):
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        yield client


@pytest.fixture
def grpc_client(server):
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
        yield client


def _input(module, name, array, datatype):
    tensor = module.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


# in process, through the engine ------------------------------------------------------------------------------

def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(repo):
    root, refs = repo
    model = DiskRepository(root).build("dense")[0]
    model.load()
    requests = [_rows(batch, seed=i) for i, batch in enumerate([1, 3, 2, 1, 4, 2, 1, 3])]

    async def run():
        try:
            answers = await asyncio.gather(*(model.predict(InferRequest.from_numpy("dense", {"x": x}))
                                             for x in requests))
            return [a.outputs[0].as_numpy() for a in answers]
        finally:
            await stop_model(model)

    instances = model.scheduler.instances
    assert instances[0].backend.function is instances[1].backend.function  # one loaded model, two instances
    got = asyncio.run(run())
    for x, out in zip(requests, got):
        np.testing.assert_allclose(out, tf_models.outputs_of(refs["dense"].serve, x=x)["probs"], rtol=1e-6,
                                   atol=1e-7)
    assert model.stats.inference_count == sum(len(x) for x in requests)
    assert model.stats.execution_count < len(requests)  # batches formed across requests


def test_missing_tensorflow_is_a_load_error_naming_the_extra(repo, monkeypatch):
    root, _ = repo
    model = DiskRepository(root).build("dense")[0]
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError
    with pytest.raises(ModelLoadError, match=r"tensorflow is not installed.*gpuserve\[tensorflow\]"):
        model.load()
    assert not model.ready


def test_scanning_imports_no_tensorflow_and_the_first_model_sets_its_threads(repo):
    """In a fresh process: finding the TensorFlow models leaves tensorflow unimported; loading one imports it
    and sets TensorFlow's process-wide intra-op threads from its config (TF_NUM_INTRA_THREADS 2), which
    can only happen before TensorFlow's runtime starts (so not in this process, which built the models)."""
    root, _ = repo
    code = ("import sys; from gpuserve.repository import DiskRepository, runtime_for; "
            f"r = DiskRepository({str(root)!r}); found = r.scan(); "
            "print([runtime_for(s[0]).__name__ for n, s in sorted(found.items()) if n in ('dense', 'tfs', 'words')]); "
            "print('tensorflow' in sys.modules); model = r.build('dense')[0]; model.load(); "
            "import tensorflow as tf; print(tf.config.threading.get_intra_op_parallelism_threads()); model.stop()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-5:] == ["['TensorFlowModel',", "'TensorFlowModel',", "'TensorFlowModel']", "False", "2"]


# over HTTP and gRPC -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_savedmodel_answers_as_tensorflow_at_several_batch_sizes(server, http_client, grpc_client, transport):
    client, module = (http_client, httpclient) if transport == "http" else (grpc_client, grpcclient)
    for batch in (1, 5, 8):
        x = _rows(batch, seed=batch)
        out = client.infer("dense", [_input(module, "x", x, "FP32")]).as_numpy("probs")
        np.testing.assert_allclose(out, tf_models.outputs_of(server.refs["dense"].serve, x=x)["probs"], rtol=1e-6,
                                   atol=1e-7)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_two_inputs_two_outputs_from_a_bare_tfserving_folder(server, http_client, grpc_client, transport):
    client, module = (http_client, httpclient) if transport == "http" else (grpc_client, grpcclient)
    a = _rows(3)
    b = np.arange(12, dtype=np.int64).reshape(3, 4)
    result = client.infer("tfs", [_input(module, "a", a, "FP32"), _input(module, "b", b, "INT64")])
    expected = tf_models.outputs_of(server.refs["tfs"].serve, a=a, b=b)
    np.testing.assert_allclose(result.as_numpy("sum"), expected["sum"], rtol=1e-6)
    assert result.as_numpy("prod").dtype == np.int64 and np.array_equal(result.as_numpy("prod"), expected["prod"])
    only = client.infer("tfs", [_input(module, "a", a, "FP32"), _input(module, "b", b, "INT64")],
                        outputs=[module.InferRequestedOutput("prod")])
    assert only.as_numpy("sum") is None and np.array_equal(only.as_numpy("prod"), expected["prod"])


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_strings_in_and_out(server, http_client, grpc_client, transport):
    client, module = (http_client, httpclient) if transport == "http" else (grpc_client, grpcclient)
    text = np.array([b"hello", b"TensorFlow", b"", "caf\u00e9".encode()], dtype=object)
    result = client.infer("words", [_input(module, "text", text, "BYTES")])
    expected = tf_models.outputs_of(server.refs["words"].serve, text=text)
    assert list(result.as_numpy("upper")) == list(expected["upper"])
    assert np.array_equal(result.as_numpy("length"), expected["length"])


def test_graphdef_requested_outputs_only(server, http_client):
    x = _rows(4, seed=3)
    expected = {k: v.numpy() for k, v in server.refs["gd"](x=tf.constant(x)).items()}
    both = http_client.infer("gd", [_input(httpclient, "x", x, "FP32")])
    np.testing.assert_allclose(both.as_numpy("y"), expected["y"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(both.as_numpy("z"), expected["z"], rtol=1e-6)
    only = http_client.infer("gd", [_input(httpclient, "x", x, "FP32")], outputs=[httpclient.InferRequestedOutput("z")])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["z"]
    np.testing.assert_allclose(only.as_numpy("z"), expected["z"], rtol=1e-6)
    backend = server.registry.get_model("gd").backend  # the graph is pruned to the outputs asked for
    assert list(backend.run({"x": x}, ["z"])) == ["z"] and list(backend.run({"x": x}, ["y"])) == ["y"]


def test_dynamic_dims_bf16_and_fp16_outputs(server, grpc_client):
    for width in (3, 6):
        x = _rows(2, width=width, seed=width)
        result = grpc_client.infer("dyn", [_input(grpcclient, "x", x, "FP32")])
        expected = tf_models.outputs_of(server.refs["dyn"].serve, x=x)
        np.testing.assert_allclose(result.as_numpy("row_sum"), expected["row_sum"], rtol=1e-5)
        np.testing.assert_allclose(result.as_numpy("scaled"), expected["scaled"], rtol=1e-6)
        assert result.as_numpy("as_fp16").dtype == np.float16
        np.testing.assert_array_equal(result.as_numpy("as_fp16"), expected["as_fp16"])
        np.testing.assert_array_equal(result.as_numpy("as_bf16"), expected["as_bf16"].astype(np.float32))


def test_named_signature_is_served(server, http_client):
    a = _rows(2)
    out = http_client.infer("sig", [_input(httpclient, "a", a, "FP32")]).as_numpy("twice_a")
    np.testing.assert_allclose(out, a * 2)


def test_config_and_metadata_are_completed_from_the_savedmodel(http_client, grpc_client):
    config = http_client.get_model_config("tfs")
    assert (config["platform"], config["backend"], config["max_batch_size"]) == ("tensorflow_savedmodel",
                                                                                  "tensorflow", 4)
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("a", "TYPE_FP32", [4]),
                                                                                ("b", "TYPE_INT64", [4])]
    assert [(t["name"], t["data_type"]) for t in config["output"]] == [("prod", "TYPE_INT64"), ("sum", "TYPE_FP32")]
    assert "dynamic_batching" in config
    dyn = http_client.get_model_config("dyn")
    assert dyn["platform"] == "tensorflow_savedmodel" and dyn["max_batch_size"] == 4
    assert {t["name"]: t["dims"] for t in dyn["input"]} == {"x": [-1]}
    meta = grpc_client.get_model_metadata("dense", as_json=True)
    assert meta["platform"] == "tensorflow_savedmodel"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [("x", "FP32", ["-1", "4"])]
    assert [(t["name"], t["shape"]) for t in meta["outputs"]] == [("probs", ["-1", "3"])]
    words = http_client.get_model_metadata("words")
    assert words["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]


def test_broken_savedmodel_is_not_ready_with_its_reason_and_others_serve(http_client):
    index = {m["name"]: m for m in http_client.get_model_repository_index()}
    assert index["broken"]["state"] == "UNAVAILABLE"
    assert "tensorflow could not load the SavedModel" in index["broken"]["reason"]
    assert not http_client.is_model_ready("broken") and http_client.is_model_ready("dense")
    assert http_client.is_server_ready()


# KServe V1, as TFServing answers ----------------------------------------------------------------------------

def test_v1_rows_and_columns_as_tfserving(server, http):
    client = http(server)
    x = _rows(3, seed=7)
    reply = client.post("/v1/models/dense:predict", json={"instances": x.tolist()})
    assert reply.status_code == 200, reply.text
    expected = tf_models.outputs_of(server.refs["dense"].serve, x=x)["probs"]
    np.testing.assert_allclose(np.array(reply.json()["predictions"]), expected, rtol=1e-6, atol=1e-7)
    a, b = _rows(2), np.ones((2, 4), dtype=np.int64)
    reply = client.post("/v1/models/tfs:predict", json={
        "signature_name": "serving_default",
        "instances": [{"a": a[i].tolist(), "b": b[i].tolist()} for i in range(2)]})
    assert reply.status_code == 200, reply.text
    rows = reply.json()["predictions"]
    want = tf_models.outputs_of(server.refs["tfs"].serve, a=a, b=b)
    assert [sorted(row) for row in rows] == [["prod", "sum"]] * 2
    np.testing.assert_allclose([row["sum"] for row in rows], want["sum"], rtol=1e-6)
    reply = client.post("/v1/models/tfs:predict", json={"inputs": {"a": a.tolist(), "b": b.tolist()}})
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"]["prod"] == want["prod"].tolist()
    reply = client.post("/v1/models/words:predict", json={"instances": [{"b64": "aGk="}, "there"]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["predictions"] == [{"length": 2, "upper": "HI"}, {"length": 5, "upper": "THERE"}]
    wrong = client.post("/v1/models/tfs:predict", json={"signature_name": "other", "instances": []})
    assert wrong.status_code == 400 and "serving_default" in wrong.text


# unload -------------------------------------------------------------------------------------------------------

def test_unload_frees_tensorflow_model(tmp_path, http):
    from test_backend_lifecycle import _unload_and_check

    class Big(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(2048, 2048)).astype(np.float32))  # 16 MiB

        @tf.function(input_signature=[tf.TensorSpec([None, 2048], tf.float32)])
        def serve(self, x):
            return {"output": x @ self.w}

    big = Big()
    tf.saved_model.save(big, str(tmp_path / "big" / "1"), signatures={"serving_default": big.serve})
    del big
    loaded, unloaded = _unload_and_check(tmp_path, http, "big", lambda b: [b.function, b.loaded])
    assert unloaded < loaded, f"RSS after load {loaded / 2**20:.1f} MiB, after unload {unloaded / 2**20:.1f} MiB"


# GPU ----------------------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_savedmodel_on_gpu_matches_cpu(tmp_path):
    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("this tensorflow sees no GPU (tensorflow-cpu, or no CUDA libraries)")
    from gpuserve.backends.tensorflow import TensorFlowBackend

    tf_models.dense_savedmodel(tmp_path / "m", features=64, hidden=256, out=16)
    gpu = TensorFlowBackend(str(tmp_path / "m"), device="cuda:0")
    cpu = TensorFlowBackend(str(tmp_path / "m"), device="cpu")
    assert gpu.device == "cuda:0" and not gpu.fallback and cpu.device == "cpu"
    results = {}

    def run(name, backend):  # from two threads at once, as the engine's GPU instance does
        results[name] = backend.run({"x": _rows(32, width=64)})["probs"]

    threads = [threading.Thread(target=run, args=(n, b)) for n, b in (("gpu", gpu), ("cpu", cpu))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    np.testing.assert_allclose(results["gpu"], results["cpu"], rtol=1e-4, atol=1e-5)
    gpu.unload()
    cpu.unload()
