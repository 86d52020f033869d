"""MLSERVER_MODEL_* variables, as MLServer reads them: defaults under every model-settings.json (the
file wins), and the model itself where a folder has no model-settings.json (a single-model deployment
such as KServe's, `MLSERVER_MODEL_IMPLEMENTATION` + `MLSERVER_MODEL_URI`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx
import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from gpuserve import ModelRepository
from gpuserve.errors import InvalidSettings
from gpuserve.model_repository import run_load
from gpuserve.repository import DiskRepository, UnavailableModel
from gpuserve.runtimes_classic import SKLearnModel
from gpuserve.settings import ModelSettings, model_env, with_model_env
from conftest import free_ports
from test_cli import wait_ready

X = np.random.default_rng(5).normal(size=(30, 3))
Y = (X[:, 0] > 0).astype(int)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.upper().startswith("MLSERVER_MODEL_"):
            monkeypatch.delenv(key)


def test_variables_parse_as_mlserver_fields():
    fields, parameters = model_env({
        "MLSERVER_MODEL_NAME": "iris", "MLSERVER_MODEL_IMPLEMENTATION": "mlserver_sklearn.SKLearnModel",
        "MLSERVER_MODEL_MAX_BATCH_SIZE": "8", "MLSERVER_MODEL_VERSIONS": '["sklearn/1.3"]',
        "MLSERVER_MODEL_INPUTS": '[{"name": "x", "datatype": "FP64", "shape": [-1, 3]}]',
        "MLSERVER_MODEL_URI": "/mnt/models", "MLSERVER_MODEL_VERSION": "v2", "MLSERVER_MODEL_EXTRA": '{"a": 1}',
        "MLSERVER_MODEL_HUGGINGFACE_TASK": "text-generation",  # a runtime's own setting, not a model field
        "MLSERVER_HTTP_PORT": "9000", "OTHER": "x"})
    assert fields == {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel", "max_batch_size": "8",
                      "versions": ["sklearn/1.3"], "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 3]}]}
    assert parameters == {"uri": "/mnt/models", "version": "v2", "extra": {"a": 1}}
    settings = ModelSettings.model_validate(with_model_env({}, {"MLSERVER_MODEL_MAX_BATCH_SIZE": "8",
                                                                "MLSERVER_MODEL_MAX_BATCH_TIME": "0.5"}))
    assert settings.max_batch_size == 8 and settings.max_batch_time == 0.5
    for bad in ({"MLSERVER_MODEL_INPUTS": "[oops"}, {"MLSERVER_MODEL_PARAMETERS": "[1]"}):
        with pytest.raises(InvalidSettings, match="MLSERVER_MODEL_"):
            model_env(bad)


def test_model_settings_file_wins_over_the_variables(tmp_path):
    (tmp_path / "model-settings.json").write_text(json.dumps(
        {"name": "mine", "max_batch_size": 4, "parameters": {"uri": "./model.joblib", "extra": {"k": 1}}}))
    env = {"MLSERVER_MODEL_NAME": "theirs", "MLSERVER_MODEL_IMPLEMENTATION": "mlserver_sklearn.SKLearnModel",
           "MLSERVER_MODEL_MAX_BATCH_SIZE": "16", "MLSERVER_MODEL_MAX_BATCH_TIME": "0.2",
           "MLSERVER_MODEL_URI": "/elsewhere", "MLSERVER_MODEL_VERSION": "v3",
           "MLSERVER_MODEL_PARAMETERS": '{"content_type": "pd"}'}
    settings = ModelSettings.from_file(tmp_path / "model-settings.json", env)
    assert (settings.name, settings.implementation, settings.max_batch_size, settings.max_batch_time) == \
        ("mine", "mlserver_sklearn.SKLearnModel", 4, 0.2)
    # the file's parameters win key by key over MLSERVER_MODEL_URI/_VERSION; _PARAMETERS is not used
    assert (settings.parameters.uri, settings.parameters.version, settings.parameters.content_type) == \
        ("./model.joblib", "v3", None)
    assert settings.parameters.extra == {"k": 1}
    (tmp_path / "model-settings.json").write_text("{}")
    bare = ModelSettings.from_file(tmp_path / "model-settings.json", env)
    assert bare.name == "theirs" and bare.parameters.uri == "/elsewhere" and bare.parameters.content_type == "pd"


def test_a_folder_without_model_settings_serves_the_environment_model(tmp_path, monkeypatch):
    classifier = LogisticRegression().fit(X, Y)
    joblib.dump(classifier, tmp_path / "model.joblib")
    assert DiskRepository(tmp_path).scan() == {}  # nothing without the variables
    monkeypatch.setenv("MLSERVER_MODEL_IMPLEMENTATION", "mlserver_sklearn.SKLearnModel")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    model = registry.get_model(tmp_path.name)  # named after the folder; model.joblib found in it
    assert isinstance(model, SKLearnModel) and asyncio.run(run_load(model)), getattr(model, "reason", "")

    monkeypatch.setenv("MLSERVER_MODEL_NAME", "iris")
    monkeypatch.setenv("MLSERVER_MODEL_URI", "./model.joblib")
    monkeypatch.setenv("MLSERVER_MODEL_VERSION", "v1")
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("iris")
    assert isinstance(model, SKLearnModel) and model.version == "v1" and asyncio.run(run_load(model))
    assert model.settings.resolve_uri() == tmp_path.resolve() / "model.joblib"


def test_model_settings_files_turn_the_default_model_off(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    joblib.dump(LogisticRegression().fit(X, Y), tmp_path / "a" / "model.joblib")
    (tmp_path / "a" / "model-settings.json").write_text("{}")  # its implementation comes from the variable
    monkeypatch.setenv("MLSERVER_MODEL_IMPLEMENTATION", "mlserver_sklearn.SKLearnModel")
    found = DiskRepository(tmp_path).scan()
    assert list(found) == ["a"] and found["a"][0].implementation == "mlserver_sklearn.SKLearnModel"


def test_bad_variables_leave_a_model_unavailable_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSERVER_MODEL_IMPLEMENTATION", "mlserver_sklearn.SKLearnModel")
    monkeypatch.setenv("MLSERVER_MODEL_INPUTS", "[not json")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    model = registry.get_model(tmp_path.name)
    assert isinstance(model, UnavailableModel) and "MLSERVER_MODEL_INPUTS must be JSON" in model.reason


def test_mlserver_api_settings_read_the_variables(monkeypatch):
    from gpuserve.mlserver.settings import ModelParameters
    from gpuserve.mlserver.settings import ModelSettings as MLServerModelSettings

    monkeypatch.setenv("MLSERVER_MODEL_IMPLEMENTATION", "mlserver_sklearn.SKLearnModel")
    monkeypatch.setenv("MLSERVER_MODEL_URI", "/mnt/models/model.joblib")
    monkeypatch.setenv("MLSERVER_MODEL_MAX_BATCH_SIZE", "8")
    settings = MLServerModelSettings(name="iris")
    assert (settings.implementation, settings.parameters.uri, settings.max_batch_size) == \
        ("mlserver_sklearn.SKLearnModel", "/mnt/models/model.joblib", 8)
    assert MLServerModelSettings(name="iris", max_batch_size=2).max_batch_size == 2
    assert ModelParameters(version="v9").uri == "/mnt/models/model.joblib"


def test_gpuserve_start_with_mlserver_model_variables(tmp_path):
    """KServe's single-model form: the artefact folder and the variables, no model-settings.json."""
    classifier = LogisticRegression().fit(X, Y)
    joblib.dump(classifier, tmp_path / "model.joblib")

    port, grpc_port, metrics_port = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLSERVER_MODEL_")}
    env.update(MLSERVER_MODEL_NAME="iris", MLSERVER_MODEL_IMPLEMENTATION="mlserver_sklearn.SKLearnModel",
               MLSERVER_MODEL_URI=str(tmp_path / "model.joblib"), GPUSERVE_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", str(tmp_path), "--host", "127.0.0.1",
                             "--http-port", str(port), "--grpc-port", str(grpc_port),
                             "--metrics-port", str(metrics_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_ready(port, proc, timeout=90)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert client.get("/v2/models/iris/ready").status_code == 200
            body = {"inputs": [{"name": "x", "shape": [4, 3], "datatype": "FP64", "data": X[:4].ravel().tolist()}],
                    "outputs": [{"name": "predict_proba"}]}
            reply = client.post("/v2/models/iris/infer", json=body)
            assert reply.status_code == 200, reply.text
            got = np.asarray(reply.json()["outputs"][0]["data"]).reshape(4, 2)
            np.testing.assert_allclose(got, classifier.predict_proba(X[:4]), rtol=1e-6)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
