"""Triton's REST extensions: model configuration, statistics, and the model repository."""

from __future__ import annotations

from typing import Optional

from fastapi import FastAPI
from starlette.requests import Request

from gpuserve.dataplane import DataPlane
from gpuserve.errors import Unimplemented
from gpuserve.server.rest.common import ErrorRoutes, guarded, json_object_body, json_response


def add_extension_routes(app: FastAPI, plane: DataPlane, errors: ErrorRoutes) -> None:
    guard = guarded(errors, plane.transport_metrics)

    @app.get("/v2/models/{model_name}/config", tags=["V2 metadata"], summary="Model configuration (Triton form)")
    @guard
    async def config_latest(model_name: str, request: Request):
        return json_response(plane.model_config(model_name))

    @app.get("/v2/models/{model_name}/versions/{model_version}/config", tags=["V2 metadata"],
             summary="Model configuration of one version")
    @guard
    async def config_version(model_name: str, model_version: str, request: Request):
        return json_response(plane.model_config(model_name, model_version))

    async def stats(name: Optional[str], version: Optional[str]):
        return json_response(plane.statistics(name, version))

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
        return json_response(plane.repository_index(bool(body.get("ready", False))))

    @app.post("/v2/repository/models/{model_name}/load", tags=["V2 repository"], summary="Load or reload a model")
    @guard
    async def repository_load(model_name: str, request: Request):
        parameters = (await json_object_body(request)).get("parameters") or {}
        if parameters:
            raise Unimplemented(f"loading with parameters ({', '.join(sorted(parameters))}) is not supported; "
                                "change the model's folder and load it by name")
        await plane.load_model(model_name)
        return json_response({})

    @app.post("/v2/repository/models/{model_name}/unload", tags=["V2 repository"], summary="Unload a model")
    @guard
    async def repository_unload(model_name: str, request: Request):
        await json_object_body(request)
        await plane.unload_model(model_name)
        return json_response({})
