"""Triton's load parameters through tritonclient: `load_model(name, config=JSON, files={"file:1/...": bytes})`
loads a model from a config given at load time (over the repository's own files) or from files alone, over
HTTP and gRPC; bad parameters are clear 400 / INVALID_ARGUMENT errors and the server keeps serving."""

import base64
import json
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve.model_repository import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.triton_config import parse_pbtxt, to_pbtxt
from test_model_control import CONFIG, model_py, write_model

PY_CONFIG = {"backend": "python", "max_batch_size": 4,
             "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [2]}],
             "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}]}


def onnx_bytes():
    """y = x @ W + 1 for a 3-wide input."""
    weights = np.arange(6, dtype=np.float32).reshape(3, 2)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 2], weights.ravel()),
         helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString(), weights


def client_for(server, protocol):
    if protocol == "http":
        return httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}"), httpclient
    return grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}"), grpcclient


def infer(client, module, name, x, input_name="x", output="y"):
    tensor = module.InferInput(input_name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(name, [tensor]).as_numpy(output)


@pytest.fixture()
def repo(tmp_path):
    root = tmp_path / "repo"
    write_model(root, "on-disk", factor=2)
    return root


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_new_model_from_files_and_config(repo, protocol):
    data, weights = onnx_bytes()
    config = {"platform": "onnxruntime_onnx", "max_batch_size": 8,
              "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}],
              "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}]}
    with running_server(repository=DiskRepository(repo).populate(ModelRepository())) as server:
        client, module = client_for(server, protocol)
        client.load_model("fresh", config=json.dumps(config), files={"file:1/model.onnx": data})
        assert client.is_model_ready("fresh")
        x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
        np.testing.assert_allclose(infer(client, module, "fresh", x), x @ weights + 1, rtol=1e-5)
        got = client.get_model_config("fresh") if protocol == "http" else \
            client.get_model_config("fresh", as_json=True)["config"]
        assert int(got["max_batch_size"]) == 8 and got["platform"] == "onnxruntime_onnx"
        scratch = [m.scratch_folder for _, _, m in server.registered_models.all_versions() if m.name == "fresh"][0]
        assert Path(scratch).is_dir()
        client.unload_model("fresh")
        assert not Path(scratch).exists()  # the scratch folder goes with its model
        assert not client.is_model_ready("fresh")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_config_override_over_the_repository_files(repo, protocol):
    with running_server(repository=DiskRepository(repo).populate(ModelRepository())) as server:
        client, module = client_for(server, protocol)
        x = np.array([[1.0, 2.0]], dtype=np.float32)
        np.testing.assert_array_equal(infer(client, module, "on-disk", x), [[2.0, 4.0]])
        config = dict(PY_CONFIG, max_batch_size=2)
        client.load_model("on-disk", config=json.dumps(config))  # the version folder comes from the repository
        np.testing.assert_array_equal(infer(client, module, "on-disk", x), [[2.0, 4.0]])
        too_many = np.ones((3, 2), dtype=np.float32)
        with pytest.raises(InferenceServerException, match="batch-size must be <= 2"):
            infer(client, module, "on-disk", too_many)
        assert (repo / "on-disk" / "config.pbtxt").read_text() == CONFIG  # the repository is never written
        client.load_model("on-disk")  # without parameters, as Triton: the override stays while the model is loaded
        with pytest.raises(InferenceServerException, match="batch-size must be <= 2"):
            infer(client, module, "on-disk", too_many)
        client.unload_model("on-disk")
        client.load_model("on-disk")  # once unloaded: the repository's own config again
        infer(client, module, "on-disk", too_many)


def test_bad_load_parameters_are_clear_client_errors(repo):
    scratch = lambda: set(Path(tempfile.gettempdir()).glob("gpuserve-load-on-disk-*"))  # noqa: E731
    before = scratch()
    with running_server(repository=DiskRepository(repo).populate(ModelRepository())) as server:
        client, module = client_for(server, "http")
        grpc, _ = client_for(server, "grpc")
        cases = [
            (dict(config="{not json"), "not valid JSON"),
            (dict(config="[1, 2]"), "JSON object"),
            (dict(config=json.dumps(dict(PY_CONFIG, name="other"))), "names the model 'other'"),
            (dict(files={"file:1/model.py": b"x"}), "failed to poll from model repository: files given without"),
            (dict(config=json.dumps(PY_CONFIG), files={"file:../escape.py": b"x"}), "must stay within model directory"),
        ]
        for kwargs, message in cases:
            for target in (client, grpc):
                with pytest.raises(InferenceServerException, match=message) as err:
                    target.load_model("on-disk", **kwargs)
                assert err.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
        url = f"http://127.0.0.1:{server.ports['http']}/v2/repository/models/on-disk/load"
        for body, message in [({"parameters": {"file:1/model.py": "***", "config": "{}"}}, "base64"),
                              ({"parameters": {"colour": "blue"}}, "unknown load parameter"),
                              ({"parameters": [1]}, "JSON object")]:
            response = httpx.post(url, json=body)
            assert response.status_code == 400 and message in response.json()["error"]
        with pytest.raises(InferenceServerException, match="not in the repository"):
            client.load_model("nowhere", config=json.dumps(PY_CONFIG))
        assert scratch() == before  # a refused load leaves no scratch folder behind
        np.testing.assert_array_equal(infer(client, module, "on-disk", np.ones((1, 2), np.float32)), [[2.0, 2.0]])


def test_a_python_model_from_files_gets_the_given_config(repo):
    config = dict(PY_CONFIG, parameters={"greeting": {"string_value": "hi"}})
    source = model_py(5) + "\n\nclass Checked(TritonPythonModel):\n    pass\n"
    with running_server(repository=DiskRepository(repo).populate(ModelRepository())) as server:
        client, module = client_for(server, "http")
        client.load_model("made", config=json.dumps(config), files={"file:1/model.py": source.encode()})
        np.testing.assert_array_equal(infer(client, module, "made", np.ones((1, 2), np.float32)), [[5.0, 5.0]])
        assert client.get_model_config("made")["parameters"]["greeting"]["string_value"] == "hi"


def test_rest_carries_files_in_base64(repo):
    body = {"parameters": {"config": json.dumps(PY_CONFIG),
                           "file:1/model.py": base64.b64encode(model_py(7).encode()).decode()}}
    with running_server(repository=DiskRepository(repo).populate(ModelRepository())) as server:
        port = server.ports["http"]
        assert httpx.post(f"http://127.0.0.1:{port}/v2/repository/models/raw/load", json=body).status_code == 200
        answer = httpx.post(f"http://127.0.0.1:{port}/v2/models/raw/infer", json={
            "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 1]}]}).json()
        assert answer["outputs"][0]["data"] == [7.0, 7.0]


def test_config_json_round_trips_through_protobuf_text():
    config = {"name": "m", "backend": "python", "max_batch_size": 8,
              "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [2]}],
              "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["2"], "label_filename": "l\"é.txt"}],
              "parameters": {"k": {"string_value": "v"}}, "version_policy": {"all": {}},
              "dynamic_batching": {"preferred_batch_size": [2, 4], "max_queue_delay_microseconds": 100},
              "model_warmup": [{"name": "w", "batch_size": 1,
                                "inputs": {"x": {"data_type": "TYPE_FP32", "dims": [2], "zero_data": True}}}],
              "sequence_batching": {"control_input": [{"name": "START", "control": [
                  {"kind": "CONTROL_SEQUENCE_START", "int32_false_true": [0, 1]}]}]},
              "empty": [], "ratio": 0.5}
    assert parse_pbtxt(to_pbtxt(config)) == config
    assert parse_pbtxt(to_pbtxt({"a": {"b": {"c": True}}})) == {"a": {"b": {"c": True}}}
