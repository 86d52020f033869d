"""Triton's SageMaker and Vertex AI endpoints (qa L0_sagemaker, L0_vertex_ai) and the HTTP limits they share
with the main endpoint (chunked bodies, unknown models), each on loopback ports the OS chose."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
from onnx import TensorProto

from conftest import free_ports, running_server
from triton_example_models import add_sub
from gpuserve.errors import InvalidSettings
from gpuserve.model_repository import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.settings import ServerSettings

class requests:  # the calls the qa scripts make with requests, on httpx
    @staticmethod
    def post(url, data=None, **options):
        return httpx.post(url, content=data, timeout=60, **options)

    @staticmethod
    def get(url, **options):
        return httpx.get(url, timeout=60, **options)

    @staticmethod
    def delete(url, **options):
        return httpx.delete(url, timeout=60, **options)


SM_MIME = "application/vnd.sagemaker-triton.binary+json;json-header-size="
VERTEX_MIME = "application/vnd.vertex-ai-triton.binary+json;json-header-size="
DATA = list(range(16))
REQUEST = {"inputs": [{"name": f"INPUT{i}", "datatype": "INT32", "shape": [1, 16], "data": DATA} for i in range(2)]}


def int32_model(root: Path, name: str) -> Path:
    add_sub(root, name, "TYPE_INT32", TensorProto.INT32)
    return root


def serve_repository(root: Path, port: int, **settings):
    registry = DiskRepository(root).populate(ModelRepository())
    options = dict(http_port=port, grpc_port=0, metrics_port=0, enable_grpc=False,
                   enable_metrics_server=False)
    options.update(settings)
    return running_server(repository=registry, **options)


def binary_body(header_extra=None):
    import tritonclient.http as httpclient

    inputs = [httpclient.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in range(2)]
    for i, tensor in enumerate(inputs):
        tensor.set_data_from_numpy(np.array([DATA], dtype=np.int32), binary_data=i == 0)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)]
    return httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)


def test_sagemaker_invocations_ping_and_binary_content_type(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME", "sm_model")
    http, cloud = free_ports(2)
    with serve_repository(int32_model(tmp_path, "sm_model"), http, sagemaker=True, sagemaker_port=cloud,
                          enable_http=False):
        url = f"http://127.0.0.1:{cloud}"
        assert requests.get(f"{url}/ping").status_code == 200
        answer = requests.post(f"{url}/invocations", json=REQUEST)
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
        assert outputs == {"OUTPUT0": [2 * x for x in DATA], "OUTPUT1": [0] * 16}
        body, length = binary_body()
        answer = requests.post(f"{url}/invocations", data=body, headers={"Content-Type": f"{SM_MIME}{length}"})
        assert answer.status_code == 200, answer.text
        kind = answer.headers["Content-Type"]
        assert kind.startswith(SM_MIME)  # the binary answer's JSON size is told the same way
        import tritonclient.http as httpclient

        result = httpclient.InferenceServerClient.parse_response_body(answer.content,
                                                                        header_length=int(kind[len(SM_MIME):]))
        assert result.as_numpy("OUTPUT0").tolist() == [[2 * x for x in DATA]]
        for bad in (f"extra/{SM_MIME}{length}", f"{SM_MIME}x{length}", f"{SM_MIME}-123", f"{SM_MIME}12345",
                    f"{SM_MIME}99999999999"):
            answer = requests.post(f"{url}/invocations", data=body, headers={"Content-Type": bad})
            assert answer.status_code == 400, (bad, answer.text)
        assert requests.get(f"{url}/ping").status_code == 200
        assert requests.get(f"{url}/elsewhere").status_code == 400


def test_sagemaker_unspecified_model_is_named_before_the_body_is_read(tmp_path, monkeypatch):
    monkeypatch.delenv("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME", raising=False)
    http, cloud = free_ports(2)
    with serve_repository(int32_model(tmp_path, "sm_model"), http, sagemaker=True, sagemaker_port=cloud):
        answer = requests.post(f"http://127.0.0.1:{cloud}/invocations", data=b"dummy")
        assert answer.status_code != 200
        assert "Request for unknown model: 'unspecified_SAGEMAKER_TRITON_DEFAULT_MODEL_NAME' is not found" \
            in answer.text
        answer = requests.post(f"http://127.0.0.1:{http}/v2/models/nothing/infer", data=b"dummy")
        assert answer.status_code == 404 and "Request for unknown model: 'nothing'" in answer.text


def test_sagemaker_multi_model_load_list_invoke_unload(tmp_path, monkeypatch):
    monkeypatch.delenv("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME", raising=False)
    base, models = tmp_path / "base", tmp_path / "ml" / "models"
    base.mkdir()
    int32_model(tmp_path / "stage", "m")
    shutil.copytree(tmp_path / "stage" / "m", models / "abc123" / "model")  # config.pbtxt at the url itself
    (models / "abc123" / "model" / "config.pbtxt").write_text(
        (models / "abc123" / "model" / "config.pbtxt").read_text().replace('"m"', '"sm_mme_model_1"'))
    shutil.copytree(tmp_path / "stage" / "m", models / "ens" / "model" / "only")  # a repository of one model
    http, cloud = free_ports(2)
    with serve_repository(base, http, sagemaker=True, sagemaker_port=cloud, enable_http=False,
                          sagemaker_models_root=str(models)):
        url = f"http://127.0.0.1:{cloud}/models"
        load = {"model_name": "sm_mme_model_1", "url": str(models / "abc123" / "model")}
        assert requests.post(url, json=load).status_code == 200
        assert requests.post(url, json=load).status_code == 409
        assert requests.post(url, json={"model_name": "x", "url": str(tmp_path / "stage" / "m")}).status_code == 400
        answer = requests.post(url, json={"model_name": "second", "url": str(models / "ens" / "model")},
                               headers={"X-Amzn-SageMaker-Target-Model": "second.tar.gz"})
        assert answer.status_code == 200, answer.text
        listed = {m["modelName"]: m["modelUrl"] for m in requests.get(url).json()["models"]}
        assert listed == {"sm_mme_model_1": str(models / "abc123"), "second": str(models / "ens" / "model")}
        assert requests.get(f"{url}/sm_mme_model_1").json() == {"modelName": "sm_mme_model_1",
                                                                 "modelUrl": str(models / "abc123")}
        assert requests.get(f"{url}/unknown").status_code == 404
        answer = requests.post(f"{url}/sm_mme_model_1/invoke", json=REQUEST)
        assert answer.status_code == 200 and answer.json()["model_name"] == "sm_mme_model_1"
        answer = requests.post(f"{url}/second/invoke", json=REQUEST,
                               headers={"X-Amzn-SageMaker-Target-Model": "second.tar.gz"})
        assert answer.status_code == 200, answer.text
        assert requests.post(f"{url}/unknown/invoke", json=REQUEST).status_code == 404
        assert requests.delete(f"{url}/sm_mme_model_1").status_code == 200
        assert requests.delete(f"{url}/sm_mme_model_1").status_code == 404
        assert requests.post(f"{url}/sm_mme_model_1/invoke", json=REQUEST).status_code == 404
        assert requests.post(url, json=load).status_code == 200  # unregistered, so it loads again
        answer = requests.post(url, data=b"AAAA")
        assert answer.status_code == 400 and "failed to parse the request JSON buffer" in answer.text


def test_sagemaker_restricted_api_and_input_size(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME", "sm_model")
    http, cloud = free_ports(2)
    with serve_repository(int32_model(tmp_path, "sm_model"), http, sagemaker=True, sagemaker_port=cloud,
                          http_restricted_api=["model-repository:X-SM-Auth=secret"], max_request_bytes=600):
        url = f"http://127.0.0.1:{cloud}"
        assert requests.get(f"{url}/ping").status_code == 200
        assert requests.post(f"{url}/invocations", json=REQUEST).status_code == 200
        refused = requests.get(f"{url}/models")
        assert refused.status_code == 403 and "This API is restricted" in refused.text
        assert requests.delete(f"{url}/models/sm_model").status_code == 403
        assert requests.get(f"{url}/models", headers={"X-SM-Auth": "secret"}).status_code == 200
        big = {"inputs": [dict(i, data=DATA * 0 + [123456789] * 16) for i in REQUEST["inputs"]] * 3}
        assert requests.post(f"{url}/invocations", data=json.dumps(big)).status_code == 413


def test_sagemaker_inference_type_and_ports_stop_the_start(tmp_path, monkeypatch):
    from gpuserve.server.cloud import check_ports

    monkeypatch.setenv("SAGEMAKER_TRITON_INFERENCE_TYPE", "bad")
    http, cloud = free_ports(2)
    with pytest.raises(InvalidSettings, match="Invalid SAGEMAKER_TRITON_INFERENCE_TYPE 'bad'"):
        with serve_repository(int32_model(tmp_path, "m"), http, sagemaker=True, sagemaker_port=cloud):
            pass
    with pytest.raises(InvalidSettings, match=r"cannot listen to HTTP requests at port 8080, allowed port range "
                                              r"is \[9602, 9699\]"):
        check_ports(ServerSettings(sagemaker=True, sagemaker_port=9600, sagemaker_safe_port_range="9602-9699",
                                   enable_grpc=False, enable_metrics_server=False))
    with pytest.raises(InvalidSettings, match="HTTP requests and SageMaker requests at the same address and port"):
        check_ports(ServerSettings(sagemaker=True, http_port=9600, sagemaker_port=9600))


def test_sagemaker_serve_script_environment(tmp_path):
    from gpuserve.sagemaker_serve import ServeError, arguments

    int32_model(tmp_path / "single", "only")
    args, env = arguments({}, str(tmp_path / "single"), str(tmp_path / "multi"))
    assert "--load-model=only" in args and "--allow-sagemaker=true" in args and "--allow-http=false" in args
    assert env == {"SAGEMAKER_TRITON_PING_MODE": "ready"}
    args, env = arguments({"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_BIND_TO_PORT": "9650"},
                          str(tmp_path / "single"), str(tmp_path / "multi"))
    assert "--sagemaker-port=9650" in args and not any(a.startswith("--load-model") for a in args)
    assert env["SAGEMAKER_TRITON_PING_MODE"] == "live" and (tmp_path / "multi").is_dir()
    with pytest.raises(ServeError, match="ERROR: Invalid SAGEMAKER_TRITON_INFERENCE_TYPE 'x'"):
        arguments({"SAGEMAKER_TRITON_INFERENCE_TYPE": "x"}, str(tmp_path / "single"))
    with pytest.raises(ServeError, match="SAGEMAKER_TRITON_DEFAULT_MODEL_NAME nope does not exist"):
        arguments({"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "nope"}, str(tmp_path / "single"))
    from gpuserve.cli import _parser

    assert _parser().parse_args(["start", "--log-verbose=true"]).log_verbose == 1


def test_vertex_ai_health_predict_and_redirects(tmp_path, monkeypatch):
    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/predict")
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/health")
    root = int32_model(int32_model(tmp_path, "addsub"), "subadd")
    http, cloud = free_ports(2)
    with serve_repository(root, http, vertex_ai=True, vertex_ai_port=cloud, vertex_ai_default_model="addsub",
                          http_restricted_api=["statistics:X-V=secret"]):
        url = f"http://127.0.0.1:{cloud}"
        assert requests.get(f"{url}/health").status_code == 200
        answer = requests.post(f"{url}/predict", json=REQUEST)
        assert answer.status_code == 200 and answer.json()["model_name"] == "addsub"
        body, length = binary_body()
        answer = requests.post(f"{url}/predict", data=body, headers={"Content-Type": f"{VERTEX_MIME}{length}"})
        assert answer.status_code == 200 and int(answer.headers["Inference-Header-Content-Length"]) > 0

        def redirect(target, **kw):
            return requests.post(f"{url}/predict", headers={"X-Vertex-Ai-Triton-Redirect": target, **kw})

        assert redirect("v2/models/subadd/ready").status_code == 200
        assert "extensions" in redirect("v2").text
        assert "version_policy" in redirect("v2/models/addsub/config").text
        assert "subadd" in redirect("v2/repository/index").text
        assert redirect("v2/health/live").status_code == 200
        assert redirect("metrics").status_code == 200
        for forbidden in ("v2/repository/models/subadd/unload", "v2/systemsharedmemory/region/x/register",
                          "v2/models/stats"):
            assert redirect(forbidden).status_code == 403, forbidden  # the last by --http-restricted-api
        assert redirect("v2/models/stats", **{"X-V": "secret"}).status_code == 200
        assert requests.get(f"{url}/predict", headers={"X-Vertex-Ai-Triton-Redirect": "v2"}).status_code == 405
        assert requests.post(f"{url}/other").status_code == 400
        assert requests.post(f"{url}/predict", data=b"", headers={
            "X-Vertex-Ai-Triton-Redirect": "v2/repository/models/subadd/unload"}).status_code == 403
        assert requests.post(f"http://127.0.0.1:{http}/v2/models/subadd/ready").status_code != 403


def test_vertex_ai_default_model_and_routes_stop_the_start(tmp_path, monkeypatch):
    root = int32_model(int32_model(tmp_path, "addsub"), "subadd")
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/health")
    monkeypatch.delenv("AIP_PREDICT_ROUTE", raising=False)
    http, cloud = free_ports(2)
    with pytest.raises(InvalidSettings, match="API_PREDICT_ROUTE is not defined for Vertex AI endpoint"):
        with serve_repository(root, http, vertex_ai=True, vertex_ai_port=cloud):
            pass
    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/predict")
    with pytest.raises(InvalidSettings, match="Expect the model repository contains only a single model"):
        with serve_repository(root, http, vertex_ai=True, vertex_ai_port=cloud):
            pass
    with pytest.raises(InvalidSettings, match="Expect the default model 'other' is loaded"):
        with serve_repository(root, http, vertex_ai=True, vertex_ai_port=cloud, vertex_ai_default_model="other"):
            pass


def test_vertex_ai_environment_picks_endpoints_port_and_repository(monkeypatch, tmp_path):
    from gpuserve.cli import _parser, repository_folders
    from gpuserve.triton_flags import settings_from

    monkeypatch.setenv("AIP_MODE", "PREDICTION")
    monkeypatch.setenv("AIP_HTTP_PORT", "9640")
    monkeypatch.setenv("AIP_STORAGE_URI", str(tmp_path))
    args = _parser().parse_args(["start", "--allow-grpc=true"])
    assert settings_from(args) == {"enable_grpc": True, "vertex_ai": True, "enable_http": False,
                                   "vertex_ai_port": 9640}
    assert repository_folders(args) == [str(tmp_path)]
    assert settings_from(_parser().parse_args(["start", "--allow-vertex-ai=false"]))["vertex_ai"] is False


def chunked(port: int, path: str, chunks: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     .encode() + b"1\r\nA\r\n" * chunks + b"0\r\n\r\n")
        answer = b""
        while True:
            part = sock.recv(65536)
            if not part:
                return answer
            answer += part


def test_chunked_bodies_over_65536_chunks_are_refused(tmp_path):
    (http,) = free_ports(1)
    with serve_repository(int32_model(tmp_path, "m"), http):
        at_limit = chunked(http, "/v2/models/m/infer", 65536)
        assert at_limit.startswith(b"HTTP/1.1 400") and b"non-empty chunks" not in at_limit  # read, then bad JSON
        over = chunked(http, "/v2/models/m/infer", 65537)
        assert over.startswith(b"HTTP/1.1 400 ")
        assert b"Chunked request body exceeds maximum of 65536 non-empty chunks" in over
        assert requests.get(f"http://127.0.0.1:{http}/v2/health/live").status_code == 200


def test_deprecated_trace_flags_warn_once_each_and_opentelemetry_counts_are_checked(monkeypatch, capsys):
    from gpuserve.cli import _parser, trace_config
    from gpuserve.errors import GpuserveError

    args = _parser().parse_args(["start", "--trace-file=/tmp/t.json", "--trace-rate=100", "--trace-level=TIMESTAMPS",
                                 "--trace-log-frequency=50", "--trace-count=100"])
    assert sorted(trace_config(args)) == sorted(["file=/tmp/t.json", "rate=100", "level=TIMESTAMPS",
                                                 "log-frequency=50", "count=100"])
    printed = capsys.readouterr().err
    for flag in ("trace-file", "trace-rate", "trace-level", "trace-log-frequency", "trace-count"):
        assert printed.count(f"Warning: '--{flag}' has been deprecated") == 1
    otel = ["start", "--trace-config", "mode=opentelemetry"]
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "bad_value")
    with pytest.raises(GpuserveError, match='Bad option: "OTEL_BSP_SCHEDULE_DELAY"'):
        trace_config(_parser().parse_args(otel))
    monkeypatch.delenv("OTEL_BSP_SCHEDULE_DELAY")
    trace_config(_parser().parse_args(otel))  # the defaults are counts
    with pytest.raises(GpuserveError, match='Bad option: "--trace-config opentelemetry,bsp_max_queue_size"'):
        trace_config(_parser().parse_args(otel + ["--trace-config", "opentelemetry,bsp_max_queue_size=x"]))
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "bad_value")  # only read where OpenTelemetry is the mode
    trace_config(_parser().parse_args(["start", "--trace-config", "level=TIMESTAMPS"]))
