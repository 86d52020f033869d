"""Triton's restricted endpoints: `--http-restricted-api` and `--grpc-restricted-protocol` put groups of
endpoints (model repository, statistics, ...) behind a header, so one set of credentials may infer while
another manages models. A request to a restricted group without the header and value is refused before
it reaches the data plane: HTTP 403 "This API is restricted, expecting header 'KEY'", gRPC UNAVAILABLE
"This protocol is restricted, expecting header 'triton-grpc-protocol-KEY'" (Triton's words, which its
clients and qa match). Nothing here runs unless a restriction was given.
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Callable, Iterable, List, Mapping, Optional, Tuple

from gpuserve.restricted import Restrictions, grpc_rules, http_rules


# HTTP ---------------------------------------------------------------------------------------------------
def http_category(method: str, path: str) -> Optional[str]:
    """The group a REST route belongs to (Triton's grouping; KServe V1 routes grouped alike); None for routes
    outside every group (metrics, docs)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    if parts[0] == "v1":
        if len(parts) >= 3 and parts[1] == "models" and ":" in parts[-1]:
            return "inference"  # :predict / :explain
        return "metadata" if parts[1:2] == ["models"] else None  # TFServing's status and metadata too
    if parts[0] != "v2":
        return None
    rest = parts[1:]
    if not rest:
        return "metadata"
    head = rest[0]
    if head == "health":
        return "health"
    if head == "repository":
        return "model-repository"
    if head in ("systemsharedmemory", "cudasharedmemory"):
        return "shared-memory"
    if head == "logging":
        return "logging"
    if head == "trace":
        return "trace"
    if head != "models":
        return None
    if rest[1:] == ["stats"]:
        return "statistics"
    tail = rest[2:]
    if len(tail) >= 2 and tail[0] == "versions":
        tail = tail[2:]
    last = tail[0] if tail else ""
    return {"": "metadata", "ready": "health", "config": "model-config", "stats": "statistics",
            "trace": "trace", "infer": "inference", "generate": "inference",
            "generate_stream": "inference"}.get(last)


class HttpRestrictions:
    """The REST side: `refusal` is asked once a request's head is read."""

    def __init__(self, restrictions: Restrictions):
        self.restrictions = {k: (header.lower(), value) for k, (header, value) in restrictions.items()}

    def refusal(self, method: str, path: str, header: Callable[[str], Optional[str]]) -> Optional[bytes]:
        """The 403 body for a request to a restricted group without its header and value, else None."""
        category = http_category(method, path)
        rule = self.restrictions.get(category) if category else None
        if rule is None or header(rule[0]) == rule[1]:
            return None
        return json.dumps({"error": f"This API is restricted, expecting header '{rule[0]}'"}).encode()

    def asgi(self, app):
        """`app` behind the check (uvicorn serves every route through ASGI)."""

        async def restricted(scope, receive, send):
            if scope["type"] == "http":
                headers = scope.get("headers") or ()

                def header(name: str) -> Optional[str]:
                    wanted = name.encode("latin-1")
                    for key, value in headers:
                        if key.lower() == wanted:
                            return value.decode("latin-1")
                    return None

                body = self.refusal(scope["method"], scope["path"], header)
                if body is not None:
                    await send({"type": "http.response.start", "status": 403,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
            await app(scope, receive, send)

        return restricted


def http_restrictions(specs: List[str]) -> Optional[HttpRestrictions]:
    rules = http_rules(specs)
    return HttpRestrictions(rules) if rules else None


# gRPC ---------------------------------------------------------------------------------------------------
GRPC_CATEGORY = {
    "ServerLive": "health", "ServerReady": "health", "ModelReady": "health", "Check": "health", "Watch": "health",
    "ServerMetadata": "metadata", "ModelMetadata": "metadata", "ModelConfig": "model-config",
    "ModelStatistics": "statistics", "TraceSetting": "trace", "LogSettings": "logging",
    "RepositoryIndex": "model-repository", "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository", "ModelInfer": "inference", "ModelStreamInfer": "inference",
    # TensorFlow Serving's services (server/grpc/tfserving.py)
    "Predict": "inference", "Classify": "inference", "Regress": "inference", "MultiInference": "inference",
    "GetModelMetadata": "metadata", "GetModelStatus": "health", "HandleReloadConfigRequest": "model-repository",
    # TorchServe's (server/grpc/torchserve.py)
    "Ping": "health", "Predictions": "inference", "StreamPredictions": "inference", "DescribeModel": "metadata",
    "ListModels": "metadata", "RegisterModel": "model-repository", "ScaleWorker": "model-repository",
    "SetDefault": "model-repository", "UnregisterModel": "model-repository",
}


def grpc_category(method: str) -> Optional[str]:
    if method.startswith(("SystemSharedMemory", "CudaSharedMemory")):
        return "shared-memory"
    return GRPC_CATEGORY.get(method)


def _allowed(context, header: str, value: str) -> bool:
    for key, given in context.invocation_metadata() or ():
        if key == header and given == value:
            return True
    return False


def restrict_method(method, category: str, restrictions: Mapping[str, Tuple[str, str]]):
    """`method` (a servicer's bound RPC, unary or a response stream) refusing calls without the header."""
    rule = restrictions.get(category)
    if rule is None:
        return method
    header, value = rule
    message = f"This protocol is restricted, expecting header '{header}'"
    header = header.lower()  # gRPC metadata keys arrive in lower case
    import grpc

    if inspect.isasyncgenfunction(method):
        @functools.wraps(method)
        async def streaming(request, context):
            if not _allowed(context, header, value):
                await context.abort(grpc.StatusCode.UNAVAILABLE, message)
            async for answer in method(request, context):
                yield answer

        return streaming

    @functools.wraps(method)
    async def unary(request, context):
        if not _allowed(context, header, value):
            await context.abort(grpc.StatusCode.UNAVAILABLE, message)
        return await method(request, context)

    return unary


def restrict_servicer(servicer, specs: List[str], names: Iterable[str]):
    """`servicer` with each named RPC whose group is restricted shadowed by its checked form (both gRPC
    transports bind the servicer's attributes)."""
    restrictions = grpc_rules(specs)
    for name in names:
        category = grpc_category(name)
        if category and category in restrictions:
            setattr(servicer, name, restrict_method(getattr(servicer, name), category, restrictions))
    return servicer
