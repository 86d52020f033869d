"""XGBoost and LightGBM models as MLServer users bring them (model-settings.json naming
`mlserver_xgboost.XGBoostModel`, `mlserver_lightgbm.LightGBMModel`, the short names or gpuserve's own;
.json/.ubj/.bst and .txt/.bst files), trained here on tiny data, served over REST and gRPC, and every
answer checked against the library's own predict / predict_proba."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import lightgbm as lgb  # the dev extra brings xgboost-cpu and lightgbm
import numpy as np
import pytest
import xgboost as xgb

from conftest import free_ports, running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.runtimes_classic import LightGBMModel, XGBoostModel
from test_cli import wait_ready

RNG = np.random.default_rng(11)
X = RNG.normal(size=(120, 4)).astype(np.float32)
Y_MULTI = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.3).astype(int)  # three classes
Y_BINARY = (X[:, 0] + X[:, 2] > 0).astype(int)
Y_REG = (2 * X[:, 0] - X[:, 3]).astype(np.float32)
Q = RNG.normal(size=(5, 4)).astype(np.float32)  # the requests' rows


def _folder(root, name, settings, save, filename):
    folder = root / name
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # xgboost warns that .bst is written as UBJSON
        save(str(folder / filename))
    (folder / "model-settings.json").write_text(json.dumps({"name": name, **settings}))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Model folders and, per model, the library's own answers for Q."""
    root = tmp_path_factory.mktemp("classic")
    expected = {}

    clf = xgb.XGBClassifier(n_estimators=6, max_depth=2).fit(X, Y_MULTI)
    _folder(root, "xgb-clf", {"implementation": "mlserver_xgboost.XGBoostModel"}, clf.save_model, "model.json")
    expected["xgb-clf"] = {"predict": clf.predict(Q), "predict_proba": clf.predict_proba(Q)}

    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(X, label=Y_BINARY), 6)
    _folder(root, "xgb-booster", {"implementation": "xgboost"}, booster.save_model, "model.ubj")
    expected["xgb-booster"] = {"predict": booster.predict(xgb.DMatrix(Q))}  # Booster.predict: probabilities

    reg = xgb.XGBRegressor(n_estimators=6, max_depth=2).fit(X, Y_REG)
    _folder(root, "xgb-reg", {"implementation": "gpuserve.runtimes_classic.XGBoostModel",
                              "parameters": {"uri": "./regressor.bst", "version": "v0.1.0"}},
            reg.save_model, "regressor.bst")
    expected["xgb-reg"] = {"predict": reg.predict(Q)}

    params = {"objective": "multiclass", "num_class": 3, "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1}
    multi = lgb.train(params, lgb.Dataset(X, label=Y_MULTI), num_boost_round=5)
    _folder(root, "lgb-multi", {"implementation": "mlserver_lightgbm.LightGBMModel"}, multi.save_model, "model.txt")
    expected["lgb-multi"] = {"predict": multi.predict(Q)}

    binary = lgb.train({"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1},
                       lgb.Dataset(X, label=Y_BINARY), num_boost_round=5)
    _folder(root, "lgb-binary", {"implementation": "lightgbm", "parameters": {"uri": "./iris-lightgbm.bst"}},
            binary.save_model, "iris-lightgbm.bst")
    expected["lgb-binary"] = {"predict": binary.predict(Q)}

    wellknown = lgb.train({"objective": "regression", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1},
                          lgb.Dataset(X, label=Y_REG), num_boost_round=5)
    _folder(root, "lgb-reg", {"implementation": "gpuserve.runtimes_classic.LightGBMModel"}, wellknown.save_model,
            "model.bst")
    expected["lgb-reg"] = {"predict": wellknown.predict(Q)}
    return root, expected


@pytest.fixture(scope="module")
def server(repo):
    registry = DiskRepository(repo[0]).populate(ModelRepository())
    with running_server(repository=registry) as srv:
        yield srv


@pytest.fixture
def client(server, http):
    return http(server)


def v2(client, name, outputs=None, rows=Q):
    body = {"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    return client.post(f"/v2/models/{name}/infer", json=body)


def as_array(output):
    return np.asarray(output["data"]).reshape(output["shape"])


def check(got, want):
    want = np.asarray(want)
    want = want.reshape(-1, 1) if want.ndim == 1 else want  # [N] goes out as [N, 1], as MLServer's NumPy codec
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


NAMES = ["xgb-clf", "xgb-booster", "xgb-reg", "lgb-multi", "lgb-binary", "lgb-reg"]


def test_runtimes_chosen_by_implementation_name(repo):
    registry = DiskRepository(repo[0]).populate(ModelRepository())
    kinds = {name: type(registry.get_model(name)) for name in NAMES}
    assert {n for n, k in kinds.items() if k is XGBoostModel} == {"xgb-clf", "xgb-booster", "xgb-reg"}
    assert {n for n, k in kinds.items() if k is LightGBMModel} == {"lgb-multi", "lgb-binary", "lgb-reg"}


@pytest.mark.parametrize("name", NAMES)
def test_default_output_is_the_library_predict(client, repo, name):
    reply = v2(client, name)
    assert reply.status_code == 200, reply.text
    outputs = reply.json()["outputs"]
    assert [o["name"] for o in outputs] == ["predict"]
    check(as_array(outputs[0]), repo[1][name]["predict"])


def test_xgboost_classifier_predict_proba_and_both_outputs(client, repo):
    want = repo[1]["xgb-clf"]
    reply = v2(client, "xgb-clf", ["predict_proba", "predict"]).json()
    assert [o["name"] for o in reply["outputs"]] == ["predict_proba", "predict"]
    check(as_array(reply["outputs"][0]), want["predict_proba"])
    check(as_array(reply["outputs"][1]), want["predict"])
    assert reply["outputs"][1]["datatype"] == "INT64"


def test_outputs_the_model_type_lacks_are_400(client):
    # a Booster saved with save_model is read as MLServer reads it: a regressor, no predict_proba
    for name in ("xgb-booster", "xgb-reg", "lgb-multi"):
        reply = v2(client, name, ["predict_proba"])
        assert reply.status_code == 400 and "predict_proba" in reply.json()["error"], (name, reply.text)


def test_wrong_feature_count_is_400_and_the_model_keeps_serving(client, repo):
    for name in ("xgb-clf", "lgb-multi"):
        reply = v2(client, name, rows=np.ones((2, 3), np.float32))
        assert reply.status_code == 400, reply.text
        assert v2(client, name).status_code == 200


def test_v1_instances(client, repo):
    for name in ("xgb-reg", "lgb-multi"):
        reply = client.post(f"/v1/models/{name}:predict", json={"instances": Q.tolist()})
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(np.asarray(reply.json()["predictions"]), repo[1][name]["predict"], rtol=1e-5,
                                   atol=1e-6)


def test_versions_from_model_settings(client):
    # as MLServer 1.7.1's metadata: the settings' own `versions` list, which parameters.version does not fill
    assert client.get("/v2/models/xgb-reg").json()["versions"] == []
    assert v2(client, "xgb-reg/versions/v0.1.0").status_code == 200


def test_tritonclient_grpc(server, repo):
    import tritonclient.grpc as triton

    with triton.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as c:
        tensor = triton.InferInput("input-0", list(Q.shape), "FP32")
        tensor.set_data_from_numpy(Q)
        result = c.infer("xgb-clf", [tensor], outputs=[triton.InferRequestedOutput("predict_proba")])
        check(result.as_numpy("predict_proba"), repo[1]["xgb-clf"]["predict_proba"])
        check(c.infer("lgb-binary", [tensor]).as_numpy("predict"), repo[1]["lgb-binary"]["predict"])


def test_tritonclient_http_binary_data_at_any_offset(server, repo):
    # tritonclient.http's default: binary tensor data after a JSON header of any length, so the array NumPy reads
    # from the body is often not 4-byte aligned; XGBoost's C API refuses such a pointer ("misalignment")
    import tritonclient.http as triton

    with triton.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as c:
        for name in ("xgb-clf", "xgb-reg", "lgb-binary"):
            for request_id in ("", "a", "ab", "abc"):  # moves the binary part by one byte at a time
                tensor = triton.InferInput("input-0", list(Q.shape), "FP32")
                tensor.set_data_from_numpy(Q)
                result = c.infer(name, [tensor], request_id=request_id)
                check(result.as_numpy("predict"), repo[1][name]["predict"])


def test_unreadable_files_leave_the_model_unavailable_with_a_reason(tmp_path, http):
    for name, implementation, filename in (("bad-xgb", "mlserver_xgboost.XGBoostModel", "model.json"),
                                           ("bad-lgb", "mlserver_lightgbm.LightGBMModel", "model.txt")):
        (tmp_path / name).mkdir()
        (tmp_path / name / filename).write_text("this is not a model")
        (tmp_path / name / "model-settings.json").write_text(json.dumps({"implementation": implementation}))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as srv:
        client = http(srv)
        index = {m["name"]: m for m in client.post("/v2/repository/index", json={}).json()}
        assert index["bad-xgb"]["state"] == "UNAVAILABLE" and "not an XGBoost model" in index["bad-xgb"]["reason"]
        assert index["bad-lgb"]["state"] == "UNAVAILABLE" and "not a LightGBM model" in index["bad-lgb"]["reason"]


def test_gpuserve_start_folder(repo):
    """The launch line on the same folder: every model loads and answers as the library does."""
    import httpx

    http_port, grpc_port, metrics_port = free_ports(3)
    cmd = [sys.executable, "-m", "gpuserve.cli", "start", str(repo[0]), "--host", "127.0.0.1",
           "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GPUSERVE_LOG_LEVEL": "WARNING"})
    try:
        wait_ready(http_port, proc, timeout=90)
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as client:
            for name in NAMES:
                reply = v2(client, name)
                assert reply.status_code == 200, (name, reply.text)
                check(as_array(reply.json()["outputs"][0]), repo[1][name]["predict"])
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
