"""MLServer's `tracing_server` setting: a SERVER span per REST and gRPC request sent over OTLP/gRPC to a
loopback collector, checked against what MLServer 1.7.1 exports for the same requests (resource, scopes,
span names, attributes and their types, parent from a traceparent, health routes left out)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_ports

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ECHO = """from mlserver import MLModel
from mlserver.types import InferenceResponse, ResponseOutput


class Echo(MLModel):
    async def load(self):
        return True

    async def predict(self, payload):
        tensor = payload.inputs[0]
        return InferenceResponse(model_name=self.name, outputs=[ResponseOutput(
            name="OUT", shape=tensor.shape, datatype=tensor.datatype, data=tensor.data)])
"""


def test_without_the_tracing_extra_it_says_so_once_and_serves_on(monkeypatch, caplog):
    from gpuserve import otel_mlserver

    # the package itself made unimportable: a module imported earlier in this process stays an attribute of its
    # package, which `from package import module` would find
    monkeypatch.setitem(sys.modules, "opentelemetry.proto.common.v1", None)
    with caplog.at_level(logging.WARNING, logger="gpuserve"):
        assert otel_mlserver.server_spans("127.0.0.1:4317", "mlserver", "1") is None
    said = [r.getMessage() for r in caplog.records if "gpuserve[tracing]" in r.getMessage()]
    assert len(said) == 1 and "serving without traces" in said[0]


def _get(url, body=None, headers=None):
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # not listening yet
        return None


def test_rest_and_grpc_requests_become_mlservers_server_spans(tmp_path):
    pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    import grpc
    import tritonclient.grpc as grpcclient
    import numpy as np

    from otel_collector import GrpcCollector

    collector = GrpcCollector()
    http, grpc_port, metrics = free_ports(3)
    (tmp_path / "echo").mkdir()
    (tmp_path / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http, "grpc_port": grpc_port, "metrics_port": metrics,
        "tracing_server": f"127.0.0.1:{collector.port}"}))
    (tmp_path / "echo" / "model-settings.json").write_text(json.dumps({"name": "echo",
                                                                       "implementation": "echo_model.Echo"}))
    (tmp_path / "echo" / "echo_model.py").write_text(ECHO)
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", str(tmp_path)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    body = {"inputs": [{"name": "IN", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}
    base = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 60
        while _get(f"{base}/v2/health/ready") != 200:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode(errors="replace")
            time.sleep(0.3)
        assert _get(f"{base}/v2/models/echo/infer", body) == 200
        assert _get(f"{base}/v2/models/echo/infer", body, {"traceparent": TRACEPARENT}) == 200
        assert _get(f"{base}/v2/models/echo/ready") == 200
        assert _get(f"{base}/v2/models/nope/infer", body) == 404
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        tensor = grpcclient.InferInput("IN", [2], "FP32")
        tensor.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
        client.infer("echo", [tensor], headers={"traceparent": TRACEPARENT})
        assert client.is_server_live()
        with pytest.raises(Exception):
            client.infer("nope", [tensor])
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)  # what waits in the batch is sent at shutdown
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
        collector.close()
    spans = collector.spans()
    assert spans, output
    resource = {a.key: a.value.string_value for a in spans[0][0].attributes}
    assert resource["service.name"] == "mlserver" and set(resource) == {"service.name", "service.version"}
    scopes = {scope.name: scope.version for _, scope, _ in spans}
    assert scopes == {"opentelemetry.instrumentation.fastapi": "0.66b2", "opentelemetry.instrumentation.grpc": "0.66b2"}

    def attrs(span):
        return {a.key: a.value.int_value if a.value.HasField("int_value") else a.value.string_value
                for a in span.attributes}

    by_name = {}
    for _, _, span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert set(by_name) == {"POST /v2/models/{model_name}/infer", "GET /v2/models/{model_name}/ready",
                            "/inference.GRPCInferenceService/ModelInfer"}  # no health routes
    assert all(span.kind == span.SPAN_KIND_SERVER and span.status.code == 0 for _, _, span in spans)
    rest = by_name["POST /v2/models/{model_name}/infer"]
    assert sorted(attrs(s)["http.status_code"] for s in rest) == [200, 200, 404]
    joined = [s for s in rest if s.parent_span_id]
    assert len(joined) == 1 and joined[0].trace_id.hex() == TRACEPARENT[3:35]
    assert joined[0].parent_span_id.hex() == "b7ad6b7169203331" and joined[0].flags == 0x300
    first = attrs(joined[0])
    assert {k: first[k] for k in ("http.scheme", "http.method", "http.target", "http.route", "http.flavor",
                                  "net.host.port", "http.host")} == {
        "http.scheme": "http", "http.method": "POST", "http.target": "/v2/models/echo/infer",
        "http.route": "/v2/models/{model_name}/infer", "http.flavor": "1.1", "net.host.port": http,
        "http.host": f"127.0.0.1:{http}"}
    assert first["http.url"] == f"http://127.0.0.1:{http}/v2/models/echo/infer" and first["net.peer.ip"] == "127.0.0.1"
    rpcs = sorted(by_name["/inference.GRPCInferenceService/ModelInfer"], key=lambda s: s.start_time_unix_nano)
    assert [attrs(s)["rpc.grpc.status_code"] for s in rpcs] == [0, grpc.StatusCode.NOT_FOUND.value[0]]
    assert rpcs[0].trace_id.hex() == TRACEPARENT[3:35] and rpcs[0].parent_span_id.hex() == "b7ad6b7169203331"
    assert {k: attrs(rpcs[0])[k] for k in ("rpc.system", "rpc.method", "rpc.service", "net.peer.ip")} == {
        "rpc.system": "grpc", "rpc.method": "ModelInfer", "rpc.service": "inference.GRPCInferenceService",
        "net.peer.ip": "127.0.0.1"}
    assert isinstance(attrs(rpcs[0])["net.peer.port"], str) and not rpcs[1].parent_span_id
    assert all(s.end_time_unix_nano >= s.start_time_unix_nano > 0 for _, _, s in spans)
