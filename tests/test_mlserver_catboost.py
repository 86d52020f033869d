"""`mlserver_catboost.CatboostModel`, MLServer's included CatBoost runtime: a model.cbm served from its
model-settings.json answers `predict` with the classifier's labels, as MLServer 1.7.1's runtime does (compared
on the same file: the same output name, datatype, shape and values); beyond it, `predict_proba`, regressors as
regressors, and a refused output or input named in a 400."""

from __future__ import annotations

import json

import numpy as np
import pytest

catboost = pytest.importorskip("catboost")

from conftest import running_server  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402

RNG = np.random.default_rng(5)
X = RNG.normal(size=(60, 4)).astype(np.float32)
LABELS = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)  # three classes


def _served(tmp_path, estimator, name):
    folder = tmp_path / name
    folder.mkdir()
    estimator.save_model(str(folder / "model.cbm"))
    (folder / "model-settings.json").write_text(json.dumps({"name": name,
                                                            "implementation": "mlserver_catboost.CatboostModel"}))
    return folder


def _body(rows, outputs=()):
    body = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP32",
                        "data": rows.ravel().tolist()}]}
    if outputs:
        body["outputs"] = [{"name": name} for name in outputs]
    return body


def test_classifier_and_regressor_answer_as_the_framework(tmp_path, http):
    quiet = {"iterations": 20, "depth": 3, "verbose": False, "allow_writing_files": False}  # no catboost_info/
    classifier = catboost.CatBoostClassifier(**quiet).fit(X, LABELS)
    regressor = catboost.CatBoostRegressor(**quiet).fit(X, X[:, 0] * 2)
    _served(tmp_path, classifier, "classes")
    _served(tmp_path, regressor, "values")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        rows = X[:5]
        answer = client.post("/v2/models/classes/infer", json=_body(rows)).json()
        output = answer["outputs"][0]
        assert (output["name"], output["datatype"], output["shape"]) == ("predict", "INT64", [5, 1])
        assert output["data"] == classifier.predict(rows).ravel().tolist()
        proba = client.post("/v2/models/classes/infer", json=_body(rows, ["predict_proba"])).json()["outputs"][0]
        assert proba["shape"] == [5, 3] and np.allclose(proba["data"], classifier.predict_proba(rows).ravel())
        values = client.post("/v2/models/values/infer", json=_body(rows)).json()["outputs"][0]
        assert np.allclose(values["data"], regressor.predict(rows))
        refused = client.post("/v2/models/values/infer", json=_body(rows, ["predict_proba"]))
        assert refused.status_code == 400 and "predict_proba" in refused.json()["error"]
        unknown = client.post("/v2/models/classes/infer", json=_body(rows, ["transform"]))
        assert unknown.status_code == 400 and "transform" in unknown.json()["error"]
        narrow = client.post("/v2/models/classes/infer", json=_body(X[:2, :2]))
        assert narrow.status_code == 400 and "classes" in narrow.json()["error"]
        assert client.post("/v2/models/classes/infer", json=_body(rows)).status_code == 200  # serving on


def test_a_file_that_is_not_a_catboost_model_is_not_ready_with_the_reason(tmp_path, http):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.cbm").write_bytes(b"not a model")
    (folder / "model-settings.json").write_text(json.dumps({"name": "broken",
                                                            "implementation": "mlserver_catboost.CatboostModel"}))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        index = http(server).post("/v2/repository/index", json={}).json()
        entry = next(m for m in index if m["name"] == "broken")
        assert entry["state"] == "UNAVAILABLE" and "not a CatBoost model" in entry["reason"]
