"""MLflow models served as MLServer's MLflow runtime serves them (gpuserve/runtimes_mlflow.py): the models
are saved here with MLflow itself (a custom PythonModel from code, a scikit-learn flavour), then served
from model-settings.json folders and asked over V2 and over MLflow's own scoring routes; answers are
checked against the model's own `predict`."""

from __future__ import annotations

import json
import sys
import textwrap

import httpx
import numpy as np
import pytest

from conftest import running_server
from mlflow_models import COLUMNS_MODEL, TENSORS_MODEL, nested_model
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

mlflow = pytest.importorskip("mlflow")
pd = pytest.importorskip("pandas")
pytest.importorskip("sklearn")

NESTED_MODEL = nested_model("list")


def _save_from_code(folder, source, signature):
    from mlflow.pyfunc import save_model

    folder.parent.mkdir(parents=True, exist_ok=True)
    code = folder.parent / "model_code.py"  # MLflow copies it into the model: models from code
    code.write_text(textwrap.dedent(source))
    save_model(str(folder), python_model=str(code), signature=signature)


def _settings(folder, name, **fields):
    (folder / "model-settings.json").write_text(json.dumps({"name": name, **fields}))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The repository: cols (a column signature with a parameter), tensors (named tensors), sk (a fitted
    LogisticRegression, scikit-learn flavour, found by its MLmodel without an implementation), broken."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import Schema, TensorSpec
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("mlflow")
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    _save_from_code(root / "cols" / "model", COLUMNS_MODEL,
                    infer_signature(frame, np.array([4.0, 6.0]), params={"scale": 1.0}))
    _settings(root / "cols", "cols", implementation="mlserver_mlflow.MLflowRuntime",
              parameters={"uri": "./model"})
    from mlflow.types.schema import Array, ColSpec, DataType

    nested = ModelSignature(Schema([ColSpec(Array(DataType.double), "items")]),
                            Schema([TensorSpec(np.dtype(np.float64), (-1,))]))
    _save_from_code(root / "nested" / "model", NESTED_MODEL, nested)
    _settings(root / "nested", "nested", implementation="mlflow", parameters={"uri": "./model"})
    spec = [TensorSpec(np.dtype(np.float32), (-1, 2), name) for name in ("x", "y")]
    outputs = [TensorSpec(np.dtype(np.float32), (-1, 2), name) for name in ("sum", "diff")]
    _save_from_code(root / "tensors" / "model", TENSORS_MODEL, ModelSignature(Schema(spec), Schema(outputs)))
    _settings(root / "tensors", "tensors", implementation="mlflow", parameters={"uri": "./model"})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    classifier = LogisticRegression().fit(x, (x[:, 0] + x[:, 1] > 0).astype(np.int64))
    import mlflow.sklearn

    mlflow.sklearn.save_model(classifier, str(root / "sk" / "model"), serialization_format="cloudpickle",
                              signature=infer_signature(x, classifier.predict(x)))
    _settings(root / "sk", "sk", parameters={"uri": "./model"})
    mlflow.sklearn.save_model(classifier, str(root / "bare"), serialization_format="cloudpickle")  # no settings
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=6, max_depth=4, random_state=0).fit(x, (x[:, 0] > 0.2) + (x[:, 1] > 0))
    mlflow.sklearn.save_model(forest, str(root / "forest" / "model"), serialization_format="cloudpickle",
                              signature=infer_signature(x, forest.predict(x)))
    _settings(root / "forest", "forest", implementation="mlflow", parameters={"uri": "./model"})
    (root / "broken" / "model").mkdir(parents=True)
    (root / "broken" / "model" / "MLmodel").write_text("flavors: [not, a, mapping\n")
    _settings(root / "broken", "broken", implementation="mlserver_mlflow.MLflowRuntime",
              parameters={"uri": "./model"})
    return root, classifier, forest


@pytest.fixture(scope="module")
def http(made):
    root = made[0]
    with running_server(repository=DiskRepository(root).populate(ModelRepository())) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=60) as client:
            yield client


def _column(name, values, datatype="FP64"):
    return {"name": name, "shape": [len(values), 1], "datatype": datatype, "data": values}


def test_columns_decode_as_a_dataframe_and_parameters_reach_predict(http):
    body = {"inputs": [_column("a", [1.0, 2.0]), _column("b", [3.0, 4.0])], "parameters": {"scale": 2.0}}
    answer = http.post("/v2/models/cols/infer", json=body)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["data"] == [8.0, 12.0] and output["datatype"] == "FP64"
    plain = http.post("/v2/models/cols/infer", json={"inputs": body["inputs"]}).json()
    assert plain["outputs"][0]["data"] == [4.0, 6.0]


def test_loading_models_saved_from_code_together_leaves_no_stand_in_module(http):
    """MLflow swaps a stand-in `dbutils` into sys.modules while it loads a model saved from code; three such
    models loading at once left one there for good (gpuserve/runtimes_mlflow.py loads one at a time)."""
    assert "dbutils" not in sys.modules


def test_the_signature_is_the_metadata(http):
    metadata = http.get("/v2/models/cols").json()
    assert metadata["inputs"] == [
        {"name": "a", "datatype": "FP64", "shape": [-1, 1], "parameters": {"content_type": "np"}},
        {"name": "b", "datatype": "FP64", "shape": [-1, 1], "parameters": {"content_type": "np"}}]
    assert metadata["parameters"] == {"content_type": "pd"}
    tensors = http.get("/v2/models/tensors").json()
    assert [(t["name"], t["datatype"], t["shape"]) for t in tensors["inputs"]] == [
        ("x", "FP32", [-1, 2]), ("y", "FP32", [-1, 2])]
    assert tensors["parameters"] == {"content_type": "dict"}
    assert http.get("/v2/models/sk").json()["parameters"] == {"content_type": "np"}


def test_a_column_of_arrays_travels_as_json_text(http):
    """MLServer's `pd_json` columns: the metadata says so, and each row's JSON text reaches the model as a list."""
    (items,) = http.get("/v2/models/nested").json()["inputs"]
    assert items == {"name": "items", "datatype": "BYTES", "shape": [-1, 1], "parameters": {"content_type": "pd_json"}}
    body = {"inputs": [{"name": "items", "shape": [2, 1], "datatype": "BYTES", "data": ["[1.0, 2.5]", "[3.0]"],
                        "parameters": {"content_type": "pd_json"}}]}
    answer = http.post("/v2/models/nested/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [3.5, 3.0]


def test_named_tensors_decode_as_a_dict_and_a_dict_answers_one_output_each(http):
    x = [[1.0, 2.0], [3.0, 4.0]]
    y = [[0.5, 0.5], [1.0, 1.0]]
    body = {"inputs": [{"name": n, "shape": [2, 2], "datatype": "FP32", "data": v} for n, v in (("x", x), ("y", y))]}
    answer = http.post("/v2/models/tensors/infer", json=body)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["sum"]["data"] == [1.5, 2.5, 4.0, 5.0] and outputs["sum"]["shape"] == [2, 2]
    assert outputs["diff"]["data"] == [0.5, 1.5, 2.0, 3.0]


@pytest.mark.parametrize("name", ["sk", "bare"])
def test_a_sklearn_flavour_found_by_its_mlmodel_answers_as_its_predict(http, made, name):
    """sk: settings naming only the uri; bare: a folder MLflow saved, without settings or a signature."""
    classifier = made[1]
    x = np.random.default_rng(1).normal(size=(7, 4))
    body = {"inputs": [{"name": "input-0", "shape": [7, 4], "datatype": "FP64", "data": x.ravel().tolist()}]}
    answer = http.post(f"/v2/models/{name}/infer", json=body)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["data"] == classifier.predict(x).tolist()


def test_a_forest_saved_by_mlflow_answers_as_its_predict_through_gpuserves_tree_walk(http, made):
    """The estimator MLflow's scikit-learn flavour calls predicts through gpuserve's walk of all the trees at
    once (gpuserve/runtimes_classic.py TreeShortcut): the forest's own answers, at every batch size."""
    import mlflow.pyfunc

    from gpuserve.runtimes_mlflow import _Walked, _walk_trees_here

    forest = made[2]
    loaded = mlflow.pyfunc.load_model(str(made[0] / "forest" / "model"))
    _walk_trees_here(loaded)
    assert isinstance(loaded._model_impl.sklearn_model, _Walked)
    for rows in (1, 5, 64, 600):  # 600: past the walk's max_rows, scikit-learn answers
        x = np.random.default_rng(rows).normal(size=(rows, 4))
        np.testing.assert_array_equal(loaded.predict(x), forest.predict(x))
        body = {"inputs": [{"name": "input-0", "shape": [rows, 4], "datatype": "FP64", "data": x.ravel().tolist()}]}
        answer = http.post("/v2/models/forest/infer", json=body)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == forest.predict(x).tolist()


def test_input_the_signature_refuses_is_a_400_and_a_broken_model_is_not_ready(http):
    answer = http.post("/v2/models/cols/infer", json={"inputs": [_column("a", [1.0])]})
    assert answer.status_code == 400 and "b" in answer.json()["error"], answer.text
    assert http.get("/v2/models/broken/ready").status_code != 200
    index = {m["name"]: m for m in http.post("/v2/repository/index", json={}).json()}
    assert index["broken"]["state"] == "UNAVAILABLE" and index["broken"]["reason"]
    assert http.get("/v2/models/cols/ready").status_code == 200


@pytest.fixture(scope="module")
def scoring(made, tmp_path_factory):
    """A server of the cols model alone: MLflow's scoring routes are one per server, as in MLServer."""
    import shutil

    root = tmp_path_factory.mktemp("scoring")
    shutil.copytree(made[0] / "cols", root / "cols")
    with running_server(repository=DiskRepository(root).populate(ModelRepository())) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=60) as client:
            yield client


def _predictions(answer) -> list:
    """MLflow's answer: its output schema makes this model's Series a one-column frame, written as records
    (`[{"0": 12.0}, ...]`), as `mlflow models serve` writes it."""
    return [next(iter(row.values())) if isinstance(row, dict) else row for row in answer.json()["predictions"]]


def test_mlflow_scoring_protocol(scoring):
    split = {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 3.0], [2.0, 4.0]]}, "params": {"scale": 3.0}}
    answer = scoring.post("/invocations", json=split)
    assert answer.status_code == 200 and _predictions(answer) == [12.0, 18.0], answer.text
    records = {"dataframe_records": [{"a": 1.0, "b": 1.0}]}
    assert _predictions(scoring.post("/invocations", json=records)) == [2.0]
    csv = scoring.post("/invocations", content=b"a,b\n1.0,2.0\n", headers={"content-type": "text/csv"})
    assert _predictions(csv) == [3.0]
    assert scoring.get("/ping").status_code == 200
    assert scoring.get("/version").text == mlflow.__version__


def test_mlflow_scoring_protocol_refusals(scoring):
    wrong_type = scoring.post("/invocations", content=b"a b", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415 and "text/csv" in wrong_type.json()["error"]
    missing = scoring.post("/invocations", json={"dataframe_records": [{"a": 1.0}]})
    assert missing.status_code == 400, missing.text
    assert missing.json()["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE") and missing.json()["error"]
    garbage = scoring.post("/invocations", content=b"{not json", headers={"content-type": "application/json"})
    assert garbage.status_code == 400 and "error" in garbage.json(), garbage.text
    deep = scoring.post("/invocations", content=b"[" * 10000 + b"]" * 10000,
                        headers={"content-type": "application/json"})
    assert deep.status_code == 400 and "too deeply" in deep.json()["error"], deep.text


def test_without_mlflow_the_reason_names_the_extra(monkeypatch):
    from gpuserve.errors import InvalidSettings
    from gpuserve.repository import _builtin_runtime

    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.pyfunc", None)
    monkeypatch.delitem(sys.modules, "gpuserve.runtimes_mlflow", raising=False)
    with pytest.raises(InvalidSettings, match=r"gpuserve\[mlflow\]"):
        _builtin_runtime("mlserver_mlflow.MLflowRuntime")



@pytest.mark.parametrize("workers", [0, 1])
def test_adaptive_batching_batches_only_requests_asking_with_the_same_params(made, tmp_path, workers, caplog):
    """An MLflow model's `params` apply to a whole predict call: batched requests that asked with different
    scales would share one (or, as gpuserve's batching lists each request's value, be refused by MLflow's
    check): each gets the answer its own scale gives, in process and from a parallel worker."""
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    shutil.copytree(made[0] / "cols", tmp_path / "cols")
    _settings(tmp_path / "cols", "cols", implementation="mlserver_mlflow.MLflowRuntime", parameters={"uri": "./model"},
              parallel_workers=workers, max_batch_size=16, max_batch_time=0.05)
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=60) as client:
            def ask(index):
                scale = [1.0, 2.0, 3.0][index % 3]
                body = {"inputs": [_column("a", [float(index)]), _column("b", [1.0])], "parameters": {"scale": scale}}
                answer = client.post("/v2/models/cols/infer", json=body)
                return answer.status_code, answer.json(), (index + 1.0) * scale

            with ThreadPoolExecutor(12) as pool:
                for status, answer, want in pool.map(ask, range(36)):
                    assert status == 200 and answer["outputs"][0]["data"] == [want], answer
        formed = server.registered_models.get_model("cols")._adaptive_batcher.batches_formed
        assert any(rows > 1 for rows in formed), formed  # some requests did share a batch
    # and no batch failed MLflow's check of its params (each of its requests then ran again alone)
    assert not [r for r in caplog.records if "running each request alone" in r.getMessage()]


def test_in_a_parallel_worker_with_adaptive_batching(made, tmp_path):
    """The runtime in a worker process (MLServer's parallel_workers), batched adaptively: both routes answer."""
    import shutil

    shutil.copytree(made[0] / "cols", tmp_path / "cols")
    _settings(tmp_path / "cols", "cols", implementation="mlserver_mlflow.MLflowRuntime", parameters={"uri": "./model"},
              parallel_workers=1, max_batch_size=4, max_batch_time=0.01)
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=60) as client:
            body = {"inputs": [_column("a", [1.0, 2.0]), _column("b", [3.0, 4.0])], "parameters": {"scale": 2.0}}
            answer = client.post("/v2/models/cols/infer", json=body)
            assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [8.0, 12.0], answer.text
            split = {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 3.0]]}}
            assert _predictions(client.post("/invocations", json=split)) == [4.0]
