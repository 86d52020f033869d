"""`ModelServer`: KServe's entry point. Loads the models, serves REST (and gRPC and metrics when
available) on one event loop, and on SIGTERM/SIGINT stops accepting, drains in-flight requests,
stops the models and returns (exit status 0).

Sockets are bound before anything starts, so a port in use is a clear error at once and port 0
gives an ephemeral port that `ports` reports (the tests rely on it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional

from gpuserve.dataplane import DataPlane
from gpuserve.errors import InvalidSettings
from gpuserve.logging_setup import configure_logging
from gpuserve.model import BaseKServeModel
from gpuserve.model_repository import ModelRepository, run_load, stop_model
from gpuserve.repository_poll import RepositoryPoller
from gpuserve.settings import ServerSettings
from gpuserve.server.app import build_app
from gpuserve.server.metrics import Exposition
from gpuserve.server.rest.fast_path import FastPath
from gpuserve.server.nvml import GpuSampler
from gpuserve.server.rest.common import ErrorRoutes

logger = logging.getLogger("gpuserve")


class PortInUse(InvalidSettings):
    pass


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # several worker processes share the port; the kernel spreads connections
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def kserve_parser() -> argparse.ArgumentParser:
    """KServe's model server options, for `argparse.ArgumentParser(parents=[model_server.parser])` in user
    scripts (exported as `gpuserve.model_server.parser`)."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag, kind in (("--http_port", int), ("--grpc_port", int), ("--workers", int), ("--max_threads", int),
                       ("--max_asyncio_workers", int), ("--model_name", str), ("--predictor_host", str)):
        parser.add_argument(flag, type=kind, default=None)
    parser.add_argument("--enable_grpc", type=lambda v: v.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--enable_docs_url", type=lambda v: v.lower() in ("1", "true", "yes"), default=None)
    return parser


parser = kserve_parser()


def _kserve_args() -> argparse.Namespace:
    """KServe scripts take `--http_port` etc. on their own command line; honour the known ones."""
    args, _ = kserve_parser().parse_known_args(sys.argv[1:])
    return args


class _Uvicorn:
    """A uvicorn server whose signals are ours, so several servers stop together and exit 0."""

    def __init__(self, app, settings: ServerSettings, sock: socket.socket):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                yield

        config = uvicorn.Config(app, lifespan="off", access_log=settings.access_log, log_config=None, interface="asgi3",
                                timeout_graceful_shutdown=int(settings.graceful_shutdown_seconds),
                                limit_concurrency=None, backlog=2048, timeout_keep_alive=75)
        self.server = Server(config)
        self.sock = sock

    async def serve(self) -> None:
        await self.server.serve(sockets=[self.sock])

    def stop(self) -> None:
        self.server.should_exit = True


def _http_server(app, settings: ServerSettings, sock: socket.socket, fast: Optional[FastPath] = None):
    """Our httptools server (inference routes without ASGI) unless settings or a missing httptools say uvicorn."""
    if settings.http_server != "uvicorn":
        try:
            from gpuserve.server.rest.http11 import HttpServer
        except ImportError as exc:
            if settings.http_server == "gpuserve":
                raise InvalidSettings(f"http_server 'gpuserve' needs httptools (gpuserve[speed]): {exc}") from None
        else:
            return HttpServer(app, sock, settings.max_request_bytes, fast=fast,
                              graceful_s=settings.graceful_shutdown_seconds, access_log=settings.access_log)
    return _Uvicorn(fast or app, settings, sock)


class ModelServer:
    def __init__(self, http_port: Optional[int] = None, grpc_port: Optional[int] = None,
                 workers: Optional[int] = None, max_threads: Optional[int] = None,
                 max_asyncio_workers: Optional[int] = None, registered_models: Optional[ModelRepository] = None,
                 enable_grpc: Optional[bool] = None, enable_docs_url: Optional[bool] = None,
                 enable_latency_logging: bool = False, access_log_format: Optional[str] = None,
                 grace_period: Optional[int] = None, settings: Optional[ServerSettings] = None,
                 metrics_port: Optional[int] = None, host: Optional[str] = None, **_ignored):
        args = _kserve_args() if settings is None else argparse.Namespace()
        pick = lambda given, name: given if given is not None else getattr(args, name, None)  # noqa: E731
        overrides = dict(http_port=pick(http_port, "http_port"), grpc_port=pick(grpc_port, "grpc_port"),
                         workers=pick(workers, "workers"), max_threads=pick(max_threads, "max_threads"),
                         max_asyncio_workers=pick(max_asyncio_workers, "max_asyncio_workers"),
                         enable_grpc=pick(enable_grpc, "enable_grpc"),
                         enable_docs_url=pick(enable_docs_url, "enable_docs_url"),
                         metrics_port=metrics_port, host=host, graceful_shutdown_seconds=grace_period)
        if settings is None:
            settings = ServerSettings.load(None, **overrides)
            if "metrics_port" not in settings.model_fields_set and "enable_metrics_server" not in settings.model_fields_set:
                # A KServe script: KServe serves /metrics on the HTTP port only (so does gpuserve, always); a
                # separate port nobody asked for would keep a second such server from starting.
                settings = settings.model_copy(update={"enable_metrics_server": False})
        else:
            settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        self.settings = settings
        self.registered_models = registered_models if registered_models is not None else ModelRepository()
        self.dataplane = DataPlane(self.registered_models, server_name=settings.server_name,
                                   strict_readiness=settings.strict_readiness,
                                   model_control=settings.model_control_enabled,
                                   allow_client_shm=settings.allow_client_shm,
                                   response_cache_bytes=settings.response_cache_bytes)
        self.errors = ErrorRoutes()
        self.enable_latency_logging = enable_latency_logging
        self.access_log_format = access_log_format
        self.protocol_version = "v2"
        self.ports: Dict[str, int] = {}
        self.started = threading.Event()
        self._servers: List = []
        self._stopping: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._startup_hooks: List[Callable] = []

    # KServe's API -------------------------------------------------------------------------------
    @property
    def model_registry(self) -> ModelRepository:
        return self.registered_models

    def register_model(self, model: BaseKServeModel) -> None:
        if not getattr(model, "name", None):
            raise ValueError("Failed to register model, model.name must be provided.")
        self.registered_models.update(model)
        logger.info("registered model %s", model.name)

    def register_exception_handler(self, exception_type: type, handler: Callable) -> None:
        self.errors.handlers[exception_type] = handler

    def start(self, models: Optional[List[BaseKServeModel]] = None) -> None:
        """Serve until SIGTERM/SIGINT; blocks. Models not yet loaded are loaded first."""
        configure_logging(self.settings)
        if self.settings.workers > 1:
            logger.warning("workers=%d: several processes need the models built in each of them; that works for "
                           "`gpuserve start FOLDER` (see server/workers.py), not for model objects passed to "
                           "start(); serving with 1 worker", self.settings.workers)
        try:
            import uvloop  # noqa: F401

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        runner(self.serve(models))

    # gpuserve -----------------------------------------------------------------------------------
    async def serve(self, models: Optional[List[BaseKServeModel]] = None) -> None:
        """Bind, load, serve, and return after a graceful stop."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        workers = self.settings.max_asyncio_workers or self.settings.max_threads
        if workers:
            self._loop.set_default_executor(ThreadPoolExecutor(max_workers=workers))
        for model in models or []:
            self.register_model(model)
        s = self.settings
        http_sock = bind(s.host, s.http_port, s.reuse_port)
        self.ports["http"] = http_sock.getsockname()[1]
        metrics_sock = None
        if s.enable_metrics_server and not (s.metrics_port and s.metrics_port == s.http_port):
            try:
                metrics_sock = bind(s.host, s.metrics_port, s.reuse_port)
            except PortInUse:
                http_sock.close()
                raise
            self.ports["metrics"] = metrics_sock.getsockname()[1]
        grpc_server = None
        if s.enable_grpc:
            grpc_server = await self._start_grpc(http_sock, metrics_sock)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    self._loop.add_signal_handler(sig, self.stop)

        gpus = GpuSampler(s.nvml_interval_seconds)
        gpus.start()
        exposition = Exposition(self.dataplane, s.metrics_prefix, gpus)
        app = build_app(self.dataplane, s, self.errors, exposition)
        http = _http_server(app, s, http_sock, FastPath(app, self.dataplane, self.errors, s.max_request_bytes))
        self._servers = [http]
        tasks = [asyncio.ensure_future(http.serve())]
        if metrics_sock is not None:
            metrics = _http_server(exposition.asgi, s, metrics_sock)
            self._servers.append(metrics)
            tasks.append(asyncio.ensure_future(metrics.serve()))
        logger.info("gpuserve listening: %s", ", ".join(f"{k} {s.host}:{v}" for k, v in self.ports.items()))

        await self._load_all()
        # Everything alive now (framework modules, models, the app) lives for the whole run: keep it
        # out of the cyclic collector's full passes, which otherwise stall the loop for tens of ms
        # under load (the p99 tail), and collect the young generation less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        self.dataplane.started = True
        poller = self._start_polling()
        self.started.set()
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        for server in self._servers:
            server.stop()
        if grpc_server is not None:
            await grpc_server.stop(s.graceful_shutdown_seconds)
        await asyncio.gather(*tasks, return_exceptions=True)
        stop_wait.cancel()
        self.dataplane.started = False
        gpus.stop()
        self.dataplane.shared_memory.unregister_all()
        self.dataplane.shared_memory.cuda_unregister()
        await self._stop_models()
        logger.info("gpuserve stopped")

    async def _start_grpc(self, *opened):
        try:
            if self.settings.grpc_transport == "native" and importlib.util.find_spec("hpack") is not None:
                from gpuserve.server.grpc.native import start_native_grpc_server as start
            else:
                if self.settings.grpc_transport == "native":
                    logger.warning("gRPC on grpc.aio: the native transport needs the hpack package "
                                   "(pip install 'gpuserve[grpc]')")
                from gpuserve.server.grpc.service import start_grpc_server as start
        except ImportError as exc:
            logger.warning("gRPC disabled: %s (install gpuserve[grpc])", exc)
            return None
        try:
            server, port = await start(self.dataplane, self.settings)
        except Exception:
            for sock in opened:
                if sock is not None:
                    sock.close()
            raise
        self.ports["grpc"] = port
        return server

    async def _load_all(self) -> None:
        pending = [m for _, _, m in self.registered_models.all_versions() if not m.ready and not m.reason]
        if pending:
            await asyncio.gather(*(run_load(m) for m in pending))
        for name, version, model in self.registered_models.all_versions():
            label = name if version is None else f"{name} v{version}"
            if model.ready:
                await asyncio.to_thread(model.start)
                logger.info("model %s is ready", label)
            else:
                logger.error("model %s is NOT ready: %s", label, model.reason)

    def _start_polling(self) -> Optional[asyncio.Task]:
        """Triton's poll mode (`repository_poll_seconds`): follow the repository folder's changes."""
        seconds = self.settings.repository_poll_seconds
        if not seconds:
            return None
        if getattr(self.registered_models, "fingerprints", None) is None:
            logger.warning("repository_poll_seconds is set, but these models come from no repository folder; "
                           "not polling")
            return None
        plane = self.dataplane

        def changed(name: str) -> None:
            if plane.response_cache is not None:
                plane.response_cache.clear_model(name)

        logger.info("polling the model repository every %.3g s", seconds)
        poller = RepositoryPoller(self.registered_models, seconds, changed)
        return asyncio.ensure_future(poller.run())

    async def _stop_models(self) -> None:
        for _, _, model in self.registered_models.all_versions():
            await stop_model(model)

    def stop(self) -> None:
        """Begin a graceful stop; safe from signal handlers and from other threads."""
        loop, stopping = self._loop, self._stopping
        if loop is None or stopping is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            stopping.set()
        else:
            loop.call_soon_threadsafe(stopping.set)

    @property
    def pid(self) -> int:
        return os.getpid()
