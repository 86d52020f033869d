"""Parallel workers for CPU-bound custom Python models (MLServer's `parallel_workers`).

Each worker is a spawned process (never forked: the parent may hold CUDA or threads) that builds
and loads its own copy of the model from the model's settings. Requests go to whichever worker is
free (a process pool's shared queue), not round-robin, so one slow request does not hold up the
requests queued behind it on the same worker. Arrays travel pickled; the model's own event loop in
each worker runs async hooks.

Nothing the parent might fail to unpickle crosses back: an unpickling error in the pool's result
thread breaks the whole pool. A worker's exception comes back as (type path, message, HTTP status,
gRPC code) and a result as pickled bytes the parent opens itself, so a runtime's own exception or
result class (two folders' `runtime.py` cannot both be imported in the parent) answers one request
with an error. A worker that dies breaks the pool anyway (concurrent.futures cannot replace one
worker), so the pool is rebuilt: the requests it held fail with 500, later ones are served, as
MLServer restarts a dead worker.

A model with a custom environment (gpuserve/environments.py) unpacks it when it loads, in the loading
thread, and its workers start with it; a tarball that cannot be used leaves the model not ready with the
reason, and the runtime's class is never imported in the server process.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Dict, List, Optional, Tuple

from starlette.requests import Request
from starlette.responses import Response

from gpuserve.adaptive import MERGED_ROWS
from gpuserve.engine.stats import PROMETHEUS_BUCKETS, Histogram
from gpuserve.environments import Environment, EnvironmentContext, EnvironmentSource, activate_in_worker
from gpuserve.errors import GpuserveError, InferenceError, ModelLoadError, status_of
from gpuserve.metrics import worker_metric_dirs
from gpuserve.model import InferenceVerb, Model
from gpuserve.settings import ModelSettings

logger = logging.getLogger("gpuserve")

_MODEL = None
_LOOP: Optional[asyncio.AbstractEventLoop] = None
_STARTED = None  # the pool's barrier: each worker's first describe waits there for every other worker's
STARTUP_S = 300.0  # how long a worker that has loaded waits for the others to have loaded too


def _worker_init(settings_json: str, folder: Optional[str], metrics_dir: str,
                 environment: Optional[Environment] = None, started=None) -> None:
    global _MODEL, _LOOP, _STARTED
    _STARTED = started
    # Ctrl+C reaches the whole process group: the server stops its workers itself, so a worker waiting
    # for work must not print a KeyboardInterrupt traceback (MLServer's workers ignore it too)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before prometheus_client is first imported here
    if environment is not None:
        activate_in_worker(environment)
    from gpuserve.model_repository import run_load
    from gpuserve.repository import instantiate, runtime_for

    settings = ModelSettings.model_validate_json(settings_json)
    settings.folder = folder
    settings.parallel_workers = 0
    _LOOP = asyncio.new_event_loop()
    model = instantiate(runtime_for(settings), settings)
    if not _LOOP.run_until_complete(run_load(model)):
        raise ModelLoadError(f"worker {os.getpid()} could not load '{settings.name}': {model.reason}")
    _MODEL = model


# Model attributes the data plane reads that the parent's stand-in copies from a worker's model.
_COPIED = ("generates_ids", "answers_every_output", "platform", "settings_metadata", "batches_by_parameters",
           "streams")  # a worker's runtime streams nothing (one predict a call, as MLServer's workers) but
# its gRPC streams answer in MLServer's form (server/grpc/mlserver_stream.py)


def _worker_started() -> Dict[str, Any]:
    """A worker's first task: it waits for every other worker to take theirs, so each worker (not the first
    one up, twice) answers one, and the model is ready only once all of them have loaded it."""
    if _STARTED is not None:
        _STARTED.wait(STARTUP_S)
    return _worker_describe()


def _worker_describe() -> Dict[str, Any]:
    from gpuserve.mlserver.handlers.custom import served_handlers

    return {"pid": os.getpid(), "inputs": _MODEL.get_input_types(), "outputs": _MODEL.get_output_types(),
            "metadata": _MODEL.metadata() if hasattr(_MODEL, "metadata") else None,
            "attributes": {name: getattr(_MODEL, name) for name in _COPIED if hasattr(_MODEL, name)},
            "routes": [(mark.rest_path, mark.rest_method) for mark, _ in served_handlers(_MODEL)]}


_ROUTES_APP = None


def _worker_route(scope: dict, body: bytes) -> Tuple[int, list, bytes]:
    """One request to the model's `@custom_handler` routes, answered here where the runtime lives."""
    global _ROUTES_APP
    from gpuserve.mlserver.handlers.custom import served_handlers
    from gpuserve.mlserver.handlers.routes import answer, app_for

    if _ROUTES_APP is None:
        _ROUTES_APP = app_for(served_handlers(_MODEL))
    return _LOOP.run_until_complete(answer(_ROUTES_APP, scope, body))


def _worker_call(body: Any, headers: Optional[dict], verb: int,
                 merged_rows: Optional[Tuple[int, ...]] = None) -> Tuple[bool, Any]:
    """(True, pickled answer) or (False, (type path, message, HTTP status, gRPC code)). `merged_rows`: what
    each request of a merged one brought (gpuserve/adaptive.py MERGED_ROWS), set here as in the server."""
    merged = MERGED_ROWS.set(merged_rows)
    try:
        answer = _LOOP.run_until_complete(_MODEL(body, headers, InferenceVerb(verb)))
        return True, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # noqa: BLE001 - everything must come back as plain data
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return False, _error_parts(exc)
    finally:
        MERGED_ROWS.reset(merged)


def _error_parts(exc: BaseException) -> Tuple[str, str, int, str]:
    http, grpc_code = status_of(exc)
    kind = type(exc)
    module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
    return f"{module}{kind.__qualname__}", str(exc), http, grpc_code


class WorkerError(GpuserveError):
    """An exception raised in a worker, as its type path, message and status: the class itself may not
    exist in the parent. gpuserve's own errors keep their message as is, others read `module.Type: message`."""

    def __init__(self, type_path: str, message: str, http: int = 500, grpc_code: str = "INTERNAL"):
        if not message:
            message = type_path
        elif not type_path.startswith(("gpuserve.", "mlserver.")):
            message = f"{type_path}: {message}"
        super().__init__(message)
        self.type_path = type_path
        self.http = http
        self.grpc = grpc_code


in_flight = 0  # requests handed to any model's workers and not yet answered
dispatched: Optional[Histogram] = None  # MLServer's parallel_request_queue (server/metrics.py reads it)


class ParallelModel(Model):
    """Stands in the parent for a model whose copies run in `workers` processes."""

    def __init__(self, settings: ModelSettings, workers: int, environment: Optional[EnvironmentSource] = None):
        super().__init__(settings.name)
        self.settings = settings
        self.version = settings.parameters.version
        self.workers = workers
        self.pool: Optional[ProcessPoolExecutor] = None
        self.description: Dict[str, Any] = {}
        self.worker_pids: List[int] = []
        self.inflight = 0  # requests handed to the pool and not yet answered
        self.metrics_dir: Optional[str] = None
        self.restarts = 0  # times the pool was rebuilt after a worker died
        self._rebuild_lock = threading.Lock()
        self.environment_source = environment
        self.environment: Optional[Environment] = None  # unpacked at load

    def load(self) -> bool:
        global dispatched
        if dispatched is None:  # as MLServer, the metric exists once there are workers
            dispatched = Histogram(PROMETHEUS_BUCKETS)
        if self.environment_source is not None:
            try:
                self.environment = self.environment_source.prepare()
            except ModelLoadError as exc:
                raise ModelLoadError(f"model '{self.name}': {exc}") from None
        # Workers write custom metrics to files in their own directory; the server's exposition merges them.
        if self.metrics_root:
            os.makedirs(self.metrics_root, exist_ok=True)
        self.metrics_dir = tempfile.mkdtemp(prefix=f"gpuserve-metrics-{self.name}-", dir=self.metrics_root)
        worker_metric_dirs.add(self.metrics_dir)
        self.pool = self._start_pool()
        self.ready = True
        return True

    def _start_pool(self) -> ProcessPoolExecutor:
        """A pool whose workers have all loaded the model (each asked once to describe it)."""
        context = (EnvironmentContext(self.environment) if self.environment is not None
                   else multiprocessing.get_context("spawn"))
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=_worker_init,
                                   initargs=(self.settings.model_dump_json(), self.settings.folder, self.metrics_dir,
                                             self.environment, context.Barrier(self.workers)))
        try:
            futures = [pool.submit(_worker_started) for _ in range(self.workers)]
            described = [f.result() for f in futures]
        except Exception as exc:
            pool.shutdown(wait=False, cancel_futures=True)
            raise ModelLoadError(f"parallel workers for '{self.name}' failed to start: {exc}") from None
        self.description = described[0]
        for name, value in described[0].get("attributes", {}).items():
            setattr(self, name, value)
        self.worker_pids = sorted({d["pid"] for d in described})
        return pool

    async def __call__(self, body, headers=None, verb: InferenceVerb = InferenceVerb.PREDICT):
        if getattr(body, "stream_rest", None) is not None:  # a gRPC stream's later requests stay unread here,
            body.stream_rest = None  # as MLServer's workers read a stream's first request only
        ok, answer = await self._dispatch(_worker_call, body, dict(headers or {}), verb.value, MERGED_ROWS.get())
        if not ok:
            raise WorkerError(*answer)
        try:
            return pickle.loads(answer)
        except Exception as exc:
            raise InferenceError(f"model '{self.name}': its answer could not be read in the server process "
                                 f"({type(exc).__name__}: {exc})") from None

    def __gpuserve_custom_handlers__(self) -> list:
        """The workers' `@custom_handler` routes (gpuserve/mlserver/handlers): each request goes whole to a
        worker, which answers it with the runtime's own method there."""
        from gpuserve.mlserver.handlers.custom import CustomHandler

        return [(CustomHandler(rest_path=path, rest_method=method), self._forward)
                for path, method in self.description.get("routes", ())]

    async def _forward(self, request: Request) -> Response:
        from gpuserve.mlserver.handlers.routes import portable_scope

        status, headers, content = await self._dispatch(_worker_route, portable_scope(request.scope),
                                                        await request.body())
        response = Response(content, status_code=status)
        response.raw_headers = headers
        return response

    async def _dispatch(self, call, *args: Any) -> Any:
        """`call(*args)` in a worker; counted in flight, and observed as MLServer's parallel_request_queue
        observes each request it hands to its workers (how many are in flight, this one included)."""
        global in_flight
        self.inflight += 1
        in_flight += 1
        if dispatched is not None:
            dispatched.observe(in_flight)
        try:
            pool, future = await self._submit(call, *args)
            try:
                return await asyncio.wrap_future(future)
            except BrokenProcessPool:
                await asyncio.get_running_loop().run_in_executor(None, self._rebuild, pool)
                raise InferenceError(f"model '{self.name}': a worker process stopped unexpectedly while serving "
                                     "this request; the workers have been restarted") from None
        finally:
            self.inflight -= 1
            in_flight -= 1

    async def _submit(self, call, *args: Any):
        """(pool, future); a pool found broken before the request reached it is rebuilt and the request
        goes to the new one."""
        for _ in range(2):
            pool = self.pool
            if pool is None:
                break
            try:
                return pool, pool.submit(call, *args)
            except BrokenProcessPool:
                await asyncio.get_running_loop().run_in_executor(None, self._rebuild, pool)
        raise InferenceError(f"model '{self.name}': its worker processes are not running"
                             + (f" ({self.reason})" if self.reason else ""))

    def _rebuild(self, broken: ProcessPoolExecutor) -> None:
        """Replace `broken` once, however many requests saw it break; a model that no longer loads is left
        not ready with the reason."""
        with self._rebuild_lock:
            if self.pool is not broken:
                return
            logger.error("model '%s': a worker process stopped unexpectedly; restarting %d workers",
                         self.name, self.workers)
            broken.shutdown(wait=False, cancel_futures=True)
            self.restarts += 1
            try:
                self.pool = self._start_pool()
            except ModelLoadError as exc:
                self.pool = None
                self.ready = False
                self.reason = str(exc)
                logger.error("%s", exc)

    def get_input_types(self):
        return self.description.get("inputs", [])

    def get_output_types(self):
        return self.description.get("outputs", [])

    def metadata(self) -> Dict[str, Any]:
        meta = self.description.get("metadata") or super().metadata()
        return {**meta, "name": self.name}

    # Where the workers' metric files go (MLServer's metrics_dir; None: the system's temporary folder), one
    # folder per model below it
    metrics_root: Optional[str] = None

    # Seconds a stop waits for the workers to finish what they run before killing them (MLServer's
    # parallel_workers_timeout, default 5): a model stuck in predict must not hold an unload or a shutdown
    stop_timeout = 5.0

    def stop(self) -> None:
        super().stop()
        self.ready = False
        if self.pool is not None:
            processes = list((getattr(self.pool, "_processes", None) or {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            deadline = time.monotonic() + max(0.0, self.stop_timeout)
            for process in processes:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.exitcode is None:
                    logger.warning("model '%s': worker process %s still running after %.3g s; killed", self.name,
                                   process.pid, self.stop_timeout)
                    process.kill()
                    process.join(5)
            self.pool = None
        if self.metrics_dir:
            worker_metric_dirs.discard(self.metrics_dir)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None
