"""KServe's built-in runtimes as gpuserve commands (gpuserve/kserve_runtimes.py): `sklearnserver`, `xgbserver` and
`lgbserver` with their ServingRuntimes' arguments serve the model folder as KServe's do (V1 predictions, V2
`output-0`, PREDICT_PROBA, a folder of model folders); answers compared with the frameworks' own calls.
benchmarks/peers/kserve_runtimes_conformance.py compares them with KServe's own runtimes, case by case."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")

from sklearn.datasets import load_iris  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from conftest import free_ports  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from test_cli import start, stop, wait_ready  # noqa: E402

X, Y = load_iris(return_X_y=True)
ROWS = X[[50, 120]].tolist()


def _serve(runtime, model_dir, name, env=None):
    http, grpc = free_ports(2)
    proc = start([sys.executable, "-m", "gpuserve.kserve_runtimes", runtime, "--model_name", name, "--model_dir",
                  str(model_dir), "--http_port", str(http), "--grpc_port", str(grpc)], env=env)
    wait_ready(http, proc)
    return proc, f"http://127.0.0.1:{http}"


def test_sklearnserver_answers_as_kserves(tmp_path):
    model = LogisticRegression(max_iter=500).fit(X, Y)
    (tmp_path / "m").mkdir()
    joblib.dump(model, tmp_path / "m" / "model.joblib")
    proc, base = _serve("sklearnserver", tmp_path / "m", "sklearn-iris")
    try:
        answer = httpx.post(f"{base}/v1/models/sklearn-iris:predict", json={"instances": ROWS}, timeout=30)
        assert answer.json() == {"predictions": model.predict(ROWS).tolist()}
        v2 = httpx.post(f"{base}/v2/models/sklearn-iris/infer", json={"inputs": [
            {"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": sum(ROWS, [])}]}, timeout=30).json()
        assert v2["outputs"][0]["name"] == "output-0" and v2["outputs"][0]["data"] == model.predict(ROWS).tolist()
        wrong = httpx.post(f"{base}/v1/models/sklearn-iris:predict", json={"instances": [[1.0, 2.0]]}, timeout=30)
        assert wrong.status_code == 500 and "expecting 4 features" in wrong.json()["error"]  # KServe's InferenceError
        assert httpx.get(f"{base}/v1/models/sklearn-iris", timeout=30).json() == {"name": "sklearn-iris", "ready": True}
    finally:
        assert stop(proc) == 0
    proc, base = _serve("sklearnserver", tmp_path / "m", "sklearn-iris", env={"PREDICT_PROBA": "true"})
    try:
        answer = httpx.post(f"{base}/v1/models/sklearn-iris:predict", json={"instances": ROWS}, timeout=30).json()
        np.testing.assert_allclose(answer["predictions"], model.predict_proba(ROWS))
    finally:
        assert stop(proc) == 0


def test_a_folder_of_model_folders_serves_each(tmp_path):
    for name, c in (("first", 1.0), ("second", 0.01)):
        (tmp_path / name).mkdir()
        joblib.dump(LogisticRegression(max_iter=500, C=c).fit(X, Y), tmp_path / name / "model.pkl")
    proc, base = _serve("sklearnserver", tmp_path, "absent")
    try:
        for name in ("first", "second"):
            expected = joblib.load(tmp_path / name / "model.pkl").predict(ROWS).tolist()
            answer = httpx.post(f"{base}/v1/models/{name}:predict", json={"instances": ROWS}, timeout=30)
            assert answer.json() == {"predictions": expected}
        assert httpx.get(f"{base}/v1/models/absent", timeout=30).status_code == 404
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize("runtime", ["xgbserver", "lgbserver"])
def test_boosters_answer_as_their_own_predict(tmp_path, runtime):
    (tmp_path / "m").mkdir()
    if runtime == "xgbserver":
        xgb = pytest.importorskip("xgboost")
        booster = xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(X, label=Y), 5)
        booster.save_model(str(tmp_path / "m" / "model.json"))
        expected = booster.predict(xgb.DMatrix(np.array(ROWS)))
    else:
        lgb = pytest.importorskip("lightgbm")
        booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(X, label=Y), 5)
        booster.save_model(str(tmp_path / "m" / "model.bst"))
        expected = booster.predict(np.array(ROWS))
    proc, base = _serve(runtime, tmp_path / "m", "iris", env={"OMP_NUM_THREADS": "1"})
    try:
        answer = httpx.post(f"{base}/v1/models/iris:predict", json={"instances": ROWS}, timeout=30).json()
        np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-6)
    finally:
        assert stop(proc) == 0


def test_kserves_repository_calls(tmp_path):
    """KServe's ModelRepository API its runtimes' repositories use: load_models() calls load_model(name) for each
    subfolder of models_dir; the base load_model loads nothing; set_models_dir moves it."""
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
    (tmp_path / "file.txt").write_text("not a model")

    class Seen(ModelRepository):
        def __init__(self, models_dir):
            self.seen = []
            super().__init__(models_dir)
            self.load_models()

        def load_model(self, name):
            self.seen.append(name)
            return True

    assert Seen(str(tmp_path)).seen == ["a", "b"]
    plain = ModelRepository()
    plain.set_models_dir(str(tmp_path))
    assert plain.models_dir == str(tmp_path) and plain.load_model("a") is False
    plain.load_models()  # loads nothing, raises nothing
    assert plain.get_models() == {}
    assert os.path.isdir(plain.models_dir)


def test_the_pyproject_installs_the_commands():
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert {scripts[n] for n in ("sklearnserver", "xgbserver", "lgbserver")} == {
        "gpuserve.kserve_runtimes:sklearnserver", "gpuserve.kserve_runtimes:xgbserver",
        "gpuserve.kserve_runtimes:lgbserver"}
    done = subprocess.run([sys.executable, "-m", "gpuserve.kserve_runtimes", "sklearnserver"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "--model_dir" in done.stderr  # required, as in KServe's
