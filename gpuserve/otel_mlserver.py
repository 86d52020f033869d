"""MLServer's `tracing_server`: one SERVER span per REST and gRPC request, sent over OTLP/gRPC.

What MLServer 1.7.1 exports (read off its exporter with a loopback collector): resource service.name
(settings' server_name, "mlserver") and service.version only; REST spans from FastAPI's instrumentation,
scope `opentelemetry.instrumentation.fastapi`, named `METHOD /route/{template}` (just `METHOD` off every
route), with http.scheme, http.host, net.host.port, http.flavor, http.target, http.url, http.method,
http.server_name, http.user_agent, net.peer.ip, net.peer.port, http.route, http.status_code; gRPC spans from
its aio server interceptor, scope `opentelemetry.instrumentation.grpc`, named after the full method
(`/inference.GRPCInferenceService/ModelInfer`) with rpc.system, rpc.grpc.status_code, rpc.method,
rpc.service, rpc.user_agent, net.peer.ip, net.peer.port (a string there), net.peer.name. Health routes
(/v2/health/live, /v2/health/ready, ServerLive, ServerReady) are not traced; the status stays unset, a 404
or NOT_FOUND included. A W3C traceparent from the client makes the span its child, in its trace.

Left out on purpose: the ASGI instrumentation's INTERNAL `http receive` / `http send` spans under each
REST span (microsecond-long, they only repeat the status) and the `exception` events with Python
tracebacks of MLServer's own code.

The spans are encoded with opentelemetry-proto (the `tracing` extra) and sent with grpcio; without them
`tracing_server` is said to be unserved, once, and the server serves on untraced.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from gpuserve import otlp
from gpuserve.tracing import traceparent

logger = logging.getLogger("gpuserve")

SCHEMA = "https://opentelemetry.io/schemas/1.11.0"
SCOPES = {"http": ("opentelemetry.instrumentation.fastapi", "0.66b2"),
          "grpc": ("opentelemetry.instrumentation.grpc", "0.66b2")}
UNTRACED_PATHS = frozenset(("/v2/health/live", "/v2/health/ready"))
UNTRACED_METHODS = frozenset(("/inference.GRPCInferenceService/ServerLive",
                              "/inference.GRPCInferenceService/ServerReady"))
_VERSIONED = r"(?:/versions/(?P<model_version>[^/]+))?"
_ROUTES = [(re.compile(pattern), template) for pattern, template in (
    (r"^/v2$", "/v2"),
    (r"^/v2/docs$", "/v2/docs"),
    (r"^/v2/docs/dataplane\.json$", "/v2/docs/dataplane.json"),
    (r"^/v2/repository/index$", "/v2/repository/index"),
    (r"^/v2/repository/models/[^/]+/load$", "/v2/repository/models/{model_name}/load"),
    (r"^/v2/repository/models/[^/]+/unload$", "/v2/repository/models/{model_name}/unload"),
    (r"^/v2/models/[^/]+" + _VERSIONED + r"(?P<tail>/ready|/infer|/generate|/infer_stream|/generate_stream|"
     r"/docs/dataplane\.json|/docs)?$", None),
)]


def route_of(path: str) -> Optional[str]:
    """MLServer's FastAPI route template for `path`, None off its routes."""
    for pattern, template in _ROUTES:
        found = pattern.match(path)
        if found is None:
            continue
        if template is not None:
            return template
        versioned = "/versions/{model_version}" if found.group("model_version") is not None else ""
        return "/v2/models/{model_name}" + versioned + (found.group("tail") or "")
    return None


class ServerSpans:
    """The request path calls `http(...)` or `grpc(...)` once a request is answered (a tuple appended to a
    deque); the exporter's thread makes the protobuf spans and sends them."""

    def __init__(self, endpoint: str, service_name: str, service_version: str):
        from opentelemetry.proto.common.v1 import common_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2

        self._common, self._trace = common_pb2, trace_pb2
        self.endpoint = endpoint
        resource = {"service.name": service_name, "service.version": service_version}
        self._sender = GrpcSender(endpoint, [self._attribute(k, v) for k, v in resource.items()])
        self.exporter = otlp.exporter(self._spans_of, self._sender, otlp.bsp_settings({}), endpoint)

    # the request path -------------------------------------------------------------------------------
    def http(self, method: str, path: str, query: bytes, status: int, begun_ns: int, headers, client, server,
             flavor: str) -> None:
        if path in UNTRACED_PATHS:
            return
        self.exporter.add(("http", begun_ns, time.time_ns(), method, path, query, status, headers, client, server,
                           flavor))

    def grpc(self, method: str, code: int, begun_ns: int, metadata, peer) -> None:
        if method in UNTRACED_METHODS:
            return
        self.exporter.add(("grpc", begun_ns, time.time_ns(), method, code, metadata, peer))

    def close(self) -> None:
        self.exporter.close()
        self._sender.close()

    # the exporter's thread ------------------------------------------------------------------------------
    def _attribute(self, key: str, value: Any):
        any_value = self._common.AnyValue(int_value=value) if isinstance(value, int) and not isinstance(
            value, bool) else self._common.AnyValue(string_value=str(value))
        return self._common.KeyValue(key=key, value=any_value)

    def _spans_of(self, item: tuple) -> List[Tuple[str, Any]]:
        if item[0] == "http":
            _, start, end, method, path, query, status, headers, client, server, flavor = item
            route = route_of(path)
            host = headers.get("host") or (f"{server[0]}:{server[1]}" if server else "")
            target = path + ("?" + query.decode("latin-1") if query else "")
            attributes = [("http.scheme", "http"), ("http.host", host)]
            if server:
                attributes.append(("net.host.port", int(server[1])))
            attributes += [("http.flavor", flavor), ("http.target", target), ("http.url", f"http://{host}{target}"),
                           ("http.method", method), ("http.server_name", host)]
            if headers.get("user-agent"):
                attributes.append(("http.user_agent", headers["user-agent"]))
            if client:
                attributes += [("net.peer.ip", client[0]), ("net.peer.port", int(client[1]))]
            if route:
                attributes.append(("http.route", route))
            attributes.append(("http.status_code", int(status)))
            name = f"{method} {route}" if route else method
            return [("http", self._span(name, start, end, headers, attributes))]
        _, start, end, method, code, metadata, peer = item
        service, _, rpc = method.lstrip("/").partition("/")
        attributes = [("rpc.system", "grpc"), ("rpc.grpc.status_code", int(code)), ("rpc.method", rpc),
                      ("rpc.service", service)]
        if metadata.get("user-agent"):
            attributes.append(("rpc.user_agent", metadata["user-agent"]))
        if peer:
            attributes += [("net.peer.ip", peer[0]), ("net.peer.port", str(peer[1])),
                           ("net.peer.name", "localhost" if peer[0] in ("127.0.0.1", "::1") else peer[0])]
        return [("grpc", self._span(method, start, end, metadata, attributes))]

    def _span(self, name: str, start: int, end: int, headers: Dict[str, str], attributes: List[tuple]):
        context = traceparent(headers.get("traceparent"))
        trace_id, parent = context if context is not None else (otlp.trace_id(), "")
        flags = 0x300 if parent else 0x100  # SpanFlags: whether the parent is remote is known (and is it)
        return self._trace.Span(
            trace_id=bytes.fromhex(trace_id), span_id=bytes.fromhex(otlp.span_id()),
            parent_span_id=bytes.fromhex(parent) if parent else b"", flags=flags, name=name,
            kind=self._trace.Span.SPAN_KIND_SERVER, start_time_unix_nano=start, end_time_unix_nano=max(start, end),
            attributes=[self._attribute(k, v) for k, v in attributes], status=self._trace.Status())


class GrpcSender:
    """One OTLP/gRPC Export call per batch, to `host:port` as MLServer's OTLPSpanExporter(insecure=True)."""

    def __init__(self, endpoint: str, resource: list, timeout: float = 10.0):
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.resource.v1 import resource_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2

        self._service, self._trace = trace_service_pb2, trace_pb2
        self._resource = resource_pb2.Resource(attributes=resource)
        target = endpoint.split("://", 1)[-1].rstrip("/")
        self._channel = grpc.insecure_channel(target)
        self._export = self._channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=trace_service_pb2.ExportTraceServiceRequest.SerializeToString,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString)
        self.timeout = timeout

    def __call__(self, spans: List[Tuple[str, Any]]) -> None:
        scoped: Dict[str, list] = {}
        for kind, span in spans:
            scoped.setdefault(kind, []).append(span)
        common = self._trace
        request = self._service.ExportTraceServiceRequest(resource_spans=[common.ResourceSpans(
            resource=self._resource, scope_spans=[common.ScopeSpans(
                scope=_scope(*SCOPES[kind]), spans=found, schema_url=SCHEMA) for kind, found in scoped.items()])])
        self._export(request, timeout=self.timeout)

    def close(self) -> None:
        self._channel.close()


def _scope(name: str, version: str):
    from opentelemetry.proto.common.v1 import common_pb2

    return common_pb2.InstrumentationScope(name=name, version=version)


def server_spans(endpoint: Optional[str], service_name: str, service_version: str) -> Optional[ServerSpans]:
    """ServerSpans for MLServer's tracing_server, or None (no endpoint, or the `tracing` extra missing:
    said once, and the server serves untraced)."""
    if not endpoint:
        return None
    try:
        return ServerSpans(endpoint, service_name, service_version)
    except ImportError as exc:
        logger.warning("tracing_server %s: OpenTelemetry traces need opentelemetry-proto and grpcio "
                       "(pip install 'gpuserve[tracing]'): %s; serving without traces", endpoint, exc)
        return None
