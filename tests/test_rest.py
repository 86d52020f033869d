"""Every REST endpoint, and every bad input answered with a clear error while the server keeps serving."""

import numpy as np
import pytest

from conftest import make_onnx_model, onnx_reference
from gpuserve import InferOutput, InferRequest, InferResponse, Model
from gpuserve.model_repository import ModelRepository
from gpuserve.repository import DiskRepository


class Doubler(Model):
    """Answers V1 and V2: every input doubled."""

    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            outputs = [InferOutput.from_numpy(f"{t.name}_x2", t.as_numpy() * 2) for t in payload.inputs]
            return InferResponse(payload.id, self.name, outputs)
        return {"predictions": (np.asarray(payload["instances"]) * 2).tolist()}

    def get_input_types(self):
        return [{"name": "x", "datatype": "FP32", "shape": [-1]}]


class Echo(Model):
    """Returns its inputs unchanged: datatypes must survive the trip both ways."""

    async def predict(self, payload, headers=None):
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy(t.name, t.as_numpy()) for t in payload.inputs])


class NeverReady(Model):
    def load(self):
        raise RuntimeError("weights are corrupt")


@pytest.fixture(scope="module")
def onnx_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    (root / "mlp").mkdir()
    weight, bias = make_onnx_model(root / "mlp" / "model.onnx")
    return root, weight, bias


@pytest.fixture(scope="module", params=["gpuserve", "uvicorn"])
def server(onnx_repo, request):
    """Every REST test runs on our HTTP server and on the uvicorn fallback (server/rest/http11.py)."""
    from conftest import running_server

    registry = DiskRepository(onnx_repo[0]).populate(ModelRepository())
    with running_server([Doubler("doubler"), Echo("echo"), NeverReady("broken")], repository=registry,
                        max_request_bytes=64 * 1024, http_server=request.param) as srv:
        yield srv


@pytest.fixture
def client(server, http):
    return http(server)


def test_health_and_server_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "gpuserve" and "binary_tensor_data" in meta["extensions"]


def test_v1_list_ready_predict(client):
    assert client.get("/v1/models").json() == {"models": ["broken", "doubler", "echo", "mlp"]}
    assert client.get("/v1/models/doubler").json() == {"name": "doubler", "ready": True}
    reply = client.post("/v1/models/doubler:predict", json={"instances": [[1, 2], [3, 4]]})
    assert reply.status_code == 200 and reply.json() == {"predictions": [[2, 4], [6, 8]]}


def test_v1_predict_onnx(client, onnx_repo):
    _, weight, bias = onnx_repo
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    reply = client.post("/v1/models/mlp:predict", json={"instances": x.tolist()})
    assert reply.status_code == 200
    assert np.allclose(reply.json()["predictions"], onnx_reference(x, weight, bias), rtol=1e-5)


def test_v1_explain_without_explainer_is_501(client):
    reply = client.post("/v1/models/doubler:explain", json={"instances": [[1]]})
    assert reply.status_code == 501 and "explain" in reply.json()["error"]


def test_v2_model_metadata_and_ready(client):
    meta = client.get("/v2/models/mlp").json()
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]
    assert client.get("/v2/models/doubler").json()["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    assert client.get("/v2/models/mlp/ready").json() == {"name": "mlp", "ready": True}


def test_v2_infer_onnx_with_id_parameters_and_outputs(client, onnx_repo):
    _, weight, bias = onnx_repo
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    body = {"id": "req-1", "parameters": {"trace": True},
            "inputs": [{"name": "input", "shape": [5, 4], "datatype": "FP32", "data": x.ravel().tolist()}],
            "outputs": [{"name": "output"}]}
    reply = client.post("/v2/models/mlp/infer", json=body)
    assert reply.status_code == 200, reply.text
    out = reply.json()
    assert out["id"] == "req-1" and out["model_name"] == "mlp"
    assert out["outputs"][0]["shape"] == [5, 3] and out["outputs"][0]["datatype"] == "FP32"
    assert np.allclose(np.array(out["outputs"][0]["data"]).reshape(5, 3), onnx_reference(x, weight, bias), rtol=1e-5)


@pytest.mark.parametrize("datatype, values", [
    ("BOOL", [True, False]), ("UINT8", [0, 255]), ("UINT16", [0, 65535]), ("UINT32", [0, 2 ** 32 - 1]),
    ("UINT64", [0, 2 ** 63]), ("INT8", [-128, 127]), ("INT16", [-32768, 32767]), ("INT32", [-2 ** 31, 2 ** 31 - 1]),
    ("INT64", [-2 ** 63, 2 ** 62]), ("FP16", [0.5, -2.0]), ("FP32", [1.5, None]), ("FP64", [1e300, -1e-300]),
])
def test_v2_every_datatype_round_trips_over_http(client, datatype, values):
    body = {"inputs": [{"name": "x", "shape": [2], "datatype": datatype, "data": values}]}
    reply = client.post("/v2/models/echo/infer", json=body)
    assert reply.status_code == 200, reply.text
    out = reply.json()["outputs"][0]
    assert out["datatype"] == datatype and out["shape"] == [2]
    expected = InferRequest.from_rest("d", body).inputs[0].as_numpy()
    got = np.array([np.nan if v is None else v for v in out["data"]], dtype=expected.dtype)
    assert np.array_equal(got, expected, equal_nan=expected.dtype.kind == "f")


def test_v2_versioned_routes_on_unversioned_models(client):
    # a model without versions answers the version a client names (tritonclient's model_version="1")
    assert client.get("/v2/models/mlp/versions/1").json()["name"] == "mlp"
    reply = client.post("/v2/models/doubler/versions/7/infer",
                        json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]})
    assert reply.status_code == 200 and reply.json()["outputs"][0]["data"] == [2.0]


def test_v1_columnar_inputs_form(client, onnx_repo):
    _, weight, bias = onnx_repo
    x = np.ones((1, 4), np.float32)
    reply = client.post("/v1/models/mlp:predict", json={"inputs": x.tolist()})
    assert reply.status_code == 200
    assert np.allclose(reply.json()["predictions"], onnx_reference(x, weight, bias), rtol=1e-5)


def test_openapi_docs_are_served(client):
    spec = client.get("/openapi.json").json()
    assert "/v2/models/{model_name}/infer" in spec["paths"] and "/v1/models/{model_name}:predict" in spec["paths"]
    assert client.get("/docs").status_code == 200
    # MLServer's OpenAPI routes: the data plane's spec and its Swagger UI, server-wide and per model
    assert "/v2/models/{model_name}/infer" in client.get("/v2/docs/dataplane.json").json()["paths"]
    assert "swagger" in client.get("/v2/docs").text.lower()
    assert "/v2/models/{model_name}/infer" in client.get("/v2/models/echo/docs/dataplane.json").json()["paths"]
    assert client.get("/v2/models/echo/versions/1/docs").status_code == 200
    missing = client.get("/v2/models/nowhere/docs/dataplane.json")
    assert missing.status_code == 404 and "nowhere" in missing.json()["error"]


BAD = [
    ("malformed json", "/v2/models/doubler/infer", b"{not json", 400, "Unrecognized request format"),
    ("unknown datatype", "/v2/models/doubler/infer",
     b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP128","data":[1]}]}', 400, "unknown datatype"),
    ("shape mismatch", "/v2/models/doubler/infer",
     b'{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}', 400, "needs 3 elements"),
    ("wrong input name", "/v2/models/mlp/infer",
     b'{"inputs":[{"name":"nope","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}', 400, "unexpected input 'nope'"),
    ("wrong datatype for model", "/v2/models/mlp/infer",
     b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}', 400, "expects FP32"),
    ("wrong shape for model", "/v2/models/mlp/infer",
     b'{"inputs":[{"name":"input","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}', 400, "expects [-1, 4]"),
    ("unknown requested output", "/v2/models/mlp/infer",
     b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"zz"}]}',
     400, "unexpected inference output"),
    ("unknown model", "/v2/models/ghost/infer",
     b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}', 404,
     "Request for unknown model: 'ghost' is not found"),  # Triton's words on V2, which its clients check
    ("model not ready", "/v2/models/broken/infer",
     b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}', 503, "weights are corrupt"),
    ("v1 unknown model", "/v1/models/ghost:predict", b'{"instances":[1]}', 404,
     "Model with name ghost does not exist."),  # KServe's words on KServe's protocol
    ("v1 malformed json", "/v1/models/doubler:predict", b"[1,", 400, "Unrecognized request format"),
    ("empty body", "/v2/models/doubler/infer", b"", 400, "empty"),
    ("body too large", "/v2/models/doubler/infer", b" " * (64 * 1024 + 1), 413, "exceeds the limit"),
    # as Triton: JSON numbers that do not fit an integer tensor are refused, never truncated or wrapped
    ("fraction for INT32", "/v2/models/echo/infer",
     b'{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[5.5,1]}]}', 400, "non-integer"),
    ("INT32 out of range", "/v2/models/echo/infer",
     b'{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[99999999999,1]}]}', 400, "outside the range"),
    ("UINT8 negative", "/v2/models/echo/infer",
     b'{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[-1]}]}', 400, "outside the range"),
    ("duplicate input", "/v2/models/echo/infer",
     b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]},'
     b'{"name":"x","shape":[1],"datatype":"FP32","data":[2]}]}', 400, "input 'x' already exists in request"),
]


def test_json_integers_keep_their_exact_values(client):
    body = {"inputs": [{"name": "a", "shape": [3], "datatype": "UINT64", "data": [2**64 - 1, 0, 7]},
                       {"name": "b", "shape": [2], "datatype": "INT64", "data": [-2**63, 5.0]},
                       {"name": "c", "shape": [2], "datatype": "INT8", "data": [[-128], [127]]}]}
    outputs = {o["name"]: o["data"] for o in client.post("/v2/models/echo/infer", json=body).json()["outputs"]}
    assert outputs == {"a": [2**64 - 1, 0, 7], "b": [-2**63, 5], "c": [-128, 127]}


def test_json_nan_and_infinity_tokens_are_read_as_triton_reads_them(client):
    # tritonclient's JSON encoder writes these for non-finite floats; strict JSON parsers refuse them
    body = b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [NaN, Infinity, -Infinity]}]}'
    for binary in (False, True):
        headers = {"Inference-Header-Content-Length": str(len(body))} if binary else {}
        reply = client.post("/v2/models/echo/infer", content=body, headers=headers)
        assert reply.status_code == 200, reply.text
    assert client.post("/v2/models/echo/infer", content=body.replace(b"NaN", b"NaNa")).status_code == 400


def test_output_requested_twice_is_400(client):
    # Triton 2.51 answered it once; current Triton refuses it (qa/L0_http test_duplicate_output_names)
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [3]}],
            "outputs": [{"name": "x_x2"}, {"name": "x_x2"}]}
    reply = client.post("/v2/models/doubler/infer", json=body)
    assert reply.status_code == 400 and "output 'x_x2' already exists in request" in reply.json()["error"]


@pytest.mark.parametrize("case, path, body, status, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_clear_error_and_the_next_request_succeeds(client, case, path, body, status, message):
    reply = client.post(path, content=body, headers={"content-type": "application/json"})
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]
    ok = client.post("/v2/models/doubler/infer", json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                                                    "data": [2]}]})
    assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [4.0]


def test_chunked_body_over_the_limit_is_413(client):
    def chunks():
        for _ in range(70):
            yield b" " * 1024

    reply = client.post("/v2/models/doubler/infer", content=chunks())
    assert reply.status_code == 413


def test_not_ready_model_reports_reason_on_ready_routes(client):
    reply = client.get("/v2/models/broken/ready")
    assert reply.status_code == 503 and "weights are corrupt" in reply.json()["error"]
    assert client.get("/v1/models/broken").status_code == 503
    assert client.get("/v2/models/ghost/ready").status_code == 404


def test_unknown_route_is_404_json(client):
    reply = client.get("/v3/anything")
    assert reply.status_code == 404 and "error" in reply.json()


def test_metrics_on_rest_port_and_metrics_port(server, client):
    import httpx

    assert client.get("/metrics").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/metrics").status_code == 200


@pytest.mark.parametrize("path, expected", [
    ("/v2/models/m/infer", ("infer", "m", None)),
    ("/v2/models/m/versions/3/infer", ("infer", "m", "3")),
    ("/v1/models/m:predict", ("predict", "m", None)),
    ("/v2/models//infer", None),
    ("/v2/models/a/b/infer", None),
    ("/v2/models/m/versions//infer", None),
    ("/v1/models/:predict", None),
    ("/v2/models/m/ready", None),
])
def test_fast_path_matches_only_the_hot_routes(path, expected):
    from gpuserve.server.rest.fast_path import match

    assert match(path) == expected


def test_unmatched_infer_like_path_falls_back_to_404(client):
    reply = client.post("/v2/models/a/b/infer", json={})
    assert reply.status_code == 404 and "error" in reply.json()


def test_client_going_away_cancels_its_request(http):
    import asyncio
    import socket
    import threading

    from conftest import running_server

    entered, cancelled = threading.Event(), threading.Event()

    class Waits(Model):
        def load(self):
            self.ready = True

        async def predict(self, payload, headers=None):
            entered.set()
            try:
                await asyncio.Event().wait()  # never answers on its own
            except asyncio.CancelledError:
                cancelled.set()
                raise

    with running_server([Waits("waits")]) as server:
        body = b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}'
        with socket.create_connection(("127.0.0.1", server.ports["http"])) as sock:
            sock.sendall(b"POST /v2/models/waits/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert entered.wait(30)
        assert cancelled.wait(30)
        assert http(server).get("/v2/health/live").status_code == 200


def test_v1_readiness_of_an_unknown_model_is_said_in_kserve_words(client):
    reply = client.get("/v1/models/ghost")
    assert reply.status_code == 404 and reply.json() == {"error": "Model with name ghost does not exist."}


def test_float32_outputs_are_written_with_the_digits_tolist_gives(client, onnx_repo):
    """Triton, KServe and MLServer write an FP32 value as the double it is (0.20000000298023224 for
    float32(0.2)); a client comparing the JSON with `expected.tolist()` must find the same numbers."""
    text = b'{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[0.1,0.2852080166339874,3]}]}'
    reply = client.post("/v2/models/echo/infer", content=text)
    assert reply.json()["outputs"][0]["data"] == np.array([0.1, 0.2852080166339874, 3], np.float32).tolist()
    assert b"0.10000000149011612" in reply.content
    _, weight, bias = onnx_repo
    x = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    expected = onnx_reference(x, weight, bias).astype(np.float32).tolist()
    v1 = client.post("/v1/models/mlp:predict", json={"instances": x.tolist()}).json()["predictions"]
    v2 = client.post("/v2/models/mlp/infer", json={"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                                              "data": x.ravel().tolist()}]}).json()["outputs"][0]["data"]
    assert np.allclose(v1, expected, atol=1e-5) and np.allclose(v2, np.ravel(expected), atol=1e-5)
    # every number is a float32's exact double (float32's shortest digits, 0.28520802, would not be)
    assert v1 == np.array(v1, np.float32).tolist() and v2 == np.array(v2, np.float32).tolist()


def test_request_parameters_named_triton_underscore_are_refused_in_tritons_words(client):
    """Triton keeps the `triton_` prefix for itself (gRPC streaming flags): an HTTP request naming one is 400,
    worded as Triton words it, whatever the model; other names still reach the model."""
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    for key in ("triton_final_response", "triton_enable_empty_final_response", "triton_anything"):
        reply = client.post("/v2/models/echo/infer", json={**body, "parameters": {key: "dummy"}})
        assert reply.status_code == 400
        assert reply.json() == {"error": "parameter keys starting with 'triton_' are reserved for Triton usage "
                                         "and should not be specified."}
    assert client.post("/v2/models/echo/infer", json={**body, "parameters": {"tritonish": 1}}).status_code == 200
