"""V2 / Open Inference Protocol REST: health, server and model metadata, readiness, infer."""

from __future__ import annotations

from typing import Optional

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from gpuserve.dataplane import DataPlane
from gpuserve.errors import InferenceError, ModelNotReady, ServerNotLive, ServerNotReady
from gpuserve.model_repository import triton_form
from gpuserve.types import InferRequest, InferResponse
from gpuserve.server.binary import decode_request, encode_response, wants_binary
from gpuserve.server.rest.common import JSON_OPTIONS, ErrorRoutes, guarded, json_response, parse_json, read_body

BINARY_HEADER = "inference-header-content-length"


def decode_infer(body: bytes, request: Request, model_name: str, version: Optional[str],
                 config_of=None) -> InferRequest:
    header_length = request.headers.get(BINARY_HEADER)
    if header_length is not None:
        return decode_request(body, header_length, model_name, version, config_of)
    return InferRequest.from_rest(model_name, parse_json(body), version)


def encode_infer_bytes(response, infer_request: InferRequest, response_headers: dict):
    """(status, body, content type, headers) of an inference answer: JSON, or binary when asked."""
    headers = dict(response_headers) if response_headers else {}
    if isinstance(response, InferResponse):
        if wants_binary(infer_request):
            content, header_length = encode_response(response, infer_request)
            if header_length is None:
                return 200, content, b"application/json", headers
            headers["Inference-Header-Content-Length"] = str(header_length)
            return 200, content, b"application/octet-stream", headers
        return 200, orjson.dumps(response.wire_dict(), option=JSON_OPTIONS), b"application/json", headers
    if isinstance(response, dict):
        return 200, orjson.dumps(response, option=JSON_OPTIONS), b"application/json", headers
    raise InferenceError(f"model '{infer_request.model_name}' returned {type(response).__name__}, "
                         "expected an InferResponse")


def encode_infer(response, infer_request: InferRequest, response_headers: dict) -> Response:
    status, content, content_type, headers = encode_infer_bytes(response, infer_request, response_headers)
    if not isinstance(content, bytes):  # a large binary answer's Parts: Starlette's Response takes bytes
        content = bytes(content)
    return Response(content, status_code=status, media_type=content_type.decode(), headers=headers or None)


def add_v2_routes(app: FastAPI, plane: DataPlane, errors: ErrorRoutes, body_limit: int) -> None:
    guard = guarded(errors, plane.transport_metrics)

    @app.get("/v2/health/live", tags=["V2 health"], summary="Server liveness")
    @guard
    async def live(request: Request):
        if not plane.live():  # a status a liveness probe acts on, not a 200 that says false
            raise ServerNotLive(plane.not_live_reason())
        return json_response({"live": True})

    @app.get("/v2/health/ready", tags=["V2 health"], summary="Server readiness")
    @guard
    async def ready(request: Request):
        if not plane.ready():
            raise ServerNotReady()
        return json_response({"ready": True})

    @app.get("/v2", tags=["V2 metadata"], summary="Server metadata")
    @guard
    async def server_metadata(request: Request):
        return json_response(plane.metadata())

    async def model_metadata(model_name: str, version: Optional[str]):
        return json_response(plane.model_metadata(model_name, version))

    async def model_ready(model_name: str, version: Optional[str]):
        model = plane.repository.get_model(model_name, version)
        if not await plane.model_healthy(model_name, version):
            raise ModelNotReady(model_name, getattr(model, "reason", "") or None)
        if model is not None and (triton_form(model) or getattr(model, "settings_metadata", False)):
            return Response(status_code=200)  # as Triton and MLServer: 200 and no body (scripts compare curl's output)
        return json_response({"name": model_name, "ready": True})

    async def infer(model_name: str, version: Optional[str], request: Request):
        body = await read_body(request, body_limit)
        infer_request = decode_infer(body, request, model_name, version, plane.model_config)
        response, response_headers = await plane.infer(infer_request, dict(request.headers))
        return encode_infer(response, infer_request, response_headers)

    @app.get("/v2/models/{model_name}", tags=["V2 metadata"], summary="Model metadata")
    @guard
    async def metadata_latest(model_name: str, request: Request):
        return await model_metadata(model_name, None)

    @app.get("/v2/models/{model_name}/versions/{model_version}", tags=["V2 metadata"],
             summary="Model metadata of one version")
    @guard
    async def metadata_version(model_name: str, model_version: str, request: Request):
        return await model_metadata(model_name, model_version)

    @app.get("/v2/models/{model_name}/ready", tags=["V2 health"], summary="Model readiness")
    @guard
    async def ready_latest(model_name: str, request: Request):
        return await model_ready(model_name, None)

    @app.get("/v2/models/{model_name}/versions/{model_version}/ready", tags=["V2 health"],
             summary="Model readiness of one version")
    @guard
    async def ready_version(model_name: str, model_version: str, request: Request):
        return await model_ready(model_name, model_version)

    @app.post("/v2/models/{model_name}/infer", tags=["V2 inference"], summary="Inference")
    @guard
    async def infer_latest(model_name: str, request: Request):
        return await infer(model_name, None, request)

    @app.post("/v2/models/{model_name}/versions/{model_version}/infer", tags=["V2 inference"],
              summary="Inference on one version")
    @guard
    async def infer_version(model_name: str, model_version: str, request: Request):
        return await infer(model_name, model_version, request)
