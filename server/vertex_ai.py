"""Triton's Vertex AI endpoint (`--allow-vertex-ai`, on by default where AIP_MODE=PREDICTION), so a Triton
Vertex AI container keeps working with this image.

- AIP_HEALTH_ROUTE (GET): 200 while the server is ready, else 400.
- AIP_PREDICT_ROUTE (POST): inference on the default model (--vertex-ai-default-model, else the repository's
  only ready model). A binary request says its JSON header's size in
  `Content-Type: application/vnd.vertex-ai-triton.binary+json;json-header-size=N` (a binary answer in
  Inference-Header-Content-Length, as the main endpoint's).
- With the header `X-Vertex-Ai-Triton-Redirect: <route>`, AIP_PREDICT_ROUTE answers that read-only Triton
  route instead (Vertex AI sends only POSTs): metrics, server and model metadata, health, readiness, config,
  statistics, inference, shared-memory status and the repository index. Routes that change the server
  (shared-memory registration, load, unload) answer 403 there; they are the main HTTP endpoint's.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from gpuserve.errors import GpuserveError, InvalidSettings
from gpuserve.server.cloud import answer, error, forward, header_of, model_path

MIME = "application/vnd.vertex-ai-triton.binary+json;json-header-size="
REDIRECT = "X-Vertex-Ai-Triton-Redirect"
_MODEL = re.compile(r"/v2/models/([^/]+)(?:/versions/([0-9]+))?(?:/(infer|ready|config|stats))?")
_SHM = re.compile(r"/v2/(system|cuda)sharedmemory(?:/region/([^/]+))?/(status|register|unregister)")
_REPOSITORY = re.compile(r"/v2/repository(?:/([^/]+))?/(index|models/([^/]+)/(load|unload))")
FORBIDDEN = object()


class VertexAiApp:
    def __init__(self, plane, inner, guard, settings):
        self.plane = plane
        self.inner = inner  # the main REST routes, behind --http-restricted-api
        self.guard = guard
        self.metrics_path = settings.metrics_path
        self.predict_route = os.environ.get("AIP_PREDICT_ROUTE", "")
        self.health_route = os.environ.get("AIP_HEALTH_ROUTE", "")
        if not self.predict_route:  # tritonserver's words (its misspelling included), which scripts grep
            raise InvalidSettings("API_PREDICT_ROUTE is not defined for Vertex AI endpoint")
        if not self.health_route:
            raise InvalidSettings("AIP_HEALTH_ROUTE is not defined for Vertex AI endpoint")
        self.model = self.default_model(settings.vertex_ai_default_model)

    def default_model(self, name: Optional[str]) -> str:
        ready = [entry["name"] for entry in self.plane.repository_index(ready_only=True)]
        if not name:
            if len(ready) != 1:
                raise InvalidSettings("Expect the model repository contains only a single model if default model "
                                      "is not specified")
            return ready[0]
        if name not in ready:
            raise InvalidSettings(f"Expect the default model '{name}' is loaded")
        return name

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        try:
            if path == self.health_route:
                return await self.health(scope, send)
            if path == self.predict_route:
                target = header_of(scope)(REDIRECT)
                if target is None:
                    return await forward(self.inner, scope, receive, send, method, model_path(self.model), MIME,
                                         answer_in_type=False)
                if method != "POST":
                    return await answer(send, 405)
                route = redirected("/" + target, self.metrics_path)
                if route is FORBIDDEN:
                    return await answer(send, 403)
                if route is not None:
                    verb, where = route
                    return await forward(self.inner, scope, receive, send, verb, where,
                                         MIME if where.endswith("/infer") else None, answer_in_type=False)
        except GpuserveError as exc:
            return await error(send, exc.http, str(exc))
        await answer(send, 400)

    async def health(self, scope, send) -> None:
        refusal = self.guard.refusal("GET", "/v2/health/ready", header_of(scope)) if self.guard else None
        if refusal is not None:
            return await answer(send, 403, refusal)
        if scope["method"] != "GET":
            return await error(send, 405, "Method Not Allowed")
        await answer(send, 200 if self.plane.ready() else 400)


def redirected(target: str, metrics_path: str):
    """(method, path) of the main REST route a redirect names; FORBIDDEN for the routes that change the
    server; None for the rest."""
    if target == "/metrics":
        return "GET", metrics_path
    if target in ("/v2", "/v2/models/stats", "/v2/health/live", "/v2/health/ready"):
        return "GET", target
    found = _MODEL.fullmatch(target)
    if found:
        return ("POST" if found.group(3) == "infer" else "GET"), target
    found = _SHM.fullmatch(target)
    if found:
        return ("GET", target) if found.group(3) == "status" else FORBIDDEN
    found = _REPOSITORY.fullmatch(target)
    if found:
        return ("POST", target) if found.group(2) == "index" else FORBIDDEN
    return None

