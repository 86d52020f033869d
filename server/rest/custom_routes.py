"""The REST routes loaded MLServer runtimes declare with `@custom_handler` (gpuserve/mlserver/handlers).

MLServer adds such routes to its app when a model loads and removes them when it unloads. Here one route
at the end of the app's list stands for all of them: a request reaches it only when no built-in route
matched it fully (the inference routes never do: the fast path answers them before the app), and it then
serves the routes of the models ready now, rebuilt only after the loaded models changed. Loading and
unloading need no hook, whichever way they happen (start-up, repository API, poll mode, KServe's
register_model). Built-in routes come first, as in MLServer, so a runtime cannot shadow them, but it
may add a method to one of their paths.
"""

from __future__ import annotations

import logging
import weakref
from typing import List, Tuple

from starlette.routing import BaseRoute, Match

from gpuserve.mlserver.handlers.custom import served_handlers
from gpuserve.mlserver.handlers.routes import routes_for

logger = logging.getLogger("gpuserve.rest")
_CHOSEN = "gpuserve.custom_route"


class LoadedModelRoutes(BaseRoute):
    def __init__(self, repository, body_limit: int):
        self.repository = repository
        self.body_limit = body_limit
        self._models: Tuple[weakref.ref, ...] = ()
        self._routes: List[BaseRoute] = []

    def routes(self) -> List[BaseRoute]:
        models = [model for _, _, model in self.repository.all_versions() if model.ready]
        if len(models) != len(self._models) or any(ref() is not model for ref, model in zip(self._models, models)):
            routes = []
            for model in models:
                try:
                    routes += routes_for(served_handlers(model), self.body_limit)
                except Exception:  # one model's bad declaration must not take the others' routes away
                    logger.exception("model '%s': its custom REST routes cannot be served", model.name)
            self._routes, self._models = routes, tuple(weakref.ref(model) for model in models)
        return self._routes

    def matches(self, scope) -> Tuple[Match, dict]:
        partial = None
        for route in self.routes():
            match, child = route.matches(scope)
            if match is Match.FULL:
                return match, {**child, _CHOSEN: route}
            if match is Match.PARTIAL and partial is None:
                partial = {**child, _CHOSEN: route}
        return (Match.PARTIAL, partial) if partial is not None else (Match.NONE, {})

    async def handle(self, scope, receive, send) -> None:
        await scope[_CHOSEN].handle(scope, receive, send)
