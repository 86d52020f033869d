"""`mlserver_mllib.MLlibModel`, MLServer's Spark MLlib runtime: `pyspark.mllib` models saved here with
`model.save(sc, path)` are served from their model-settings.json (`parameters.format` naming the class) and answer
what the model's own `predict` answers, as one FP32 output `predict`, over REST and gRPC; several MLlib models in
one server (one shared SparkContext: MLServer 1.7.1 fails the second), bad input (400), a broken folder or format
(not ready, with the reason; the others serve on), and no JVM left once the last model is unloaded. MLServer
1.7.1's own runtime answers none of these requests (a 500: it hands pyspark the TensorData object), see
benchmarks/peers/mllib_conformance.py. One SparkContext for the module (the runtime's own, shared with the
models the tests train)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

pytest.importorskip("pyspark")
if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java (17+ for pyspark 4): none on PATH or JAVA_HOME", allow_module_level=True)

import tritonclient.grpc as triton  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from conftest import free_ports, running_server  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402

# pyspark 4.3 warns that it does not yet fully support pandas 3; pyspark.mllib does not use pandas
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
RUNTIME = "mlserver_mllib.MLlibModel"
RNG = np.random.default_rng(5)
X = RNG.normal(size=(40, 4)).round(3)
Y = (X[:, 0] + X[:, 1] > 0).astype(float)
ROWS = RNG.normal(size=(6, 4)).round(3)
TIMEOUT = 60
# For these short-lived JVMs only (not the runtime's defaults): no C2 JIT nor SQL code generation, which cost more
# than they save in a test (the module runs in about two thirds of the time on two cores)
QUICK_JVM = {"PYSPARK_SUBMIT_ARGS": os.environ.get("PYSPARK_SUBMIT_ARGS") or (
    "--conf spark.sql.codegen.factoryMode=NO_CODEGEN --conf spark.sql.codegen.wholeStage=false "
    "--conf spark.sql.shuffle.partitions=1 --driver-java-options '-XX:TieredStopAtLevel=1 -XX:+UseSerialGC' "
    "pyspark-shell")}


def _settings(folder: Path, name: str, fmt, implementation=RUNTIME) -> None:
    parameters = {"uri": "./model"} if fmt is None else {"uri": "./model", "format": fmt}
    (folder / "model-settings.json").write_text(json.dumps({"name": name, "implementation": implementation,
                                                            "parameters": parameters}))


def _train(sc, root: Path) -> dict:
    """One model per kind MLServer's table reads, each saved with `save(sc, path)`: the trees trained, the others
    built from their parameters (training them costs seconds each on two cores; LBFGS ~20 s)."""
    from pyspark.mllib.classification import LogisticRegressionModel, NaiveBayesModel
    from pyspark.mllib.clustering import KMeansModel
    from pyspark.mllib.regression import IsotonicRegressionModel, LabeledPoint
    from pyspark.mllib.tree import DecisionTree, RandomForest

    points = sc.parallelize([LabeledPoint(label, row) for label, row in zip(Y, X)], 1)
    models = {
        "lr": ("LogisticRegression", LogisticRegressionModel([1.5, 1.2, -0.3, 0.1], 0.2, 4, 2)),
        "kmeans": ("KMeans", KMeansModel([[0.0] * 4, [1.0] * 4, [-1.0, 1.0, -1.0, 1.0]])),
        "nb": ("NaiveBayes", NaiveBayesModel(np.array([0.0, 1.0]), np.log([0.4, 0.6]),
                                             np.log([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]))),
        "isotonic": ("IsotonicRegression", IsotonicRegressionModel(np.array([-1.0, 0.0, 1.0]),
                                                                   np.array([0.0, 0.5, 2.0]), True)),
        "tree": ("DecisionTree", DecisionTree.trainClassifier(points, 2, {}, maxDepth=3)),
        "forest": ("RandomForest", RandomForest.trainRegressor(points, {}, numTrees=3, maxDepth=3, seed=1)),
    }
    for name, (fmt, model) in models.items():
        folder = root / name
        folder.mkdir()
        model.save(sc, str(folder / "model"))
        _settings(folder, name, fmt)
    return {name: model for name, (_, model) in models.items()}


@pytest.fixture(scope="module")
def spark():
    from gpuserve.runtimes_mllib import SPARK

    saved = os.environ.get("PYSPARK_SUBMIT_ARGS")
    os.environ.update(QUICK_JVM)  # read when the JVM starts, in the next line
    try:
        sc = SPARK.acquire()  # the runtime's shared context: the models served below use this one too
    finally:
        if saved is None:
            del os.environ["PYSPARK_SUBMIT_ARGS"]
        else:
            os.environ["PYSPARK_SUBMIT_ARGS"] = saved
    sc.setLogLevel("ERROR")
    try:
        yield sc
    finally:
        SPARK.release()


@pytest.fixture(scope="module")
def served(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("mllib")
    models = _train(spark, root)
    broken = root / "broken"
    (broken / "model").mkdir(parents=True)
    (broken / "model" / "metadata").write_text("not a saved model\n")
    _settings(broken, "broken", "LogisticRegression")
    for name, fmt in (("word2vec", "Word2Vec"), ("no-format", None)):
        shutil.copytree(root / "lr", root / name)
        _settings(root / name, name, fmt)
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=TIMEOUT) as http:
            with triton.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as grpc_client:
                yield SimpleNamespace(root=root, models=models, http=http, grpc=grpc_client)
    models.clear()  # the tree models hold JVM objects: let go of them while the JVM runs


def _body(values, datatype="FP64", name="x"):
    values = np.asarray(values)
    return {"inputs": [{"name": name, "shape": list(values.shape), "datatype": datatype,
                        "data": values.ravel().tolist()}]}


def _expected(model, values) -> list:
    values = np.asarray(values, dtype=float)
    if values.ndim == 1 and not hasattr(model, "boundaries"):
        values = values[None]
    return [float(model.predict(row)) for row in values]


@pytest.mark.parametrize("name", ["lr", "kmeans", "nb", "tree", "forest"])
def test_each_format_answers_as_the_model_itself(served, name):
    rows = np.abs(ROWS) if name == "nb" else ROWS
    one = served.http.post(f"/v2/models/{name}/infer", json=_body(rows[0]))
    assert one.status_code == 200, one.text
    output, = one.json()["outputs"]
    # MLServer's output: `predict`, FP32, shape [1] for one feature vector
    assert (output["name"], output["datatype"], output["shape"]) == ("predict", "FP32", [1])
    assert np.allclose(output["data"], _expected(served.models[name], rows[0]), atol=1e-6)
    many = served.http.post(f"/v2/models/{name}/infer", json=_body(rows, "FP32"))
    assert many.status_code == 200, many.text
    output, = many.json()["outputs"]
    assert output["shape"] == [len(rows)]  # one prediction per row (MLServer: one vector per request)
    assert np.allclose(output["data"], _expected(served.models[name], rows.astype(np.float32)), atol=1e-5)
    assert len(set(output["data"])) > 1  # not one answer repeated


def test_isotonic_regression_predicts_each_number(served):
    points = ROWS[:, 0]
    answer = served.http.post("/v2/models/isotonic/infer", json=_body(points))
    assert answer.status_code == 200, answer.text
    output, = answer.json()["outputs"]
    assert output["shape"] == [len(points)]
    assert np.allclose(output["data"], served.models["isotonic"].predict(points), atol=1e-6)


def test_many_mllib_models_serve_side_by_side_on_one_spark_context(served, spark):
    from pyspark import SparkContext

    from gpuserve.runtimes_mllib import SPARK

    index = {m["name"]: m["state"] for m in served.http.post("/v2/repository/index", json={}).json()}
    loaded = ["lr", "kmeans", "nb", "tree", "forest", "isotonic"]
    assert all(index[name] == "READY" for name in loaded), index
    assert SPARK.users == len(loaded) + 1  # the six models and this module
    assert SparkContext._active_spark_context is spark  # theirs is the one the models were trained on


def test_over_grpc(served):
    for name in ("lr", "forest"):
        tensor = triton.InferInput("x", list(ROWS.shape), "FP64")
        tensor.set_data_from_numpy(ROWS)
        result = served.grpc.infer(name, [tensor], client_timeout=TIMEOUT)
        assert result.as_numpy("predict").dtype == np.float32
        assert np.allclose(result.as_numpy("predict"), _expected(served.models[name], ROWS), atol=1e-6)
    with pytest.raises(InferenceServerException) as refused:
        narrow = triton.InferInput("x", [2, 3], "FP64")
        narrow.set_data_from_numpy(ROWS[:2, :3].copy())
        served.grpc.infer("lr", [narrow], client_timeout=TIMEOUT)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_bad_input_is_a_400_and_the_model_serves_on(served):
    two = _body(ROWS[:1])
    two["inputs"].append({**two["inputs"][0], "name": "y"})
    refused = served.http.post("/v2/models/lr/infer", json=two)
    assert refused.status_code == 400
    assert refused.json() == {"error": "MLlibModel only supports a single input tensor (2 were received)"}  # MLServer's
    narrow = served.http.post("/v2/models/lr/infer", json=_body(ROWS[:2, :3]))
    assert narrow.status_code == 400 and "dimension mismatch" in narrow.json()["error"]
    text = {"inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}
    words = served.http.post("/v2/models/kmeans/infer", json=text)
    assert words.status_code == 400 and "BYTES" in words.json()["error"]
    assert served.http.post("/v2/models/lr/infer", json=_body(ROWS[0])).status_code == 200


def test_broken_folder_and_bad_format_are_not_ready_with_the_reason(served):
    index = {m["name"]: m for m in served.http.post("/v2/repository/index", json={}).json()}
    assert index["broken"]["state"] == "UNAVAILABLE"
    assert "Invalid MLlib model for model broken" in index["broken"]["reason"]
    assert index["word2vec"]["state"] == "UNAVAILABLE"
    assert "Invalid MLlib format for model word2vec: 'Word2Vec' is not one of" in index["word2vec"]["reason"]
    assert "Invalid MLlib format for model no-format" in index["no-format"]["reason"]
    assert served.http.post("/v2/models/broken/infer", json=_body(ROWS[0])).status_code == 503
    assert index["lr"]["state"] == "READY"


# -- the runtime in process, as MLServer's own tests drive it --------------------------------------------

async def test_the_runtime_in_process_loads_predicts_and_lets_go(served):
    from gpuserve.mlserver.alias import install

    install()
    from mlserver_mllib import MLlibModel
    from mlserver_mllib.utils import get_mllib_load

    from gpuserve.mlserver.codecs import NumpyRequestCodec
    from gpuserve.mlserver.settings import ModelParameters, ModelSettings
    from gpuserve.runtimes_mllib import SPARK

    settings = ModelSettings(name="tree-here", implementation=MLlibModel,
                             parameters=ModelParameters(uri=str(served.root / "tree" / "model"), format="DecisionTree"))
    assert (await get_mllib_load(settings)).__self__.__name__ == "DecisionTreeModel"
    runtime = MLlibModel(settings)
    users = SPARK.users
    assert await runtime.load()
    assert SPARK.users == users + 1
    answer = await runtime.predict(NumpyRequestCodec.encode_request(ROWS[:3]))
    output, = answer.outputs
    assert output.name == "predict" and output.shape == [3] and output.datatype == "FP32"
    assert np.allclose(np.asarray(output.data.root, dtype=float), _expected(served.models["tree"], ROWS[:3]))
    await runtime.unload()
    assert SPARK.users == users  # the others keep the context


def test_mlserver_mllib_names_gpuserves_runtime():
    from gpuserve.mlserver.alias import install
    from gpuserve.repository import _builtin_runtime

    install()
    import mlserver_mllib
    from mlserver_mllib.errors import InvalidMLlibFormat
    from mlserver_mllib.mllib import MLlibModel

    import gpuserve.runtimes_mllib as ours

    assert mlserver_mllib.MLlibModel is MLlibModel is ours.MLlibModel
    assert InvalidMLlibFormat is ours.InvalidMLlibFormat
    assert _builtin_runtime(RUNTIME) is _builtin_runtime("mllib") is ours.MLlibModel


def test_without_pyspark_the_reason_names_the_extra(monkeypatch):
    from gpuserve.errors import InvalidSettings
    from gpuserve.repository import _builtin_runtime

    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.delitem(sys.modules, "gpuserve.runtimes_mllib", raising=False)
    with pytest.raises(InvalidSettings, match=r"gpuserve\[mllib\]"):
        _builtin_runtime(RUNTIME)


def test_without_java_the_reason_says_so(served):
    """A model whose Spark cannot start (no Java where JAVA_HOME points) is not ready, and the reason names Java."""
    code = ("import asyncio, sys\n"
            "from gpuserve.mlserver.settings import ModelParameters, ModelSettings\n"
            "from gpuserve.runtimes_mllib import MLlibModel\n"
            "runtime = MLlibModel(ModelSettings(name='lr', implementation=MLlibModel, parameters=ModelParameters(\n"
            "    uri=sys.argv[1], format='LogisticRegression')))\n"
            "try:\n"
            "    asyncio.run(runtime.load())\n"
            "except Exception as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(served.root / "lr" / "model")], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "JAVA_HOME": str(served.root / "no-java")})
    assert "cannot start Spark for the MLlib models (pyspark 4 needs Java 17+ on PATH or JAVA_HOME)" in done.stdout, \
        done.stderr[-2000:]


def _java_children(pid: int) -> list:
    """The JVMs `pid` started (from any of its threads: the model's own thread starts Spark's)."""
    children = [c for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return [c for c in children if "java" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc")
def test_the_server_started_from_the_command_line_leaves_no_jvm_behind(served):
    """`gpuserve start` on an MLlib model: it answers; unloading the last MLlib model ends the JVM while the
    server runs on; SIGTERM then exits 0."""
    root = served.root.parent / "cli-mllib"
    shutil.copytree(served.root / "forest", root / "forest")
    http, grpc_port, metrics = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", str(root), "--host", "127.0.0.1",
                             "--http-port", str(http), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **QUICK_JVM})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=TIMEOUT) as client:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read()[-3000:]
                try:
                    if client.get("/v2/models/forest/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            answer = client.post("/v2/models/forest/infer", json=_body(ROWS))
            assert answer.status_code == 200, answer.text
            assert np.allclose(answer.json()["outputs"][0]["data"], _expected(served.models["forest"], ROWS), atol=1e-6)
            assert len(_java_children(proc.pid)) == 1
            assert client.post("/v2/repository/models/forest/unload", json={}).status_code == 200
            assert _java_children(proc.pid) == []  # unload returned after the JVM exited
            assert client.get("/v2/health/live").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
