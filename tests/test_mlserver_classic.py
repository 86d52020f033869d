"""The classic-ML runtimes behind `mlserver_sklearn.SKLearnModel`, `mlserver_xgboost.XGBoostModel`
and `mlserver_lightgbm.LightGBMModel`, in process: output choice, content types, V1 bodies, and a
load that fails clearly when the framework is not installed."""

from __future__ import annotations

import asyncio
import json
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gpuserve import ModelRepository
from gpuserve.codecs import PandasCodec
from gpuserve.errors import InvalidInput
from gpuserve.model_repository import run_load
from gpuserve.repository import DiskRepository
from gpuserve.runtimes_classic import CLASSIC_RUNTIMES, LightGBMModel, SKLearnModel, XGBoostModel
from gpuserve.settings import ModelSettings
from gpuserve.types import InferRequest, RequestedOutput

RNG = np.random.default_rng(3)
X = RNG.normal(size=(40, 3))
Y = (X[:, 0] + X[:, 2] > 0).astype(int)


def saved(tmp_path, estimator, filename="model.joblib", **settings):
    joblib.dump(estimator, tmp_path / filename)
    model = SKLearnModel("m", ModelSettings(name="m", folder=str(tmp_path), **settings))
    assert asyncio.run(run_load(model)), model.reason
    return model


def call(model, payload):
    return asyncio.run(model(payload, {}))[0]


def test_default_requested_and_configured_outputs(tmp_path):
    classifier = LogisticRegression().fit(X, Y)
    model = saved(tmp_path, classifier)  # found by its well-known name in the model's folder
    request = InferRequest.from_numpy("m", {"input-0": X[:4]})
    predict = call(model, request).outputs
    assert [o.name for o in predict] == ["predict"] and predict[0].shape == [4, 1]
    assert predict[0].parameters == {"content_type": "np"}
    assert np.array_equal(predict[0].as_numpy().ravel(), classifier.predict(X[:4]))
    request.request_outputs = [RequestedOutput("predict_proba")]
    proba = call(model, request).outputs[0]
    assert np.allclose(proba.as_numpy(), classifier.predict_proba(X[:4]))
    configured = saved(tmp_path, classifier, parameters={"extra": {"predict_fn": "predict_proba"}})
    assert call(configured, InferRequest.from_numpy("m", {"x": X[:2]})).outputs[0].name == "predict_proba"


def test_regressors_refuse_predict_proba_and_pipelines_transform(tmp_path):
    regressor = saved(tmp_path, make_pipeline(StandardScaler(), LinearRegression()).fit(X, X[:, 0]))
    request = InferRequest.from_numpy("m", {"x": X[:2]}, request_outputs=[RequestedOutput("predict_proba")])
    with pytest.raises(InvalidInput, match="predict_proba"):
        call(regressor, request)
    (tmp_path / "scaler").mkdir()
    scaler = saved(tmp_path / "scaler", StandardScaler().fit(X), filename="model.pkl")
    request = InferRequest.from_numpy("m", {"x": X[:2]}, request_outputs=[RequestedOutput("transform")])
    assert call(scaler, request).outputs[0].shape == [2, 3]
    with pytest.raises(InvalidInput, match="only supports"):
        call(scaler, InferRequest.from_numpy("m", {"x": X[:2]}, request_outputs=[RequestedOutput("fit")]))


def test_dataframe_requests_and_v1_bodies(tmp_path):
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    classifier = LogisticRegression().fit(frame, Y)
    model = saved(tmp_path, classifier)
    request = PandasCodec.encode_request(frame.head(3), model_name="m")  # content type pd on the request
    assert np.array_equal(call(model, request).outputs[0].as_numpy().ravel(), classifier.predict(frame.head(3)))
    by_metadata = saved(tmp_path, classifier, parameters={"content_type": "pd"})
    plain = InferRequest("m", PandasCodec.encode_request(frame.head(2)).inputs)
    assert call(by_metadata, plain).outputs[0].as_numpy().ravel().tolist() == classifier.predict(frame.head(2)).tolist()
    with pytest.raises(InvalidInput, match="one input"):
        call(model, plain)  # several inputs and no content type: MLServer's numpy default cannot read them
    v1 = call(model, {"instances": frame.head(2).to_dict(orient="records")})
    assert np.asarray(v1["predictions"]).tolist() == classifier.predict(frame.head(2)).tolist()


def test_missing_artefact_and_missing_framework_are_clear(tmp_path, monkeypatch):
    model = SKLearnModel("m", ModelSettings(name="m", folder=str(tmp_path)))
    assert not asyncio.run(run_load(model)) and "model.joblib" in model.reason
    for name, runtime, filename in (("xgboost", XGBoostModel, "model.json"), ("lightgbm", LightGBMModel, "model.bst")):
        (tmp_path / filename).write_text("{}")
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
        missing = runtime("m", ModelSettings(name="m", folder=str(tmp_path)))
        assert not asyncio.run(run_load(missing))
        assert f"pip install {name}" in missing.reason


def test_mlserver_runtime_names_resolve_from_model_settings(tmp_path, monkeypatch):
    names = (("sk", "mlserver_sklearn.SKLearnModel"), ("short", "sklearn"),
             ("xgb", "mlserver_xgboost.XGBoostModel"), ("lgb", "mlserver_lightgbm.LightGBMModel"))
    for folder, implementation in names:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model-settings.json").write_text(json.dumps({"implementation": implementation}))
    joblib.dump(LogisticRegression().fit(X, Y), tmp_path / "sk" / "model.joblib")
    joblib.dump(LogisticRegression().fit(X, Y), tmp_path / "short" / "model.pkl")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    assert type(registry.get_model("sk")) is SKLearnModel and type(registry.get_model("xgb")) is XGBoostModel
    assert type(registry.get_model("lgb")) is LightGBMModel
    for name in ("sk", "short"):
        assert asyncio.run(run_load(registry.get_model(name)))
    assert set(CLASSIC_RUNTIMES) >= {"mlserver_sklearn.SKLearnModel", "sklearn", "xgboost", "lightgbm"}
