"""Triton's REST extensions for shared memory, trace settings and log settings.

System and CUDA shared memory register, list and unregister regions in the data plane's registry
(the one gRPC uses too); a CUDA handle travels as {"b64": ...} in JSON, raw bytes on gRPC.
Trace and log settings read and update the data plane's `RuntimeSettings`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Optional

from fastapi import FastAPI
from starlette.requests import Request

from gpuserve.dataplane import DataPlane
from gpuserve.errors import InvalidInput
from gpuserve.server.rest.common import ErrorRoutes, guarded, json_object_body, json_response

BODY_LIMIT = 1 << 20  # settings and registrations are small JSON objects


async def _registration(request: Request, region_name: str, *required: str) -> dict:
    """A registration's JSON object body, with every `required` key present."""
    body = await json_object_body(request, required=True, limit=BODY_LIMIT)
    missing = [k for k in required if k not in body]
    if missing:
        raise InvalidInput(f"registering '{region_name}' needs {' and '.join(repr(k) for k in missing)}")
    return body


def _handle_bytes(value) -> bytes:
    """The cudaIpcMemHandle from {"b64": "..."} (tritonclient's form) or a bare base64 string."""
    text = value.get("b64") if isinstance(value, dict) else value
    if not isinstance(text, str):
        raise InvalidInput("'raw_handle' must be {\"b64\": \"<base64 of the cudaIpcMemHandle_t>\"}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("'raw_handle' is not valid base64") from None


def add_shared_memory_routes(app: FastAPI, plane: DataPlane, errors: ErrorRoutes) -> None:
    guard = guarded(errors, plane.transport_metrics)
    shm = plane.shared_memory
    settings = plane.runtime_settings

    # system shared memory ----------------------------------------------------------------------
    @app.get("/v2/systemsharedmemory/status", tags=["V2 shared memory"],
             summary="Every registered system shared-memory region")
    @guard
    async def system_status_all(request: Request):
        return json_response(shm.status())

    @app.get("/v2/systemsharedmemory/region/{region_name}/status", tags=["V2 shared memory"],
             summary="One system shared-memory region")
    @guard
    async def system_status(region_name: str, request: Request):
        return json_response(shm.status(region_name))

    @app.post("/v2/systemsharedmemory/region/{region_name}/register", tags=["V2 shared memory"],
              summary="Register a system shared-memory region: {key, offset, byte_size}")
    @guard
    async def system_register(region_name: str, request: Request):
        body = await _registration(request, region_name, "key", "byte_size")
        shm.register(region_name, body["key"], body.get("offset", 0), body["byte_size"])
        return json_response({})

    @app.post("/v2/systemsharedmemory/unregister", tags=["V2 shared memory"],
              summary="Unregister every system shared-memory region")
    @guard
    async def system_unregister_all(request: Request):
        shm.unregister_all()
        return json_response({})

    @app.post("/v2/systemsharedmemory/region/{region_name}/unregister", tags=["V2 shared memory"],
              summary="Unregister one system shared-memory region")
    @guard
    async def system_unregister(region_name: str, request: Request):
        shm.unregister(region_name)
        return json_response({})

    # CUDA shared memory ------------------------------------------------------------------------
    @app.get("/v2/cudasharedmemory/status", tags=["V2 shared memory"],
             summary="Every registered CUDA shared-memory region")
    @guard
    async def cuda_status_all(request: Request):
        return json_response(shm.cuda_status())

    @app.get("/v2/cudasharedmemory/region/{region_name}/status", tags=["V2 shared memory"],
             summary="One CUDA shared-memory region")
    @guard
    async def cuda_status(region_name: str, request: Request):
        return json_response(shm.cuda_status(region_name))

    @app.post("/v2/cudasharedmemory/region/{region_name}/register", tags=["V2 shared memory"],
              summary="Register a CUDA shared-memory region: {raw_handle: {b64}, device_id, byte_size}")
    @guard
    async def cuda_register(region_name: str, request: Request):
        body = await _registration(request, region_name, "raw_handle", "device_id", "byte_size")
        await plane.cuda_register(region_name, _handle_bytes(body["raw_handle"]), body["device_id"], body["byte_size"])
        return json_response({})

    @app.post("/v2/cudasharedmemory/unregister", tags=["V2 shared memory"],
              summary="Unregister every CUDA shared-memory region")
    @guard
    async def cuda_unregister_all(request: Request):
        await plane.cuda_unregister()
        return json_response({})

    @app.post("/v2/cudasharedmemory/region/{region_name}/unregister", tags=["V2 shared memory"],
              summary="Unregister one CUDA shared-memory region")
    @guard
    async def cuda_unregister(region_name: str, request: Request):
        await plane.cuda_unregister(region_name)
        return json_response({})

    # trace settings ----------------------------------------------------------------------------
    async def update_trace(request: Request, model: Optional[str]):
        body = await json_object_body(request, limit=BODY_LIMIT)
        if model and not body:  # Triton: a model with no settings drops its own settings
            return json_response(await plane.clear_model_trace(model))
        return json_response(await plane.update_trace(body, model))

    @app.get("/v2/trace/setting", tags=["V2 trace"], summary="Global trace settings")
    @guard
    async def trace_get(request: Request):
        return json_response(settings.trace())

    @app.post("/v2/trace/setting", tags=["V2 trace"], summary="Update global trace settings")
    @guard
    async def trace_post(request: Request):
        return await update_trace(request, None)

    @app.get("/v2/models/{model_name}/trace/setting", tags=["V2 trace"], summary="Trace settings of one model")
    @guard
    async def model_trace_get(model_name: str, request: Request):
        return json_response(settings.trace(model_name))

    @app.post("/v2/models/{model_name}/trace/setting", tags=["V2 trace"],
              summary="Update the trace settings of one model")
    @guard
    async def model_trace_post(model_name: str, request: Request):
        return await update_trace(request, model_name)

    # log settings ------------------------------------------------------------------------------
    @app.get("/v2/logging", tags=["V2 logging"], summary="Log settings")
    @guard
    async def log_get(request: Request):
        return json_response(settings.log())

    @app.post("/v2/logging", tags=["V2 logging"], summary="Update log settings")
    @guard
    async def log_post(request: Request):
        return json_response(await plane.update_log(await json_object_body(request, limit=BODY_LIMIT)))
