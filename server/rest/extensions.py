"""Triton's REST extensions: model configuration, statistics, and the model repository."""

from __future__ import annotations

from typing import Optional

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from gpuserve.dataplane import DataPlane
from gpuserve.errors import InvalidInput
from gpuserve.load_override import load_parameters
from gpuserve.server.rest.common import ErrorRoutes, guarded, json_object_body, json_response


def with_config_defaults(config: dict) -> dict:
    """Triton's REST configuration prints every scalar, list and map field of ModelConfig, defaults
    included (e.g. `"optional": false`, `"format": "FORMAT_NONE"`, `"batch_input": []`); unset
    sub-messages and oneof members stay out. Without protobuf installed the config goes as it is."""
    try:
        from gpuserve.server.grpc import inference_pb2 as pb
    except ImportError:  # pragma: no cover - the grpc extra brings protobuf
        return config
    return _filled(config, pb.ModelConfig.DESCRIPTOR)


# Fields of Triton's ModelConfig that gpuserve's trimmed inference.proto leaves out, with the defaults
# Triton prints for them.
_MORE_DEFAULTS = {
    "inference.ModelInput": {"is_non_linear_format_io": False},
    "inference.ModelOutput": {"is_non_linear_format_io": False},
}


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)
    return flag if isinstance(flag, bool) else field.label == field.LABEL_REPEATED


def _is_map(field) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _filled(value: dict, descriptor) -> dict:
    out = dict(value)
    for name, default in _MORE_DEFAULTS.get(descriptor.full_name, {}).items():
        out.setdefault(name, type(default)(default))
    for field in descriptor.fields:
        repeated = _repeated(field)
        present = out.get(field.name)
        if field.name in out:
            if field.message_type is not None and not _is_map(field):
                if repeated and isinstance(present, list):
                    out[field.name] = [_filled(v, field.message_type) if isinstance(v, dict) else v for v in present]
                elif isinstance(present, dict):
                    out[field.name] = _filled(present, field.message_type)
            elif field.type == field.TYPE_BOOL:  # a config may write a bool as 0/1 (Triton's qa bool models)
                out[field.name] = [bool(v) for v in present] if isinstance(present, list) else bool(present)
            continue
        if _is_map(field):
            out[field.name] = {}
        elif repeated:
            out[field.name] = []
        elif field.message_type is not None or field.containing_oneof is not None \
                or getattr(field, "has_presence", False):
            continue
        elif field.enum_type is not None:
            out[field.name] = field.enum_type.values_by_number[0].name
        elif field.type == field.TYPE_BOOL:
            out[field.name] = False
        elif field.type in (field.TYPE_STRING, field.TYPE_BYTES):
            out[field.name] = ""
        else:
            out[field.name] = 0
    return out


def add_extension_routes(app: FastAPI, plane: DataPlane, errors: ErrorRoutes) -> None:
    guard = guarded(errors, plane.transport_metrics)

    @app.get("/v2/models/{model_name}/config", tags=["V2 metadata"], summary="Model configuration (Triton form)")
    @guard
    async def config_latest(model_name: str, request: Request):
        return json_response(with_config_defaults(plane.model_config(model_name)))

    @app.get("/v2/models/{model_name}/versions/{model_version}/config", tags=["V2 metadata"],
             summary="Model configuration of one version")
    @guard
    async def config_version(model_name: str, model_version: str, request: Request):
        return json_response(with_config_defaults(plane.model_config(model_name, model_version)))

    async def stats(name: Optional[str], version: Optional[str]):
        return json_response(await plane.statistics_everywhere(name, version))

    @app.get("/v2/models/stats", tags=["V2 statistics"], summary="Statistics of every ready model")
    @guard
    async def stats_all(request: Request):
        return await stats(None, None)

    @app.get("/v2/models/{model_name}/stats", tags=["V2 statistics"], summary="Statistics of one model")
    @guard
    async def stats_model(model_name: str, request: Request):
        return await stats(model_name, None)

    @app.get("/v2/models/{model_name}/versions/{model_version}/stats", tags=["V2 statistics"],
             summary="Statistics of one model version")
    @guard
    async def stats_version(model_name: str, model_version: str, request: Request):
        return await stats(model_name, model_version)

    @app.post("/v2/repository/index", tags=["V2 repository"], summary="Every model with its state and reason")
    @guard
    async def repository_index(request: Request):
        body = await json_object_body(request)
        return json_response(await plane.repository_index_async(bool(body.get("ready", False))))

    @app.post("/v2/repository/models/{model_name}/load", tags=["V2 repository"], summary="Load or reload a model")
    @guard
    async def repository_load(model_name: str, request: Request):
        parameters = (await json_object_body(request)).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput("'parameters' must be a JSON object")
        config, files = load_parameters(parameters, files_in_base64=True)
        await plane.load_model(model_name, config, files)
        return Response(status_code=200)  # an empty 200, as MLServer and Triton answer

    @app.post("/v2/repository/models/{model_name}/unload", tags=["V2 repository"], summary="Unload a model")
    @guard
    async def repository_unload(model_name: str, request: Request):
        parameters = (await json_object_body(request)).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput("'parameters' must be a JSON object")
        await plane.unload_model(model_name, unload_dependents=parameters.get("unload_dependents") is True)
        return Response(status_code=200)
