"""Settings precedence: flags over GPUSERVE_* env over settings.json over defaults; bad files are clear errors."""

import json

import pytest

from gpuserve.errors import InvalidSettings
from gpuserve.settings import ModelSettings, ServerSettings


def test_defaults():
    s = ServerSettings.load(None)
    assert (s.http_port, s.grpc_port, s.metrics_port, s.device) == (8080, 8081, 8082, "auto")


def test_file_then_env_then_overrides(tmp_path, monkeypatch):
    (tmp_path / "settings.json").write_text(json.dumps({"http_port": 9000, "grpc_port": 9001, "device": "cpu",
                                                        "debug": True, "parallel_workers": 2}))
    s = ServerSettings.load(tmp_path)
    assert (s.http_port, s.grpc_port, s.device) == (9000, 9001, "cpu")
    assert s.model_repository_root == str(tmp_path)
    monkeypatch.setenv("GPUSERVE_HTTP_PORT", "9100")
    monkeypatch.setenv("GPUSERVE_DEVICE", "cuda:1")
    s = ServerSettings.load(tmp_path)
    assert (s.http_port, s.grpc_port, s.device) == (9100, 9001, "cuda:1")
    s = ServerSettings.load(tmp_path, http_port=9200, grpc_port=None)
    assert (s.http_port, s.grpc_port) == (9200, 9001)


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read"),
    ("[1, 2]", "JSON object"),
    ('{"http_port": "eighty"}', "http_port"),
    ('{"http_port": 70000}', "65535"),
    ('{"device": "tpu"}', "device"),
])
def test_bad_settings_file(tmp_path, content, message):
    (tmp_path / "settings.json").write_text(content)
    with pytest.raises(InvalidSettings, match=message):
        ServerSettings.load(tmp_path)


def test_bad_env_value(monkeypatch):
    monkeypatch.setenv("GPUSERVE_GRPC_PORT", "not-a-port")
    with pytest.raises(InvalidSettings, match="grpc_port"):
        ServerSettings.load(None)


def test_model_settings_mlserver_fields(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "sum-model", "implementation": "models.SumModel", "max_batch_size": 8, "max_batch_time": 0.01,
        "parallel_workers": 0, "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "parameters": {"uri": "./model.onnx", "version": 2, "content_type": "np", "extra": {"k": "v"}},
        "warm_workers": True}))
    s = ModelSettings.from_file(folder / "model-settings.json")
    assert s.name == "sum-model" and s.implementation == "models.SumModel"
    assert (s.max_batch_size, s.max_batch_time, s.parallel_workers) == (8, 0.01, 0)
    assert s.parameters.version == "2" and s.parameters.content_type == "np" and s.parameters.extra == {"k": "v"}
    assert s.resolve_uri() == folder / "model.onnx"
    assert s.inputs[0].shape == [-1, 3]
    assert s.model_extra == {"warm_workers": True}


def test_model_name_defaults_to_folder(tmp_path):
    (tmp_path / "folder-name").mkdir()
    (tmp_path / "folder-name" / "model-settings.json").write_text("{}")
    assert ModelSettings.from_file(tmp_path / "folder-name" / "model-settings.json").name == "folder-name"


def test_bad_model_settings(tmp_path):
    (tmp_path / "model-settings.json").write_text('{"max_batch_size": "lots"}')
    with pytest.raises(InvalidSettings, match="max_batch_size"):
        ModelSettings.from_file(tmp_path / "model-settings.json")
