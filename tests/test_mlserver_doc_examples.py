"""MLServer 1.7.1's documented examples (docs/examples: sklearn, xgboost, mms, model-repository, content-type,
custom-json, conda; user-guide: adaptive batching), re-expressed in our own code on tiny models trained here.

Each flow was run side by side against MLServer 1.7.1 with the examples' own folders and requests; these
tests pin the answers where gpuserve had differed: what metadata and the repository index list for a
model-settings.json model, the empty 200 of load/unload, the id of a gRPC request without one, what a
runtime prints with `.dict()`, the version label of MLServer's request metrics, and quiet workers on Ctrl+C.
"""

from __future__ import annotations

import json
import re
import signal
import textwrap

import httpx
import numpy as np

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

TIMEOUT = 30

# docs/examples/content-type, the first runtime (its `_to_exclude` keeps parameters printed, less headers)
ECHO_RUNTIME = """
import json
from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.codecs import DecodedParameterName

_to_exclude = {
    "parameters": {DecodedParameterName, "headers"},
    'inputs': {"__all__": {"parameters": {DecodedParameterName, "headers"}}}
}

class EchoRuntime(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = []
        for request_input in payload.inputs:
            decoded_input = self.decode(request_input)
            print(f"------ Encoded Input ({request_input.name}) ------")
            as_dict = request_input.dict(exclude=_to_exclude)  # type: ignore
            print(json.dumps(as_dict, indent=2))
            print(f"------ Decoded input ({request_input.name}) ------")
            print(decoded_input)
            outputs.append(ResponseOutput(name=request_input.name, datatype=request_input.datatype,
                                          shape=request_input.shape, data=request_input.data))
        return InferenceResponse(model_name=self.name, outputs=outputs)
"""

# what a parallel worker does with SIGINT, asked from inside the worker
SIGNAL_RUNTIME = """
import signal
from mlserver import MLModel
from mlserver.types import InferenceResponse, ResponseOutput

class Probe(MLModel):
    async def predict(self, payload):
        ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="sigint_ignored", shape=[1], datatype="BOOL", data=[ignored])])
"""


def _models_folder(root):
    """docs/examples/mms and model-repository: two models, settings without `uri` (well-known file names)."""
    import joblib
    import xgboost as xgb
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    (root / "mnist-svm").mkdir()
    joblib.dump(LogisticRegression().fit(x, y), root / "mnist-svm" / "model.joblib")
    (root / "mnist-svm" / "model-settings.json").write_text(json.dumps(
        {"name": "mnist-svm", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"version": "v0.1.0"}}))
    (root / "mushroom-xgboost").mkdir()
    booster = xgb.train({"max_depth": 2, "eta": 1, "objective": "binary:logistic"}, xgb.DMatrix(x, label=y), 2)
    booster.save_model(str(root / "mushroom-xgboost" / "model.json"))
    (root / "mushroom-xgboost" / "model-settings.json").write_text(json.dumps(
        {"name": "mushroom-xgboost", "implementation": "mlserver_xgboost.XGBoostModel",
         "parameters": {"version": "v0.1.0"}}))
    return x


def _runtime(root, name, source, **settings):
    folder = root / name
    folder.mkdir()
    (folder / "runtime.py").write_text(textwrap.dedent(source))
    (folder / "model-settings.json").write_text(json.dumps({"name": name, **settings}))


def _index(http):
    reply = httpx.post(f"{http}/v2/repository/index", json={}, timeout=TIMEOUT)
    return {m["name"]: m for m in reply.json()}


def test_model_repository_example_index_unload_load_and_metadata(tmp_path):
    x = _models_folder(tmp_path)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        http = f"http://127.0.0.1:{server.ports['http']}"
        request = {"inputs": [{"name": "predict", "shape": [1, 8], "datatype": "FP32", "data": x[0].tolist()}]}
        for name in ("mnist-svm", "mushroom-xgboost"):  # the mms example's two requests
            assert httpx.post(f"{http}/v2/models/{name}/versions/v0.1.0/infer", json=request).status_code == 200
            # MLServer's runtimes answer metadata from model-settings.json alone
            assert httpx.get(f"{http}/v2/models/{name}").json() == {
                "name": name, "versions": [], "platform": "", "inputs": [], "outputs": [], "parameters": {}}
        assert _index(http)["mushroom-xgboost"] == {
            "name": "mushroom-xgboost", "version": "v0.1.0", "state": "READY", "reason": ""}

        unload = httpx.post(f"{http}/v2/repository/models/mushroom-xgboost/unload")
        assert (unload.status_code, unload.content, unload.headers.get("content-type")) == (200, b"", None)
        assert _index(http)["mushroom-xgboost"] == {
            "name": "mushroom-xgboost", "version": "v0.1.0", "state": "UNAVAILABLE", "reason": ""}

        load = httpx.post(f"{http}/v2/repository/models/mushroom-xgboost/load", timeout=TIMEOUT)
        assert (load.status_code, load.content, load.headers.get("content-type")) == (200, b"", None)
        assert _index(http)["mushroom-xgboost"]["state"] == "READY"


def test_grpc_request_without_id_is_answered_with_an_empty_id_as_mlserver(tmp_path):
    # MLServer makes up an id for a REST request only; over gRPC the proto's "" reaches the runtime and
    # comes back (custom-json's gRPC client prints the response: no `id` line)
    import tritonclient.grpc as triton

    x = _models_folder(tmp_path)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        tensor = triton.InferInput("predict", [1, 8], "FP32")
        tensor.set_data_from_numpy(x[:1])
        assert client.infer("mnist-svm", [tensor]).get_response().id == ""
        assert client.infer("mnist-svm", [tensor], request_id="mine").get_response().id == "mine"
        rest = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/mnist-svm/infer",
                          json={"inputs": [{"name": "predict", "shape": [1, 8], "datatype": "FP32",
                                            "data": x[0].tolist()}]}).json()
        assert re.fullmatch(r"[0-9a-f-]{36}", rest["id"])


def test_content_type_example_prints_what_mlserver_prints(tmp_path, capsys):
    # model-settings.json inputs give the content types; the runtime prints request_input.dict(...), which
    # keeps None fields as pydantic's (and so MLServer's) dict() does
    _runtime(tmp_path, "content-type-example", ECHO_RUNTIME, implementation="runtime.EchoRuntime", inputs=[
        {"name": "metadata-np", "datatype": "INT32", "shape": [2, 2], "parameters": {"content_type": "np"}},
        {"name": "metadata-str", "datatype": "BYTES", "shape": [11], "parameters": {"content_type": "str"}}])
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    payload = {"inputs": [{"name": "metadata-np", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]},
                          {"name": "metadata-str", "datatype": "BYTES", "shape": [11], "data": "hello world 😁"}]}
    with running_server(repository=registry) as server:
        http = f"http://127.0.0.1:{server.ports['http']}"
        assert httpx.post(f"{http}/v2/models/content-type-example/infer", json=payload).status_code == 200
        assert httpx.get(f"{http}/v2/models/content-type-example").json()["parameters"] == {}
    printed = capsys.readouterr().out
    np_part = printed.split("------ Encoded Input (metadata-np) ------\n")[1].split("------ Decoded")[0]
    assert json.loads(np_part) == {"name": "metadata-np", "shape": [2, 2], "datatype": "INT32",
                                   "parameters": {"content_type": None}, "data": [1, 2, 3, 4]}
    assert "------ Decoded input (metadata-str) ------\n['hello world 😁']" in printed


def test_dict_and_json_keep_none_fields_as_pydantic_does():
    from gpuserve.mlserver.types import InferenceRequest, Parameters, RequestInput

    request = InferenceRequest(inputs=[RequestInput(name="a", shape=[1], datatype="INT32", data=[1],
                                                    parameters=Parameters(content_type="np"))])
    assert request.dict() == {"id": None, "parameters": None, "outputs": None, "inputs": [
        {"name": "a", "shape": [1], "datatype": "INT32", "data": [1],
         "parameters": {"content_type": "np", "headers": None}}]}
    assert json.loads(request.json())["outputs"] is None
    assert "outputs" not in request.model_dump()  # the dumps MLServer's own code uses still leave them out
    assert request.dict(exclude_none=True)["inputs"][0]["parameters"] == {"content_type": "np"}


def test_unversioned_model_index_and_request_metrics_as_mlserver(tmp_path):
    # custom-json's model-settings.json names no version: MLServer's index leaves `version` out and its
    # request counters say version="None"
    _runtime(tmp_path, "probe", SIGNAL_RUNTIME, implementation="runtime.Probe", parallel_workers=1)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        http = f"http://127.0.0.1:{server.ports['http']}"
        answer = httpx.post(f"{http}/v2/models/probe/infer", json={"inputs": [
            {"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]}, timeout=TIMEOUT).json()
        # the worker leaves Ctrl+C (SIGINT to the whole process group) to the server, as MLServer's do
        assert answer["outputs"][0]["data"] == [True]
        assert _index(http)["probe"] == {"name": "probe", "state": "READY", "reason": ""}
        text = httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/metrics").text
        assert re.search(r'^model_infer_request_success_total\{model="probe",version="None"\} 1(\.0)?$', text, re.M)
        assert httpx.post(f"{http}/v2/repository/models/probe/unload").status_code == 200
        assert _index(http)["probe"] == {"name": "probe", "state": "UNAVAILABLE", "reason": ""}
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # only the workers ignore it
