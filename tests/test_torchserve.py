"""TorchServe model archives on gpuserve (KServe's PyTorch runtime is TorchServe): .mar archives built here with
zipfile (and torch-model-archiver's CLI where installed) around a TorchScript model, served from each repository
form (a bare NAME.mar, NAME/NAME.mar, NAME/<n>/*.mar, an extracted folder, KServe's config/ + model-store/),
answers compared with the direct torch call, TorchServe's inference and management API (bodies, error JSON and
statuses as TorchServe 0.12 gave them to a probe handler: see server/torchserve_api.py), KServe V1/V2 on the same
models, batchSize/maxBatchDelay batching under concurrent requests. Skipped without torch; the built-in-handler
test needs torchserve."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

from conftest import running_server  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402

CLASS_HANDLER = '''
import json, os
import torch
try:
    from ts.torch_handler.base_handler import BaseHandler
except ImportError:  # the same handler where torchserve is not installed
    BaseHandler = None


class LinearHandler(BaseHandler or object):
    """Rows of 4 floats -> rows of 3: BaseHandler's initialize (TorchScript load) and handle where it exists."""

    if BaseHandler is None:
        def initialize(self, context):
            folder = context.system_properties["model_dir"]
            self.model = torch.jit.load(os.path.join(folder, context.manifest["model"]["serializedFile"]))

        def handle(self, data, context):
            with torch.no_grad():
                return self.postprocess(self.model(self.preprocess(data)))

    def preprocess(self, data):
        log = os.environ.get("TS_TEST_BATCH_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{len(data)} {os.getpid()}\\n")
        rows = []
        for row in data:
            value = row.get("data") if row.get("data") is not None else row.get("body")
            rows.append(json.loads(value) if isinstance(value, (bytes, bytearray)) else value)
        return torch.tensor(rows, dtype=torch.float32)

    def postprocess(self, out):
        return out.tolist()
'''

FUNCTION_HANDLER = '''
import json, os
import torch

model = None


def handle(data, context):
    global model
    if model is None:
        props = context.system_properties
        model = torch.jit.load(os.path.join(props["model_dir"], context.manifest["model"]["serializedFile"]))
    if data is None:
        return None
    out = []
    for i, row in enumerate(data):
        value = row.get("data") if row.get("data") is not None else row.get("body")
        if isinstance(value, (bytes, bytearray)):
            value = json.loads(value)
        if value == "fail":
            raise ValueError("the handler fails on purpose")
        with torch.no_grad():
            out.append({"y": model(torch.tensor([value], dtype=torch.float32))[0].tolist(),
                        "id": context.get_request_id(i)})
    return out
'''

ECHO_HANDLER = '''
def describe(value):
    if isinstance(value, (bytes, bytearray)):
        return [type(value).__name__, bytes(value).decode("latin-1")]
    return [type(value).__name__, value]


def echo(data, context):
    if data is None:
        return None
    out = []
    for i, row in enumerate(data):
        body = row.get("body")
        if body == "teapot":
            context.set_response_status(418, "teapot", idx=i)
            context.set_response_content_type(i, "text/plain")
            out.append("short and stout")
        elif body == "bytes":
            out.append(b"\\x00\\x01")
        else:
            out.append({"row": {k: describe(v) for k, v in row.items()},
                        "ct": context.get_request_header(i, "Content-Type"), "n": len(data)})
    return out
'''


HEADERS_HANDLER = '''
def handle(data, context):
    if data is None:
        return None
    return [{k.lower(): v for k, v in context.request_processor[i].get_request_properties().items()}
            for i in range(len(data))]
'''


STREAM_HANDLER = '''
from ts.handler_utils.utils import send_intermediate_predict_response


def handle(data, context):
    if data is None:
        return None
    for step in range(3):
        send_intermediate_predict_response([f"part {step} of {i};" for i in range(len(data))], context.request_ids,
                                           "Intermediate Prediction success", 200, context)
    return ["done" for _ in data]
'''


def _linear(seed: int):
    torch.manual_seed(seed)
    return torch.jit.script(torch.nn.Linear(4, 3).eval())


def make_mar(path: Path, name: str, handler_src: str, handler: str = "handler.py", version: str = "1.0",
             seed: int = 0, extracted: bool = False, config_yaml: str = ""):
    """A .mar as torch-model-archiver lays it out (MAR-INF/MANIFEST.json, the serialized file, the handler, and
    with `config_yaml` a model-config.yaml its manifest names, as `--config-file` adds one)."""
    model = _linear(seed)
    scratch = path.parent / f".{path.name}.files"
    scratch.mkdir(parents=True, exist_ok=True)
    model.save(str(scratch / "model.pt"))
    manifest = {"runtime": "python", "archiverVersion": "0.12.0", "model": {
        "modelName": name, "serializedFile": "model.pt", "handler": handler, "modelVersion": version}}
    if config_yaml:
        manifest["model"]["configFile"] = "model-config.yaml"
    files = {"MAR-INF/MANIFEST.json": json.dumps(manifest).encode(), "model.pt": (scratch / "model.pt").read_bytes()}
    if config_yaml:
        files["model-config.yaml"] = config_yaml.encode()
    if handler_src:
        files[handler.split(":")[0]] = handler_src.encode()
    shutil.rmtree(scratch)
    if extracted:
        for member, data in files.items():
            (path / member).parent.mkdir(parents=True, exist_ok=True)
            (path / member).write_bytes(data)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w") as zf:
            for member, data in files.items():
                zf.writestr(member, data)
    return model


def reference(model, rows) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(rows, dtype=torch.float32)).numpy()


def _repository(root: Path) -> dict:
    refs = {"lin": make_mar(root / "lin.mar", "lin", CLASS_HANDLER, seed=1),  # bare NAME.mar: the modelName
            "fn": make_mar(root / "fn" / "fn.mar", "fn", FUNCTION_HANDLER, seed=2),  # NAME/NAME.mar
            "ver": make_mar(root / "ver" / "3" / "any.mar", "whatever", CLASS_HANDLER, seed=3),  # NAME/<n>/*.mar
            "open": make_mar(root / "open", "open", FUNCTION_HANDLER, seed=4, extracted=True)}  # extracted folder
    make_mar(root / "echo.mar", "echo", ECHO_HANDLER, handler="echo.py:echo")
    make_mar(root / "headers.mar", "headers", HEADERS_HANDLER)
    (root / "bad.mar").write_bytes(b"not a zip")
    make_mar(root / "nohandler.mar", "nohandler", "", handler="missing_module_xyz.py")
    return refs


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("ts-repo")
    refs = _repository(root)
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=60) as client:
            yield client, refs


# GET /models/NAME on TorchServe 0.12 (benchmarks/peers/torchserve_conformance.py compares the whole answer)
TS_DESCRIBE_KEYS = ["modelName", "modelVersion", "modelUrl", "runtime", "minWorkers", "maxWorkers", "batchSize",
                    "maxBatchDelay", "responseTimeout", "startupTimeout", "maxRetryTimeoutInSec",
                    "clientTimeoutInMills", "parallelType", "parallelLevel", "deviceType", "continuousBatching",
                    "useJobTicket", "useVenv", "stateful", "sequenceMaxIdleMSec", "sequenceTimeoutMSec",
                    "maxNumSequence", "maxSequenceJobQueueSize", "loadedAtStartup", "workers", "jobQueueStatus"]


def test_forms_listed_and_described(served):
    client, _ = served
    listed = client.get("/models")
    assert listed.status_code == 200
    names = {m["modelName"]: m["modelUrl"] for m in listed.json()["models"]}
    assert {"lin", "fn", "ver", "open", "echo", "bad", "nohandler"} <= set(names)
    assert names["lin"] == "lin.mar"
    described = client.get("/models/lin").json()
    assert described[0]["modelName"] == "lin" and described[0]["modelVersion"] == "1.0"
    assert described[0]["workers"][0]["status"] == "READY" and described[0]["batchSize"] == 1
    assert list(described[0]) == TS_DESCRIBE_KEYS  # TorchServe 0.12's fields, in its order
    assert described[0]["loadedAtStartup"] is True and described[0]["responseTimeout"] == 120
    assert described[0]["jobQueueStatus"] == {"remainingCapacity": 100, "pendingRequests": 0}
    assert client.get("/models/ver").json()[0]["modelVersion"] == "3"
    assert client.get("/models/lin/1.0").status_code == 200
    missing = client.get("/models/nope")
    assert missing.status_code == 404  # TorchServe 0.12's body, indented as it writes it
    assert missing.text == json.dumps({"code": 404, "type": "ModelNotFoundException",
                                       "message": "Model not found: nope"}, indent=2)
    ping = client.get("/ping")
    assert ping.status_code == 200 and ping.json() == {"status": "Healthy"}


@pytest.mark.parametrize("name", ["lin", "fn", "ver", "open"])
def test_predictions_match_torch(served, name):
    client, refs = served
    rows = np.random.default_rng(7).standard_normal((3, 4)).round(4).tolist()
    for row, want in zip(rows, reference(refs[name], rows)):
        answer = client.post(f"/predictions/{name}", json=row)
        assert answer.status_code == 200, answer.text
        assert "content-type" not in answer.headers  # TorchServe sets none unless the handler does
        got = answer.json()
        np.testing.assert_allclose(got["y"] if isinstance(got, dict) else got, want, rtol=1e-5, atol=1e-6)
    raw = client.post(f"/predictions/{name}", content=json.dumps(rows[0]).encode(),
                      headers={"content-type": "application/octet-stream"})  # {"body": bytearray}
    assert raw.status_code == 200


def test_versions_addressed_by_text(served):
    client, _ = served
    assert client.post("/predictions/lin/1.0", json=[1, 2, 3, 4]).status_code == 200
    assert client.post("/predictions/ver/3", json=[1, 2, 3, 4]).status_code == 200
    wrong = client.post("/predictions/lin/9.0", json=[1, 2, 3, 4])
    assert wrong.status_code == 404 and wrong.json() == {"code": 404, "type": "ModelVersionNotFoundException",
                                                         "message": "Model version: 9.0 does not exist for model: lin"}
    assert client.post("/v2/models/lin/versions/1.0/infer", json={"inputs": [
        {"name": "x", "shape": [1], "datatype": "BYTES", "data": ["[1, 2, 3, 4]"]}]}).status_code == 200


def test_kserve_v1_and_v2(served):
    client, refs = served
    rows = np.random.default_rng(3).standard_normal((5, 4)).round(4).tolist()
    v1 = client.post("/v1/models/lin:predict", json={"instances": [{"data": r} for r in rows]})
    assert v1.status_code == 200, v1.text
    np.testing.assert_allclose(v1.json()["predictions"], reference(refs["lin"], rows), rtol=1e-5, atol=1e-6)
    v2 = client.post("/v2/models/lin/infer", json={"inputs": [
        {"name": "x", "shape": [5, 4], "datatype": "FP32", "data": rows}]})
    assert v2.status_code == 200, v2.text
    out = v2.json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [5]
    np.testing.assert_allclose([json.loads(x) for x in out["data"]], reference(refs["lin"], rows), rtol=1e-4,
                               atol=1e-5)


def test_bodies_as_torchserve_builds_them(served):
    client, _ = served
    raw = client.post("/predictions/echo", content=b"abc", headers={"content-type": "application/octet-stream"}).json()
    assert raw["row"] == {"body": ["bytearray", "abc"]} and raw["ct"] == "application/octet-stream"
    assert client.post("/predictions/echo", content=b"hi", headers={"content-type": "text/plain"}).json()["row"] \
        == {"body": ["str", "hi"]}
    assert client.post("/predictions/echo", json={"a": [1, 2]}).json()["row"] == {"body": ["dict", {"a": [1, 2]}]}
    broken_json = client.post("/predictions/echo", content=b'{"a": [1', headers={"content-type": "application/json"})
    assert broken_json.json()["row"] == {"body": ["bytearray", '{"a": [1']}
    form = client.post("/predictions/echo", files={"data": ("f.bin", b"\x01\x02")}, data={"x": "12"}).json()
    assert form["row"] == {"data": ["bytearray", "\x01\x02"], "x": ["bytearray", "12"]} and form["n"] == 1
    teapot = client.post("/predictions/echo", content=b"teapot", headers={"content-type": "text/plain"})
    assert teapot.status_code == 418 and teapot.text == "short and stout"
    assert teapot.headers["content-type"] == "text/plain"
    got = client.post("/predictions/echo", content=b"bytes", headers={"content-type": "text/plain"})
    assert got.content == b"\x00\x01"
    # POST takes the fast path (server/rest/fast_path.py), PUT the web framework's route: the same answers
    for body, kind in ((b"abc", "application/octet-stream"), (b"teapot", "text/plain"),
                       (b'{"a": 1}', "application/json")):
        fast = client.post("/predictions/echo/1.0", content=body, headers={"content-type": kind})
        routed = client.put("/predictions/echo/1.0", content=body, headers={"content-type": kind})
        assert (fast.status_code, fast.content, fast.headers.get("content-type")) == \
            (routed.status_code, routed.content, routed.headers.get("content-type"))
    fast, routed = client.post("/predictions/nope", content=b"x"), client.put("/predictions/nope", content=b"x")
    assert (fast.status_code, fast.text) == (routed.status_code, routed.text) == (404, fast.text)
    # the request's headers as TorchServe 0.12's Netty frontend hands them over: Content-Length always (a GET
    # without a body too), "explain" and "url_path", the body's own {"content-type"}
    seen = client.get("/predictions/headers", headers={"X-Custom": "yes"}).json()
    assert seen["content-length"] == "0" and seen["x-custom"] == "yes" and "transfer-encoding" not in seen
    assert (seen["explain"], seen["url_path"], seen["body"]) == ("False", "", {"content-type": ""})


def test_errors_and_the_server_keeps_serving(served):
    client, _ = served
    failed = client.post("/predictions/fn", json="fail")
    assert failed.status_code == 503  # TorchServe 0.12 answers a handler's exception so
    assert failed.json() == {"code": 503, "type": "InternalServerException", "message": "Prediction failed"}
    unknown = client.post("/predictions/nope", content=b"x")
    assert unknown.status_code == 404 and unknown.json()["type"] == "ModelNotFoundException"
    for name, words in (("bad", "not a zip"), ("nohandler", "missing_module_xyz")):
        ready = client.get(f"/v2/models/{name}/ready")
        assert ready.status_code != 200
        index = {m["name"]: m for m in client.post("/v2/repository/index", json={}).json()}
        assert words in index[name]["reason"], index[name]
        refused = client.post(f"/predictions/{name}", json=[1, 2, 3, 4])
        assert refused.status_code == 503 and refused.json()["type"] == "ServiceUnavailableException"
    assert client.post("/predictions/fn", json=[1, 2, 3, 4]).status_code == 200


def _kserve_layout(root: Path, batch: int, delay_ms: int, workers: int = 1) -> Path:
    (root / "config").mkdir(parents=True)
    make_mar(root / "model-store" / "lin.mar", "lin", CLASS_HANDLER, seed=1)
    snapshot = {"name": "startup.cfg", "modelCount": 1, "models": {"lin": {"1.0": {
        "defaultVersion": True, "marName": "lin.mar", "minWorkers": workers, "maxWorkers": workers,
        "batchSize": batch, "maxBatchDelay": delay_ms}}}}
    (root / "config" / "config.properties").write_text(
        "inference_address=http://0.0.0.0:8085\nmodel_store=/mnt/models/model-store\n"  # KServe's own lines
        f"model_snapshot={json.dumps(snapshot)}\n")
    return root


def _post_all(url: str, rows: list) -> list:
    """Each row POSTed as JSON at once, a thread each: their JSON answers in order."""
    results = [None] * len(rows)

    def call(i):
        results[i] = httpx.post(url, json=rows[i], timeout=60).json()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(rows))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_kserve_layout_batches_concurrent_requests(tmp_path, monkeypatch):
    log = tmp_path / "batches.txt"
    monkeypatch.setenv("TS_TEST_BATCH_LOG", str(log))
    root = _kserve_layout(tmp_path / "kserve", batch=4, delay_ms=300)
    ref = _linear(1)
    rows = np.random.default_rng(11).standard_normal((8, 4)).round(4).tolist()
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server:
        results = _post_all(f"http://127.0.0.1:{server.ports['http']}/predictions/lin", rows)
        described = httpx.get(f"http://127.0.0.1:{server.ports['http']}/models/lin").json()[0]
        stats = httpx.get(f"http://127.0.0.1:{server.ports['http']}/v2/models/lin/stats").json()["model_stats"][0]
    np.testing.assert_allclose(results, reference(ref, rows), rtol=1e-5, atol=1e-6)
    sizes = [int(line.split()[0]) for line in log.read_text().splitlines()]
    assert sum(sizes) == len(rows) and max(sizes) > 1 and max(sizes) <= 4, sizes
    # Triton's statistics count the handler's calls as executions of the batches they took
    assert (stats["inference_count"], stats["execution_count"]) == (len(rows), len(sizes))
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]} == \
        {size: sizes.count(size) for size in set(sizes)}
    assert stats["inference_stats"]["success"]["count"] == stats["inference_stats"]["queue"]["count"] == len(rows)
    assert described["batchSize"] == 4 and described["maxBatchDelay"] == 300
    # a model KServe's model_snapshot names is restored, not loaded at startup, in TorchServe's describe
    assert described["loadedAtStartup"] is False and list(described) == TS_DESCRIBE_KEYS


def test_min_workers_are_worker_processes(tmp_path, monkeypatch):
    """minWorkers 2: two worker processes, each with the handler loaded (TorchServe's workers), batches answered
    by both; describe lists both."""
    log = tmp_path / "pids.txt"
    monkeypatch.setenv("TS_TEST_BATCH_LOG", str(log))
    root = _kserve_layout(tmp_path / "kserve", batch=2, delay_ms=50, workers=2)
    ref = _linear(1)
    rows = np.random.default_rng(12).standard_normal((16, 4)).round(4).tolist()
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server:
        base = f"http://127.0.0.1:{server.ports['http']}"
        results = _post_all(f"{base}/predictions/lin", rows)
        described = httpx.get(f"{base}/models/lin").json()[0]
        v1 = httpx.post(f"{base}/v1/models/lin:predict", json={"instances": [{"data": r} for r in rows[:2]]},
                        timeout=60).json()
    np.testing.assert_allclose(results, reference(ref, rows), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v1["predictions"], reference(ref, rows[:2]), rtol=1e-5, atol=1e-6)
    assert (described["minWorkers"], len(described["workers"])) == (2, 2)
    pids = {line.split()[1] for line in log.read_text().splitlines()}
    assert len(pids) == 2 and str(os.getpid()) not in pids, pids  # both workers, neither the server's process


def test_builtin_handler_needs_torchserve(tmp_path):
    """`base_handler` is TorchServe's own: with torchserve, V1 instances (rows) go through its
    preprocess/inference/postprocess; without it the model is not ready and says what to install."""
    ref = make_mar(tmp_path / "base.mar", "base", "", handler="base_handler", seed=5)
    rows = np.random.default_rng(5).standard_normal((2, 4)).round(4).tolist()
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        base = f"http://127.0.0.1:{server.ports['http']}"
        answer = httpx.post(f"{base}/v1/models/base:predict", json={"instances": rows}, timeout=60)
        try:
            import ts  # noqa: F401
        except ImportError:
            index = httpx.post(f"{base}/v2/repository/index", json={}).json()
            assert "gpuserve[torchserve]" in index[0]["reason"]
            return
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], reference(ref, rows), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(shutil.which("torch-model-archiver") is None and
                    not (Path(sys.executable).parent / "torch-model-archiver").exists(),
                    reason="torch-model-archiver is not installed")
def test_archive_built_by_torch_model_archiver(tmp_path):
    cli = shutil.which("torch-model-archiver") or str(Path(sys.executable).parent / "torch-model-archiver")
    src = tmp_path / "src"
    src.mkdir()
    ref = _linear(9)
    ref.save(str(src / "model.pt"))
    (src / "handler.py").write_text(CLASS_HANDLER)
    store = tmp_path / "repo"
    store.mkdir()
    subprocess.run([cli, "--model-name", "arch", "--version", "2.0", "--serialized-file", str(src / "model.pt"),
                    "--handler", str(src / "handler.py"), "--export-path", str(store)], check=True)
    registry = DiskRepository(store).populate(ModelRepository())
    with running_server(repository=registry) as server:
        got = httpx.post(f"http://127.0.0.1:{server.ports['http']}/predictions/arch/2.0", json=[1, 2, 3, 4],
                         timeout=60)
    assert got.status_code == 200, got.text
    np.testing.assert_allclose(got.json(), reference(ref, [[1, 2, 3, 4]])[0], rtol=1e-5, atol=1e-6)


def test_context_without_torchserve():
    """gpuserve's own Context (used where torchserve is absent) answers what handlers ask of TorchServe's."""
    from gpuserve.torchserve.context import Context, Headers, NullMetrics, RequestProcessor

    context = Context("m", "/tmp", {"model": {}}, 4, None, "0", metrics=NullMetrics())
    context.request_ids = {0: "a"}
    context.request_processor = [RequestProcessor(Headers({"content-type": "text/plain", "body": {}}))]
    assert context.get_request_header(0, "Content-Type") == "text/plain" and context.get_request_id(0) == "a"
    context.set_response_status(201, "made", idx=0)
    context.set_response_content_type(0, "application/json")
    assert context.get_response_status(0) == (201, "made")
    assert context.get_response_headers(0) == {"content-type": "application/json"}
    assert context.system_properties["batch_size"] == 4 and context.system_properties["gpu_id"] is None
    context.metrics.add_time("HandlerTime", 1.0)
    context.metrics.get_metric("x").add_or_update(1)


# gRPC: TorchServe's InferenceAPIsService and ManagementAPIsService on the gRPC port ------------------------------

@pytest.fixture(scope="module", params=["grpcio", "native"])
def over_grpc(request, tmp_path_factory):
    grpc = pytest.importorskip("grpc")
    from gpuserve.server.grpc import torchserve_pb2 as pb

    root = tmp_path_factory.mktemp("ts-grpc-repo")
    refs = _repository(root)
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry, grpc_transport=request.param) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        def call(service, method, message, response, streaming=False):
            path = f"/org.pytorch.serve.grpc.{service}/{method}"
            make = channel.unary_stream if streaming else channel.unary_unary
            return make(path, request_serializer=lambda m: m.SerializeToString(),
                        response_deserializer=response.FromString)(message, timeout=60)
        yield call, pb, refs, grpc


def test_grpc_ping_and_predictions_match_torch(over_grpc):
    call, pb, refs, _ = over_grpc
    health = call("inference.InferenceAPIsService", "Ping", pb.Empty(), pb.TorchServeHealthResponse)
    assert json.loads(health.health) == {"status": "Healthy"}
    rows = np.random.default_rng(3).standard_normal((2, 4)).round(4).tolist()
    for row, want in zip(rows, reference(refs["fn"], rows)):
        request = pb.PredictionsRequest(model_name="fn", input={"data": json.dumps(row).encode()})
        answer = call("inference.InferenceAPIsService", "Predictions", request, pb.PredictionResponse)
        np.testing.assert_allclose(json.loads(answer.prediction)["y"], want, rtol=1e-5, atol=1e-6)
        streamed = list(call("inference.InferenceAPIsService", "StreamPredictions", request, pb.PredictionResponse,
                             streaming=True))
        assert [json.loads(s.prediction)["y"] for s in streamed] == [json.loads(answer.prediction)["y"]]
    echoed = call("inference.InferenceAPIsService", "Predictions",
                  pb.PredictionsRequest(model_name="echo", model_version="1.0", input={"a": b"1", "b": b"xy"}),
                  pb.PredictionResponse)
    assert json.loads(echoed.prediction)["row"] == {"a": ["bytearray", "1"], "b": ["bytearray", "xy"]}
    # TorchServe's gRPC frontend hands a handler each input's {"content-type": ""} and nothing else (no metadata,
    # no "explain"/"url_path")
    seen = call("inference.InferenceAPIsService", "Predictions",
                pb.PredictionsRequest(model_name="headers", input={"data": b"1", "more": b"2"}), pb.PredictionResponse)
    assert json.loads(seen.prediction) == {"data": {"content-type": ""}, "more": {"content-type": ""}}


def test_grpc_errors_as_torchserve_and_the_server_keeps_serving(over_grpc):
    call, pb, _, grpc = over_grpc
    cases = [(pb.PredictionsRequest(model_name="nope"), grpc.StatusCode.INTERNAL,
              "Model not found: nope\norg.pytorch.serve.archive.model.ModelNotFoundException"),
             (pb.PredictionsRequest(model_name="fn", model_version="9"), grpc.StatusCode.INTERNAL,
              "Model version: 9 does not exist for model: fn\n"
              "org.pytorch.serve.archive.model.ModelVersionNotFoundException"),
             (pb.PredictionsRequest(), grpc.StatusCode.INTERNAL,
              "Parameter model_name is required.\nBadRequestException.()"),
             (pb.PredictionsRequest(model_name="fn", input={"data": b'"fail"'}), grpc.StatusCode.UNAVAILABLE,
              "Prediction failed\norg.pytorch.serve.http.InternalServerException")]
    for request, code, details in cases:
        with pytest.raises(grpc.RpcError) as failed:
            call("inference.InferenceAPIsService", "Predictions", request, pb.PredictionResponse)
        assert (failed.value.code(), failed.value.details()) == (code, details)
    with pytest.raises(grpc.RpcError) as failed:
        call("inference.InferenceAPIsService", "Predictions",
             pb.PredictionsRequest(model_name="bad", input={"data": b"[1]"}), pb.PredictionResponse)
    assert (failed.value.code(), failed.value.details()) == (grpc.StatusCode.INTERNAL, 'Model "bad" has no worker to '
                                                             "serve inference request. Please use scale workers API "
                                                             "to add workers. If this is a sequence inference, please "
                                                             "check if it is closed, or expired; or exceeds "
                                                             "maxSequenceJobQueueSize\nInternalServerException.()")
    answer = call("inference.InferenceAPIsService", "Predictions",
                  pb.PredictionsRequest(model_name="fn", input={"data": b"[1, 2, 3, 4]"}), pb.PredictionResponse)
    assert len(json.loads(answer.prediction)["y"]) == 3


def test_grpc_management_describe_list_and_refused_writes(over_grpc):
    call, pb, _, grpc = over_grpc
    described = json.loads(call("management.ManagementAPIsService", "DescribeModel",
                                pb.DescribeModelRequest(model_name="lin"), pb.ManagementResponse).msg)
    assert described[0]["modelName"] == "lin" and described[0]["modelVersion"] == "1.0"
    listed = json.loads(call("management.ManagementAPIsService", "ListModels", pb.ListModelsRequest(),
                             pb.ManagementResponse).msg)
    assert {"lin", "fn", "echo"} <= {m["modelName"] for m in listed["models"]} and "nextPageToken" not in listed
    page = json.loads(call("management.ManagementAPIsService", "ListModels", pb.ListModelsRequest(limit=2),
                           pb.ManagementResponse).msg)
    assert len(page["models"]) == 2 and page["nextPageToken"] == "2"
    rest = json.loads(call("management.ManagementAPIsService", "ListModels",
                           pb.ListModelsRequest(limit=100, next_page_token=2), pb.ManagementResponse).msg)
    assert [m["modelName"] for m in page["models"] + rest["models"]] == [m["modelName"] for m in listed["models"]]
    with pytest.raises(grpc.RpcError) as failed:
        call("management.ManagementAPIsService", "DescribeModel", pb.DescribeModelRequest(model_name="nope"),
             pb.ManagementResponse)
    assert (failed.value.code(), failed.value.details()) == (
        grpc.StatusCode.NOT_FOUND, "Model not found: nope\norg.pytorch.serve.archive.model.ModelNotFoundException")
    with pytest.raises(grpc.RpcError) as failed:  # the model API is off (tests/test_torchserve_manage.py: on)
        call("management.ManagementAPIsService", "UnregisterModel", pb.UnregisterModelRequest(model_name="lin"),
             pb.ManagementResponse)
    assert failed.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_perf_analyzer_service_kind_torchserve(tmp_path):
    """perf_analyzer's TorchServe client (a multipart part "data" from a file, POST /predictions/NAME) profiles a
    served archive as it profiles TorchServe; it prints "Timer not set correctly" lines against TorchServe 0.12
    too, so only its exit status and measurement are checked."""
    beside = Path(sys.executable).parent / "perf_analyzer"
    exe = shutil.which("perf_analyzer") or (str(beside) if beside.exists() else None)
    if exe is None:
        pytest.skip("perf_analyzer is not installed (bash scripts/install_perf_analyzer.sh)")
    root = tmp_path / "repo"
    _repository(root)
    (tmp_path / "row.json").write_text(json.dumps([0.5, -1.0, 2.0, 0.25]))
    (tmp_path / "input.json").write_text(json.dumps({"data": [{"TORCHSERVE_INPUT": [str(tmp_path / "row.json")]}]}))
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server:
        run = subprocess.run([exe, "-m", "fn", "--service-kind", "torchserve", "-i", "http",
                              "-u", f"127.0.0.1:{server.ports['http']}", "--input-data", str(tmp_path / "input.json"),
                              "--measurement-interval", "300", "--stability-percentage", "999", "--max-trials", "3"],
                             capture_output=True, text=True, timeout=120)
        stats = httpx.get(f"http://127.0.0.1:{server.ports['http']}/v2/models/fn/stats").json()["model_stats"][0]
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Concurrency: 1, throughput:" in run.stdout
    assert stats["inference_stats"]["success"]["count"] > 0 and stats["inference_stats"]["fail"]["count"] == 0


def test_intermediate_answers_stream_over_rest_and_grpc(tmp_path):
    """A handler's send_intermediate_predict_response parts reach the client before its final answer: chunked over
    REST, one PredictionResponse each over gRPC StreamPredictions; a unary Predictions gets the final one."""
    pytest.importorskip("ts.handler_utils.utils")
    grpc = pytest.importorskip("grpc")
    from gpuserve.server.grpc import torchserve_pb2 as pb

    make_mar(tmp_path / "repo" / "streamer.mar", "streamer", STREAM_HANDLER)
    registry = DiskRepository(tmp_path / "repo").populate(ModelRepository())
    for transport in ("native", "grpcio"):
        with running_server(repository=registry, grpc_transport=transport, http_server="uvicorn"
                            if transport == "grpcio" else "gpuserve") as server:
            base = f"http://127.0.0.1:{server.ports['http']}"
            with httpx.stream("POST", f"{base}/predictions/streamer", content=b"x", timeout=60) as answer:
                chunks = [c for c in answer.iter_raw() if c]
                assert answer.status_code == 200 and answer.headers.get("transfer-encoding") == "chunked"
            assert b"".join(chunks) == b"part 0 of 0;part 1 of 0;part 2 of 0;done"
            routed = httpx.put(f"{base}/predictions/streamer", content=b"x", timeout=60)  # the FastAPI route
            assert routed.content == b"part 0 of 0;part 1 of 0;part 2 of 0;done"
            with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
                path = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/"
                request = pb.PredictionsRequest(model_name="streamer", input={"data": b"x"})
                streamed = channel.unary_stream(path + "StreamPredictions", request_serializer=pb.PredictionsRequest
                                                .SerializeToString, response_deserializer=pb.PredictionResponse
                                                .FromString)(request, timeout=60)
                assert [r.prediction for r in streamed] == [b"part 0 of 0;", b"part 1 of 0;", b"part 2 of 0;",
                                                            b"done"]
                unary = channel.unary_unary(path + "Predictions", request_serializer=pb.PredictionsRequest
                                            .SerializeToString, response_deserializer=pb.PredictionResponse
                                            .FromString)(request, timeout=60)
                assert unary.prediction == b"done"


def test_model_config_yaml_over_the_config_json(tmp_path):
    """An archive's model-config.yaml (torch-model-archiver --config-file) stands over config.properties' models=
    JSON, as in TorchServe's ModelManager (its register API's precedence is compared with TorchServe 0.12 in
    benchmarks/peers/torchserve_conformance.py); deviceType cpu keeps the model on the CPU whatever the server's
    device; a snapshot's values stand over the yaml."""
    yaml = "minWorkers: 1\nmaxWorkers: 2\nbatchSize: 3\nmaxBatchDelay: 40\nresponseTimeout: 77\ndeviceType: cpu\n"
    root = tmp_path / "kserve"
    (root / "config").mkdir(parents=True)
    make_mar(root / "model-store" / "y.mar", "y", CLASS_HANDLER, seed=1, config_yaml=yaml)
    models = {"y": {"1.0": {"marName": "y.mar", "batchSize": 8, "maxBatchDelay": 5}}}
    (root / "config" / "config.properties").write_text(f"models={json.dumps(models)}\n")
    disk = DiskRepository(root, device="cuda")
    settings = disk.scan()["y"][0]
    assert (settings.max_batch_size, settings.max_batch_time, settings.device) == (3, 0.04, "cpu")
    assert disk.model_for(settings).settings.device == "cpu"
    registry = disk.populate(ModelRepository())
    with running_server(repository=registry) as server:
        described = httpx.get(f"http://127.0.0.1:{server.ports['http']}/models/y").json()[0]
    assert {k: described[k] for k in ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout",
                                      "deviceType")} == {"minWorkers": 1, "maxWorkers": 2, "batchSize": 3,
                                                         "maxBatchDelay": 40, "responseTimeout": 77,
                                                         "deviceType": "cpu"}
    snapshot = {"models": {"y": {"1.0": {"marName": "y.mar", "batchSize": 8, "maxBatchDelay": 5, "minWorkers": 1}}}}
    (root / "config" / "config.properties").write_text(f"model_snapshot={json.dumps(snapshot)}\n")
    settings = DiskRepository(root).scan()["y"][0]
    assert (settings.max_batch_size, settings.max_batch_time) == (8, 0.005)


THREAD_HANDLER = '''
import threading


def handle(data, context):
    if data is None:
        return None
    return [threading.current_thread().name for _ in data]
'''


def test_a_quick_handler_moves_onto_the_event_loop(tmp_path):
    """Its first batches run on the model's own thread, timed; once they prove quick, on the loop's thread (no hop
    to a thread and back per batch, gpuserve/hook_placement.py)."""
    make_mar(tmp_path / "repo" / "where.mar", "where", THREAD_HANDLER)
    registry = DiskRepository(tmp_path / "repo").populate(ModelRepository())
    with running_server(repository=registry) as server:
        base = f"http://127.0.0.1:{server.ports['http']}"
        threads = [httpx.post(f"{base}/predictions/where", content=b"x", timeout=30).text for _ in range(8)]
    assert threads[0].startswith("torchserve-where"), threads
    assert not threads[-1].startswith("torchserve-") and len(set(threads[-3:])) == 1, threads
