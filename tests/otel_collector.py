"""Loopback OpenTelemetry collectors for the tracing tests: OTLP/HTTP (JSON, as Triton posts, or protobuf)
and OTLP/gRPC (as MLServer's exporter sends), each keeping what it received."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HttpCollector:
    """Records every POST: `posts` holds (path, headers, decoded body) in arrival order."""

    def __init__(self):
        self.posts = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                kind = self.headers.get("content-type", "")
                outer.posts.append((self.path, dict(self.headers), json.loads(body) if "json" in kind else body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self):
        """Every span received: (resource attributes, scope, span) for each."""
        out = []
        for _, _, body in self.posts:
            for resource_spans in body["resourceSpans"]:
                resource = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
                for scope_spans in resource_spans["scopeSpans"]:
                    out.extend((resource, scope_spans["scope"], span) for span in scope_spans["spans"])
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class GrpcCollector:
    """An OTLP/gRPC TraceService: `requests` holds each ExportTraceServiceRequest received."""

    def __init__(self):
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.requests = []
        outer = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                outer.requests.append(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def spans(self):
        return [(resource_spans.resource, scope_spans.scope, span) for request in self.requests
                for resource_spans in request.resource_spans for scope_spans in resource_spans.scope_spans
                for span in scope_spans.spans]

    def close(self):
        self.server.stop(0)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
