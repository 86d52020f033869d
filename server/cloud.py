"""What the SageMaker and Vertex AI endpoints share: their ports, their binary MIME type, and the hand-over of
a request to the ordinary HTTP routes.

Each cloud endpoint is an HTTP server of its own on its own port (Triton's --sagemaker-port,
--vertex-ai-port). Its few routes are answered by re-addressing the request to the route of the main REST
app that does the same work (`/invocations` becomes `/v2/models/{default}/infer`), so inference, generate,
restrictions, limits and metrics are the main endpoint's own; the main endpoint itself is not touched and
pays nothing for them. Nothing here is imported unless one of them is enabled.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import quote

from gpuserve.errors import InvalidInput, InvalidSettings
from gpuserve.settings import ServerSettings

logger = logging.getLogger("gpuserve")
BINARY_LENGTH = b"inference-header-content-length"


# ports ------------------------------------------------------------------------------------------------------
def safe_range(text: Optional[str]) -> Optional[Tuple[int, int]]:
    if not text:
        return None
    found = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not found:
        raise InvalidSettings(f"--sagemaker-safe-port-range must be <integer>-<integer>, got '{text}'")
    return int(found.group(1)), int(found.group(2))


def check_ports(s: ServerSettings, metrics_on_http: bool = True) -> None:
    """tritonserver's start-up check of the endpoints' ports, in its words: two endpoints on one address and
    port, or an endpoint outside SageMaker's safe port range, stop the start. Port 0 (any free port) is
    never a clash. `metrics_on_http=False` (a tritonserver launch line): metrics on the HTTP port is a clash
    too, as there, where gpuserve's own line serves /metrics on the HTTP endpoint then."""
    host = lambda own: own or s.host  # noqa: E731
    metrics_apart = s.enable_metrics_server and not (metrics_on_http and s.enable_http and
                                                     s.metrics_port == s.http_port)
    endpoints = [(name, host(address), port, limits) for on, name, address, port, limits in (
        (s.enable_http, "HTTP", s.http_host, s.http_port, None),
        (s.enable_grpc, "GRPC", s.grpc_host, s.grpc_port, None),
        (metrics_apart, "metrics", s.metrics_host, s.metrics_port, None),
        (s.sagemaker, "SageMaker", s.sagemaker_host, s.sagemaker_port, safe_range(s.sagemaker_safe_port_range)),
        (s.vertex_ai, "Vertex AI", s.vertex_ai_host, s.vertex_ai_port, None)) if on]
    for index, (name, address, port, limits) in enumerate(endpoints):
        for other, (other_name, other_address, other_port, _) in enumerate(endpoints):
            if other == index or address != other_address:
                continue
            if limits and not limits[0] <= other_port <= limits[1]:
                raise InvalidSettings(f"The server cannot listen to {other_name} requests at port {other_port}, "
                                      f"allowed port range is [{limits[0]}, {limits[1]}]")
            if other > index and port and port == other_port:
                raise InvalidSettings(f"The server cannot listen to {name} requests and {other_name} requests at "
                                      f"the same address and port {address}:{port}")


# binary requests and answers --------------------------------------------------------------------------------
def header_length(content_type: Optional[str], body_size: int, mime: str) -> Optional[int]:
    """The JSON header's size that `Content-Type: {mime}N` gives, checked as Triton checks it; None for a
    request of JSON alone."""
    if not content_type or mime not in content_type:
        return None
    if not content_type.startswith(mime):
        raise InvalidInput(f"expect MIME type for binary data starts with '{mime}', got: {content_type}")
    text = content_type[len(mime):]
    if not re.fullmatch(r"\s*[+-]?\d+.*", text, re.S):
        raise InvalidInput(f"Unable to parse inference header size, got: {text}")
    number = int(re.match(r"\s*([+-]?\d+)", text).group(1))
    if not -2**31 <= number < 2**31:
        raise InvalidInput(f"Unable to parse inference header size, value is out of range, got: {text}")
    if number < 0 or number > body_size:
        raise InvalidInput(f"inference header size should be in range (0, {body_size}), got: {text}")
    return number


async def read_all(receive) -> bytes:
    chunks: List[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidInput("client disconnected before sending the whole body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive):
    """A `receive` that hands over a body already read, then waits for the client as the original does."""
    sent = False

    async def again() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def answer(send, status: int, body: bytes = b"", content_type: Optional[bytes] = b"application/json",
                 extra: Tuple[Tuple[bytes, bytes], ...] = ()) -> None:
    headers = [(b"content-length", str(len(body)).encode())] + list(extra)
    if body and content_type:
        headers.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def error(send, status: int, message: str) -> None:
    await answer(send, status, json.dumps({"error": message}).encode())


def header_of(scope) -> Callable[[str], Optional[str]]:
    headers = scope.get("headers") or ()

    def header(name: str) -> Optional[str]:
        wanted = name.lower().encode("latin-1")
        return next((value.decode("latin-1") for key, value in headers if key.lower() == wanted), None)

    return header


async def forward(inner, scope, receive, send, method: str, path: str, mime: Optional[str] = None,
                  answer_in_type: bool = True) -> None:
    """Answer the request as the main REST app answers `method path`; with `mime`, a binary request says its
    JSON header's size in Content-Type (`{mime}N`), and with `answer_in_type` a binary answer is told the same
    way (else by Inference-Header-Content-Length, as the main endpoint tells it)."""
    headers = [(k, v) for k, v in scope.get("headers") or () if k.lower() != BINARY_LENGTH]
    outgoing = send
    if mime is not None:
        body = await read_all(receive)
        try:
            length = header_length(header_of(scope)("content-type"), len(body), mime)
        except InvalidInput as exc:
            return await error(send, 400, str(exc))
        if length is not None and length < len(body):
            headers.append((BINARY_LENGTH, str(length).encode()))
        receive = replay(body, receive)
    if mime is not None and answer_in_type:
        marker = mime.encode()

        async def rewritten(message: dict) -> None:
            if message["type"] == "http.response.start":
                given = message.get("headers") or []
                length = next((v for k, v in given if k.lower() == BINARY_LENGTH), None)
                if length is not None:
                    given = [(k, v) for k, v in given if k.lower() not in (BINARY_LENGTH, b"content-type")]
                    message = dict(message, headers=given + [(b"content-type", marker + length)])
            await send(message)

        outgoing = rewritten
    sub = dict(scope, method=method, path=path, raw_path=quote(path).encode(), query_string=b"", headers=headers)
    await inner(sub, receive, outgoing)


def model_path(name: str, version: Optional[str] = None, verb: str = "infer") -> str:
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + (f"/{verb}" if verb else "")


# binding and serving ----------------------------------------------------------------------------------------
class CloudEndpoints:
    """The SageMaker and Vertex AI servers of one ModelServer: sockets bound with the others at start-up,
    served once the models are loaded (as tritonserver starts them)."""

    def __init__(self, settings: ServerSettings):
        from gpuserve.server.model_server import bind

        self.settings = settings
        self.sockets: Dict[str, socket.socket] = {}
        try:
            if settings.sagemaker:
                self.sockets["sagemaker"] = bind(settings.sagemaker_host or settings.host, settings.sagemaker_port,
                                                 service="SageMaker")
            if settings.vertex_ai:
                self.sockets["vertex_ai"] = bind(settings.vertex_ai_host or settings.host, settings.vertex_ai_port,
                                                 service="Vertex AI")
        except Exception:
            self.close()
            raise

    @property
    def ports(self) -> Dict[str, int]:
        return {name: sock.getsockname()[1] for name, sock in self.sockets.items()}

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()

    def apps(self, plane, app, errors, guard) -> List[Tuple[str, object, socket.socket]]:
        """(log name, ASGI app, socket) of each endpoint; InvalidSettings where one cannot start."""
        from gpuserve.server.rest.fast_path import FastPath

        s = self.settings
        fast = FastPath(app, plane, errors, s.max_request_bytes, s.compress_responses)
        inner = guard.asgi(fast) if guard is not None else fast
        out = []
        if "sagemaker" in self.sockets:
            from gpuserve.server.sagemaker import SageMakerApp

            out.append(("Sagemaker", _started("Sagemaker", SageMakerApp, plane, inner, guard, s),
                        self.sockets["sagemaker"]))
        if "vertex_ai" in self.sockets:
            from gpuserve.server.vertex_ai import VertexAiApp

            out.append(("Vertex AI", _started("Vertex AI", VertexAiApp, plane, inner, guard, s),
                        self.sockets["vertex_ai"]))
        return out


def _started(name: str, make, *args):
    try:
        return make(*args)
    except InvalidSettings as exc:
        logger.error("failed to start %s service: %s", name, exc)  # tritonserver's words, which scripts grep
        raise
