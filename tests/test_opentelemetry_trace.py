"""Triton's opentelemetry trace mode (--trace-config mode=opentelemetry): the spans gpuserve posts to a
loopback OTLP/HTTP collector, checked against what tritonserver 2.51 posts for the same requests (names,
kinds, parents, attributes and their types, events, resource, scope, JSON body, batching, traceparent)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from otel_collector import HttpCollector, wait_for

ADD = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() + 1)]) for r in requests]
"""
BLS = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            child = pb_utils.InferenceRequest(model_name="add", requested_output_names=["OUTPUT0"],
                                              inputs=[pb_utils.get_input_tensor_by_name(r, "INPUT0")],
                                              trace=r.trace())
            out.append(pb_utils.InferenceResponse(child.exec().output_tensors()))
        return out
"""
IO = """input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""
ENSEMBLE = """name: "ens"
platform: "ensemble"
max_batch_size: 0
""" + IO + """ensemble_scheduling { step [ { model_name: "add" model_version: -1
  input_map { key: "INPUT0" value: "INPUT0" } output_map { key: "OUTPUT0" value: "OUTPUT0" } } ] }
"""
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203332-00"  # Triton joins it all the same


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("otel_repo")
    for name, code in (("add", ADD), ("bls", BLS)):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.py").write_text(code)
        (root / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n' + IO)
    (root / "ens" / "1").mkdir(parents=True)
    (root / "ens" / "config.pbtxt").write_text(ENSEMBLE)
    return root


@pytest.fixture
def collector():
    found = HttpCollector()
    yield found
    found.close()


def serve(repo, collector, *configs, url=None):
    config = ["mode=opentelemetry", f"opentelemetry,url={url or collector.url}", *configs]
    return running_server(repository=DiskRepository(repo).populate(ModelRepository()), trace_config=config)


def infer(module, server, model="add", request_id="", traceparent=None):
    port = server.ports["http" if module is httpclient else "grpc"]
    client = module.InferenceServerClient(f"127.0.0.1:{port}")
    tensor = module.InferInput("INPUT0", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
    try:
        result = client.infer(model, [tensor], request_id=request_id,
                              headers={"traceparent": traceparent} if traceparent else None)
        assert result.as_numpy("OUTPUT0").tolist() == [2, 3]
    finally:
        client.close()


def flushed(server):
    server.dataplane.runtime_settings.tracer.otel.flush()


def traces(collector):
    """{trace id: [span, ...]} of what the collector received."""
    found = {}
    for _, _, span in collector.spans():
        found.setdefault(span["traceId"], []).append(span)
    return found


def attributes(span):
    return {a["key"]: a["value"] for a in span.get("attributes", [])}


def events(span):
    return [e["name"] for e in span["events"]]


def test_http_and_grpc_requests_export_tritons_three_spans(repo, collector):
    with serve(repo, collector, "rate=1", "level=TIMESTAMPS") as server:
        infer(httpclient, server, request_id="rid1")
        infer(grpcclient, server, request_id="rid2")
        flushed(server)
    path, headers, _ = collector.posts[0]
    assert path == "/v1/traces" and headers["Content-Type"] == "application/json"
    resource, scope, _ = collector.spans()[0]
    assert resource["service.name"] == {"stringValue": "triton-inference-server"}
    assert scope == {"name": "triton-server"}
    found = traces(collector)
    assert len(found) == 2
    for spans, front_events, request_id in zip(
            sorted(found.values(), key=lambda s: min(int(x["startTimeUnixNano"]) for x in s)),
            (["HTTP_RECV_START", "HTTP_RECV_END", "INFER_RESPONSE_COMPLETE", "HTTP_SEND_START", "HTTP_SEND_END"],
             ["GRPC_WAITREAD_START", "GRPC_WAITREAD_END", "INFER_RESPONSE_COMPLETE", "GRPC_SEND_START",
              "GRPC_SEND_END"]), ("rid1", "rid2")):
        by_name = {s["name"]: s for s in spans}
        assert sorted(by_name) == ["InferRequest", "add", "compute"] and len(spans) == 3
        front, model, compute = by_name["InferRequest"], by_name["add"], by_name["compute"]
        assert {s["kind"] for s in spans} == {2} and not any("status" in s for s in spans)
        assert "parentSpanId" not in front and "attributes" not in front
        assert model["parentSpanId"] == front["spanId"] and compute["parentSpanId"] == model["spanId"]
        assert events(front) == front_events
        assert events(model) == ["REQUEST_START", "QUEUE_START", "REQUEST_END"]
        assert events(compute) == ["COMPUTE_START", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START", "COMPUTE_END"]
        assert attributes(model) == {
            "triton.model_name": {"stringValue": "add"}, "triton.model_version": {"intValue": "1"},
            "triton.trace_id": attributes(model)["triton.trace_id"], "triton.trace_parent_id": {"intValue": "0"},
            "triton.request_id": {"stringValue": request_id}}
        assert int(attributes(model)["triton.trace_id"]["intValue"]) > 0
        times = lambda s: (int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"]))  # noqa: E731
        assert times(front)[0] <= times(model)[0] <= times(compute)[0] <= times(compute)[1] <= times(model)[1] \
            <= times(front)[1]
        assert abs(times(front)[0] - time.time_ns()) < 60e9  # the system clock, as Triton's spans
        model_events = {e["name"]: int(e["timeUnixNano"]) for e in model["events"]}
        assert (model_events["REQUEST_START"], model_events["REQUEST_END"]) == times(model)


def test_traceparent_joins_the_callers_trace_whatever_the_rate(repo, collector):
    """As Triton (docs/user_guide/trace.md, context propagation): with rate=0 only requests that carry a
    context are traced, each a child of the caller's span in the caller's trace, sampled flag or not."""
    with serve(repo, collector, "rate=0", "level=TIMESTAMPS") as server:
        infer(httpclient, server)
        infer(grpcclient, server)
        infer(httpclient, server, traceparent=TRACEPARENT)
        infer(grpcclient, server, traceparent=TRACEPARENT)
        infer(httpclient, server, traceparent=UNSAMPLED)
        flushed(server)
    fronts = [s for _, _, s in collector.spans() if s["name"] == "InferRequest"]
    assert sorted((s["traceId"], s["parentSpanId"]) for s in fronts) == [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")] * 2 + [
        ("0af7651916cd43dd8448eb211c80319d", "b7ad6b7169203332")]
    assert {s["traceId"] for _, _, s in collector.spans()} == {
        "0af7651916cd43dd8448eb211c80319c", "0af7651916cd43dd8448eb211c80319d"}


def test_ensemble_steps_and_bls_requests_nest_under_their_models_span(repo, collector):
    with serve(repo, collector, "rate=1", "level=TIMESTAMPS") as server:
        infer(httpclient, server, "ens", request_id="7")
        infer(grpcclient, server, "bls")
        flushed(server)
    found = sorted(traces(collector).values(), key=lambda s: min(int(x["startTimeUnixNano"]) for x in s))
    ens, bls = ({s["spanId"]: s for s in spans} for spans in found)

    def tree(spans):
        named = lambda span_id: spans[span_id]["name"] if span_id in spans else None  # noqa: E731
        return sorted((s["name"], named(s.get("parentSpanId"))) for s in spans.values())

    assert tree(ens) == [("InferRequest", None), ("add", "ens"), ("compute", "add"), ("ens", "InferRequest")]
    assert tree(bls) == [("InferRequest", None), ("add", "bls"), ("bls", "InferRequest"), ("compute", "add"),
                         ("compute", "bls")]
    step = next(s for s in ens.values() if s["name"] == "add")
    parent = next(s for s in ens.values() if s["name"] == "ens")
    assert attributes(step)["triton.trace_parent_id"] == attributes(parent)["triton.trace_id"]
    assert attributes(step)["triton.request_id"] == {"stringValue": "7"}
    assert "triton.request_id" not in attributes(next(s for s in bls.values() if s["name"] == "add"))


def test_resource_batch_settings_rate_count_and_level(repo, collector, monkeypatch):
    """resource= replaces service.name and adds attributes; bsp_max_export_batch_size caps the spans of one
    POST and bsp_schedule_delay sends without a flush; count ends plain sampling, not a caller's context;
    level OFF (here set over the network) traces nothing, context or not."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=ml,service.name=ignored")
    with serve(repo, collector, "rate=2", "count=1", "level=TIMESTAMPS", "opentelemetry,resource=service.name=foo",
               "opentelemetry,resource=deployment=bar", "opentelemetry,bsp_schedule_delay=50",
               "opentelemetry,bsp_max_export_batch_size=2") as server:
        for _ in range(4):
            infer(httpclient, server)
        infer(httpclient, server, traceparent=TRACEPARENT)
        assert wait_for(lambda: len(collector.spans()) == 6)
        assert all(len(body["resourceSpans"][0]["scopeSpans"][0]["spans"]) <= 2 for _, _, body in collector.posts)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        assert client.get_trace_settings()["trace_count"] == "0"
        client.update_trace_settings(settings={"trace_level": ["OFF"], "trace_count": "-1", "trace_rate": "1"})
        client.close()
        infer(httpclient, server)
        infer(grpcclient, server, traceparent=TRACEPARENT)
        flushed(server)
    resource = collector.spans()[0][0]
    assert resource["service.name"] == {"stringValue": "foo"}
    assert resource["deployment"] == {"stringValue": "bar"} and resource["team"] == {"stringValue": "ml"}
    assert len(traces(collector)) == 2 and len(collector.spans()) == 6


def test_a_collector_that_is_down_does_not_hurt_serving(repo, collector, caplog):
    collector.close()  # nothing listens there any more
    with serve(repo, collector, "rate=1", "level=TIMESTAMPS", url=collector.url) as server:
        exporter = server.dataplane.runtime_settings.tracer.otel
        start = time.perf_counter()
        for _ in range(5):
            infer(httpclient, server)
            infer(grpcclient, server)
        flushed(server)
        assert time.perf_counter() - start < 20
        assert exporter.dropped >= 30
        infer(httpclient, server)
    said = [r for r in caplog.records if "cannot export OpenTelemetry spans" in r.getMessage()]
    assert len(said) == 1
