"""`mlserver_alibi_detect.AlibiDetectRuntime`, MLServer's Alibi-Detect runtime: detectors saved here with
`save_detector` are served from their model-settings.json and answer what the detector's own `predict` answers,
encoded as MLServer 1.7.1's runtime encodes it (checked against it: benchmarks/peers/alibi_detect_conformance.py),
over REST and gRPC; `batch_size`, online detectors and their saved state, the settings and their refusals, bad
input (400) and a broken folder (not ready, with the reason; the others serve on). TensorFlow ones: a KSDrift with a
Keras preprocessing model, an MMDDrift on TensorFlow, and OutlierAE / OutlierVAE (Keras 2 only: in a subprocess)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

pytest.importorskip("alibi_detect")

import tritonclient.grpc as triton  # noqa: E402
from alibi_detect.cd import ChiSquareDrift, CVMDriftOnline, KSDrift, TabularDrift  # noqa: E402
from alibi_detect.saving import load_detector, save_detector  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from conftest import running_server  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402

RUNTIME = "mlserver_alibi_detect.AlibiDetectRuntime"
RNG = np.random.default_rng(21)
REF = RNG.normal(size=(100, 3)).astype(np.float32)
MIXED = np.c_[REF[:, :2], RNG.integers(0, 3, (100, 1))].astype(np.float32)  # a categorical third column
COUNTS = RNG.integers(0, 4, (100, 2))
SHIFTED = (RNG.normal(size=(20, 3)) + 0.8).astype(np.float32)
TIMEOUT = 60
HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")


def _save(root: Path, name: str, detector, extra=None, implementation=RUNTIME) -> Path:
    folder = root / name
    save_detector(detector, str(folder / "detector"))
    settings = {"name": name, "implementation": implementation, "parameters": {"uri": "./detector"}}
    if extra is not None:
        settings["parameters"]["extra"] = extra
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return folder


def _body(rows, datatype="FP32", **fields):
    rows = np.asarray(rows)
    return {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": datatype,
                        "data": rows.ravel().tolist()}], **fields}


def _outputs(body):
    return {o["name"]: o for o in body["outputs"]}


def _expected(prediction):
    """MLServer's encoding of one `predict` answer: each `data` value with a leading axis of one (a column
    for a bare value)."""
    return {key: np.array([value]).reshape(1, -1) if np.ndim(value) <= 1 else np.array([value])
            for key, value in prediction["data"].items()}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("alibi-detect")
    _save(root, "ks", KSDrift(REF, p_val=0.05))
    _save(root, "ks-feature", KSDrift(REF, p_val=0.05), {"predict_parameters": {"drift_type": "feature"}})
    _save(root, "tab", TabularDrift(MIXED, p_val=0.05, categories_per_feature={2: None}))
    _save(root, "tab-batch", TabularDrift(MIXED, p_val=0.05, categories_per_feature={2: None}), {"batch_size": 3})
    _save(root, "chi", ChiSquareDrift(COUNTS, p_val=0.05))
    _save(root, "ks-unknown-keyword", KSDrift(REF, p_val=0.05), {"predict_parameters": {"no_such_keyword": 1}})
    _save(root, "ks-misspelt", KSDrift(REF, p_val=0.05), {"batch_sz": 3})
    if HAS_TF:
        _save(root, "ks-tf-preprocess", KSDrift(REF, p_val=0.05, preprocess_fn=_keras_preprocessing()))
        _save(root, "mmd-tf", _mmd_tf())
    broken = root / "broken"
    (broken / "detector").mkdir(parents=True)
    (broken / "detector" / "config.toml").write_text("name = 'KSDrift'\nnot toml [[[\n")
    (broken / "model-settings.json").write_text(json.dumps({"name": "broken", "implementation": RUNTIME,
                                                            "parameters": {"uri": "./detector"}}))
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=TIMEOUT) as http:
            with triton.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as grpc_client:
                yield SimpleNamespace(root=root, http=http, grpc=grpc_client)


def _keras_preprocessing():
    """alibi-detect's TensorFlow preprocessing: an untrained encoder (Dense 3 -> 2, fixed seed) in a UAE."""
    from functools import partial

    import tensorflow as tf
    from alibi_detect.cd.tensorflow import UAE, preprocess_drift

    tf.keras.utils.set_random_seed(0)
    encoder = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    return partial(preprocess_drift, model=UAE(encoder_net=encoder), batch_size=16)


def _mmd_tf():
    from alibi_detect.cd import MMDDrift

    return MMDDrift(REF, backend="tensorflow", p_val=0.05, n_permutations=30)


def _detector(served, name):
    return load_detector(str(served.root / name / "detector"))


def _assert_answers_as(outputs, prediction):
    expected = _expected(prediction)
    assert list(outputs) == list(expected)  # one output per key of `data`, in its order
    for key, value in expected.items():
        output = outputs[key]
        assert output["shape"] == list(value.shape), key
        assert output["parameters"] == {"content_type": "np"}
        assert np.allclose(output["data"], value.ravel()), key


@pytest.mark.parametrize("name, rows, datatype, kwargs", [
    ("ks", SHIFTED[:6], "FP32", {}),
    ("ks-feature", SHIFTED[:6], "FP32", {"drift_type": "feature"}),
    ("tab", np.c_[SHIFTED[:8, :2], RNG.integers(0, 3, (8, 1))], "FP32", {}),
    ("chi", RNG.integers(0, 4, (7, 2)), "INT64", {}),
    pytest.param("ks-tf-preprocess", SHIFTED[:6], "FP32", {}, marks=needs_tf),
])
def test_drift_detectors_answer_as_their_predict(served, name, rows, datatype, kwargs):
    answer = served.http.post(f"/v2/models/{name}/infer", json=_body(rows, datatype))
    assert answer.status_code == 200, answer.text
    prediction = _detector(served, name).predict(np.asarray(rows), **kwargs)
    _assert_answers_as(_outputs(answer.json()), prediction)
    assert answer.json()["parameters"] == {k: v for k, v in prediction["meta"].items() if v is not None}
    method = {"ks": "ks", "ks-feature": "ks", "tab": "tabular", "chi": "chisquare", "ks-tf-preprocess": "ks"}[name]
    assert answer.headers["x-seldon-alibi-type"] == "drift"
    assert answer.headers["x-seldon-alibi-method"] == method


@needs_tf
def test_a_tensorflow_drift_detector_answers_as_its_predict(served):
    """MMDDrift on TensorFlow: its permutation test draws from NumPy's global generator, seeded alike before the
    served call and the direct one (the server runs in this process)."""
    rows = SHIFTED[:8] * 0.3
    np.random.seed(11)
    answer = served.http.post("/v2/models/mmd-tf/infer", json=_body(rows))
    assert answer.status_code == 200, answer.text
    np.random.seed(11)
    prediction = _detector(served, "mmd-tf").predict(rows)
    _assert_answers_as(_outputs(answer.json()), prediction)
    shapes = {o["name"]: (o["shape"], o["datatype"]) for o in answer.json()["outputs"]}
    assert shapes == {"is_drift": ([1, 1], "INT64"), "distance": ([1, 1], "FP32"), "p_val": ([1, 1], "FP64"),
                      "threshold": ([1, 1], "FP64"), "distance_threshold": ([1, 1], "FP32")}
    assert answer.json()["parameters"]["backend"] == "tensorflow"
    assert answer.json()["parameters"]["name"] == "MMDDriftTF"
    assert answer.headers["x-seldon-alibi-method"] == "mmd"


def test_feature_drift_shapes_and_datatypes_as_mlserver(served):
    body = served.http.post("/v2/models/ks-feature/infer", json=_body(SHIFTED[:5])).json()
    shapes = {o["name"]: (o["shape"], o["datatype"]) for o in body["outputs"]}
    assert shapes == {"is_drift": ([1, 3], "INT64"), "distance": ([1, 3], "FP32"), "p_val": ([1, 3], "FP32"),
                      "threshold": ([1, 1], "FP64")}  # MLServer 1.7.1's, on the same folder and request


def test_a_pandas_request_is_decoded_by_its_content_type(served):
    columns = [{"name": f"c{i}", "shape": [5], "datatype": "FP32", "data": SHIFTED[:5, i].tolist()}
               for i in range(3)]
    answer = served.http.post("/v2/models/ks/infer", json={"parameters": {"content_type": "pd"}, "inputs": columns})
    assert answer.status_code == 200, answer.text
    _assert_answers_as(_outputs(answer.json()), _detector(served, "ks").predict(SHIFTED[:5]))


def test_batch_size_keeps_requests_until_the_batch_is_full(served):
    rows = np.c_[SHIFTED[:8, :2], RNG.integers(0, 3, (8, 1))].astype(np.float32)
    answers = [served.http.post("/v2/models/tab-batch/infer", json=_body(rows[2 * i:2 * i + 2])).json()
               for i in range(4)]
    assert [len(a["outputs"]) for a in answers] == [0, 0, 4, 0]  # the third fills the batch; then a new one
    assert answers[0]["parameters"] == {}  # as MLServer 1.7.1 answers a kept request
    _assert_answers_as(_outputs(answers[2]), _detector(served, "tab-batch").predict(rows[:6]))


def test_over_grpc(served):
    rows = SHIFTED[:5]
    tensor = triton.InferInput("x", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = served.grpc.infer("ks-feature", [tensor], client_timeout=TIMEOUT)
    prediction = _detector(served, "ks-feature").predict(rows, drift_type="feature")
    for key, value in _expected(prediction).items():
        assert np.allclose(result.as_numpy(key), value), key
    parameters = result.get_response().parameters
    assert parameters["name"].string_param == "KSDrift" and parameters["online"].bool_param is False
    with pytest.raises(InferenceServerException) as refused:
        narrow = triton.InferInput("x", [5, 2], "FP32")
        narrow.set_data_from_numpy(rows[:, :2].copy())
        served.grpc.infer("ks", [narrow], client_timeout=TIMEOUT)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_bad_input_is_a_400_and_the_model_serves_on(served):
    two = _body(SHIFTED[:2])
    two["inputs"].append({**two["inputs"][0], "name": "y"})
    refused = served.http.post("/v2/models/ks/infer", json=two)
    assert refused.status_code == 400 and "error" in refused.json()  # one input only, as MLServer's codec
    narrow = served.http.post("/v2/models/ks/infer", json=_body(SHIFTED[:5, :2]))
    assert narrow.status_code == 400 and "Invalid predict parameters for model ks" in narrow.json()["error"]
    # an unknown keyword in predict_parameters is the model's fault: 500, as MLServer
    unknown = served.http.post("/v2/models/ks-unknown-keyword/infer", json=_body(SHIFTED[:5]))
    assert unknown.status_code == 500 and "no_such_keyword" in unknown.json()["error"]
    assert served.http.post("/v2/models/ks/infer", json=_body(SHIFTED[:5])).status_code == 200


def test_broken_folder_and_misspelt_setting_are_not_ready_with_the_reason(served):
    index = {m["name"]: m for m in served.http.post("/v2/repository/index", json={}).json()}
    assert index["broken"]["state"] == "UNAVAILABLE"
    assert "Invalid configuration for model broken" in index["broken"]["reason"]
    assert index["ks-misspelt"]["state"] == "UNAVAILABLE" and "batch_sz" in index["ks-misspelt"]["reason"]
    assert served.http.post("/v2/models/broken/infer", json=_body(SHIFTED[:5])).status_code == 503
    assert index["ks"]["state"] == "READY"


def test_drift_is_recorded_in_the_seldon_model_drift_metric(served):
    labels = {"model_name": "ks-feature", "model_version": ""}
    before = REGISTRY.get_sample_value("seldon_model_drift_count", labels) or 0
    served.http.post("/v2/models/ks-feature/infer", json=_body(SHIFTED[:5]))
    assert REGISTRY.get_sample_value("seldon_model_drift_count", labels) == before + 3  # one per feature


# -- the runtime in process, as MLServer's own tests drive it --------------------------------------------

def _runtime(folder: Path, **extra):
    from mlserver_alibi_detect import AlibiDetectRuntime

    from gpuserve.mlserver.settings import ModelParameters, ModelSettings

    return AlibiDetectRuntime(ModelSettings(name="online", implementation=AlibiDetectRuntime,
                                            parameters=ModelParameters(uri=str(folder), extra=extra)))


def _request(rows):
    from gpuserve.mlserver.codecs import NumpyRequestCodec

    return NumpyRequestCodec.encode_request(np.asarray(rows, dtype=np.float32))


async def test_an_online_detector_steps_through_each_row_and_saves_its_state(tmp_path):
    from gpuserve.mlserver.alias import install

    install()
    detector = CVMDriftOnline(REF, ert=50, window_sizes=[10], n_bootstraps=2000, verbose=False)
    save_detector(detector, str(tmp_path / "cvm"))
    runtime = _runtime(tmp_path / "cvm", batch_size=50, state_save_freq=5)  # batch_size: ignored when online
    assert await runtime.load()
    one = await runtime.predict(_request(SHIFTED[:1]))
    shapes = {o.name: (o.shape, o.datatype) for o in one.outputs}
    assert shapes == {"is_drift": ([1, 1], "INT64"), "distance": ([1, 1], "BYTES"), "p_val": ([1, 1], "BYTES"),
                      "threshold": ([1, 1], "FP64"), "time": ([1, 1], "INT64"), "ert": ([1, 1], "FP64"),
                      "test_stat": ([1, 1, 3], "FP32")}  # MLServer 1.7.1's, None as a BYTES null
    assert not (tmp_path / "cvm" / "state").exists()
    many = await runtime.predict(_request(SHIFTED[1:13]))
    by_name = {o.name: o for o in many.outputs}
    assert list(by_name["time"].data.root if hasattr(by_name["time"].data, "root") else by_name["time"].data) == \
        list(range(2, 14))
    assert by_name["distance"].shape == [12, 1]
    assert (tmp_path / "cvm" / "state").is_dir()  # written at t=5 and t=10
    again = _runtime(tmp_path / "cvm", state_save_freq=5)
    await again.load()
    assert again._model.t == 10  # load_detector reads the saved state back


async def test_settings_from_extra_and_from_the_environment(tmp_path, monkeypatch):
    from gpuserve.mlserver.alias import install
    from pydantic import ValidationError

    install()
    save_detector(KSDrift(REF, p_val=0.05), str(tmp_path / "ks"))
    monkeypatch.setenv("MLSERVER_MODEL_ALIBI_DETECT_BATCH_SIZE", "2")
    runtime = _runtime(tmp_path / "ks")
    assert runtime._ad_settings.batch_size == 2 and runtime._ad_settings.state_save_freq == 100
    await runtime.load()
    assert (await runtime.predict(_request(SHIFTED[:3]))).outputs == []
    answer = await runtime.predict(_request(SHIFTED[3:6]))
    expected = load_detector(str(tmp_path / "ks")).predict(SHIFTED[:6])
    p_val = next(o for o in answer.outputs if o.name == "p_val")
    assert np.allclose(np.asarray(p_val.data.root if hasattr(p_val.data, "root") else p_val.data),
                       expected["data"]["p_val"])
    assert answer.parameters.headers == {"x-seldon-alibi-type": "drift", "x-seldon-alibi-method": "ks"}
    with pytest.raises(ValidationError):
        _runtime(tmp_path / "ks", state_save_freq=0)  # must be > 0, as MLServer's


def test_mlserver_alibi_detect_imports_where_the_package_is_absent(tmp_path):
    """`from mlserver_alibi_detect import AlibiDetectRuntime` (and `.runtime`) in a custom runtime's module
    means gpuserve's runtime, as `mlserver` means gpuserve.mlserver; a subclass in a model folder serves."""
    code = ("from gpuserve.mlserver.alias import install\n"
            "install()\n"
            "import mlserver_alibi_detect\n"
            "from mlserver_alibi_detect import AlibiDetectRuntime\n"
            "from mlserver_alibi_detect.runtime import AlibiDetectSettings, AlibiDetectRuntime as Same\n"
            "import gpuserve.runtimes_alibi_detect as ours\n"
            "assert AlibiDetectRuntime is Same is ours.AlibiDetectRuntime\n"
            "assert AlibiDetectSettings is ours.AlibiDetectSettings\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
    folder = _save(tmp_path, "custom", KSDrift(REF, p_val=0.05), implementation="models.Custom")
    (folder / "models.py").write_text("from mlserver_alibi_detect import AlibiDetectRuntime\n\n\n"
                                      "class Custom(AlibiDetectRuntime):\n    pass\n")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=TIMEOUT) as http:
            answer = http.post("/v2/models/custom/infer", json=_body(SHIFTED[:5]))
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-seldon-alibi-method"] == "ks"


def test_without_alibi_detect_the_reason_names_the_extra(monkeypatch):
    from gpuserve.errors import InvalidSettings
    from gpuserve.repository import _builtin_runtime

    monkeypatch.setitem(sys.modules, "alibi_detect", None)
    monkeypatch.setitem(sys.modules, "alibi_detect.saving", None)
    monkeypatch.delitem(sys.modules, "gpuserve.runtimes_alibi_detect", raising=False)
    with pytest.raises(InvalidSettings, match=r"gpuserve\[alibi-detect\]"):
        _builtin_runtime("mlserver_alibi_detect.AlibiDetectRuntime")


@needs_tf
async def test_an_outlier_detector_answers_as_mlservers_runtime(tmp_path):
    """A saved IForest (alibi-detect's legacy format, which needs TensorFlow to save) loaded by the runtime;
    MLServer 1.7.1's runtime answered the same request with these fields, field by field
    (benchmarks/peers/alibi_detect_outliers.py)."""
    from alibi_detect.od import IForest

    from gpuserve.mlserver.alias import install

    install()
    np.random.seed(0)  # IForest's IsolationForest draws from NumPy's global generator
    detector = IForest(threshold=0.0)
    detector.fit(REF)
    save_detector(detector, str(tmp_path / "iforest"))
    runtime = _runtime(tmp_path / "iforest", predict_parameters={"return_instance_score": True})
    await runtime.load()
    rows = SHIFTED[:4] * 3
    answer = await runtime.predict(_request(rows))
    expected = load_detector(str(tmp_path / "iforest")).predict(rows, return_instance_score=True)["data"]
    fields = {o.name: (o.shape, o.datatype) for o in answer.outputs}
    assert fields == {"instance_score": ([1, 4], "FP64"), "feature_score": ([1, 1], "BYTES"),
                      "is_outlier": ([1, 4], "INT64")}
    data = {o.name: list(o.data.root if hasattr(o.data, "root") else o.data) for o in answer.outputs}
    assert np.allclose(data["instance_score"], expected["instance_score"])
    assert data["is_outlier"] == expected["is_outlier"].tolist() and data["feature_score"] == [None]
    assert answer.parameters.headers == {"x-seldon-alibi-type": "outlier", "x-seldon-alibi-method": "isolationforest"}
    assert answer.parameters.detector_type == "outlier"


# -- OutlierAE / OutlierVAE: alibi-detect saves their weights with Keras 2 (`save_weights` to a TF checkpoint),
# which Keras 3 neither writes nor reads: saved and served in a subprocess where tf.keras is Keras 2 ----------

KERAS2_SCRIPT = """
import asyncio, json, sys
import numpy as np
import tensorflow as tf
assert tf.keras.Model.__module__.startswith("tf_keras"), tf.keras.Model  # Keras 2
from alibi_detect.od import OutlierAE, OutlierVAE
from alibi_detect.saving import load_detector, save_detector
from gpuserve.mlserver.alias import install
install()
from mlserver_alibi_detect import AlibiDetectRuntime
from gpuserve.mlserver.codecs import NumpyRequestCodec
from gpuserve.mlserver.settings import ModelParameters, ModelSettings

root, ref, rows = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3])
tf.keras.utils.set_random_seed(0)
layers = tf.keras.layers
def nets(latent):
    encoder = tf.keras.Sequential([layers.InputLayer(input_shape=(3,)), layers.Dense(latent, activation="relu")])
    decoder = tf.keras.Sequential([layers.InputLayer(input_shape=(2,)), layers.Dense(3)])
    return encoder, decoder
encoder, decoder = nets(2)
ae = OutlierAE(threshold=None, encoder_net=encoder, decoder_net=decoder)
ae.fit(ref, epochs=2, batch_size=32, verbose=False)
ae.infer_threshold(ref, threshold_perc=90)
encoder, decoder = nets(4)
vae = OutlierVAE(threshold=1.0, encoder_net=encoder, decoder_net=decoder, latent_dim=2, samples=4)
results = {}
async def serve(name, detector, predict_parameters):
    save_detector(detector, f"{root}/{name}")
    runtime = AlibiDetectRuntime(ModelSettings(name=name, implementation=AlibiDetectRuntime, parameters=ModelParameters(
        uri=f"{root}/{name}", extra={"predict_parameters": predict_parameters})))
    await runtime.load()
    loaded = load_detector(f"{root}/{name}")
    tf.keras.utils.set_random_seed(7)  # OutlierVAE samples its latent space (seeds from NumPy and TensorFlow)
    answer = await runtime.predict(NumpyRequestCodec.encode_request(rows))
    tf.keras.utils.set_random_seed(7)
    expected = loaded.predict(rows, **predict_parameters)
    outputs = {o.name: {"shape": o.shape, "datatype": o.datatype,
                        "data": list(o.data.root if hasattr(o.data, "root") else o.data)} for o in answer.outputs}
    values = {k: None if v is None else np.asarray(v).tolist() for k, v in expected["data"].items()}
    results[name] = {"outputs": outputs, "parameters": answer.parameters.model_dump(exclude_none=True),
                     "expected": values}
asyncio.run(serve("ae", ae, {"outlier_perc": 50}))
asyncio.run(serve("vae", vae, {"return_feature_score": False}))
print("RESULTS " + json.dumps(results, default=lambda v: v.item()))
"""


@pytest.fixture(scope="module")
def keras2_detectors(tmp_path_factory):
    """OutlierAE and OutlierVAE saved and served by the runtime under TF_USE_LEGACY_KERAS=1 (tf-keras), with the
    detector's own `predict` beside; their folders stay for the Keras 3 test below."""
    if not HAS_TF or importlib.util.find_spec("tf_keras") is None:
        pytest.skip("tensorflow and tf-keras are not installed")
    root = tmp_path_factory.mktemp("keras2")
    np.save(root / "ref.npy", REF)
    np.save(root / "rows.npy", np.r_[SHIFTED[:3] * 3, REF[:3]])
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", KERAS2_SCRIPT, str(root), str(root / "ref.npy"),
                           str(root / "rows.npy")], capture_output=True, text=True, timeout=180, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert done.returncode == 0 and lines, (done.stdout[-2000:], done.stderr[-3000:])
    return SimpleNamespace(root=root, results=json.loads(lines[0][len("RESULTS "):]))


@pytest.mark.parametrize("name, fields", [
    ("ae", {"instance_score": ([1, 6], "FP32"), "feature_score": ([1, 6, 3], "FP32"), "is_outlier": ([1, 6], "INT64")}),
    ("vae", {"instance_score": ([1, 6], "FP32"), "feature_score": ([1, 1], "BYTES"), "is_outlier": ([1, 6], "INT64")}),
])
def test_keras2_outlier_detectors_answer_as_their_predict(keras2_detectors, name, fields):
    result = keras2_detectors.results[name]
    outputs, expected = result["outputs"], result["expected"]
    assert {k: (o["shape"], o["datatype"]) for k, o in outputs.items()} == fields
    assert list(outputs) == list(expected)
    for key, value in expected.items():
        if value is None:
            assert outputs[key]["data"] == [None], key  # a BYTES null, as MLServer's codec
        else:
            assert np.allclose(outputs[key]["data"], np.ravel(value), atol=1e-6), key
    if name == "ae":
        assert 0 < sum(expected["is_outlier"]) < 6  # the threshold inferred from REF splits these rows
    assert result["parameters"]["headers"] == {"x-seldon-alibi-type": "outlier", "x-seldon-alibi-method": name}
    assert result["parameters"]["name"] == {"ae": "OutlierAE", "vae": "OutlierVAE"}[name]


async def test_a_keras2_detector_under_keras3_is_not_ready_and_says_why(keras2_detectors):
    import tensorflow as tf

    if not tf.keras.Model.__module__.startswith("keras.src"):
        pytest.skip("tf.keras is Keras 2 here (TF_USE_LEGACY_KERAS)")
    from gpuserve.mlserver.alias import install
    from gpuserve.mlserver.errors import MLServerError

    install()
    runtime = _runtime(keras2_detectors.root / "ae")
    with pytest.raises(MLServerError, match=r"Invalid configuration for model online: .*Keras 3.*TF_USE_LEGACY_KERAS"):
        await runtime.load()
