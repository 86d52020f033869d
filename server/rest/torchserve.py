"""TorchServe's inference and management APIs on the HTTP port (KServe's PyTorch runtime is TorchServe, so its
users' clients call these): `POST /predictions/NAME[/VERSION]`, `GET /ping`, `GET /models` (paged),
`GET /models/NAME[/VERSION|/all]`, and the writes: `POST /models?url=...` (register), `PUT /models/NAME[/VERSION]`
(scale workers), `PUT /models/NAME/VERSION/set-default`, `DELETE /models/NAME[/VERSION]`. The meaning is in
server/torchserve_api.py and server/torchserve_manage.py (shared with the gRPC services).

These routes go after every other route, MLServer runtimes' custom ones included, so a loaded MLflow model's
own `/ping` answers where it is served (no other gpuserve route uses /ping, /models or /predictions).
Bodies as TorchServe writes them: JSON indented by two spaces.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional, Tuple

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from gpuserve.dataplane import DataPlane
from gpuserve.errors import PayloadTooLarge
from gpuserve.server import torchserve_api as api, torchserve_manage as manage
from gpuserve.server.rest.common import read_body
from gpuserve.server.rest.streaming import Stream, streaming_response

logger = logging.getLogger("gpuserve")


def _json(content, status: int = 200) -> Response:
    api.count_status(status)
    return Response(json.dumps(content, indent=2), status_code=status, media_type=api.JSON)


async def answer(plane: DataPlane, name: str, version: Optional[str], body: bytes, headers: Dict[str, str]
                 ) -> Tuple[int, Any, List[Tuple[bytes, bytes]]]:
    """One `POST /predictions/...` from its whole body and lower-case headers: (status, payload, response headers
    as byte pairs, content-length left out). The route below and the fast path (server/rest/fast_path.py, which
    spares the web framework's per-request layers: ~3x the throughput on a small model) both answer with it.
    The payload is a Stream when the handler sent intermediate answers (gpuserve/torchserve/stream.py)."""
    entry, part_headers = api.entry_from_body(body, headers.get("content-type"))
    seen = {**part_headers, **headers}
    # TorchServe's Netty aggregates the body: the handler sees its Content-Length, never a chunked encoding
    seen.pop("transfer-encoding", None)
    seen["content-length"] = str(len(body))
    extra: dict = {}
    payload, content_type, status = await api.predictions(plane, name, version, entry, seen, extra)
    api.count_status(status)
    out = [(str(k).lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in extra.items()]
    if content_type:
        out.append((b"content-type", str(content_type).encode("latin-1")))
    if not isinstance(payload, (bytes, bytearray)):  # the handler's intermediate answers: a chunked answer
        return status, await Stream.start(payload), out
    return status, payload, out


def add_torchserve_routes(app: FastAPI, plane: DataPlane, max_request_bytes: int) -> None:
    async def predictions(request: Request, model_name: str, model_version: Optional[str] = None) -> Response:
        try:
            body = await read_body(request, max_request_bytes)
        except PayloadTooLarge as exc:
            return _error(api.TorchServeError(413, "BadRequestException", str(exc)))
        status, payload, headers = await answer(plane, model_name, model_version, body, dict(request.headers))
        if isinstance(payload, Stream):
            return streaming_response(payload, {k.decode("latin-1"): v.decode("latin-1") for k, v in headers})
        response = Response(payload, status_code=status)
        response.raw_headers = [*headers, (b"content-length", str(len(payload)).encode())]
        return response

    for path in ("/predictions/{model_name}", "/predictions/{model_name}/{model_version}"):
        app.add_api_route(path, predictions, methods=["POST", "PUT", "GET"], include_in_schema=False,
                          name="torchserve_predictions")

    async def ping() -> Response:
        return _json({"status": "Healthy"}) if plane.live() else _json({"status": "Unhealthy"}, 500)

    async def models(request: Request) -> Response:
        """GET lists (paged), POST registers (server/torchserve_manage.py)."""
        query = request.query_params
        if request.method == "GET":
            return _json(api.list_models(plane, manage.number(query.get("limit"), 100),
                                         manage.number(query.get("next_page_token"), 0)))
        return await _answered(_register(plane, request))

    async def model(request: Request, model_name: str, model_version: Optional[str] = None) -> Response:
        """GET describes, PUT scales its workers, DELETE unregisters."""
        query = request.query_params
        if request.method == "GET":
            try:
                return _json(api.describe(plane, model_name, model_version))
            except api.TorchServeError as exc:
                return _error(exc)
        if request.method == "DELETE":
            return await _answered(manage.unregister(plane, model_name, model_version))
        if request.method != "PUT":
            return _error(manage.disabled())
        least = manage.number(query.get("min_worker"), 1)  # TorchServe's REST scale: 1, synchronous false unless given
        return await _answered(manage.scale(plane, model_name, model_version or query.get("model_version") or None,
                                            least, manage.number(query.get("max_worker"), least),
                                            manage.flag(query.get("synchronous"), False)))

    async def set_default(model_name: str, model_version: str) -> Response:
        return await _answered(manage.set_default(plane, model_name, model_version))

    app.add_api_route("/ping", ping, methods=["GET"], include_in_schema=False, name="torchserve_ping")
    app.add_api_route("/models", models, methods=MANAGEMENT_METHODS, include_in_schema=False, name="torchserve_models")
    for path in ("/models/{model_name}", "/models/{model_name}/{model_version}"):
        app.add_api_route(path, model, methods=MANAGEMENT_METHODS, include_in_schema=False, name="torchserve_model")
    app.add_api_route("/models/{model_name}/{model_version}/set-default", set_default, methods=["PUT"],
                      include_in_schema=False, name="torchserve_set_default")


# every method reaches the management routes, which answer the ones TorchServe refuses in its words
MANAGEMENT_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


def _error(exc: "api.TorchServeError") -> Response:
    payload, content_type, status = exc.reply()
    api.count_status(status)
    return Response(payload, status_code=status, media_type=content_type)


async def _register(plane: DataPlane, request: Request) -> "manage.Done":
    """A register: its parameters from the query, or from a JSON body (TorchServe takes either)."""
    if request.method != "POST":
        raise manage.disabled()
    params: Dict[str, Any] = dict(request.query_params)
    if (request.headers.get("content-type") or "").split(";")[0].strip().lower() == api.JSON:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            raise api.TorchServeError(400, "BadRequestException", f"invalid JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise api.TorchServeError(400, "BadRequestException", "the JSON body is an object")
        params = body
    return await manage.register(plane, params)


async def _answered(write) -> Response:
    """A management write's answer: its {"status"}, TorchServe's error JSON, or for anything unexpected its 500
    JSON (never a bare 500), the server serving on."""
    try:
        done = await write
    except api.TorchServeError as exc:
        return _error(exc)
    except Exception as exc:
        logger.exception("TorchServe management request failed")
        return _error(api.TorchServeError(500, "InternalServerException", f"{type(exc).__name__}: {exc}"))
    return _json({"status": done.message}, done.status)
