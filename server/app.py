"""The REST application: V1 and V2 routes over one data plane, plus `/metrics` and OpenAPI docs."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from gpuserve.dataplane import DataPlane
from gpuserve.errors import ModelNotFound
from gpuserve.settings import ServerSettings
from gpuserve.version import __version__
from gpuserve.server.metrics import Exposition
from gpuserve.server.rest.common import ErrorRoutes, json_response
from gpuserve.server.rest.custom_routes import LoadedModelRoutes
from gpuserve.server.rest.extensions import add_extension_routes
from gpuserve.server.rest.shared_memory import add_shared_memory_routes
from gpuserve.server.rest.tfserving import add_tfserving_routes
from gpuserve.server.rest.torchserve import add_torchserve_routes
from gpuserve.server.rest.v1 import add_v1_routes
from gpuserve.server.rest.generate import add_generate_routes
from gpuserve.server.rest.infer_stream import add_infer_stream_routes
from gpuserve.server.rest.v2 import add_v2_routes


def _allowed(app: FastAPI, request: Request) -> str:
    methods = set()
    for route in app.router.routes:
        if getattr(route, "methods", None) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


def build_app(plane: DataPlane, settings: ServerSettings, errors: ErrorRoutes | None = None,
              exposition: Exposition | None = None) -> FastAPI:
    errors = errors or ErrorRoutes()
    docs = settings.enable_docs_url
    app = FastAPI(title="gpuserve", version=__version__,
                  description="KServe V1 and Open Inference Protocol (V2) REST endpoints",
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # its headers kept: a 405's Allow names the methods the path takes (RFC 9110 asks for it)
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names the first route of the path's; GET and POST may be two
            headers = {**(headers or {}), "Allow": _allowed(app, request)}
        return json_response({"error": f"{exc.detail}: {request.method} {request.url.path}"}, status=exc.status_code,
                             headers=headers)

    if docs:
        add_mlserver_docs_routes(app, plane)
    add_v1_routes(app, plane, errors, settings.max_request_bytes)
    add_tfserving_routes(app, plane, errors, settings.max_request_bytes)
    add_extension_routes(app, plane, errors)  # before V2's /v2/models/{name}: "stats" is not a model
    add_shared_memory_routes(app, plane, errors)  # shared memory, trace and log settings
    add_v2_routes(app, plane, errors, settings.max_request_bytes)
    add_generate_routes(app, plane, errors, settings.max_request_bytes)
    add_infer_stream_routes(app, plane, errors, settings.max_request_bytes)

    exposition = exposition or Exposition(plane, settings.metrics_prefix)
    _label_paths(app, plane, settings)

    @app.get(settings.metrics_path, include_in_schema=False)
    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(await exposition.render_everywhere(), media_type=CONTENT_TYPE_LATEST)

    # Last: MLServer runtimes' @custom_handler routes, for paths nothing above answers.
    app.router.routes.append(LoadedModelRoutes(plane.repository, settings.max_request_bytes))
    add_torchserve_routes(app, plane, settings.max_request_bytes)  # after those: a model's own /ping comes first
    app.state.plane = plane
    app.state.errors = errors
    return app


def _label_paths(app: FastAPI, plane: DataPlane, settings: ServerSettings) -> None:
    """The REST families' prefix and, per counted endpoint, its route template (MLServer's `path` label,
    e.g. `/v2/models/{model_name}/infer`); the fast path counts under the same endpoint names."""
    metrics = plane.transport_metrics
    metrics.rest_prefix = settings.metrics_rest_prefix
    for route in app.router.routes:
        endpoint = getattr(route, "endpoint", None)
        if endpoint is not None and getattr(route, "path", None):
            metrics.paths.setdefault(endpoint.__name__, route.path)


def add_mlserver_docs_routes(app: FastAPI, plane: DataPlane) -> None:
    """MLServer's OpenAPI routes: the data plane's spec and its Swagger UI, server-wide and per model."""
    from fastapi.openapi.docs import get_swagger_ui_html

    @app.get("/v2/docs/dataplane.json", include_in_schema=False)
    async def dataplane_spec() -> Response:
        return json_response(app.openapi())

    @app.get("/v2/docs", include_in_schema=False)
    async def dataplane_docs() -> Response:
        return get_swagger_ui_html(openapi_url="/v2/docs/dataplane.json", title="gpuserve data plane")

    def unknown(name: str, version: str | None) -> Response | None:
        if plane.repository.get_model(name, version) is not None:
            return None
        return json_response({"error": str(ModelNotFound(name, version))}, status=404)

    for prefix in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}"):
        @app.get(prefix + "/docs/dataplane.json", include_in_schema=False)
        async def model_spec(model_name: str, model_version: str | None = None) -> Response:
            return unknown(model_name, model_version) or json_response(app.openapi())

        @app.get(prefix + "/docs", include_in_schema=False)
        async def model_docs(request: Request, model_name: str, model_version: str | None = None) -> Response:
            return unknown(model_name, model_version) or get_swagger_ui_html(
                openapi_url=f"{request.url.path}/dataplane.json", title=f"gpuserve: {model_name}")
