"""Model code that raises what `except Exception` does not catch: sys.exit(), KeyboardInterrupt, GeneratorExit,
a CancelledError or bare BaseException of its own, a StopIteration out of a sync hook. Each is that request's
500 with a JSON error (gRPC: INTERNAL), and the server keeps serving: before, sys.exit() stopped the event
loop and the server with it, and the others left the request unanswered. Found by fuzzing KServe-style
models (session 25)."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap

import httpx
import numpy as np
import pytest

from conftest import running_server
from gpuserve import Model, ModelRepository
from gpuserve.repository import DiskRepository

RAISES = {
    "exit": lambda: sys.exit(3),
    "interrupt": lambda: (_ for _ in ()).throw(KeyboardInterrupt()),
    "generator_exit": lambda: (_ for _ in ()).throw(GeneratorExit()),
    "cancelled": lambda: (_ for _ in ()).throw(asyncio.CancelledError()),
    "base": lambda: (_ for _ in ()).throw(BaseException("base")),
    "stop": lambda: next(iter(())),
}


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("cannot describe myself")


def _act(payload):
    what = payload["instances"][0] if isinstance(payload, dict) else None
    if what == "unprintable":
        raise Unprintable()
    if what in RAISES:
        RAISES[what]()
    return {"predictions": [1]}


class SyncModel(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        return _act(payload)

    def explain(self, payload, headers=None):
        return _act(payload)


class AsyncModel(Model):
    def load(self):
        self.ready = True

    async def preprocess(self, payload, headers=None):
        return _act(payload) and payload


PYTHON_MODEL = """
import sys
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            if pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()[0] < 0:
                sys.exit(3)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", np.array([[1.0]], np.float32))])
                for _ in requests]
"""

PYTHON_CONFIG = """
backend: "python"
max_batch_size: 4
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""

MLSERVER_RUNTIME = """
import sys
from mlserver import MLModel
from mlserver.types import InferenceResponse, ResponseOutput


class Exits(MLModel):
    def predict(self, payload):
        sys.exit(3)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("escapes")
    (root / "python" / "1").mkdir(parents=True)
    (root / "python" / "config.pbtxt").write_text(textwrap.dedent(PYTHON_CONFIG))
    (root / "python" / "1" / "model.py").write_text(textwrap.dedent(PYTHON_MODEL))
    (root / "runtime").mkdir()
    (root / "runtime" / "model-settings.json").write_text(json.dumps({"name": "runtime",
                                                                      "implementation": "exits.Exits"}))
    (root / "runtime" / "exits.py").write_text(textwrap.dedent(MLSERVER_RUNTIME))
    repository = DiskRepository(root).populate(ModelRepository())
    with running_server([SyncModel("sync"), AsyncModel("async")], repository=repository) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=20) as client:
        yield client


def _fine(client):
    answer = client.post("/v1/models/sync:predict", json={"instances": ["fine"]})
    assert answer.status_code == 200 and answer.json() == {"predictions": [1]}


# (a coroutine's StopIteration is a RuntimeError already, PEP 479: asked of the sync hooks only)
CASES = [(model, verb, what) for model, verb in (("sync", "predict"), ("sync", "explain"), ("async", "predict"))
         for what in sorted(RAISES) + ["unprintable"] if not (what == "stop" and model == "async")]


@pytest.mark.parametrize("model, verb, what", CASES)
def test_a_kserve_model_raising_anything_is_a_500_and_the_server_goes_on(client, model, verb, what):
    answer = client.post(f"/v1/models/{model}:{verb}", json={"instances": [what]})
    assert answer.status_code == 500, answer.text
    assert answer.json()["error"] and answer.headers["content-type"] == "application/json"
    _fine(client)


def test_a_triton_python_model_calling_sys_exit_is_a_500(client, server):
    import tritonclient.grpc as grpcclient

    body = {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [-1.0]}]}
    answer = client.post("/v2/models/python/infer", json=body)
    assert answer.status_code == 500 and "SystemExit" in answer.json()["error"], answer.text
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as grpc_client:
        tensor = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.array([[-1.0]], np.float32))
        with pytest.raises(Exception, match="SystemExit") as raised:
            grpc_client.infer("python", [tensor])
        assert raised.value.status() == "StatusCode.INTERNAL"
        tensor.set_data_from_numpy(np.array([[1.0]], np.float32))
        assert grpc_client.infer("python", [tensor]).as_numpy("OUTPUT0").tolist() == [[1.0]]
    _fine(client)


def test_an_mlserver_runtime_calling_sys_exit_is_a_500(client):
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    answer = client.post("/v2/models/runtime/infer", json=body)
    assert answer.status_code == 500 and "SystemExit" in answer.json()["error"], answer.text
    _fine(client)


class V2Exit(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        sys.exit(3)


class StreamExit(Model):
    def load(self):
        self.ready = True

    async def predict(self, payload, headers=None):
        async def items():
            yield "one "
            sys.exit(3)

        return items()


def test_over_grpc_and_mid_stream_too(http):
    """gRPC ModelInfer and ModelStreamInfer to a model calling sys.exit(), and a REST stream whose generator
    calls it after its first item: INTERNAL, an error on the stream, a cut stream; the server goes on."""
    import tritonclient.grpc as grpcclient

    with running_server([V2Exit("v2exit"), StreamExit("streamexit"), SyncModel("sync")]) as server:
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            tensor = grpcclient.InferInput("x", [1], "FP32")
            tensor.set_data_from_numpy(np.array([1.0], np.float32))
            with pytest.raises(Exception, match="SystemExit") as raised:
                client.infer("v2exit", [tensor])
            assert raised.value.status() == "StatusCode.INTERNAL"
            results = []
            client.start_stream(callback=lambda result, error: results.append(error))
            client.async_stream_infer("v2exit", [tensor])
            client.stop_stream()
            assert len(results) == 1 and "SystemExit" in str(results[0])
        rest = http(server)
        with rest.stream("POST", "/v1/models/streamexit:predict", json={"instances": [1]}) as reply:
            with pytest.raises(httpx.HTTPError):
                b"".join(reply.iter_raw())
        _fine(rest)


class EchoesIntoHeader(Model):
    """Puts a value from the request body into a response header (a tracking id, say)."""

    def __init__(self, name):
        super().__init__(name, return_response_headers=True)
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, dict):
            response_headers.update(payload.get("headers", {}))
            return {"predictions": [1]}
        response_headers["X-Tag"] = "a\r\nSet-Cookie: b"
        return payload


@pytest.mark.parametrize("headers", [{"X-Tag": "a\r\nSet-Cookie: session=attacker"}, {"X-Tag": "nul\x00"},
                                     {"Bad Name": "x"}, {"X-Tag": "\u20ac"}])
def test_a_response_header_that_would_break_the_answer_is_refused(http, headers):
    """Response header injection: a model echoing a request's value into a header. Refused with a 500 (as
    uvicorn's protocol check refuses it under KServe) rather than written raw, on REST and gRPC."""
    import tritonclient.grpc as grpcclient

    with running_server([EchoesIntoHeader("tag")]) as server:
        client = http(server)
        answer = client.post("/v1/models/tag:predict", json={"instances": [1], "headers": headers})
        assert answer.status_code == 500 and "response header" in answer.json()["error"], answer.text
        assert "set-cookie" not in answer.headers
        fine = client.post("/v1/models/tag:predict", json={"instances": [1], "headers": {
            "X-Tag": "t", "Content-Type": "text/plain", "Content-Length": "999", "Transfer-Encoding": "chunked"}})
        assert fine.status_code == 200 and fine.headers["x-tag"] == "t" and fine.json() == {"predictions": [1]}
        assert fine.headers.get_list("content-type") == ["text/plain"]  # the model's replaces the server's
        assert fine.headers["content-length"] == str(len(fine.content)) and "transfer-encoding" not in fine.headers
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as grpc_client:
            tensor = grpcclient.InferInput("x", [1], "FP32")
            tensor.set_data_from_numpy(np.array([1.0], np.float32))
            with pytest.raises(Exception, match="response header"):
                grpc_client.infer("tag", [tensor])


class ExitsOnLoad(Model):
    def load(self):
        sys.exit(3)


class StopsOnLoad(Model):
    def load(self):
        return next(iter(()))


class AsyncInterruptOnLoad(Model):
    async def load(self):
        raise KeyboardInterrupt()


LIFECYCLE_MODEL = """
import sys
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        if args["model_name"] == "exits_on_initialize":
            sys.exit(3)

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", np.array([[1.0]], np.float32))])
                for _ in requests]

    def finalize(self):
        sys.exit(4)
"""


def test_model_code_raising_past_exception_while_loading_or_unloading_fails_only_that_model(tmp_path, http):
    """sys.exit() in a load or a Triton initialize, a sync load's StopIteration, a KeyboardInterrupt in an async
    load: that model is not ready with a reason (before: the server stopped, or never answered the load);
    sys.exit() in finalize: the unload still happens and answers 200."""
    for name in ("exits_on_initialize", "exits_on_finalize"):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(textwrap.dedent(PYTHON_CONFIG))
        (tmp_path / name / "1" / "model.py").write_text(textwrap.dedent(LIFECYCLE_MODEL))
    repository = DiskRepository(tmp_path).populate(ModelRepository())
    models = [ExitsOnLoad("exits"), StopsOnLoad("stops"), AsyncInterruptOnLoad("interrupted"), SyncModel("sync")]
    with running_server(models, repository=repository) as server:
        client = http(server)
        index = {m["name"]: m for m in client.post("/v2/repository/index", json={}).json()}
        for name, words in (("exits", "SystemExit: 3"), ("stops", "StopIteration"),
                            ("interrupted", "KeyboardInterrupt"), ("exits_on_initialize", "SystemExit: 3")):
            assert index[name]["state"] == "UNAVAILABLE" and words in index[name]["reason"], index[name]
        reload = client.post("/v2/repository/models/exits_on_initialize/load", json={})
        assert reload.status_code in (400, 500) and "SystemExit" in reload.json()["error"], reload.text
        assert client.post("/v2/repository/models/exits_on_finalize/unload", json={}).status_code == 200
        assert client.get("/v2/models/exits_on_finalize/ready").status_code != 200
        _fine(client)
