"""`mlserver_alibi_explain.AlibiExplainRuntime`, MLServer's Alibi-Explain runtime: explainers saved here with
alibi (or built from `init_parameters`) are served from their model-settings.json next to an sklearn model
(`mlserver_sklearn.SKLearnModel`) that the black-box ones ask over V2 REST at `infer_uri`, on the same server
and on a second one; the answer is MLServer's (one BYTES output `explanation` holding the explanation's JSON,
the x-seldon-alibi-* headers) and holds what alibi and shap compute in process; settings, bad input (400), an
unreachable inference model (an error answer, no hang) and broken folders (not ready, with the reason).
IntegratedGradients (white box) gets a small Keras classifier built here, and answers alibi's attributions."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

pytest.importorskip("alibi")

import joblib  # noqa: E402
from alibi.explainers import AnchorImage, AnchorTabular, KernelShap, TreeShap  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from alibi_digits import DIGITS_RUNTIME, SEGMENTATION  # noqa: E402
from conftest import running_server  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402

RUNTIME = "mlserver_alibi_explain.AlibiExplainRuntime"
FEATURES = ["a", "b", "c", "d"]
RNG = np.random.default_rng(7)
X = RNG.random((300, 4)).astype(np.float32)
Y = (X[:, 0] > 0.5).astype(int)  # only the first feature matters: the anchor is a bound on `a`
CLF = LogisticRegression(C=1000.0).fit(X, Y)
FOREST = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(X, Y)
BOOSTED = GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0).fit(X, Y)
DIGITS = load_digits()
IMAGES = (DIGITS.images / 16.0)[..., None]  # [N, 8, 8, 1]
DIGITS_CLF = LogisticRegression(max_iter=500).fit(IMAGES.reshape(len(IMAGES), -1), DIGITS.target)
ROWS = np.array([[0.9, 0.2, 0.5, 0.5], [0.1, 0.8, 0.3, 0.6], [0.7, 0.7, 0.1, 0.9]], dtype=np.float32)
TIMEOUT = 120
HAS_TF = importlib.util.find_spec("tensorflow") is not None
IG_INIT = {"n_steps": 10, "method": "riemann_trapezoid"}  # the explainer built from init_parameters
IG_SAVED = {"n_steps": 20}  # the one saved with alibi and loaded from parameters.uri


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _folder(root: Path, name: str, settings: dict) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model-settings.json").write_text(json.dumps({"name": name, **settings}))
    return folder


def _sklearn(root: Path, name: str = "clf", model=CLF) -> Path:
    folder = _folder(root, name, {"implementation": "mlserver_sklearn.SKLearnModel",
                                  "parameters": {"uri": "./model.joblib"}})
    joblib.dump(model, folder / "model.joblib")
    return folder / "model.joblib"


def _explainer(root: Path, name: str, explainer=None, **extra) -> Path:
    parameters = {"extra": extra}
    if explainer is not None:
        parameters["uri"] = "./explainer"
    folder = _folder(root, name, {"implementation": RUNTIME, "parameters": parameters})
    if explainer is not None:
        explainer.save(str(folder / "explainer"))
    return folder


def _keras_classifier():
    """Dense 4 -> 8 (relu) -> 3 (softmax), fixed weights: no training."""
    import tensorflow as tf

    inputs = tf.keras.Input(shape=(4,))
    hidden = tf.keras.layers.Dense(8, activation="relu")(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax")(hidden))
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _integrated_gradients(root: Path, uri: str):
    """Two IntegratedGradients over one Keras classifier: `ig` built from init_parameters (the model a `.keras`
    file named relative to its folder, explainer_batch), `ig-saved` loaded from its folder (an `.h5` file, by
    its absolute path); and two whose model is no Keras file."""
    from alibi.explainers import IntegratedGradients

    model = _keras_classifier()
    folder = _explainer(root, "ig", explainer_type="integrated_gradients", infer_uri="./model.keras",
                        init_parameters=IG_INIT, explainer_batch=True)
    model.save(folder / "model.keras")
    model.save(root / "model.h5")
    _explainer(root, "ig-saved", IntegratedGradients(model, **IG_SAVED), explainer_type="integrated_gradients",
               infer_uri=str(root / "model.h5"))
    _explainer(root, "ig-no-model", explainer_type="integrated_gradients", infer_uri=str(root / "nothing.keras"),
               init_parameters=IG_INIT)
    _explainer(root, "ig-not-keras", explainer_type="integrated_gradients", infer_uri=uri, init_parameters=IG_INIT)
    return model


def _anchors():
    explainer = AnchorTabular(CLF.predict, FEATURES, seed=1)
    explainer.fit(X, disc_perc=(25, 50, 75))
    return explainer


def _kernel_shap():
    explainer = KernelShap(CLF.predict_proba, feature_names=FEATURES, seed=1)
    explainer.fit(X[:20])
    return explainer


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Server B: the classifier and a KernelShap asking it (B's only explainer: its `/explain` route is
    unambiguous). Server A: the classifier, explainers asking A itself or B, white-box ones, broken ones."""
    root_b = tmp_path_factory.mktemp("explain-b")
    root_a = tmp_path_factory.mktemp("explain-a")
    port_a, port_b = _free_port(), _free_port()
    uri_a = f"http://127.0.0.1:{port_a}/v2/models/clf/infer"
    uri_b = f"http://127.0.0.1:{port_b}/v2/models/clf/infer"
    _sklearn(root_b)
    _explainer(root_b, "shap-b", _kernel_shap(), explainer_type="kernel_shap", infer_uri=uri_b,
               infer_output="predict_proba", explainer_batch=True)
    _sklearn(root_a)
    forest = _sklearn(root_a, "forest", FOREST)
    boosted = _sklearn(root_a, "boosted", BOOSTED)
    digits = _folder(root_a, "digits", {"implementation": "models.Digits", "parameters": {"uri": "./model.joblib"}})
    joblib.dump(DIGITS_CLF, digits / "model.joblib")
    (digits / "models.py").write_text(DIGITS_RUNTIME)
    _explainer(root_a, "anchors", _anchors(), explainer_type="anchor_tabular", infer_uri=uri_a)
    _explainer(root_a, "anchors-remote", _anchors(), explainer_type="anchor_tabular", infer_uri=uri_b)
    _explainer(root_a, "shap", _kernel_shap(), explainer_type="kernel_shap", infer_uri=uri_a,
               infer_output="predict_proba", explainer_batch=True)
    tree = TreeShap(FOREST, model_output="raw", feature_names=FEATURES)
    tree.fit()
    _explainer(root_a, "tree-shap", tree, explainer_type="tree_shap", infer_uri=str(forest))
    _explainer(root_a, "tree-pd", explainer_type="tree_partial_dependence", infer_uri=str(boosted),
               init_parameters={"feature_names": FEATURES})
    _explainer(root_a, "anchor-image", explainer_type="anchor_image",
               infer_uri=f"http://127.0.0.1:{port_a}/v2/models/digits/infer",
               init_parameters={"image_shape": [8, 8, 1], "segmentation_fn": "slic",
                                "segmentation_kwargs": SEGMENTATION, "seed": 1})
    _explainer(root_a, "unreachable", _kernel_shap(), explainer_type="kernel_shap", explainer_batch=True,
               infer_uri=f"http://127.0.0.1:{_free_port()}/v2/models/clf/infer")
    broken = _explainer(root_a, "broken", explainer_type="anchor_tabular", infer_uri=uri_a)
    settings = json.loads((broken / "model-settings.json").read_text())
    settings["parameters"]["uri"] = "./explainer"
    (broken / "model-settings.json").write_text(json.dumps(settings))
    (broken / "explainer").mkdir()
    (broken / "explainer" / "meta.dill").write_bytes(b"not a dill file")
    _explainer(root_a, "misspelt", explainer_type="anchor_tabular", infer_uri=uri_a, explainer_btch=True)
    _explainer(root_a, "unknown-type", explainer_type="anchors", infer_uri=uri_a)
    _explainer(root_a, "no-explainer", explainer_type="anchor_tabular", infer_uri=uri_a)
    keras_model = _integrated_gradients(root_a, str(forest)) if HAS_TF else None
    registry_b = DiskRepository(root_b).populate(ModelRepository())
    registry_a = DiskRepository(root_a).populate(ModelRepository())
    with running_server(repository=registry_b, http_port=port_b) as server_b, \
            running_server(repository=registry_a, http_port=port_a, grpc_port=0) as server_a:
        with httpx.Client(base_url=f"http://127.0.0.1:{port_a}", timeout=TIMEOUT) as http_a, \
                httpx.Client(base_url=f"http://127.0.0.1:{port_b}", timeout=TIMEOUT) as http_b:
            yield SimpleNamespace(a=http_a, b=http_b, root=root_a, grpc_a=server_a.ports["grpc"], server_b=server_b,
                                  keras_model=keras_model)


def _body(rows, datatype="FP32", **fields):
    rows = np.asarray(rows)
    return {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": datatype,
                        "data": rows.ravel().tolist()}], **fields}


def _explanation(answer, method):
    """The explanation in MLServer's answer: one BYTES output, [1, 1], content type `str`, holding JSON."""
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [o["name"] for o in body["outputs"]] == ["explanation"]
    output = body["outputs"][0]
    assert (output["shape"], output["datatype"], output["parameters"]) == ([1, 1], "BYTES", {"content_type": "str"})
    assert answer.headers["x-seldon-alibi-type"] == "explanation"
    assert answer.headers["x-seldon-alibi-method"] == method
    return json.loads(output["data"][0])


def _anchor_of(explanation):
    return explanation["data"]["anchor"]


def test_anchors_ask_the_model_on_the_same_server_and_explain_the_first_row(served):
    explanation = _explanation(served.a.post("/v2/models/anchors/infer", json=_body(ROWS)), "anchor_tabular")
    assert explanation["meta"]["name"] == "AnchorTabular"
    assert explanation["data"]["raw"]["instance"] == pytest.approx(ROWS[0].tolist())  # only the first row
    assert explanation["data"]["raw"]["prediction"] == [int(CLF.predict(ROWS[:1])[0])]
    local = _anchors().explain(ROWS[0])  # the same explainer, calling the model in process
    assert _anchor_of(explanation) == local.anchor  # only `a` decides: one bound on it
    assert explanation["data"]["precision"] >= 0.95


def test_anchors_ask_a_model_on_another_server(served):
    explanation = _explanation(served.a.post("/v2/models/anchors-remote/infer", json=_body(ROWS[1:2])),
                               "anchor_tabular")
    assert _anchor_of(explanation) == _anchors().explain(ROWS[1]).anchor
    assert explanation["data"]["raw"]["prediction"] == [0]


def test_explain_parameters_come_from_the_request(served):
    body = _body(ROWS[:1], parameters={"explain_parameters": {"threshold": 0.8, "coverage_samples": 500}})
    explanation = _explanation(served.a.post("/v2/models/anchors/infer", json=body), "anchor_tabular")
    assert explanation["meta"]["params"]["threshold"] == 0.8
    assert explanation["meta"]["params"]["coverage_samples"] == 500


def _kernel_shap_in_process(rows):
    """shap's own KernelExplainer on the classifier (4 features: every coalition is enumerated, so exact)."""
    import shap

    return _per_output(shap.KernelExplainer(CLF.predict_proba, X[:20]).shap_values(rows))


def _per_output(values):
    """[outputs, rows, features], from shap's list (before 0.45) or array [rows, features, outputs] (since)."""
    return np.asarray(values) if isinstance(values, list) else np.moveaxis(values, -1, 0)


@pytest.mark.parametrize("client, name", [("a", "shap"), ("b", "shap-b")])
def test_kernel_shap_values_are_shaps(served, client, name):
    answer = getattr(served, client).post(f"/v2/models/{name}/infer", json=_body(ROWS))
    explanation = _explanation(answer, "shap_wrappers")
    assert explanation["meta"]["name"] == "KernelShap"
    values = np.array(explanation["data"]["shap_values"])
    assert values.shape == (2, 3, 4)  # one [rows, features] array per class, as shap < 0.45 answered
    assert np.allclose(values, _kernel_shap_in_process(ROWS), atol=1e-6)
    assert explanation["data"]["raw"]["prediction"] == CLF.predict(ROWS).tolist()
    assert np.allclose(explanation["data"]["raw"]["raw_prediction"], CLF.predict_proba(ROWS), atol=1e-6)


def test_tree_shap_gets_the_model_itself(served):
    import shap

    explanation = _explanation(served.a.post("/v2/models/tree-shap/infer", json=_body(ROWS[:2])), "shap_wrappers")
    assert explanation["meta"]["name"] == "TreeShap"
    values = np.array(explanation["data"]["shap_values"])
    expected = _per_output(shap.TreeExplainer(FOREST).shap_values(ROWS[:2]))
    assert values.shape == (2, 2, 4) and np.allclose(values, expected, atol=1e-6)  # white box: every row


def test_an_explainer_built_from_init_parameters(served):
    """AnchorImage needs no fit: `init_parameters` build it (slic segments), asking a custom MLServer runtime
    on the same server for the probabilities of perturbed images."""
    body = _body(IMAGES[:2], datatype="FP64", parameters={"explain_parameters": {"threshold": 0.9,
                                                                                 "p_sample": 0.5}})
    explanation = _explanation(served.a.post("/v2/models/anchor-image/infer", json=body), "anchor_image")
    assert explanation["meta"]["name"] == "AnchorImage"
    assert explanation["meta"]["params"]["segmentation_fn"] == "slic"
    local = AnchorImage(lambda x: DIGITS_CLF.predict_proba(np.asarray(x).reshape(len(x), -1)), image_shape=(8, 8, 1),
                        segmentation_fn="slic", segmentation_kwargs=SEGMENTATION, seed=1)
    expected = local.explain(IMAGES[0], threshold=0.9, p_sample=0.5)
    assert np.array_equal(explanation["data"]["segments"], expected.segments)  # the first image's
    assert np.array(explanation["data"]["anchor"]).shape == (8, 8, 1)
    assert explanation["data"]["raw"]["prediction"] == [int(DIGITS.target[0])]
    assert explanation["data"]["precision"][0] >= 0.9


def test_tree_partial_dependence_from_init_parameters(served):
    """White box, built from init_parameters; its deciles need alibi's percentile call adapted to NumPy 2. The
    expected numbers: MLServer 1.7.1's answer (numpy 1.26) to the same request on the same model
    (benchmarks/peers/alibi_explain_conformance.py), and the partial dependence computed here by hand."""
    rows = np.random.default_rng(7).random((50, 4)).astype(np.float32)
    body = _body(rows, parameters={"explain_parameters": {"features": [0], "grid_resolution": 5}})
    explanation = _explanation(served.a.post("/v2/models/tree-pd/infer", json=body), "partial_dependence")
    assert explanation["meta"]["name"] == "TreePartialDependence"
    data = explanation["data"]
    assert np.allclose(data["feature_deciles"][0], np.percentile(rows[:, 0], np.linspace(0, 100, 11)), atol=1e-6)
    grid = np.linspace(rows[:, 0].min(), rows[:, 0].max(), 5)
    assert np.allclose(data["feature_values"][0], grid, atol=1e-6)
    assert np.allclose(data["pd_values"][0][0], [-0.86125, -0.86125, 0.85297, 0.85297, 0.85297], atol=1e-5)  # MLServer
    # by hand: the mean decision over the rows with `a` set to each grid value (sklearn's recursion leaves out
    # the boosting's initial constant: compared up to it)
    by_hand = np.array([BOOSTED.decision_function(np.c_[np.full(len(rows), g), rows[:, 1:]]).mean() for g in grid])
    assert np.allclose(np.array(data["pd_values"][0][0]) - by_hand, (data["pd_values"][0][0][0] - by_hand[0]),
                       atol=1e-5)


def _alibi_integrated_gradients(model, rows, target=None, **init_parameters):
    """alibi's IntegratedGradients called here on the same model and rows (target: the predicted class, as
    MLServer's runtime passes it)."""
    from alibi.explainers import IntegratedGradients

    if target is None:
        target = model(rows).numpy().argmax(axis=1)
    return IntegratedGradients(model, **init_parameters).explain(rows, target=target)


@pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")
@pytest.mark.parametrize("name, init_parameters, datatype", [("ig", IG_INIT, "FP32"), ("ig-saved", IG_SAVED, "FP64")])
def test_integrated_gradients_attributions_are_alibis(served, name, init_parameters, datatype):
    """Every row explained (a white box, with or without explainer_batch), for the class the model predicts."""
    rows = ROWS.astype(np.float64) if datatype == "FP64" else ROWS
    explanation = _explanation(served.a.post(f"/v2/models/{name}/infer", json=_body(rows, datatype)),
                               "integrated_gradients")
    assert explanation["meta"]["name"] == "IntegratedGradients"
    assert {k: explanation["meta"]["params"][k] for k in init_parameters} == init_parameters
    expected = _alibi_integrated_gradients(served.keras_model, ROWS, **init_parameters)
    attributions = np.array(explanation["data"]["attributions"])
    assert attributions.shape == (1, 3, 4)  # one array per model input: [rows, features]
    assert np.allclose(attributions, expected.data["attributions"], atol=1e-6)
    assert explanation["data"]["target"] == expected.data["target"].tolist()
    assert np.allclose(explanation["data"]["predictions"], expected.data["predictions"], atol=1e-6)
    assert np.allclose(explanation["data"]["deltas"], expected.data["deltas"], atol=1e-6)


@pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")
def test_integrated_gradients_target_from_the_request(served):
    """A request's own `target` replaces the predicted class (MLServer passes both to alibi and fails)."""
    target = [2, 2, 0]
    body = _body(ROWS, parameters={"explain_parameters": {"target": target, "baselines": 0.25}})
    explanation = _explanation(served.a.post("/v2/models/ig/infer", json=body), "integrated_gradients")
    expected = _alibi_integrated_gradients(served.keras_model, ROWS, target=np.array(target), **IG_INIT)
    assert not np.allclose(explanation["data"]["attributions"], expected.data["attributions"], atol=1e-3)
    from alibi.explainers import IntegratedGradients

    expected = IntegratedGradients(served.keras_model, **IG_INIT).explain(ROWS, target=target, baselines=0.25)
    assert explanation["data"]["target"] == target
    assert np.allclose(explanation["data"]["attributions"], expected.data["attributions"], atol=1e-6)
    assert np.allclose(explanation["data"]["baselines"], 0.25)
    narrow = served.a.post("/v2/models/ig/infer", json=_body(ROWS[:, :3]))
    assert narrow.status_code == 400 and "cannot explain this input" in narrow.json()["error"]


def test_explain_route_answers_plain_json(served):
    answer = served.b.post("/explain", json=_body(ROWS))
    assert answer.status_code == 200, answer.text
    explanation = answer.json()
    assert explanation["meta"]["name"] == "KernelShap"
    assert np.allclose(explanation["data"]["shap_values"], _kernel_shap_in_process(ROWS), atol=1e-6)


def test_over_grpc(served):
    import tritonclient.grpc as triton

    with triton.InferenceServerClient(f"127.0.0.1:{served.grpc_a}") as client:
        tensor = triton.InferInput("x", list(ROWS.shape), "FP32")
        tensor.set_data_from_numpy(ROWS)
        result = client.infer("shap", [tensor], client_timeout=TIMEOUT)
        explanation = json.loads(result.as_numpy("explanation").ravel()[0])
    assert np.allclose(explanation["data"]["shap_values"], _kernel_shap_in_process(ROWS), atol=1e-6)


def test_explanations_and_predictions_together_do_not_block_the_server(served):
    """The explainer waits on its own thread for the model it asks on this same server: concurrent
    explanations and the model's own requests are all answered."""

    async def many():
        async with httpx.AsyncClient(base_url=str(served.a.base_url), timeout=TIMEOUT) as client:
            calls = [client.post("/v2/models/anchors/infer", json=_body(ROWS[i:i + 1])) for i in range(3)]
            calls += [client.post("/v2/models/clf/infer", json=_body(ROWS)) for _ in range(5)]
            return await asyncio.gather(*calls)

    answers = asyncio.run(many())
    assert [a.status_code for a in answers] == [200] * 8


def test_bad_input_is_a_400_and_the_model_serves_on(served):
    two = _body(ROWS)
    two["inputs"].append({**two["inputs"][0], "name": "y"})
    refused = served.a.post("/v2/models/anchors/infer", json=two)
    assert refused.status_code == 400 and "error" in refused.json()  # one input only, as MLServer's codec
    narrow = served.a.post("/v2/models/shap/infer", json=_body(ROWS[:, :3]))
    assert narrow.status_code == 400 and "error" in narrow.json()
    empty = served.a.post("/v2/models/anchors/infer", json=_body(np.zeros((0, 4), np.float32)))
    assert empty.status_code == 400 and "no rows" in empty.json()["error"]
    not_an_object = served.a.post("/v2/models/anchors/infer", json=_body(ROWS, parameters={
        "explain_parameters": [1]}))
    assert not_an_object.status_code == 400 and "explain_parameters" in not_an_object.json()["error"]
    unknown = served.a.post("/v2/models/tree-shap/infer", json=_body(ROWS, parameters={
        "explain_parameters": {"no_such_keyword": 1}}))
    assert unknown.status_code == 200  # alibi's explain takes **kwargs: an unknown keyword is ignored
    assert served.a.post("/v2/models/anchors/infer", json=_body(ROWS[:1])).status_code == 200


def test_an_inference_model_that_goes_away_is_an_error_answer_not_a_hang(served):
    """An explainer loaded (over the repository API) against a third server, which then stops: its
    explanations are a 502 naming the address, at once, and the server serves on."""
    root_c = served.root.parent / "explain-c"
    _sklearn(root_c)
    with running_server(repository=DiskRepository(root_c).populate(ModelRepository())) as server_c:
        uri_c = f"http://127.0.0.1:{server_c.ports['http']}/v2/models/clf/infer"
        _explainer(served.root, "goes-away", _kernel_shap(), explainer_type="kernel_shap", infer_uri=uri_c,
                   infer_output="predict_proba", explainer_batch=True)
        loaded = served.a.post("/v2/repository/models/goes-away/load", json={})
        assert loaded.status_code == 200, loaded.text
        assert served.a.post("/v2/models/goes-away/infer", json=_body(ROWS)).status_code == 200
    started = time.monotonic()
    answer = served.a.post("/v2/models/goes-away/infer", json=_body(ROWS))
    assert time.monotonic() - started < 30
    assert answer.status_code == 502
    assert f"cannot reach http://127.0.0.1:{uri_c.split(':')[2].split('/')[0]}" in answer.json()["error"]
    assert served.a.post("/v2/models/clf/infer", json=_body(ROWS)).status_code == 200
    assert served.a.get("/v2/models/goes-away/ready").status_code == 200  # still loaded: the model may come back


def test_a_slow_inference_model_times_out():
    """A model that accepts the connection and never answers: the predictor gives up after its timeout with
    an error answer (502)."""
    from gpuserve.runtimes_alibi_explain import RemoteInferenceError, RemoteModel

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    remote = RemoteModel(f"http://127.0.0.1:{listener.getsockname()[1]}/v2/models/m/infer", timeout=0.5)
    try:
        with pytest.raises(RemoteInferenceError, match="no answer from .* within 0.5 s") as failed:
            remote(ROWS)
        assert failed.value.status_code == 502
    finally:
        remote.close()
        listener.close()


def test_broken_folders_are_not_ready_with_the_reason(served):
    index = {m["name"]: m for m in served.a.post("/v2/repository/index", json={}).json()}
    for name in ("anchors", "anchors-remote", "shap", "tree-shap", "tree-pd", "anchor-image", "clf", "digits"):
        assert index[name]["state"] == "READY", (name, index[name])
    # KernelShap (as AnchorTabular) calls its predictor as it loads: an unreachable model fails the load, at once
    assert index["unreachable"]["state"] == "UNAVAILABLE"
    assert "cannot reach http://127.0.0.1:" in index["unreachable"]["reason"]
    assert index["broken"]["state"] == "UNAVAILABLE"
    assert "Invalid explainer at" in index["broken"]["reason"]
    assert "explainer_btch" in index["misspelt"]["reason"]
    assert "Invalid explainer_type 'anchors'" in index["unknown-type"]["reason"]
    # no parameters.uri: the explainer is looked for in the model's folder, as MLServer's get_model_uri does
    assert "Invalid explainer at" in index["no-explainer"]["reason"] and "meta.dill" in index["no-explainer"]["reason"]
    assert served.a.post("/v2/models/broken/infer", json=_body(ROWS)).status_code == 503
    if HAS_TF:
        assert index["ig"]["state"] == index["ig-saved"]["state"] == "READY"
        assert index["ig-no-model"]["state"] == "UNAVAILABLE"
        assert "Invalid URI" in index["ig-no-model"]["reason"] and "no such file" in index["ig-no-model"]["reason"]
        assert index["ig-not-keras"]["state"] == "UNAVAILABLE"
        assert "not a Keras model" in index["ig-not-keras"]["reason"]


# -- the runtime in process -------------------------------------------------------------------------------

def _runtime(**extra):
    from gpuserve.mlserver.alias import install

    install()
    from mlserver_alibi_explain import AlibiExplainRuntime

    from gpuserve.mlserver.settings import ModelParameters, ModelSettings

    return AlibiExplainRuntime(ModelSettings(name="explainer", implementation=AlibiExplainRuntime,
                                             parameters=ModelParameters(extra=extra)))


def test_settings_from_extra_and_from_the_environment(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("MLSERVER_MODEL_ALIBI_EXPLAIN_INFER_URI", "http://elsewhere:8080/v2/models/m/infer")
    monkeypatch.setenv("MLSERVER_MODEL_ALIBI_EXPLAIN_EXPLAINER_BATCH", "true")
    runtime = _runtime(explainer_type="anchor_tabular", init_parameters={"feature_names": FEATURES})
    settings = runtime.alibi_explain_settings
    assert settings.infer_uri == "http://elsewhere:8080/v2/models/m/infer" and settings.explainer_batch is True
    assert settings.init_parameters == {"feature_names": FEATURES} and settings.infer_output is None
    monkeypatch.delenv("MLSERVER_MODEL_ALIBI_EXPLAIN_INFER_URI")
    with pytest.raises(ValidationError, match="infer_uri"):
        _runtime(explainer_type="anchor_tabular")  # required, as MLServer's


def test_the_v2_request_is_mlservers(monkeypatch):
    """Input named after the model's metadata, its first output asked for (or `infer_output`), NumPy- or
    string-encoded; a trailing axis of one dropped from the answer."""
    from gpuserve.runtimes_alibi_explain import RemoteModel

    remote = RemoteModel("http://m/v2/models/m/infer")
    remote.metadata = {"inputs": [{"name": "features"}], "outputs": [{"name": "proba", "parameters": None}]}
    request = remote.request(ROWS[:2].astype(np.float64))
    assert request["parameters"] == {"content_type": "np"} and request["outputs"] == [
        {"name": "proba", "parameters": None}]
    tensor = request["inputs"][0]
    assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("features", [2, 4], "FP64")
    texts = remote.request(["a b", "c"])["inputs"][0]
    assert (texts["shape"], texts["datatype"], texts["parameters"]) == ([2, 1], "BYTES", {"content_type": "str"})
    assert remote.request(ROWS[0])["inputs"][0]["shape"] == [4, 1]  # a 1-D row: a column, as MLServer's codec
    calls = []

    def call(method, url, body=None):
        calls.append((method, url))
        if method == "GET":
            return {"inputs": [], "outputs": []}
        return {"outputs": [{"name": "p", "shape": [2, 1], "datatype": "INT64", "data": [1, 0]}]}

    other = RemoteModel("http://m/v2/models/m/infer", infer_output="p")
    monkeypatch.setattr(other, "call", call)
    assert other(ROWS[:2]).tolist() == [1, 0]  # [2, 1] -> [2]
    assert other.request(ROWS[:1])["outputs"] == [{"name": "p"}]
    assert other.request(ROWS[:1])["inputs"][0]["name"] == "predict"  # the metadata names no input
    assert calls == [("GET", "http://m/v2/models/m"), ("POST", "http://m/v2/models/m/infer")]
    remote.close()
    other.close()


def test_mlserver_alibi_explain_imports_where_the_package_is_absent():
    code = ("from gpuserve.mlserver.alias import install\n"
            "install()\n"
            "from mlserver_alibi_explain import AlibiExplainRuntime\n"
            "from mlserver_alibi_explain.runtime import AlibiExplainRuntime as Same\n"
            "from mlserver_alibi_explain.common import AlibiExplainSettings\n"
            "from mlserver_alibi_explain.errors import RemoteInferenceError\n"
            "import gpuserve.runtimes_alibi_explain as ours\n"
            "assert AlibiExplainRuntime is Same is ours.AlibiExplainRuntime\n"
            "assert AlibiExplainSettings is ours.AlibiExplainSettings\n"
            "assert RemoteInferenceError is ours.RemoteInferenceError\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


async def test_integrated_gradients_without_tensorflow_is_not_ready_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    runtime = _runtime(explainer_type="integrated_gradients", infer_uri=str(tmp_path / "model.keras"),
                       init_parameters=IG_INIT)
    with pytest.raises(Exception, match=r"needs tensorflow: pip install 'gpuserve\[tensorflow\]'"):
        await runtime.load()


def test_without_alibi_the_reason_names_the_extra(monkeypatch):
    from gpuserve.errors import InvalidSettings
    from gpuserve.repository import _builtin_runtime

    monkeypatch.setitem(sys.modules, "alibi", None)
    monkeypatch.setitem(sys.modules, "alibi.saving", None)
    monkeypatch.delitem(sys.modules, "gpuserve.runtimes_alibi_explain", raising=False)
    with pytest.raises(InvalidSettings, match=r"gpuserve\[alibi-explain\]"):
        _builtin_runtime("mlserver_alibi_explain.AlibiExplainRuntime")
    with pytest.raises(InvalidSettings, match=r"gpuserve\[alibi-explain\]"):
        _builtin_runtime("alibi_explain")
