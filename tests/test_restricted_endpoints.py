"""Triton's --http-restricted-api / --grpc-restricted-protocol: restricted endpoint groups refuse requests
without their header in Triton's words (its qa L0_http http_restricted_api_test.py and L0_grpc
RestrictedProtocolTest ask the same), on both HTTP servers and both gRPC transports; others are untouched."""

import numpy as np
import pytest

from conftest import onnx_reference, running_server
from gpuserve import ModelRepository
from gpuserve.errors import InvalidSettings
from gpuserve.repository import DiskRepository
from gpuserve.restricted import grpc_rules, http_rules
from gpuserve.server.restricted import http_category
from gpuserve.settings import ServerSettings

tritonclient_http = pytest.importorskip("tritonclient.http")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

PREFIX = "triton-grpc-protocol-"


@pytest.fixture(scope="module")
def repo(simple_onnx_repo):
    return simple_onnx_repo


def _server(repo, **settings):
    root, _, _ = repo
    loaded = DiskRepository(str(root)).populate(ModelRepository())
    return running_server(repository=loaded, model_control_enabled=False, **settings)


def _inputs(module):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    infer_input = module.InferInput("input", [2, 4], "FP32")
    infer_input.set_data_from_numpy(x)
    return x, [infer_input]


@pytest.mark.parametrize("http_server", ["gpuserve", "uvicorn"])
def test_http_restricted_groups_need_their_header(repo, http_server):
    with _server(repo, http_server=http_server,
                 http_restricted_api=["model-repository:admin-key=admin-value",
                                      "inference,metadata:infer-key=infer-value"]) as server:
        client = tritonclient_http.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        client.get_inference_statistics("simple")  # not restricted, with or without headers
        client.get_inference_statistics("simple", headers={"infer-key": "infer-value"})
        assert client.is_server_live()
        with pytest.raises(InferenceServerException, match="This API is restricted, expecting header 'admin-key'"):
            client.unload_model("simple", headers={"infer-key": "infer-value"})
        with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed"):
            client.unload_model("simple", headers={"admin-key": "admin-value"})
        with pytest.raises(InferenceServerException, match="This API is restricted"):
            client.get_server_metadata()
        with pytest.raises(InferenceServerException, match="This API is restricted"):
            client.get_model_metadata("simple", headers={"infer-key": "wrong"})
        assert client.get_server_metadata(headers={"infer-key": "infer-value"})["name"]
        x, inputs = _inputs(tritonclient_http)
        with pytest.raises(InferenceServerException, match="This API is restricted") as refused:
            client.infer("simple", inputs, headers={"test": "1"})
        assert refused.value.status() == "403"
        result = client.infer("simple", inputs, headers={"Infer-Key": "infer-value"})  # names: any case
        _, weight, bias = repo
        np.testing.assert_allclose(result.as_numpy("output"), onnx_reference(x, weight, bias), rtol=1e-5)
        assert client.get_model_config("simple")["name"] == "simple"  # model-config: not restricted here


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_grpc_restricted_protocols_need_their_header(repo, transport):
    with _server(repo, grpc_transport=transport,
                 grpc_restricted_protocol=["model-repository:admin-key=admin-value",
                                           "inference,health:infer-key=infer-value"]) as server:
        client = tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        client.get_inference_statistics("simple")
        client.get_inference_statistics("simple", headers={PREFIX + "infer-key": "infer-value"})
        assert client.get_server_metadata().name  # metadata: not restricted here
        with pytest.raises(InferenceServerException, match="This protocol is restricted") as refused:
            client.unload_model("simple", headers={PREFIX + "infer-key": "infer-value"})
        assert refused.value.status() == "StatusCode.UNAVAILABLE"
        with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed"):
            client.unload_model("simple", headers={PREFIX + "admin-key": "admin-value"})
        with pytest.raises(InferenceServerException,
                           match="This protocol is restricted, expecting header 'triton-grpc-protocol-infer-key'"):
            client.is_server_live()
        assert client.is_server_live(headers={PREFIX + "infer-key": "infer-value"})
        with pytest.raises(InferenceServerException, match="This protocol is restricted"):
            client.is_model_ready("simple", headers={"infer-key": "infer-value"})  # without the prefix
        x, inputs = _inputs(tritonclient_grpc)
        with pytest.raises(InferenceServerException, match="This protocol is restricted"):
            client.infer("simple", inputs)
        result = client.infer("simple", inputs, headers={PREFIX + "infer-key": "infer-value"})
        _, weight, bias = repo
        np.testing.assert_allclose(result.as_numpy("output"), onnx_reference(x, weight, bias), rtol=1e-5)


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_grpc_restricted_stream_refuses_without_its_header_and_serves_with_it(repo, transport):
    import queue

    with _server(repo, grpc_transport=transport,  # a key written in capitals matches gRPC's lower-case metadata
                 grpc_restricted_protocol=["inference:Infer-Key=infer-value"]) as server:
        x, inputs = _inputs(tritonclient_grpc)
        for headers, refused in ((None, True), ({PREFIX + "infer-key": "infer-value"}, False)):
            client = tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
            answers: "queue.Queue" = queue.Queue()
            client.start_stream(lambda result, error: answers.put((result, error)), headers=headers)
            try:
                client.async_stream_infer("simple", inputs)
            except InferenceServerException as exc:  # the refusal may end the stream before this request goes
                assert refused and "no longer in valid state" in str(exc)
            result, error = answers.get(timeout=30)
            client.stop_stream()
            client.close()
            if refused:
                assert result is None and "This protocol is restricted" in str(error)
            else:
                assert error is None and result.as_numpy("output").shape == (2, 3)


def test_restriction_specs_are_checked_in_tritons_words():
    assert grpc_rules(["health,metadata:k=v"]) == {"health": (PREFIX + "k", "v"), "metadata": (PREFIX + "k", "v")}
    assert http_rules(["model-config:k=v=w"]) == {"model-config": ("k", "v=w")}
    for specs, words in ((["model-repository,health:k1=v1", "metadata,health:k2=v2"],
                          "api 'health' can not be specified in multiple config groups"),
                         (["model-reposit,health:k1=v1"], "unknown restricted api 'model-reposit'"),
                         (["health"], "option format is"), (["health:key"], "option format is"),
                         (["health:=v"], "option format is")):
        with pytest.raises(InvalidSettings, match=words):
            http_rules(specs)
    with pytest.raises(InvalidSettings, match="unknown restricted protocol 'x'"):
        ServerSettings.load(None, grpc_restricted_protocol=["x:k=v"])


@pytest.mark.parametrize("method,path,group", [
    ("GET", "/v2", "metadata"), ("GET", "/v2/health/ready", "health"), ("GET", "/v2/models/m/ready", "health"),
    ("GET", "/v2/models/m/versions/2", "metadata"), ("GET", "/v2/models/m/config", "model-config"),
    ("GET", "/v2/models/m/versions/1/config", "model-config"), ("GET", "/v2/models/stats", "statistics"),
    ("GET", "/v2/models/m/stats", "statistics"), ("POST", "/v2/models/m/versions/1/infer", "inference"),
    ("POST", "/v2/models/m/generate_stream", "inference"), ("POST", "/v2/repository/index", "model-repository"),
    ("POST", "/v2/repository/models/m/load", "model-repository"), ("GET", "/v2/trace/setting", "trace"),
    ("POST", "/v2/models/m/trace/setting", "trace"), ("GET", "/v2/logging", "logging"),
    ("POST", "/v2/systemsharedmemory/region/r/register", "shared-memory"),
    ("GET", "/v2/cudasharedmemory/status", "shared-memory"), ("POST", "/v1/models/m:predict", "inference"),
    ("GET", "/v1/models/m", "metadata"), ("GET", "/metrics", None), ("GET", "/docs", None)])
def test_http_routes_fall_in_tritons_groups(method, path, group):
    assert http_category(method, path) == group
