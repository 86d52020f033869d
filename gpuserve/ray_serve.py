"""Ray Serve: one gpuserve engine per Serve replica (optional extra `gpuserve[ray]`).

Ray Serve owns the cluster-level part (replicas, placement with `num_gpus`, autoscaling, the HTTP
proxy that spreads requests over replicas); each replica is a whole gpuserve: a `ModelRepository`
built from a model repository folder, the `DataPlane`, and the engine with its own dynamic batcher.
So a replica batches the requests the proxy routes to it exactly as a standalone server would.

    from ray import serve
    from gpuserve.ray_serve import deployment
    serve.run(deployment("/models", num_replicas=2, num_gpus=1), route_prefix="/")

or with Serve's config file (`serve run configs/ray/serve_config.yaml`), whose `import_path` is
`gpuserve.ray_serve:build_app` (an application builder taking `args`) or `gpuserve.ray_serve:app`
(the folder from `GPUSERVE_MODEL_REPOSITORY`).

Routes each replica answers (JSON only; the binary tensor extension and gRPC are not proxied):
`POST /v2/models/{name}[/versions/{v}]/infer`, `POST /v1/models/{name}:predict`,
`GET /v2/health/live|ready`, `GET /v2/models/{name}[/versions/{v}]/ready`, `GET /v2`.
Every answer carries `x-gpuserve-replica: <pid>` so clients (and the tests) can see who served.

Ray is imported only inside `deployment()` / `build_app()` / `app`: `import gpuserve` never needs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Dict, Optional, Tuple

import orjson

from gpuserve.dataplane import DataPlane
from gpuserve.errors import InvalidInput, ModelNotFound, status_of
from gpuserve.model import InferenceVerb
from gpuserve.model_repository import ModelRepository, _stop, run_load, stop_model
from gpuserve.repository import DiskRepository
from gpuserve.types import InferRequest, InferResponse

logger = logging.getLogger("gpuserve.ray_serve")

REPLICA_HEADER = "x-gpuserve-replica"
DEPLOYMENT_NAME = "gpuserve"
REPOSITORY_ENV = "GPUSERVE_MODEL_REPOSITORY"
_JSON = orjson.OPT_SERIALIZE_NUMPY


class GpuserveReplica:
    """The body of one Serve replica: a model repository folder served by one gpuserve engine.

    `__init__` builds the models (cheap: no weights yet); loading (weights, backends, the engine's
    batcher) happens on the replica's event loop, started from `__init__` when it runs inside the
    loop and awaited by the first request otherwise, so the engine's tasks live on the loop that
    serves the requests.
    """

    def __init__(self, model_repository: str, device: Optional[str] = None):
        self.folder = str(model_repository)
        self.pid = str(os.getpid())
        self.repository = DiskRepository(self.folder, device=device).populate(ModelRepository())
        self.plane = DataPlane(self.repository)
        self._loading: Optional[asyncio.Task] = None
        try:
            asyncio.get_running_loop()
            self._loading = asyncio.ensure_future(self._load_all())
        except RuntimeError:  # constructed outside a loop: the first request loads
            pass

    async def _load_all(self) -> None:
        for _, _, model in self.repository.all_versions():
            if not model.ready:
                await run_load(model)
        self.plane.started = True
        logger.info("replica %s loaded %s from %s", self.pid,
                    {name: model.ready for name, _, model in self.repository.all_versions()}, self.folder)

    async def ready(self) -> None:
        """Wait until every model in the folder has been loaded (or failed to load)."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load_all())
        await asyncio.shield(self._loading)

    async def check_health(self) -> None:  # Serve's health check: a replica that cannot load is unhealthy
        if self._loading is not None and self._loading.done() and self._loading.exception() is not None:
            raise RuntimeError(f"gpuserve replica failed to load: {self._loading.exception()}")

    # HTTP ------------------------------------------------------------------------------------
    async def __call__(self, request):
        from starlette.responses import Response

        try:
            await self.ready()
            status, content, headers = await self.handle(request.method, request.url.path,
                                                         await request.body(), dict(request.headers))
        except Exception as exc:  # gpuserve's one error table, as the REST server uses it
            status = status_of(exc)[0]
            if status >= 500:
                logger.exception("request failed with %s", status)
            content, headers = {"error": str(exc) or type(exc).__name__}, getattr(exc, "headers", None) or {}
        headers = {**(headers or {}), REPLICA_HEADER: self.pid}
        return Response(orjson.dumps(content, option=_JSON), status_code=status,
                        media_type="application/json", headers=headers)

    async def handle(self, method: str, path: str, body: bytes, headers: Dict[str, str]
                     ) -> Tuple[int, Any, Dict[str, str]]:
        """(status, JSON-able content, headers) for one request; the transport-free part of `__call__`."""
        path = "/" + path.strip("/")
        if method == "POST" and path.startswith("/v1/models/") and path.endswith(":predict"):
            name = path[len("/v1/models/"):-len(":predict")]
            response, response_headers = await self.plane.predict_v1(name, _json(body), headers,
                                                                     InferenceVerb.PREDICT)
            return 200, response, _plain(response_headers)
        if path.startswith("/v2/models/"):
            name, version, action = _v2_route(path)
            if method == "POST" and action == "infer":
                request = InferRequest.from_rest(name, _json(body), model_version=version)
                response, response_headers = await self.plane.infer(request, headers)
                content = response.wire_dict() if isinstance(response, InferResponse) else response
                return 200, content, _plain(response_headers)
            if method == "GET" and action == "ready":
                ready = self.plane.model_ready(name, version)
                return (200 if ready else 400), {"name": name, "ready": ready}, {}
            if method == "GET" and action == "":
                return 200, self.plane.model_metadata(name, version), {}
        if method == "GET" and path in ("/v2/health/live", "/v2/health/ready"):
            ok = self.plane.live() if path.endswith("live") else self.plane.ready()
            return (200 if ok else 400), {"live" if path.endswith("live") else "ready": ok}, {}
        if method == "GET" and path == "/v2":
            return 200, self.plane.metadata(), {}
        raise _NotRouted(method, path)

    async def shutdown(self) -> None:
        """Drain and stop every model's engine (awaitable; `__del__` is the synchronous fallback)."""
        for _, _, model in list(self.repository.all_versions()):
            await stop_model(model)

    def __del__(self):  # Serve calls this when it stops the replica
        for _, _, model in list(getattr(self, "repository", ModelRepository()).all_versions()):
            if model.ready:
                _stop(model)


class _NotRouted(InvalidInput):
    http = 404

    def __init__(self, method: str, path: str):
        super().__init__(f"no route for {method} {path} (this deployment serves V2 infer, V1 predict and health)")


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


def _plain(headers: Optional[Dict[str, Any]]) -> Dict[str, str]:
    return {str(k): str(v) for k, v in (headers or {}).items()}


def _v2_route(path: str) -> Tuple[str, Optional[str], str]:
    """'/v2/models/m[/versions/v][/infer|/ready]' -> (name, version, action)."""
    parts = path[len("/v2/models/"):].split("/")
    name, rest = parts[0], parts[1:]
    version = None
    if len(rest) >= 2 and rest[0] == "versions":
        version, rest = rest[1], rest[2:]
    action = rest[0] if len(rest) == 1 else "" if not rest else "/".join(rest)
    if not name:
        raise ModelNotFound("")
    return name, version, action


# Serve applications ------------------------------------------------------------------------------
def deployment(model_repository: str, num_replicas: Optional[int] = 2, num_gpus: float = 0,
               num_cpus: float = 1, autoscaling_config: Optional[Dict[str, Any]] = None,
               max_ongoing_requests: int = 256, device: Optional[str] = None,
               name: str = DEPLOYMENT_NAME):
    """A bound Serve application: `serve.run(deployment("/models", num_gpus=1))`.

    `num_gpus` is per replica (Ray sets CUDA_VISIBLE_DEVICES, so each replica's engine sees its own
    GPU as cuda:0). With `autoscaling_config` (Serve's dict: min_replicas, max_replicas,
    target_ongoing_requests, ...) Serve scales the replicas and `num_replicas` is ignored.
    `max_ongoing_requests` should stay well above the models' max batch size, or Serve's queueing
    in front of the replica starves gpuserve's batcher.
    """
    from ray import serve

    options: Dict[str, Any] = dict(name=name, max_ongoing_requests=max_ongoing_requests,
                                   ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus})
    if autoscaling_config:
        options["autoscaling_config"] = dict(autoscaling_config)
    else:
        options["num_replicas"] = num_replicas
    return serve.deployment(**options)(GpuserveReplica).bind(str(model_repository), device)


def build_app(args: Dict[str, Any]):
    """Application builder for Serve's config file: `import_path: gpuserve.ray_serve:build_app`, `args:`
    with `model_repository` and optionally `device`. Replica counts, autoscaling and `ray_actor_options`
    (num_gpus) belong in the config's `deployments:` section, which overrides these defaults."""
    args = dict(args or {})
    folder = args.pop("model_repository", None) or os.environ.get(REPOSITORY_ENV)
    if not folder:
        raise ValueError(f"build_app needs args.model_repository (or {REPOSITORY_ENV} set)")
    return deployment(folder, **args)


def __getattr__(attribute: str):
    """`gpuserve.ray_serve:app`: the application for the folder in GPUSERVE_MODEL_REPOSITORY, made on access."""
    if attribute == "app":
        return build_app({})
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
