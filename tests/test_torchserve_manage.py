"""TorchServe's management writes on gpuserve (server/torchserve_manage.py): register an archive from the model
store or a URL, scale its workers (to 0 and back), set the default version, unregister; REST and gRPC on both
transports, with the model API off (refused, as TorchServe 0.12 refuses) and on (KServe's config.properties
`enable_model_api=true`, TorchServe's env TS_ENABLE_MODEL_API, `--enable-model-api` with `--workers 2`). Answers
compared with the direct torch call; the words and statuses are the ones TorchServe 0.12 gave
(benchmarks/peers/torchserve_conformance.py runs the same writes on both servers). Skipped without torch."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

from conftest import free_ports, running_server  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402
from test_cli import GPUSERVE, start, stop, wait_ready  # noqa: E402
from test_torchserve import CLASS_HANDLER, _kserve_layout, _linear, make_mar, reference  # noqa: E402

ROWS = [[1.0, 2.0, 3.0, 4.0]]


def _layout(root: Path, model_api: bool) -> Path:
    """KServe's layout serving lin (1.0, seed 1), with extra.mar (seed 5), lin2.mar (lin 2.0, seed 7) and an
    archive whose handler cannot load in its store."""
    _kserve_layout(root, batch=1, delay_ms=100)
    store = root / "model-store"
    make_mar(store / "extra.mar", "extra", CLASS_HANDLER, seed=5)
    make_mar(store / "lin2.mar", "lin", CLASS_HANDLER, seed=7, version="2.0")
    make_mar(store / "broken.mar", "broken", "", handler="missing_module_xyz.py")
    if model_api:
        with open(root / "config" / "config.properties", "a") as f:
            f.write("enable_model_api=true\n")
    return root


def _status(answer: httpx.Response):
    return answer.status_code, answer.json()


def _predicted(client: httpx.Client, path: str):
    answer = client.post(path, json=ROWS[0])
    assert answer.status_code == 200, answer.text
    return np.asarray(answer.json())


@pytest.fixture
def managed(tmp_path):
    root = _layout(tmp_path / "kserve", model_api=True)
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=120) as client:
            yield client, root


def test_register_scale_default_and_unregister_over_rest(managed):
    client, root = managed
    assert _status(client.post("/models?url=extra.mar&initial_workers=1&synchronous=true")) == (
        200, {"status": 'Model "extra" Version: 1.0 registered with 1 initial workers'})
    np.testing.assert_allclose(_predicted(client, "/predictions/extra")[None], reference(_linear(5), ROWS),
                               rtol=1e-5, atol=1e-6)
    assert client.get("/v2/models/extra/ready").status_code == 200  # V2 serves it as well
    assert _status(client.post("/models?url=extra.mar&initial_workers=1")) == (409, {
        "code": 409, "type": "ConflictStatusException", "message": "Model version 1.0 is already registered for "
        "model extra"})
    described = client.get("/models/extra").json()[0]
    assert (described["modelUrl"], described["minWorkers"], described["loadedAtStartup"]) == ("extra.mar", 1, False)

    # a second version: the first stays the default until set-default
    assert client.post("/models?url=lin2.mar&initial_workers=1&synchronous=true").status_code == 200
    lin1, lin2 = reference(_linear(1), ROWS), reference(_linear(7), ROWS)
    np.testing.assert_allclose(_predicted(client, "/predictions/lin")[None], lin1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_predicted(client, "/predictions/lin/2.0")[None], lin2, rtol=1e-5, atol=1e-6)
    assert _status(client.put("/models/lin/2.0/set-default")) == (
        200, {"status": 'Default version successfully updated for model "lin" to "2.0"'})
    np.testing.assert_allclose(_predicted(client, "/predictions/lin")[None], lin2, rtol=1e-5, atol=1e-6)
    assert client.get("/models/lin").json()[0]["modelVersion"] == "2.0"
    assert _status(client.delete("/models/lin")) == (403, {
        "code": 403, "type": "InvalidModelVersionException", "message": "Cannot remove default version for model lin"})
    assert _status(client.delete("/models/lin/1.0")) == (200, {"status": 'Model "lin" unregistered'})
    assert [d["modelVersion"] for d in client.get("/models/lin/all").json()] == ["2.0"]
    assert client.post("/predictions/lin/1.0", json=ROWS[0]).status_code == 404
    # lin 1.0 came from the config: a V2 reload of lin leaves it unregistered and keeps 2.0, the default
    assert client.post("/v2/repository/models/lin/load").status_code == 200
    assert client.post("/predictions/lin/1.0", json=ROWS[0]).status_code == 404
    np.testing.assert_allclose(_predicted(client, "/predictions/lin")[None], lin2, rtol=1e-5, atol=1e-6)

    # scaled to 0: registered, its requests refused; back to 1 asynchronously (202), then served again
    assert _status(client.put("/models/extra?min_worker=0&synchronous=true")) == (
        200, {"status": "Workers scaled to 0 for model: extra"})
    assert client.get("/models/extra").json()[0]["workers"] == []
    refused = client.post("/predictions/extra", json=ROWS[0])
    assert refused.status_code == 503 and refused.json()["type"] == "ServiceUnavailableException"
    assert _status(client.put("/models/extra?min_worker=1")) == (202, {"status": "Processing worker updates..."})
    deadline = time.monotonic() + 60
    while client.post("/predictions/extra", json=ROWS[0]).status_code != 200:
        assert time.monotonic() < deadline, "scaled back within 60 s"
        time.sleep(0.1)
    assert _status(client.put("/models/extra?min_worker=3&max_worker=2")) == (400, {
        "code": 400, "type": "BadRequestException", "message": "max_worker cannot be less than min_worker."})
    assert client.put("/models/nope?min_worker=1").status_code == 404

    # a V2 reload reads what the API made (the scan sees it), not the config alone
    assert client.post("/v2/repository/models/extra/load").status_code == 200
    np.testing.assert_allclose(_predicted(client, "/predictions/extra")[None], reference(_linear(5), ROWS),
                               rtol=1e-5, atol=1e-6)
    assert _status(client.delete("/models/extra")) == (200, {"status": 'Model "extra" unregistered'})
    assert client.post("/predictions/extra", json=ROWS[0]).status_code == 404
    assert client.get("/models/extra").status_code == 404
    assert (root / "model-store" / "extra.mar").is_file()  # from the store: it stays there


def test_register_errors_leave_nothing_behind(managed):
    client, _ = managed
    cases = [("/models", 400, "BadRequestException", "Parameter url is required."),
             ("/models?url=missing.mar", 404, "ModelNotFoundException", "Model not found at: missing.mar"),
             ("/models?url=../x.mar", 404, "ModelNotFoundException", "Relative path is not allowed in url: ../x.mar"),
             ("/models?url=file:///nonexistent/x.mar", 400, "DownloadArchiveException",
              "Failed to download archive from: file:///nonexistent/x.mar"),
             ("/models?url=ftp://host/x.mar", 404, "ModelNotFoundException",
              "Given URL ftp://host/x.mar does not match any allowed URL(s)"),
             ("/models?url=broken.mar&initial_workers=1&synchronous=true", 500, "InternalServerException",
              "Failed to start workers for model broken version: 1.0")]
    for path, status, kind, message in cases:
        assert _status(client.post(path)) == (status, {"code": status, "type": kind, "message": message}), path
    assert client.get("/models/broken").status_code == 404  # a failed load unregisters it again
    assert [m["modelName"] for m in client.get("/models").json()["models"]] == ["lin"]
    # a JSON body instead of the query; 0 workers: registered, not loaded
    answer = client.post("/models", json={"url": "extra.mar", "model_name": "ex0", "initial_workers": 0})
    assert _status(answer) == (200, {"status": 'Model "ex0" Version: 1.0 registered with 0 initial workers. Use '
                                               "scale workers API to add workers for the model."})
    assert client.get("/models/ex0").json()[0]["minWorkers"] == 0
    assert client.post("/predictions/ex0", json=ROWS[0]).status_code == 503
    assert client.get("/models?limit=1").json() == {"nextPageToken": "1", "models": [
        {"modelName": "ex0", "modelUrl": "extra.mar"}]}
    assert client.patch("/models").status_code == 405
    # a name no path can hold, a negative worker count: refused, the model serving on (a count of -1 swapped in a
    # model that could not load and left its next scale a bare 500)
    assert client.post("/models?url=extra.mar&model_name=a/b&initial_workers=1").status_code == 400
    assert _status(client.put("/models/lin?min_worker=-1&synchronous=true")) == (400, {
        "code": 400, "type": "BadRequestException", "message": "min_worker is -1; it is 0 or more"})
    assert client.put("/models/lin?min_worker=abc&synchronous=true").status_code == 200  # unparsable: 1
    assert client.post("/predictions/lin", json=ROWS[0]).status_code == 200


def test_writes_refused_without_the_model_api(tmp_path):
    root = _layout(tmp_path / "kserve", model_api=False)
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server, \
            httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=60) as client:
        refused = {"code": 405, "type": "MethodNotAllowedException",
                   "message": "Requested method is not allowed, please refer to API document."}
        assert _status(client.post("/models?url=extra.mar&initial_workers=1")) == (405, refused)
        assert _status(client.delete("/models/lin")) == (405, refused)
        # scaling is no model API write: served, as in TorchServe
        assert _status(client.put("/models/lin?min_worker=1&synchronous=true")) == (
            200, {"status": "Workers scaled to 1 for model: lin"})
        assert client.post("/predictions/lin", json=ROWS[0]).status_code == 200


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_register_from_an_http_url_downloads_into_the_store(tmp_path, monkeypatch):
    """A bare-archive repository (the store is the repository folder), the model API on by TorchServe's env."""
    monkeypatch.setenv("TS_ENABLE_MODEL_API", "true")
    repo, served = tmp_path / "repo", tmp_path / "served"
    make_mar(repo / "lin.mar", "lin", CLASS_HANDLER, seed=1)
    make_mar(served / "fetched.mar", "fetched", CLASS_HANDLER, seed=9)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/fetched.mar"
    try:
        registry = DiskRepository(repo).populate(ModelRepository())
        with running_server(repository=registry) as server, \
                httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=60) as client:
            assert client.post("/models", params={"url": url, "initial_workers": 1}).status_code == 200
            assert (repo / "fetched.mar").is_file()
            np.testing.assert_allclose(_predicted(client, "/predictions/fetched")[None],
                                       reference(_linear(9), ROWS), rtol=1e-5, atol=1e-6)
            assert client.get("/models/fetched").json()[0]["modelUrl"] == url
            again = client.post("/models", params={"url": url, "model_name": "other"})
            assert _status(again) == (500, {"code": 500, "type": "InternalServerException",
                                            "message": "Model file already exists fetched.mar"})
            missing = client.post("/models", params={"url": url.replace("fetched", "nothing")})
            assert missing.status_code == 400 and missing.json()["type"] == "DownloadArchiveException"
            assert not (repo / "nothing.mar").exists() and not list(repo.glob(".*.part"))
            assert client.delete("/models/fetched").status_code == 200
            assert not (repo / "fetched.mar").exists()  # what register downloaded, unregister removes
            assert client.post("/predictions/lin", json=ROWS[0]).status_code == 200
    finally:
        httpd.shutdown()


@pytest.fixture(scope="module", params=["grpcio", "native"])
def grpc_managed(request, tmp_path_factory):
    grpc = pytest.importorskip("grpc")
    from gpuserve.server.grpc import torchserve_pb2 as pb

    root = _layout(tmp_path_factory.mktemp("ts-grpc-manage") / "kserve", model_api=True)
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry, grpc_transport=request.param) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        def call(method, message):
            path = f"/org.pytorch.serve.grpc.management.ManagementAPIsService/{method}"
            return channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=pb.ManagementResponse.FromString)(message, timeout=120)
        yield call, pb, grpc, server


def test_grpc_writes(grpc_managed):
    call, pb, grpc, server = grpc_managed
    assert call("RegisterModel", pb.RegisterModelRequest(url="extra.mar", model_name="gx", initial_workers=1,
                                                         synchronous=True)).msg == \
        'Model "gx" Version: 1.0 registered with 1 initial workers'
    with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=60) as client:
        np.testing.assert_allclose(_predicted(client, "/predictions/gx")[None], reference(_linear(5), ROWS),
                                   rtol=1e-5, atol=1e-6)
    errors = [("RegisterModel", pb.RegisterModelRequest(url="missing.mar"), grpc.StatusCode.NOT_FOUND,
               "Model not found at: missing.mar\norg.pytorch.serve.archive.model.ModelNotFoundException"),
              ("RegisterModel", pb.RegisterModelRequest(), grpc.StatusCode.INVALID_ARGUMENT,
               "Parameter url is required.\norg.pytorch.serve.http.BadRequestException"),
              ("ScaleWorker", pb.ScaleWorkerRequest(model_name="nope"), grpc.StatusCode.NOT_FOUND,
               "Model not found: nope\norg.pytorch.serve.archive.model.ModelNotFoundException"),
              ("SetDefault", pb.SetDefaultRequest(model_name="gx", model_version="9.0"), grpc.StatusCode.NOT_FOUND,
               "Model version 9.0 does not exist for model gx\n"
               "org.pytorch.serve.archive.model.ModelVersionNotFoundException"),
              ("UnregisterModel", pb.UnregisterModelRequest(), grpc.StatusCode.INVALID_ARGUMENT,
               "Parameter url is required.\norg.pytorch.serve.http.BadRequestException")]
    for method, message, code, details in errors:
        with pytest.raises(grpc.RpcError) as failed:
            call(method, message)
        assert (failed.value.code(), failed.value.details()) == (code, details), method
    # proto3's synchronous is false unless set: accepted, done in the background
    assert call("ScaleWorker", pb.ScaleWorkerRequest(model_name="gx", min_worker=1)).msg == \
        "Processing worker updates..."
    assert call("SetDefault", pb.SetDefaultRequest(model_name="gx", model_version="1.0")).msg == \
        'Default version successfully updated for model "gx" to "1.0"'
    assert call("UnregisterModel", pb.UnregisterModelRequest(model_name="gx")).msg == 'Model "gx" unregistered'
    with pytest.raises(grpc.RpcError) as failed:
        call("DescribeModel", pb.DescribeModelRequest(model_name="gx"))
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_writes_refused_without_the_model_api(tmp_path):
    grpc = pytest.importorskip("grpc")
    from gpuserve.server.grpc import torchserve_pb2 as pb

    root = _layout(tmp_path / "kserve", model_api=False)
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        for method, message in (("RegisterModel", pb.RegisterModelRequest(url="extra.mar")),
                                ("UnregisterModel", pb.UnregisterModelRequest(model_name="lin"))):
            stub = channel.unary_unary(f"/org.pytorch.serve.grpc.management.ManagementAPIsService/{method}",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=pb.ManagementResponse.FromString)
            with pytest.raises(grpc.RpcError) as failed:
                stub(message, timeout=60)
            assert (failed.value.code(), failed.value.details()) == (
                grpc.StatusCode.PERMISSION_DENIED, "Model API disabled\norg.pytorch.serve.archive.model.ModelException")


def test_writes_reach_every_worker(tmp_path):
    """`gpuserve start FOLDER --workers 2 --enable-model-api`: a register, set-default and unregister through one
    connection hold on every connection, whichever worker the kernel hands it to."""
    root = _layout(tmp_path / "kserve", model_api=False)  # on by the flag
    http, grpc_port, metrics = free_ports(3)
    proc = start([*GPUSERVE, "start", str(root), "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port",
                  str(grpc_port), "--metrics-port", str(metrics), "--workers", "2", "--enable-model-api"])
    base = f"http://127.0.0.1:{http}"

    def fresh(method: str, path: str) -> httpx.Response:  # a new connection each: either worker answers
        body = ROWS[0] if path.startswith("/predictions") else None
        return httpx.request(method, base + path, json=body, timeout=120, headers={"connection": "close"})

    try:
        wait_ready(http, proc)
        assert fresh("POST", "/models?url=extra.mar&initial_workers=1&synchronous=true").status_code == 200
        assert fresh("POST", "/models?url=lin2.mar&initial_workers=1&synchronous=true").status_code == 200
        assert fresh("PUT", "/models/lin/2.0/set-default").status_code == 200
        five, seven = reference(_linear(5), ROWS), reference(_linear(7), ROWS)
        for _ in range(8):
            np.testing.assert_allclose(np.asarray(fresh("POST", "/predictions/lin").json())[None], seven,
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(np.asarray(fresh("POST", "/predictions/extra").json())[None], five,
                                       rtol=1e-5, atol=1e-6)
        assert fresh("DELETE", "/models/lin/1.0").status_code == 200
        assert fresh("DELETE", "/models/extra").status_code == 200
        assert all(fresh("POST", "/predictions/extra").status_code == 404 for _ in range(8))
        assert all(fresh("POST", "/predictions/lin/1.0").status_code == 404 for _ in range(8))
    finally:
        stop(proc)


SLOW_HANDLER = '''
import time


def handle(data, context):
    if data is None:
        return None
    time.sleep(0.2)  # long enough that every swap below finds requests under way and queued
    return [{"rows": len(data)} for _ in data]
'''


def test_no_request_fails_while_workers_are_scaled(managed):
    """Clients keep asking a slow handler while its workers go 1 -> 2 (processes) -> 1 and a V2 reload replaces
    it: the requests the old model took (running, and queued for its workers) are answered before it stops
    (model_repository._quiesce), none fails."""
    client, root = managed
    make_mar(root / "model-store" / "slow.mar", "slow", SLOW_HANDLER)
    assert client.post("/models?url=slow.mar&initial_workers=1&synchronous=true").status_code == 200
    base, stop, codes = str(client.base_url).rstrip("/"), threading.Event(), []

    def ask():
        with httpx.Client(base_url=base, timeout=60) as own:
            while not stop.is_set():
                try:
                    answer = own.post("/predictions/slow", json=ROWS[0])
                except httpx.HTTPError as exc:  # (a connection the server dropped: a failure too)
                    codes.append(repr(exc))
                    continue
                codes.append(answer.status_code if answer.status_code == 200 else answer.text)

    askers = [threading.Thread(target=ask) for _ in range(6)]
    for thread in askers:
        thread.start()
    try:
        for count in (2, 1):
            time.sleep(0.5)
            assert client.put(f"/models/slow?min_worker={count}&synchronous=true").status_code == 200
        time.sleep(0.5)
        assert client.post("/v2/repository/models/slow/load").status_code == 200
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in askers:
            thread.join()
    assert codes and set(codes) == {200}, [c for c in codes if c != 200][:3]
