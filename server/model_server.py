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
import errno
import gc
import importlib.util
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Tuple

from gpuserve.engine import rate_limiter
from gpuserve.dataplane import DataPlane
from gpuserve.errors import GpuserveError, InvalidSettings, NoModelReady
from gpuserve.logging_setup import configure_logging
from gpuserve import context, response_stream
from gpuserve.model import BaseKServeModel, Model
from gpuserve.predictor_config import PredictorConfig
from gpuserve.model_repository import (ModelRepository, fail_together, run_load, stamp_files, stop_model,
                                       triton_form)
from gpuserve.repository_poll import RepositoryPoller
from gpuserve.otel_mlserver import server_spans
from gpuserve.version import __version__
from gpuserve.runtime_settings import trace_start_settings
from gpuserve.settings import ServerSettings
from gpuserve.utils.utils import strtobool  # KServe's flag parser, also a public KServe util
from gpuserve.header_forward import header_forward
from gpuserve.server.app import build_app
from gpuserve.server.cors import with_cors
from gpuserve.server.metrics import Exposition
from gpuserve.server.rest.fast_path import FastPath
from gpuserve.server.restricted import HttpRestrictions, http_restrictions
from gpuserve.server.nvml import GpuSampler
from gpuserve.server.peers import Peers, handlers as peer_handlers
from gpuserve.server.rest.common import ErrorRoutes
from gpuserve.server import shutdown

logger = logging.getLogger("gpuserve")


class PortInUse(InvalidSettings):
    pass


def in_use(service: str, address: str) -> str:
    """Triton's words for a port another process holds (its qa greps the server log for them)."""
    return f"failed to start {service} service: Unavailable - Socket '{address}' already in use"


def address_family(host: str) -> Tuple[int, str]:
    """The socket family and bare address of an endpoint's address as tritonserver takes it for HTTP and metrics:
    `ipv6:[::1]` (its documented IPv6 form), `ipv6:::1`, `ipv4:127.0.0.1`, a bracketed or bare IPv6 literal, or an
    IPv4 address or host name."""
    scheme, colon, rest = host.partition(":")
    if colon and scheme.lower() == "unix":
        raise PortInUse(f"cannot listen on '{host}': gpuserve listens on TCP addresses only (ipv4:ADDRESS, "
                        "ipv6:[ADDRESS] or an address)")
    if colon and scheme.lower() in ("ipv4", "ipv6"):
        return (socket.AF_INET if scheme.lower() == "ipv4" else socket.AF_INET6), rest.strip("[]")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, host[1:-1]
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), host


def raise_open_files_limit() -> Optional[Tuple[int, int]]:
    """The soft limit on open descriptors raised to the hard one, as Go's runtime does for every program:
    each client connection holds one, and containers often start with a soft 1024 under a far higher hard
    limit, so `hey -c 2000` or vegeta's connection pool had connections reset past it. (before, after) when
    raised, else None."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        if soft == resource.RLIM_INFINITY or soft >= target:
            return None
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):  # a limit the kernel will not give (e.g. above fs.nr_open): keep the soft one
        return None
    return soft, target


def bind(host: str, port: int, reuse_port: bool = False, service: str = "HTTP") -> socket.socket:
    shown = host
    family, host = address_family(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # several worker processes share the port; the kernel spreads connections
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(in_use(service, f"{shown}:{port}")) from None
        raise PortInUse(f"cannot listen on {shown}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


# KServe 0.21's model server flags and their defaults: (flag, type, default, help).
_PROTOCOLS = ["v1", "v2", "grpc-v2"]
_FLAGS = (
    ("--http_port", int, 8080, "The HTTP port listened to by the model server."),
    ("--grpc_port", int, 8081, "The gRPC port listened to by the model server."),
    ("--workers", int, 1, "The number of worker processes."),
    ("--max_threads", int, 4, "The max number of gRPC processing threads."),
    ("--max_asyncio_workers", int, None, "The max number of threads sync hooks run in."),
    ("--enable_grpc", strtobool, True, "Enable gRPC for the model server."),
    ("--enable_docs_url", strtobool, False, "Enable the docs url '/docs'."),
    ("--enable_latency_logging", strtobool, True, "Log each request's preprocess/predict/postprocess latency."),
    ("--configure_logging", strtobool, True, "Configure the server's and uvicorn's logging."),
    ("--log_config_file", str, None, "A yaml or json logging config (logging.config.dictConfig)."),
    ("--access_log_format", str, None, "The access log format."),
    ("--model_name", str, "model", "The name of the model used on the endpoint path."),
    ("--predictor_host", str, None, "The host a transformer's default predict forwards to."),
    ("--protocol", str, "v1", "Deprecated: --predictor_protocol."),
    ("--predictor_protocol", str, "v1", "The protocol a transformer uses to call its predictor."),
    ("--predictor_use_ssl", strtobool, False, "Use https to call the predictor."),
    ("--predictor_request_timeout_seconds", int, 600, "Timeout in seconds of a call to the predictor."),
    ("--grpc_max_send_message_length", int, 8388608, "The max size of a gRPC message sent."),
    ("--grpc_max_receive_message_length", int, 8388608, "The max size of a gRPC message received."),
    ("--predictor_request_retries", int, 0, "Retries of a failed call to the predictor."),
    ("--event-loop", str, "auto", "The event loop served on: auto (uvloop when installed), asyncio or uvloop."),
    ("--timeout-keep-alive", int, 65, "Seconds an idle keep-alive HTTP connection stays open."),
    ("--ssl_certfile", str, None, "The PEM certificate file to serve HTTPS with (else KSERVE_TLS_CERT_FILE)."),
    ("--ssl_keyfile", str, None, "The PEM private key file to serve HTTPS with (else KSERVE_TLS_KEY_FILE)."),
)
# KServe 0.21: with a certificate and key and the HTTP port left at its default, it listens on 8443
DEFAULT_HTTP_PORT, DEFAULT_HTTPS_PORT = 8080, 8443
TLS_ENV = {"ssl_certfile": "KSERVE_TLS_CERT_FILE", "ssl_keyfile": "KSERVE_TLS_KEY_FILE"}


def kserve_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """KServe's model server options, for `argparse.ArgumentParser(parents=[model_server.parser])` in user
    scripts (exported as `gpuserve.model_server.parser`), with KServe's defaults. `defaults=False` leaves
    out the flags not given, so the server can tell a flag from a default (flags beat env and settings)."""
    parser = argparse.ArgumentParser(add_help=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for flag, kind, default, text in _FLAGS:
        choices = _PROTOCOLS if flag in ("--protocol", "--predictor_protocol") else \
            ["auto", "asyncio", "uvloop"] if flag == "--event-loop" else None
        if flag.lstrip("-") in TLS_ENV:  # as KServe: the environment when the flag is not given
            default = os.environ.get(TLS_ENV[flag.lstrip("-")])
        parser.add_argument(flag, type=kind, choices=choices, help=text,
                            default=default if defaults else argparse.SUPPRESS)
    parser.add_argument("--enable_predictor_health_check", action="store_true",
                        default=False if defaults else argparse.SUPPRESS,
                        help="A transformer is ready only while its predictor is ready.")
    return parser


parser = kserve_parser()


def _kserve_args() -> argparse.Namespace:
    """The KServe flags given on this script's command line (only those; see `kserve_parser`)."""
    args, _ = kserve_parser(defaults=False).parse_known_args(sys.argv[1:])
    return args


def _predictor_config_from(args: argparse.Namespace) -> PredictorConfig:
    flag = lambda name: getattr(args, name, None)  # noqa: E731
    return PredictorConfig(
        predictor_host=flag("predictor_host"),
        predictor_protocol=flag("predictor_protocol") or flag("protocol") or "v1",
        predictor_use_ssl=bool(flag("predictor_use_ssl")),
        predictor_request_timeout_seconds=flag("predictor_request_timeout_seconds") or 600,
        predictor_request_retries=flag("predictor_request_retries") or 0,
        predictor_health_check=bool(flag("enable_predictor_health_check")))


class _Uvicorn:
    """A uvicorn server whose signals are ours, so several servers stop together and exit 0."""

    def __init__(self, app, settings: ServerSettings, sock: socket.socket, https: bool = False):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                yield

        tls = dict(ssl_certfile=settings.http_ssl_certfile, ssl_keyfile=settings.http_ssl_keyfile) if https else {}
        config = uvicorn.Config(app, lifespan="off", access_log=settings.access_log, log_config=None, interface="asgi3",
                                timeout_graceful_shutdown=int(settings.graceful_shutdown_seconds),
                                limit_concurrency=None, backlog=2048,
                                timeout_keep_alive=max(1, round(settings.http_keep_alive_s)), **tls)
        self.server = Server(config)
        self.sock = sock

    async def serve(self) -> None:
        await self.server.serve(sockets=[self.sock])

    def stop_accepting(self, close_idle: bool = False) -> None:
        """New connections refused, open ones served on, or closed once idle (server/shutdown.py)."""
        for listener in getattr(self.server, "servers", ()):
            listener.close()
        if close_idle:
            for connection in list(self.server.server_state.connections):
                connection.shutdown()

    def open_connections(self) -> int:
        return len(self.server.server_state.connections)

    def stop(self, grace_s: Optional[float] = None) -> None:
        if grace_s is not None:
            self.server.config.timeout_graceful_shutdown = grace_s
        self.server.should_exit = True


def loop_runner(kind: str = "auto") -> Callable:
    """How to run the server's coroutine: uvloop when installed ("auto") or asked for, else asyncio's loop."""
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise InvalidSettings("event_loop 'uvloop' needs the uvloop package (gpuserve[speed])") from None
        else:
            return uvloop.run
    return asyncio.run


def _ssl_context(settings: ServerSettings) -> Optional[ssl.SSLContext]:
    """The HTTPS endpoint's TLS context (KServe 0.21's ssl_certfile and ssl_keyfile, both or neither)."""
    certfile, keyfile = settings.http_ssl_certfile, settings.http_ssl_keyfile
    if not certfile and not keyfile:
        return None
    if not certfile or not keyfile:
        raise InvalidSettings("HTTPS needs both a certificate and its key: ssl_certfile and ssl_keyfile "
                              "(KSERVE_TLS_CERT_FILE and KSERVE_TLS_KEY_FILE)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidSettings(f"cannot serve HTTPS with certificate {certfile} and key {keyfile}: {exc}") from None
    return context


def _http_server(app, settings: ServerSettings, sock: socket.socket, fast: Optional[FastPath] = None,
                 guard: Optional[HttpRestrictions] = None, main: bool = False):
    """Our httptools server (inference routes without ASGI) unless settings or a missing httptools say uvicorn;
    `guard`: endpoint groups restricted to requests with a header; `main`: the inference endpoint, served with
    TLS when settings name a certificate and with CORS when they give its settings (server/cors.py)."""
    context = _ssl_context(settings) if main else None
    cors = settings.cors if main else None
    if settings.http_server != "uvicorn":
        try:
            from gpuserve.server.rest.http11 import HttpServer
        except ImportError as exc:
            if settings.http_server == "gpuserve":
                raise InvalidSettings(f"http_server 'gpuserve' needs httptools (gpuserve[speed]): {exc}") from None
        else:
            return HttpServer(with_cors(app, cors), sock, settings.max_request_bytes, fast=fast,
                              keep_alive_s=settings.http_keep_alive_s, graceful_s=settings.graceful_shutdown_seconds,
                              access_log=settings.access_log, guard=guard, ssl_context=context, cors=cors is not None,
                              spans=fast.plane.server_spans if main and fast is not None else None)
    served = fast or app
    served = guard.asgi(served) if guard is not None else served
    return _Uvicorn(with_cors(served, cors), settings, sock, https=context is not None)


class ModelServer:
    """KServe's `ModelServer`. Its arguments (else the script's KServe flags, else `GPUSERVE_*` env and
    settings.json, else KServe's defaults) are also its plain attributes, as in KServe; changing one of
    them before `start` still counts."""

    # attribute -> the ServerSettings field it stands for
    _SETTING_OF = {"http_port": "http_port", "grpc_port": "grpc_port", "workers": "workers",
                   "enable_grpc": "enable_grpc", "enable_docs_url": "enable_docs_url",
                   "max_asyncio_workers": "max_asyncio_workers", "grace_period": "graceful_shutdown_seconds",
                   "event_loop": "event_loop", "timeout_keep_alive": "http_keep_alive_s",
                   "ssl_certfile": "http_ssl_certfile", "ssl_keyfile": "http_ssl_keyfile"}

    def __init__(self, http_port: Optional[int] = None, grpc_port: Optional[int] = None,
                 workers: Optional[int] = None, max_threads: Optional[int] = None,
                 max_asyncio_workers: Optional[int] = None, registered_models: Optional[ModelRepository] = None,
                 enable_grpc: Optional[bool] = None, enable_docs_url: Optional[bool] = None,
                 enable_latency_logging: Optional[bool] = None, access_log_format: Optional[str] = None,
                 event_loop: Optional[str] = None, timeout_keep_alive: Optional[int] = None,
                 grace_period: Optional[int] = None, predictor_config: Optional[PredictorConfig] = None,
                 ssl_certfile: Optional[str] = None, ssl_keyfile: Optional[str] = None,
                 settings: Optional[ServerSettings] = None, metrics_port: Optional[int] = None,
                 host: Optional[str] = None, **ignored):
        for name in ignored:
            logger.warning("ModelServer(%s=...) is not a KServe 0.21 argument; ignored", name)
        script = settings is None  # a KServe script: its command line carries KServe's flags
        args = _kserve_args() if script else argparse.Namespace()
        pick = lambda given, name: given if given is not None else getattr(args, name, None)  # noqa: E731
        overrides = dict(http_port=pick(http_port, "http_port"), grpc_port=pick(grpc_port, "grpc_port"),
                         workers=pick(workers, "workers"), max_threads=pick(max_threads, "max_threads"),
                         max_asyncio_workers=pick(max_asyncio_workers, "max_asyncio_workers"),
                         enable_grpc=pick(enable_grpc, "enable_grpc"),
                         enable_docs_url=pick(enable_docs_url, "enable_docs_url"),
                         metrics_port=metrics_port, host=host, graceful_shutdown_seconds=grace_period,
                         event_loop=pick(event_loop, "event_loop"),
                         http_keep_alive_s=pick(timeout_keep_alive, "timeout_keep_alive"),
                         http_ssl_certfile=pick(ssl_certfile, "ssl_certfile"),
                         http_ssl_keyfile=pick(ssl_keyfile, "ssl_keyfile"))
        if script:  # as KServe: the environment names the certificate and key when nothing else does
            for name, variable in TLS_ENV.items():
                if overrides[f"http_{name}"] is None:
                    overrides[f"http_{name}"] = os.environ.get(variable) or None
        message_limits = [getattr(args, f"grpc_max_{way}_message_length", None) for way in ("send", "receive")]
        if any(limit is not None for limit in message_limits):
            overrides["grpc_max_message_bytes"] = max(limit for limit in message_limits if limit is not None)
        if script:
            settings = ServerSettings.load(None, **overrides)
            if "metrics_port" not in settings.model_fields_set and "enable_metrics_server" not in settings.model_fields_set:
                # A KServe script: KServe serves /metrics on the HTTP port only (so does gpuserve, always); a
                # separate port nobody asked for would keep a second such server from starting.
                settings = settings.model_copy(update={"enable_metrics_server": False})
            if "enable_docs_url" not in settings.model_fields_set:  # KServe's default; gpuserve's CLI keeps /docs
                settings = settings.model_copy(update={"enable_docs_url": False})
            if "http_keep_alive_s" not in settings.model_fields_set:  # KServe 0.21's default
                settings = settings.model_copy(update={"http_keep_alive_s": 65.0})
            if settings.http_ssl_certfile and settings.http_ssl_keyfile and settings.http_port == DEFAULT_HTTP_PORT:
                logger.info("SSL enabled, switching listen port to %d", DEFAULT_HTTPS_PORT)  # KServe's line
                settings = settings.model_copy(update={"http_port": DEFAULT_HTTPS_PORT})
        else:
            settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        self.settings = settings
        self.http_port = settings.http_port
        self.grpc_port = settings.grpc_port
        self.workers = settings.workers
        self.max_threads = settings.max_threads if settings.max_threads is not None else 4
        self.max_asyncio_workers = settings.max_asyncio_workers
        self.enable_grpc = settings.enable_grpc
        self.enable_docs_url = settings.enable_docs_url
        self.grace_period = int(settings.graceful_shutdown_seconds)
        self.event_loop = settings.event_loop
        self.timeout_keep_alive = settings.http_keep_alive_s
        self.ssl_certfile = settings.http_ssl_certfile
        self.ssl_keyfile = settings.http_ssl_keyfile
        self._loop_exception_handler: Optional[Callable] = None  # KServe's register_exception_handler(handler)
        self.enable_latency_logging = pick(enable_latency_logging, "enable_latency_logging")
        if self.enable_latency_logging is None:
            self.enable_latency_logging = True
        self.access_log_format = pick(access_log_format, "access_log_format")
        self._configure_logging = getattr(args, "configure_logging", True)
        self._log_config_file = getattr(args, "log_config_file", None)
        self._attributes_at_init = {attr: getattr(self, attr) for attr in self._SETTING_OF}
        if predictor_config is None and script:
            predictor_config = _predictor_config_from(args)
        self.predictor_config = predictor_config
        if predictor_config is not None:
            context.set_predictor_config(predictor_config)
        self.registered_models = registered_models if registered_models is not None else ModelRepository()
        self.registered_models.load_retries = settings.model_load_retry_count
        self.dataplane = DataPlane(self.registered_models, server_name=settings.server_name,
                                   **({"server_version": settings.server_version} if settings.server_version else {}),
                                   strict_readiness=settings.strict_readiness,
                                   model_control=settings.model_control_enabled,
                                   allow_client_shm=settings.allow_client_shm,
                                   response_cache_bytes=settings.response_cache_bytes,
                                   response_cache_entries=settings.response_cache_entries,
                                   mlserver_cache=settings.mlserver_cache,
                                   trace_defaults=trace_start_settings(settings.trace_config))
        self.dataplane.torchserve_model_api = settings.torchserve_model_api  # server/torchserve_manage.py
        if settings.server_extensions is not None:  # MLServer's `extensions`: what server metadata lists
            self.dataplane.extensions = list(settings.server_extensions)
        # MLServer's tracing_server: its service name unless settings name the server (gpuserve/otel_mlserver.py)
        self.dataplane.server_spans = server_spans(
            settings.tracing_server, "mlserver" if settings.server_name == "gpuserve" else settings.server_name,
            settings.server_version or __version__)
        self.dataplane.http_forward = header_forward(settings.http_header_forward_pattern,
                                                     "http-header-forward-pattern")
        self.dataplane.grpc_forward = header_forward(settings.grpc_header_forward_pattern,
                                                     "grpc-header-forward-pattern")
        self.errors = ErrorRoutes()
        self.protocol_version = "v2"
        self.ports: Dict[str, int] = {}
        self.grpc_servers: list = []  # the gRPC server serving (grpc.aio's or the native transport's)
        self.started = threading.Event()
        self.exit_timeout_expired = False  # the last stop ran out of graceful_shutdown_seconds (server/shutdown.py)
        self.exit_on_load_failure = False  # a model failing at start-up stops the server (tritonserver's way)
        # tritonserver's stop: an idle keep-alive connection is served until it closes (within the exit
        # timeout); else uvicorn's (KServe's): it is closed at once (server/shutdown.py)
        self.serve_open_connections = False
        self.load_failure: Optional[Exception] = None
        self._servers: List = []
        self._stopping: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._startup_hooks: List[Callable] = []
        self._engine_tasks: List[asyncio.Task] = []

    # KServe's API -------------------------------------------------------------------------------
    @property
    def model_registry(self) -> ModelRepository:
        return self.registered_models

    def register_model(self, model: BaseKServeModel, name: Optional[str] = None) -> None:
        """Serve `model` under its name, or under `name` too (KServe: more names for one model)."""
        if not getattr(model, "name", None):
            raise ValueError("Failed to register model, model.name must be provided.")
        config = self.predictor_config
        if (isinstance(model, Model) and model.predictor_config is None and not model.predictor_host
                and config is not None and config.predictor_host):
            model.use_predictor_config(config)  # KServe: the server's predictor is every transformer's
        model.enable_latency_logging = self.enable_latency_logging
        self.registered_models.update(model, name)
        logger.info("registered model %s", name or model.name)

    def register_exception_handler(self, handler_or_type, handler: Optional[Callable] = None) -> None:
        """KServe's form, `register_exception_handler(handler)`: `handler(loop, context)` becomes the serving
        loop's exception handler (`default_exception_handler` otherwise). gpuserve's form,
        `register_exception_handler(ExceptionType, handler)`: `handler(request, exc)` answers HTTP requests
        whose model raised that exception."""
        if handler is None:
            self._loop_exception_handler = handler_or_type
        else:
            self.errors.handlers[handler_or_type] = handler

    def default_exception_handler(self, loop: asyncio.AbstractEventLoop, context: Dict) -> None:
        """KServe's: the error logged, then the loop's own handler."""
        if "exception" in context:
            logger.error("Caught exception: %s", context.get("exception"))
        logger.error("message: %s", context.get("message"))
        loop.default_exception_handler(context)

    def setup_event_loop(self, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        """KServe's: the loop's exception handler and its default executor of max_asyncio_workers threads
        (KServe's min(32, CPUs + 4) when unset). `serve` calls it on the loop it runs."""
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = asyncio.get_event_loop_policy().get_event_loop()
        loop.set_exception_handler(self._loop_exception_handler or self.default_exception_handler)
        workers = self.settings.max_asyncio_workers or self.settings.max_threads or min(32, (os.cpu_count() or 1) + 4)
        loop.set_default_executor(ThreadPoolExecutor(max_workers=workers))

    def register_signal_handler(self) -> None:
        """KServe's: SIGINT, SIGTERM and SIGQUIT stop the server (`serve` also handles SIGTERM and SIGINT)."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(sig, lambda number, frame: self.stop(number))

    def start(self, models: Optional[List[BaseKServeModel]] = None) -> None:
        """Serve until SIGTERM/SIGINT; blocks. Models not yet loaded are loaded first."""
        self._apply_attributes()
        raised = raise_open_files_limit()
        if self._configure_logging:
            configure_logging(self.settings)
            if self._log_config_file:
                from gpuserve.logging import configure_logging as dict_config

                dict_config(self._log_config_file)
        if raised:
            logger.info("open files limit raised from %d to %d (one a client connection)", *raised)
        if self.settings.workers > 1:
            logger.warning("workers=%d: several processes need the models built in each of them; that works for "
                           "`gpuserve start FOLDER` (see server/workers.py), not for model objects passed to "
                           "start(); serving with 1 worker", self.settings.workers)
        loop_runner(self.settings.event_loop)(self.serve(models, require_ready=True))

    def _apply_attributes(self) -> None:
        """What a script changed on the attributes after construction goes into the settings."""
        changed = {self._SETTING_OF[attr]: getattr(self, attr) for attr, value in self._attributes_at_init.items()
                   if getattr(self, attr) != value}
        if changed:
            self.settings = self.settings.model_copy(update=changed)
            self._attributes_at_init.update({attr: getattr(self, attr) for attr in self._SETTING_OF})

    # gpuserve -----------------------------------------------------------------------------------
    async def serve(self, models: Optional[List[BaseKServeModel]] = None, require_ready: bool = False) -> None:
        """Bind, load, serve, and return after a graceful stop. With `require_ready` (KServe's `start`),
        raise `NoModelReady` once loaded if none of `models` is ready."""
        self._apply_attributes()
        rate_limiter.configure(self.settings.rate_limit, self.settings.rate_limit_resources)
        response_stream.configure(self.settings.decoupled_send_window)
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.setup_event_loop(self._loop)
        for model in models or []:
            self.register_model(model)
        s = self.settings
        cloud = None
        if s.sagemaker or s.vertex_ai:  # Triton's SageMaker / Vertex AI endpoints (server/cloud.py)
            from gpuserve.server.cloud import CloudEndpoints, check_ports

            check_ports(s)
        http_sock = None
        if s.enable_http:
            http_sock = bind(s.http_host or s.host, s.http_port, s.reuse_port or s.reuse_http_port)
            self.ports["http"] = http_sock.getsockname()[1]
            host = http_sock.getsockname()[0]
            # BLS calls from a process a Python model forked reach the server here (gpuserve/triton_bls_fork.py)
            self.registered_models.http_loopback = ({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host),
                                                    self.ports["http"])
        if s.sagemaker or s.vertex_ai:
            try:
                cloud = CloudEndpoints(s)
            except Exception:
                if http_sock is not None:
                    http_sock.close()
                raise
            self.ports.update(cloud.ports)
        metrics_sock = None
        if s.enable_metrics_server and not (s.enable_http and s.metrics_port and s.metrics_port == s.http_port):
            try:
                metrics_sock = bind(s.metrics_host or s.host, s.metrics_port, s.reuse_port, service="Metrics")
            except PortInUse:
                if http_sock is not None:
                    http_sock.close()
                raise
            self.ports["metrics"] = metrics_sock.getsockname()[1]
        grpc_server = None
        if s.enable_grpc:
            grpc_server = await self._start_grpc(http_sock, metrics_sock)
            self.grpc_servers = [grpc_server] if grpc_server is not None else []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    self._loop.add_signal_handler(sig, self.stop)

        gpus = GpuSampler(s.nvml_interval_seconds)
        gpus.start()
        exposition = Exposition(self.dataplane, s.metrics_prefix, gpus if s.gpu_metrics else None, s.metrics_config,
                                cpu=s.cpu_metrics)
        app = build_app(self.dataplane, s, self.errors, exposition)
        peers = Peers.from_environment()  # a worker of `--workers N`: the others ask and tell it (server/peers.py)
        if peers is not None:
            try:
                await peers.start(peer_handlers(self.dataplane, exposition))
                self.dataplane.peers = peers
            except OSError as exc:  # e.g. a socket path over the system's limit: each worker answers for itself
                logger.warning("workers cannot reach each other (%s): statistics, metrics, loads and settings "
                               "are this worker's own", exc)
                peers = None
        self._servers, tasks = [], []
        http = None  # the HTTP endpoint, which a shutdown drains first (server/shutdown.py)
        if http_sock is not None:
            http = _http_server(app, s, http_sock, FastPath(app, self.dataplane, self.errors, s.max_request_bytes,
                                                          s.compress_responses),
                                http_restrictions(s.http_restricted_api), main=True)
            self._servers.append(http)
            tasks.append(asyncio.ensure_future(http.serve()))
        if metrics_sock is not None:
            metrics = _http_server(exposition.asgi, s, metrics_sock)
            self._servers.append(metrics)
            tasks.append(asyncio.ensure_future(metrics.serve()))
        hosts = {"http": s.http_host, "grpc": s.grpc_host, "metrics": s.metrics_host}
        logger.info("gpuserve listening: %s", ", ".join(f"{k} {hosts.get(k) or s.host}:{v}"
                                                        for k, v in self.ports.items()))
        for key, service in (("grpc", "GRPCInferenceService"), ("http", "HTTPService"), ("metrics", "Metrics Service")):
            if key in self.ports:  # tritonserver's lines, which deployment scripts wait for
                logger.info("Started %s at %s:%d", service, hosts.get(key) or s.host, self.ports[key])

        baseline = await self._poll_baseline()
        await self._load_all()
        failure = None
        if cloud is not None:
            try:
                for name, endpoint, sock in cloud.apps(self.dataplane, app, self.errors,
                                                      http_restrictions(s.http_restricted_api)):
                    server = _http_server(endpoint, s, sock)
                    self._servers.append(server)
                    tasks.append(asyncio.ensure_future(server.serve()))
                    logger.info("Started %s HTTPService at %s:%d", name, *sock.getsockname()[:2])
            except InvalidSettings as exc:
                failure = exc
                cloud.close()
                self._stopping.set()
        if failure is None and require_ready and models and not any(model.ready for model in models):
            failure = NoModelReady(models)  # KServe's start() stops here; a repository folder serves on
            logger.error("%s Stopping.", failure)
            self._stopping.set()
        # Everything alive now (framework modules, models, the app) lives for the whole run: keep it
        # out of the cyclic collector's full passes, which otherwise stall the loop for tens of ms
        # under load (the p99 tail), and collect the young generation less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        poller = None
        if failure is None:
            self.dataplane.started = True
            if peers is not None:
                peers.mark_started()
            poller = self._start_polling(baseline)
            self.started.set()
        kafka = kafka_task = None
        if failure is None and s.kafka_enabled:  # MLServer's Kafka server (gpuserve/mlserver/kafka.py)
            from gpuserve.mlserver.kafka import KafkaServer

            kafka = KafkaServer(self.dataplane, s.kafka_servers, s.kafka_topic_input, s.kafka_topic_output)
            kafka_task = asyncio.ensure_future(kafka.start())
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        self.dataplane.stopping = True
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        if kafka is not None:  # no more messages taken; those taken are answered first
            try:
                await kafka.stop()
            except Exception:
                logger.exception("the Kafka server did not stop cleanly")
            kafka_task.cancel()  # it may be waiting to try an unreachable broker again
            await asyncio.gather(kafka_task, return_exceptions=True)
        left = await shutdown.stop_endpoints(http, grpc_server, s.graceful_shutdown_seconds,
                                             close_idle=not self.serve_open_connections)
        for server in self._servers:
            server.stop(0 if server is http else None)
        await asyncio.gather(*tasks, return_exceptions=True)
        if peers is not None:
            await peers.close()
            self.dataplane.peers = None
        stop_wait.cancel()
        self.dataplane.started = False
        gpus.stop()
        self.dataplane.shared_memory.unregister_all()
        self.dataplane.shared_memory.cuda_unregister()
        for task in self._engine_tasks:
            task.cancel()
        await asyncio.gather(*self._engine_tasks, return_exceptions=True)
        self.exit_timeout_expired = not await shutdown.stop_models(self.registered_models, left, stop_model)
        self.dataplane.runtime_settings.tracer.close()  # the traces still held are written, the files closed
        if self.dataplane.server_spans is not None:  # MLServer's tracing_server: what waits is sent
            self.dataplane.server_spans.close()
        logger.info("gpuserve stopped")
        if failure is None and self.load_failure is not None:
            raise self.load_failure
        if failure is not None:
            raise failure

    async def _start_grpc(self, *opened):
        try:
            if self.settings.grpc_transport == "native" and importlib.util.find_spec("hpack") is not None \
                    and not self.settings.grpc_arguments:  # keepalive and connection age: grpc.aio's
                from gpuserve.server.grpc.native import start_native_grpc_server as start
            else:
                if self.settings.grpc_transport == "native" and not self.settings.grpc_arguments:
                    logger.warning("gRPC on grpc.aio: the native transport needs the hpack package "
                                   "(pip install 'gpuserve[grpc]')")  # (keepalive flags said so already)
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
        loaded_ready = [m for _, _, m in self.registered_models.all_versions() if m.ready]
        if pending:
            retries = self.settings.model_load_retry_count  # Triton's --model-load-retry-count
            await asyncio.gather(*(run_load(m, retries) for m in pending))  # starts their engines too
            for name in sorted({m.name for m in pending}):
                versions = list(self.registered_models.versions(name).values())
                await fail_together(versions)
                await stamp_files(versions)
                if all(m.ready and triton_form(m) for m in versions):
                    logger.info("successfully loaded '%s'", name)  # Triton's line for a model's versions
                for model in versions:  # Triton's line for a version that failed (scripts grep the log for it)
                    if not model.ready and triton_form(model) and getattr(model, "version", None) is not None:
                        logger.error("failed to load '%s' version %s: %s", name, model.version, model.reason)
        for model in loaded_ready:
            if getattr(model, "engine", False):
                self._start_engine(model)
        for name, version, model in self.registered_models.all_versions():
            # MLServer's versions are often written "v0.1.0": no second "v" in front of those
            label = name if version is None else f"{name} {'' if str(version).startswith('v') else 'v'}{version}"
            if model.ready:
                await asyncio.to_thread(model.start)
                logger.info("model %s is ready", label)
            else:
                logger.error("model %s is NOT ready: %s", label, model.reason)
        if self.exit_on_load_failure and any(not m.ready for _, _, m in self.registered_models.all_versions()):
            # tritonserver's --exit-on-error (default true): a model that failed at start-up stops the server
            self.load_failure = GpuserveError("creating server: Internal - failed to load all models")
            logger.error("%s (--exit-on-error=false serves the others)", self.load_failure)
            self._stopping.set()

    def _start_engine(self, model: BaseKServeModel) -> None:
        """A model that came loaded: KServe runs its `start_engine()` beside the servers (it may serve for
        as long as they do), so a task here, cancelled at the stop if still running."""

        def finished(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                logger.error("model %s: start_engine() failed: %r", model.name, task.exception())

        task = asyncio.ensure_future(model.start_engine())
        task.add_done_callback(finished)
        self._engine_tasks.append(task)

    async def _poll_baseline(self) -> Optional[Dict[str, str]]:
        """Poll mode's first scan, taken before the models load: what the server starts from. Taken after
        they were ready (the poller's own first scan), a change made in between went unseen for good (a CI
        run moved a model folder just after readiness; that scan failed on the vanished folder, the next
        one took the moved state as the start). None without poll mode, or when this scan fails: the
        poller's first scan is the start then."""
        fingerprints = getattr(self.registered_models, "fingerprints", None)
        if not self.settings.repository_poll_seconds or fingerprints is None:
            return None
        try:
            return await asyncio.to_thread(fingerprints)
        except Exception as exc:  # a folder replaced while scanned
            logger.warning("repository poll: the scan before loading failed (%s); the first poll is the start", exc)
            return None

    def _start_polling(self, baseline: Optional[Dict[str, str]] = None) -> Optional[asyncio.Task]:
        """Triton's poll mode (`repository_poll_seconds`): follow the repository folder's changes from
        `baseline` (see _poll_baseline)."""
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
        poller = RepositoryPoller(self.registered_models, seconds, changed, baseline)
        self.registered_models.poller = poller  # (a TFServing config reload moves its baseline: tfserving_reload.py)
        return asyncio.ensure_future(poller.run())

    async def _stop_models(self) -> None:
        for _, _, model in self.registered_models.all_versions():
            await stop_model(model)

    def stop(self, sig: Optional[int] = None) -> None:
        """Begin a graceful stop; safe from signal handlers and from other threads. `sig`: KServe's argument,
        the signal that asked for it."""
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
