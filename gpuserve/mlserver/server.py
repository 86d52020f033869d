"""`mlserver.MLServer`: the server class MLServer users start from Python (tests, notebooks, their own entry
points) as `server = MLServer(settings); await server.start(models_settings)`, served by gpuserve's server.

As MLServer's: `start` serves the REST, gRPC and metrics endpoints `settings` names and loads exactly the models
given (the repository folder, `model_repository_root`, answers the repository API: index, load, unload) and
returns once the server has stopped; `stop()` stops it (also on SIGINT/SIGTERM). Only the settings that were set
are taken (explicitly or from MLSERVER_* variables, as MLServer's Settings reads them), so gpuserve's defaults hold
for the rest: MLServer's default of one parallel worker a model is not imposed on models that never asked.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Optional

from gpuserve.mlserver.settings import ModelSettings, Settings, translated

logger = logging.getLogger("gpuserve")


class MLServer:
    def __init__(self, settings: Settings):
        from gpuserve.model_repository import ModelRepository
        from gpuserve.repository import DiskRepository
        from gpuserve.server.model_server import ModelServer
        from gpuserve.settings import ServerSettings

        self._settings = settings
        given: Dict[str, Any] = translated(settings)
        root = settings.model_repository_root or "."
        given.setdefault("model_repository_root", root)
        self._server_settings = ServerSettings.load(None, **given)
        self._disk = DiskRepository.for_server(root, self._server_settings)
        registry = self._disk.populate(ModelRepository(), only=[])  # the folder answers the repository API only
        self._server = ModelServer(settings=self._server_settings, registered_models=registry)
        self._finished: Optional[asyncio.Event] = None

    @property
    def settings(self) -> Settings:
        return self._settings

    async def start(self, models_settings: List[ModelSettings] = []) -> None:  # noqa: B006 - MLServer's signature
        """Serve, loading `models_settings`; returns after `stop()` (or a signal) has stopped the server."""
        models = [self._disk.model_for(settings) for settings in models_settings]
        self._finished = asyncio.Event()
        try:
            await self._server.serve(models)
        finally:
            self._finished.set()

    async def stop(self, sig: Optional[int] = None) -> None:
        """Stop the server and wait until it has (a server that never started has nothing to stop)."""
        if self._finished is None:
            return
        self._server.stop(sig)
        await self._finished.wait()

    @property
    def ports(self) -> Dict[str, int]:
        """The ports bound (useful with port 0 in tests), once started."""
        return dict(self._server.ports)


__all__ = ["MLServer"]
