"""MLServer runtimes, as MLServer's documentation writes them, served by a real gpuserve.

The model folders in `tests/mlserver_examples/` (custom runtimes: advanced and simplified
interfaces, headers, a runtime reading `parameters.uri`; a scikit-learn folder naming
`mlserver_sklearn.SKLearnModel`; a runtime whose load raises) are copied to a temporary repository
and served once for the module. Every answer is checked over V2 REST (httpx) and gRPC
(tritonclient), against values computed here.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from conftest import free_ports, running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

EXAMPLES = Path(__file__).resolve().parent / "mlserver_examples"
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 30
WEIGHTS = np.array([1.0, 2.0, 3.0])  # advanced/model-settings.json
SAMPLES = {"a": 0.5, "bM": 0.25, "bA": -0.75}  # uri/numpyro-divorce.json


def copy_examples(root: Path) -> Path:
    shutil.copytree(EXAMPLES, root, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("README.md", "__pycache__"))
    return root


def train_classifier(folder: Path):
    """A tiny 3-class LogisticRegression on synthetic data, saved as MLServer expects it."""
    import joblib
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    x = rng.normal(size=(90, 4))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    model = LogisticRegression(max_iter=500).fit(x, y)
    joblib.dump(model, folder / "model.joblib")
    return model, x


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = copy_examples(tmp_path_factory.mktemp("mlserver-models"))
    classifier, features = train_classifier(root / "sklearn")
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server:
        http = httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=TIMEOUT)
        with triton.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as grpc_client:
            yield SimpleNamespace(server=server, http=http, grpc=grpc_client, registry=registry,
                                  classifier=classifier, features=features, root=root)
        http.close()


def grpc_input(name, array, datatype=None, content_type=None):
    array = np.asarray(array)
    if datatype is None:
        datatype = "BYTES" if array.dtype == object else triton.np_to_triton_dtype(array.dtype)
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    if content_type:  # tritonclient has no setter for input parameters; the message has the field
        tensor._get_tensor().parameters["content_type"].string_param = content_type
    return tensor


def grpc_outputs(result):
    """{name: (parameters, array)} from a tritonclient result."""
    response = result.get_response()
    return {o.name: ({k: v.string_param for k, v in o.parameters.items()}, result.as_numpy(o.name))
            for o in response.outputs}


def by_name(body):
    return {o["name"]: o for o in body["outputs"]}


def texts(array):
    return [x.decode() if isinstance(x, bytes) else x for x in np.asarray(array).ravel()]


# -- the repository: ready models, and the one that failed with its reason ---------------------------

def test_index_reports_the_broken_runtime_with_its_reason(served):
    index = {m["name"]: m for m in served.http.post("/v2/repository/index", json={}).json()}
    assert set(index) == {"advanced", "dataframe", "content-type-example", "simplified", "headers",
                          "numpyro-divorce", "iris", "broken"}
    assert index["broken"]["state"] == "UNAVAILABLE" and "weights file is corrupt" in index["broken"]["reason"]
    assert all(m["state"] == "READY" for name, m in index.items() if name != "broken")
    grpc_index = {m.name: m for m in served.grpc.get_model_repository_index().models}
    assert grpc_index["broken"].state == "UNAVAILABLE" and "weights file is corrupt" in grpc_index["broken"].reason
    assert served.grpc.is_model_ready("advanced") and not served.grpc.is_model_ready("broken")

    reply = served.http.post("/v2/models/broken/infer", json={
        "inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]})
    assert reply.status_code == 503 and "weights file is corrupt" in reply.json()["error"]
    with pytest.raises(InferenceServerException) as failure:
        served.grpc.infer("broken", [grpc_input("x", np.array([1], np.int32))], client_timeout=TIMEOUT)
    assert "UNAVAILABLE" in str(failure.value.status()) and "weights file is corrupt" in failure.value.message()


# -- advanced interface: decode / encode with codecs and model metadata -----------------------------

def test_advanced_interface_over_rest(served):
    x = np.array([[1.0, 0.5, 2.0], [0.0, -1.0, 4.0]])
    body = served.http.post("/v2/models/advanced/infer", json={"id": "req-1", "inputs": [
        {"name": "x", "shape": [2, 3], "datatype": "FP64", "data": x.ravel().tolist()},
        {"name": "labels", "shape": [2, 1], "datatype": "BYTES", "data": ["cat", "dog"]}]}).json()
    assert body["id"] == "req-1" and body["model_version"] == "v1"
    outputs = by_name(body)
    assert outputs["scores"]["shape"] == [2, 1] and outputs["scores"]["parameters"] == {"content_type": "np"}
    assert np.allclose(outputs["scores"]["data"], x @ WEIGHTS)
    # "labels" had no content type on the wire: the model's metadata says str
    assert outputs["labels"]["data"] == ["CAT", "DOG"] and outputs["labels"]["shape"] == [2, 1]

    # a custom codec registered by the runtime's module, chosen by the input's content type
    tenths = served.http.post("/v2/models/advanced/infer", json={"inputs": [
        {"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [10, 20, 30],
         "parameters": {"content_type": "tenths"}}]}).json()
    assert np.allclose(by_name(tenths)["scores"]["data"], [1 * 1 + 2 * 2 + 3 * 3])

    # as MLServer: a request's `outputs` list does not filter (or refuse) what a runtime's predict returns
    both = served.http.post("/v2/models/advanced/infer", json={"inputs": [
        {"name": "x", "shape": [2, 3], "datatype": "FP64", "data": x.ravel().tolist()},
        {"name": "labels", "shape": [2, 1], "datatype": "BYTES", "data": ["cat", "dog"]}],
        "outputs": [{"name": "not-an-output"}]})
    assert both.status_code == 200 and set(by_name(both.json())) == {"scores", "labels"}


def test_repository_index_parses_as_mlservers_own_type(served):
    from mlserver.types import RepositoryIndexResponse  # gpuserve's alias where MLServer is not installed

    index = RepositoryIndexResponse.model_validate_json(served.http.post("/v2/repository/index", json={}).content)
    assert {item.name for item in index.root} >= {"advanced", "content-type-example"}
    assert all(item.reason == "" for item in index.root if item.state == "READY")


def test_advanced_interface_over_grpc(served):
    x = np.array([[1.0, 0.5, 2.0], [0.0, -1.0, 4.0]])
    labels = np.array([[b"cat"], [b"dog"]], dtype=object)
    result = served.grpc.infer("advanced", [grpc_input("x", x), grpc_input("labels", labels)],
                               request_id="req-2", client_timeout=TIMEOUT)
    assert result.get_response().id == "req-2" and result.get_response().model_version == "v1"
    outputs = grpc_outputs(result)
    assert outputs["scores"][0] == {"content_type": "np"}
    assert np.allclose(outputs["scores"][1], (x @ WEIGHTS).reshape(2, 1))
    assert texts(outputs["labels"][1]) == ["CAT", "DOG"]

    tenths = served.grpc.infer("advanced", [grpc_input("x", np.array([[10.0, 20.0, 30.0]]), content_type="tenths")],
                               client_timeout=TIMEOUT)
    assert np.allclose(tenths.as_numpy("scores"), [[14.0]])


def test_metadata_comes_from_model_settings(served):
    meta = served.http.get("/v2/models/advanced").json()
    # as MLServer 1.7.1: `versions` is the settings' own list, which parameters.version does not fill
    assert meta["name"] == "advanced" and meta["versions"] == [] and meta["parameters"] == {}
    assert meta["inputs"] == [{"name": "labels", "datatype": "BYTES", "shape": [-1, 1],
                               "parameters": {"content_type": "str"}}]
    grpc_meta = served.grpc.get_model_metadata("advanced")
    assert [(t.name, t.datatype, list(t.shape)) for t in grpc_meta.inputs] == [("labels", "BYTES", [-1, 1])]


# -- request codecs: decode_request by the model's content type, encode_response ----------------------

def test_dataframe_runtime_over_rest_and_grpc(served):
    a, b, names = [1, 2, 3], [0.5, 1.0, -2.0], ["x", "y", "z"]
    body = served.http.post("/v2/models/dataframe/infer", json={"inputs": [
        {"name": "a", "shape": [3, 1], "datatype": "INT64", "data": a},
        {"name": "b", "shape": [3, 1], "datatype": "FP64", "data": b},
        {"name": "name", "shape": [3, 1], "datatype": "BYTES", "data": names}]}).json()
    assert body["parameters"] == {"content_type": "pd"}
    outputs = by_name(body)
    assert list(outputs) == ["a", "b", "name", "total"]
    assert outputs["total"]["data"] == [1.5, 3.0, 1.0] and outputs["name"]["data"] == ["x!", "y!", "z!"]

    # binary BYTES arrive as bytes; the metadata's content type (str) still makes the column text
    result = served.grpc.infer("dataframe", [
        grpc_input("a", np.array([[1], [2], [3]], np.int64)), grpc_input("b", np.array([[0.5], [1.0], [-2.0]])),
        grpc_input("name", np.array([[b"x"], [b"y"], [b"z"]], dtype=object))], client_timeout=TIMEOUT)
    assert result.get_response().parameters["content_type"].string_param == "pd"
    assert np.allclose(result.as_numpy("total").ravel(), [1.5, 3.0, 1.0])
    assert texts(result.as_numpy("name")) == ["x!", "y!", "z!"]


# -- the content-type example: raw data passed straight back ----------------------------------------

def test_echo_runtime_over_rest_and_grpc(served):
    body = served.http.post("/v2/models/content-type-example/infer", json={"inputs": [
        {"name": "parameters-np", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4],
         "parameters": {"content_type": "np"}},
        {"name": "parameters-str", "datatype": "BYTES", "shape": [1], "data": "hello world ",
         "parameters": {"content_type": "str"}}]}).json()
    outputs = by_name(body)
    assert outputs["parameters-np"] == {"name": "parameters-np", "shape": [2, 2], "datatype": "INT32",
                                        "data": [1, 2, 3, 4]}
    assert len(body["id"]) == 36  # as MLServer: a request without an id gets a UUID, echoed in the answer
    assert outputs["parameters-str"]["data"] == ["hello world "]

    result = served.grpc.infer("content-type-example", [
        grpc_input("parameters-np", np.array([[1, 2], [3, 4]], np.int32), content_type="np"),
        grpc_input("parameters-str", np.array([b"hello world "], dtype=object), content_type="str")],
        client_timeout=TIMEOUT)
    assert np.array_equal(result.as_numpy("parameters-np"), [[1, 2], [3, 4]])
    assert texts(result.as_numpy("parameters-str")) == ["hello world "]


# -- simplified interface: @decode_args with two List[str] inputs and an np.ndarray output -----------

QUESTIONS = ["what is the capital of france", "who wrote the book"]
CONTEXT = ["paris is the capital of france", "the book was written by her"]
OVERLAP = [len(set(q.split()) & set(c.split())) for q, c in zip(QUESTIONS, CONTEXT)]


def test_simplified_interface_over_rest(served):
    from gpuserve.mlserver.codecs import StringCodec
    from gpuserve.mlserver.types import InferenceRequest, InferenceResponse

    request = InferenceRequest(inputs=[StringCodec.encode_input("questions", QUESTIONS, use_bytes=False),
                                       StringCodec.encode_input("context", CONTEXT, use_bytes=False)])
    reply = served.http.post("/v2/models/simplified/infer", json=request.dict())
    assert reply.status_code == 200, reply.text
    response = InferenceResponse.parse_raw(reply.text)
    assert [o.name for o in response.outputs] == ["output-0"]
    output = response.outputs[0]
    assert output.datatype == "INT64" and output.shape == [2, 1] and output.parameters.content_type == "np"
    assert list(output.data) == OVERLAP


def test_simplified_interface_over_grpc(served):
    questions = np.array([[q.encode()] for q in QUESTIONS], dtype=object)
    context = np.array([[c.encode()] for c in CONTEXT], dtype=object)
    result = served.grpc.infer("simplified", [grpc_input("questions", questions), grpc_input("context", context)],
                               client_timeout=TIMEOUT)
    assert np.array_equal(result.as_numpy("output-0"), np.array(OVERLAP, np.int64).reshape(2, 1))


def test_simplified_interface_names_the_inputs_it_wants(served):
    only_one = served.http.post("/v2/models/simplified/infer", json={"inputs": [
        {"name": "questions", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]}]})
    assert only_one.status_code == 400 and "'context'" in only_one.json()["error"]
    unknown = served.http.post("/v2/models/simplified/infer", json={"inputs": [
        {"name": "questions", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]},
        {"name": "context", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]},
        {"name": "extra", "shape": [1], "datatype": "INT32", "data": [1]}]})
    assert unknown.status_code == 400 and "'extra'" in unknown.json()["error"]
    with pytest.raises(InferenceServerException) as failure:
        served.grpc.infer("simplified", [grpc_input("questions", np.array([[b"hi"]], dtype=object))],
                          client_timeout=TIMEOUT)
    assert "INVALID_ARGUMENT" in str(failure.value.status())


# -- headers: request headers in payload.parameters.headers, response headers back to the client -----

def test_headers_over_rest(served):
    reply = served.http.post("/v2/models/headers/infer", headers={"X-Request-Tag": "abc-123"}, json={
        "inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]})
    assert reply.status_code == 200, reply.text
    assert reply.headers["foo"] == "bar" and reply.headers["x-echo-tag"] == "abc-123"
    body = reply.json()
    assert by_name(body)["tag"]["data"] == ["abc-123"]
    assert "headers" not in (body.get("parameters") or {})  # they travel as HTTP headers, not in the body


def test_request_metadata_reaches_the_runtime_over_grpc(served):
    result = served.grpc.infer("headers", [grpc_input("x", np.array([1], np.int32))],
                               headers={"x-request-tag": "grpc-7"}, client_timeout=TIMEOUT)
    assert texts(result.as_numpy("tag")) == ["grpc-7"]
    assert "headers" not in result.get_response().parameters


def test_response_headers_reach_the_client_over_grpc(served):
    from gpuserve.server.grpc import inference_pb2 as pb
    from gpuserve.server.grpc import inference_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name="headers")
    request.inputs.add(name="x", datatype="INT32", shape=[1]).contents.int_contents.append(1)
    with grpc.insecure_channel(f"127.0.0.1:{served.server.ports['grpc']}") as channel:
        _, call = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer.with_call(
            request, metadata=[("x-request-tag", "t")], timeout=TIMEOUT)
    metadata = dict(call.initial_metadata()) | dict(call.trailing_metadata())
    assert metadata.get("foo") == "bar" and metadata.get("x-echo-tag") == "t"


# -- a runtime reading self.settings.parameters.uri (the docs' numpyro example) -----------------------

def test_uri_runtime_over_rest_and_grpc(served):
    marriage, age = 28.0, 30.0
    body = served.http.post("/v2/models/numpyro-divorce/infer", json={"inputs": [
        {"name": "marriage", "shape": [1], "datatype": "FP64", "data": [marriage]}]}).json()
    output = by_name(body)["output-0"]
    assert output["shape"] == [1, 1] and np.allclose(output["data"], [SAMPLES["a"] + SAMPLES["bM"] * marriage])

    result = served.grpc.infer("numpyro-divorce", [grpc_input("marriage", np.array([marriage])),
                                                   grpc_input("age", np.array([age]))], client_timeout=TIMEOUT)
    expected = SAMPLES["a"] + SAMPLES["bM"] * marriage + SAMPLES["bA"] * age
    assert np.allclose(result.as_numpy("output-0"), [[expected]])


# -- mlserver_sklearn.SKLearnModel: predict and predict_proba ------------------------------------------

def test_sklearn_outputs_over_rest(served):
    x = served.features[:5]
    rows = {"name": "input-0", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}
    default = served.http.post("/v2/models/iris/infer", json={"inputs": [rows]}).json()
    assert default["model_version"] == "v0.1.0" and [o["name"] for o in default["outputs"]] == ["predict"]
    predict = default["outputs"][0]
    assert predict["shape"] == [5, 1] and predict["data"] == served.classifier.predict(x).tolist()

    both = served.http.post("/v2/models/iris/infer", json={
        "inputs": [rows], "outputs": [{"name": "predict_proba"}, {"name": "predict"}]}).json()
    outputs = by_name(both)
    assert [o["name"] for o in both["outputs"]] == ["predict_proba", "predict"]
    assert outputs["predict_proba"]["shape"] == [5, 3]
    assert np.allclose(outputs["predict_proba"]["data"], served.classifier.predict_proba(x).ravel())

    unknown = served.http.post("/v2/models/iris/infer", json={"inputs": [rows], "outputs": [{"name": "decide"}]})
    assert unknown.status_code == 400 and "predict_proba" in unknown.json()["error"]
    wrong_width = served.http.post("/v2/models/iris/infer", json={"inputs": [
        {"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]})
    assert wrong_width.status_code == 400

    v1 = served.http.post("/v1/models/iris:predict", json={"instances": x.tolist()}).json()
    assert v1["predictions"] == served.classifier.predict(x).tolist()


def test_sklearn_outputs_over_grpc(served):
    x = served.features[5:9]
    result = served.grpc.infer("iris", [grpc_input("input-0", x)],
                               outputs=[triton.InferRequestedOutput("predict"),
                                        triton.InferRequestedOutput("predict_proba")], client_timeout=TIMEOUT)
    assert np.array_equal(result.as_numpy("predict").ravel(), served.classifier.predict(x))
    assert np.allclose(result.as_numpy("predict_proba"), served.classifier.predict_proba(x))
    default = served.grpc.infer("iris", [grpc_input("input-0", x)], client_timeout=TIMEOUT)
    assert [o.name for o in default.get_response().outputs] == ["predict"]


# -- MLServer is V2 only; repository reloads rebuild runtimes ------------------------------------------

def test_v1_body_to_a_runtime_is_a_clear_400(served):
    reply = served.http.post("/v1/models/advanced:predict", json={"instances": [[1, 2, 3]]})
    assert reply.status_code == 400 and "/v2/models/advanced/infer" in reply.json()["error"]


def test_reload_rebuilds_a_runtime_from_its_folder(served):
    # three example folders each hold a `models.py`; the reload must import this folder's one
    assert served.http.post("/v2/repository/models/simplified/load").status_code == 200
    assert served.http.post("/v2/repository/models/advanced/load").status_code == 200
    body = served.http.post("/v2/models/advanced/infer", json={"inputs": [
        {"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 1, 1]}]}).json()
    assert by_name(body)["scores"]["data"] == [6.0]
    simplified = served.grpc.infer("simplified", [grpc_input("questions", np.array([[b"a b"]], dtype=object)),
                                                  grpc_input("context", np.array([[b"b a"]], dtype=object))],
                                   client_timeout=TIMEOUT)
    assert simplified.as_numpy("output-0").tolist() == [[2]]


# -- adaptive batching: MLModel runtimes are merged and split like any custom model -------------------

async def test_adaptive_batching_merges_and_splits_mlmodel_requests(tmp_path):
    from gpuserve.adaptive import AdaptiveBatcher
    from gpuserve.mlserver import MLModel
    from gpuserve.mlserver.codecs import NumpyCodec
    from gpuserve.mlserver.types import InferenceResponse, Parameters
    from gpuserve.settings import ModelSettings
    from gpuserve.types import InferRequest

    gate = asyncio.Event()

    class Doubler(MLModel):
        batches = []

        async def predict(self, payload):
            x = NumpyCodec.decode_input(payload.inputs[0])
            self.batches.append(len(x))
            await gate.wait()  # the first call holds the model busy while the others queue
            tags = payload.inputs[0].parameters.tag  # merged: one value per request
            output = NumpyCodec.encode_output("y", x * 2)
            output.parameters = Parameters(content_type="np", tag=[f"{t}!" for t in tags])
            return InferenceResponse(model_name=self.name, outputs=[output])

    adapter = Doubler.__gpuserve_adapter__(ModelSettings(name="doubler", max_batch_size=16))
    assert await adapter.load()
    batcher = AdaptiveBatcher(adapter, 16)
    requests = []
    for i in range(4):
        request = InferRequest.from_numpy("doubler", {"x": np.full((i + 1, 2), float(i))})
        request.inputs[0].parameters["tag"] = f"r{i}"
        requests.append(request)
    try:
        first = InferRequest.from_numpy("doubler", {"x": np.zeros((1, 2))})
        first.inputs[0].parameters["tag"] = ["b"]
        busy = asyncio.ensure_future(batcher.submit(first, {}))
        while not Doubler.batches:
            await asyncio.sleep(0)
        pending = [asyncio.ensure_future(batcher.submit(r, {})) for r in requests]
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.wait_for(busy, TIMEOUT)
        results = await asyncio.wait_for(asyncio.gather(*pending), TIMEOUT)
    finally:
        await batcher.stop()
    assert Doubler.batches == [1, 1 + 2 + 3 + 4]
    for i, (response, _) in enumerate(results):
        output = response.outputs[0]
        assert np.array_equal(output.as_numpy(), np.full((i + 1, 2), 2.0 * i))
        assert output.parameters["tag"] == f"r{i}!"


# -- parallel workers: needs the instantiate hook inside each spawned worker ----------------------------

def test_parallel_workers_serve_an_mlmodel_runtime(tmp_path):
    folder = tmp_path / "simplified"
    shutil.copytree(EXAMPLES / "simplified", folder)
    settings = json.loads((folder / "model-settings.json").read_text())
    (folder / "model-settings.json").write_text(json.dumps({**settings, "parallel_workers": 2}))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        assert registry.get_model("simplified").ready, registry.get_model("simplified").reason
        body = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/simplified/infer", timeout=TIMEOUT,
                          json={"inputs": [{"name": "questions", "shape": [1, 1], "datatype": "BYTES", "data": ["a b"]},
                                           {"name": "context", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]})
        assert body.json()["outputs"][0]["data"] == [1]


# -- `gpuserve start FOLDER`, as MLServer users run `mlserver start FOLDER` ------------------------------

BOOT = """
import sys
from gpuserve.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _wait_ready(base, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gpuserve exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("gpuserve was not ready in time")


def test_gpuserve_start_serves_the_examples_folder(tmp_path):
    root = copy_examples(tmp_path / "models")
    classifier, features = train_classifier(root / "sklearn")
    http_port, grpc_port, metrics_port = free_ports(3)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", BOOT, "start", str(root), "--host", "127.0.0.1",
                             "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                             "--metrics-port", str(metrics_port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    base = f"http://127.0.0.1:{http_port}"
    try:
        _wait_ready(base, proc)
        simplified = httpx.post(f"{base}/v2/models/simplified/infer", timeout=TIMEOUT, json={"inputs": [
            {"name": "questions", "shape": [2, 1], "datatype": "BYTES", "data": QUESTIONS},
            {"name": "context", "shape": [2, 1], "datatype": "BYTES", "data": CONTEXT}]}).json()
        assert simplified["outputs"][0]["data"] == OVERLAP
        with triton.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            result = client.infer("iris", [grpc_input("input-0", features[:3])],
                                  outputs=[triton.InferRequestedOutput("predict_proba")], client_timeout=TIMEOUT)
            assert np.allclose(result.as_numpy("predict_proba"), classifier.predict_proba(features[:3]))
            assert not client.is_model_ready("broken")
        headers = httpx.post(f"{base}/v2/models/headers/infer", headers={"x-request-tag": "cli"}, timeout=TIMEOUT,
                             json={"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]})
        assert headers.headers["x-echo-tag"] == "cli"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
