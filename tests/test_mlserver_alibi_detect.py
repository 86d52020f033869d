"""`mlserver_alibi_detect.AlibiDetectRuntime`, MLServer's Alibi-Detect runtime: detectors saved here with
`save_detector` are served from their model-settings.json and answer what the detector's own `predict` answers,
encoded as MLServer 1.7.1's runtime encodes it (checked against it: benchmarks/peers/alibi_detect_conformance.py),
over REST and gRPC; `batch_size`, online detectors and their saved state, the settings and their refusals, bad
input (400) and a broken folder (not ready, with the reason; the others serve on)."""

from __future__ import annotations

import json
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
])
def test_drift_detectors_answer_as_their_predict(served, name, rows, datatype, kwargs):
    answer = served.http.post(f"/v2/models/{name}/infer", json=_body(rows, datatype))
    assert answer.status_code == 200, answer.text
    prediction = _detector(served, name).predict(np.asarray(rows), **kwargs)
    _assert_answers_as(_outputs(answer.json()), prediction)
    assert answer.json()["parameters"] == {k: v for k, v in prediction["meta"].items() if v is not None}
    method = {"ks": "ks", "ks-feature": "ks", "tab": "tabular", "chi": "chisquare"}[name]
    assert answer.headers["x-seldon-alibi-type"] == "drift"
    assert answer.headers["x-seldon-alibi-method"] == method


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


async def test_an_outlier_detector_answers_as_mlservers_runtime(tmp_path):
    """Saving an outlier detector needs TensorFlow (alibi-detect's legacy format), so a fitted IForest replaces
    the loaded one; MLServer 1.7.1's runtime answered the same request with these fields, field by field
    (benchmarks/peers/alibi_detect_outliers.py)."""
    from alibi_detect.od import IForest

    from gpuserve.mlserver.alias import install

    install()
    save_detector(KSDrift(REF, p_val=0.05), str(tmp_path / "ks"))
    runtime = _runtime(tmp_path / "ks", predict_parameters={"return_instance_score": True})
    await runtime.load()
    runtime._model = detector = IForest(threshold=0.0)
    detector.fit(REF)
    rows = SHIFTED[:4] * 3
    answer = await runtime.predict(_request(rows))
    expected = detector.predict(rows.astype(np.float32), return_instance_score=True)["data"]
    fields = {o.name: (o.shape, o.datatype) for o in answer.outputs}
    assert fields == {"instance_score": ([1, 4], "FP64"), "feature_score": ([1, 1], "BYTES"),
                      "is_outlier": ([1, 4], "INT64")}
    data = {o.name: list(o.data.root if hasattr(o.data, "root") else o.data) for o in answer.outputs}
    assert np.allclose(data["instance_score"], expected["instance_score"])
    assert data["is_outlier"] == expected["is_outlier"].tolist() and data["feature_score"] == [None]
    assert answer.parameters.headers == {"x-seldon-alibi-type": "outlier", "x-seldon-alibi-method": "isolationforest"}
    assert answer.parameters.detector_type == "outlier"
