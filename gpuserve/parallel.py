"""Parallel workers for CPU-bound custom Python models (MLServer's `parallel_workers`).

Each worker is a spawned process (never forked: the parent may hold CUDA or threads) that builds
and loads its own copy of the model from the model's settings. Requests go to whichever worker is
free (one queue of waiting requests in the parent), not round-robin, so one slow request does not hold
up the requests queued behind it on the same worker. Arrays travel pickled; the model's own event loop
in each worker runs async hooks.

Each worker has a pipe of its own, written and read by the event loop that sends it a request
(`add_reader` on the parent's end while the request runs): no helper thread stands between the loop and
a worker. concurrent.futures' pool did, two of them (its manager and feeder threads), and each hop
waited for the GIL, which a busy loop gives up only at the switch interval: under load the round trip
grew from 0.5 ms to tens of ms and two workers served less than the model in process
(benchmarks/RESULTS.md, session 33; benchmarks/parallel_bench.py).

Nothing the parent might fail to unpickle crosses back: a worker's exception comes back as (type path,
message, HTTP status, gRPC code) and a result as pickled bytes the parent opens itself, so a runtime's
own exception or result class (two folders' `runtime.py` cannot both be imported in the parent) answers
one request with an error. A worker that dies fails the request it was serving (500), if any, and is
replaced on its own while the others go on serving, as MLServer restarts a dead worker.

A model with a custom environment (gpuserve/environments.py) unpacks it when it loads, in the loading
thread, and its workers start with it; a tarball that cannot be used leaves the model not ready with the
reason, and the runtime's class is never imported in the server process.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
import weakref
from multiprocessing.connection import Connection
from typing import Any, Deque, Dict, List, Optional, Tuple

from starlette.requests import Request
from starlette.responses import Response

from gpuserve.adaptive import MERGED_ROWS
from gpuserve.engine.stats import PROMETHEUS_BUCKETS, Histogram
from gpuserve.environments import Environment, EnvironmentContext, EnvironmentSource, activate_in_worker
from gpuserve.errors import GpuserveError, InferenceError, ModelLoadError, ModelNotReady, status_of
from gpuserve.hooks import run_blocking_inline
from gpuserve.metrics import worker_metric_dirs
from gpuserve.model import InferenceVerb, Model
from gpuserve.settings import ModelSettings

logger = logging.getLogger("gpuserve")

_MODEL = None
_LOOP: Optional[asyncio.AbstractEventLoop] = None
STARTUP_S = 300.0  # how long the server waits for a worker to have loaded the model
_STOP = b""  # what the server sends a worker to make it exit


def _worker_main(conn: Connection, settings_json: str, folder: Optional[str], metrics_dir: str,
                 environment: Optional[Environment] = None) -> None:
    """A worker process: load the model, say so with its description, then answer one call at a time."""
    try:
        _worker_init(settings_json, folder, metrics_dir, environment)
        ready = (True, _worker_describe())
    except BaseException as exc:  # noqa: BLE001 - the server must hear why, whatever it was
        ready = (False, str(exc) if isinstance(exc, GpuserveError) else f"{type(exc).__name__}: {exc}")
    conn.send_bytes(pickle.dumps(ready, protocol=pickle.HIGHEST_PROTOCOL))
    if ready[0]:
        _serve(conn)


def _serve(conn: Connection) -> None:
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):  # the server closed its end: it stopped the model, or it died
            return
        if message == _STOP:
            return
        try:
            call, args = pickle.loads(message)
            frame = (True, call(*args))
        except BaseException as exc:  # noqa: BLE001 - everything must come back as plain data
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            frame = (False, _error_parts(exc))
        try:
            answer = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # a custom route's answer that does not pickle
            answer = pickle.dumps((False, _error_parts(exc)), protocol=pickle.HIGHEST_PROTOCOL)
        conn.send_bytes(answer)


def _worker_init(settings_json: str, folder: Optional[str], metrics_dir: str,
                 environment: Optional[Environment] = None) -> None:
    global _MODEL, _LOOP
    # Ctrl+C reaches the whole process group: the server stops its workers itself, so a worker waiting
    # for work must not print a KeyboardInterrupt traceback (MLServer's workers ignore it too)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run_blocking_inline()  # the model has this process to itself: its blocking calls need no thread here
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
                 merged_rows: Optional[Tuple[int, ...]] = None) -> bytes:
    """The pickled answer (the server opens it itself). `merged_rows`: what each request of a merged one
    brought (gpuserve/adaptive.py MERGED_ROWS), set here as in the server."""
    merged = MERGED_ROWS.set(merged_rows)
    try:
        answer = _LOOP.run_until_complete(_MODEL(body, headers, InferenceVerb(verb)))
        return pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
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


class _Worker:
    """One worker process and the server's end of its pipe; `answer` is the future of the call it runs."""

    __slots__ = ("process", "conn", "fd", "pid", "answer", "loop")

    def __init__(self, process, conn: Connection):
        self.process = process
        self.conn = conn
        self.fd = conn.fileno()
        self.pid = process.pid
        self.answer: Optional[asyncio.Future] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    def quit(self) -> None:
        try:
            self.conn.send_bytes(_STOP)
        except OSError:  # gone already
            pass


def _on_loop(future: asyncio.Future, callback, *args: Any) -> bool:
    """`callback(*args)` on `future`'s loop: at once from that loop's thread, queued there from any other;
    False when that loop is closed (nothing waits there any more)."""
    loop = future.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        callback(*args)
        return True
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


def _fail(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


in_flight = 0  # requests handed to any model's workers and not yet answered
dispatched: Optional[Histogram] = None  # MLServer's parallel_request_queue (server/metrics.py reads it)
_LIVE: "weakref.WeakSet[ParallelModel]" = weakref.WeakSet()


class ParallelModel(Model):
    """Stands in the parent for a model whose copies run in `workers` processes."""

    def __init__(self, settings: ModelSettings, workers: int, environment: Optional[EnvironmentSource] = None):
        super().__init__(settings.name)
        self.settings = settings
        self.version = settings.parameters.version
        self.workers = workers
        self.description: Dict[str, Any] = {}
        self.worker_pids: List[int] = []
        self.inflight = 0  # requests handed to the workers and not yet answered
        self.metrics_dir: Optional[str] = None
        self.restarts = 0  # workers replaced after they died
        self.environment_source = environment
        self.environment: Optional[Environment] = None  # unpacked at load
        self._lock = threading.Lock()  # the lists below; requests may come from more than one loop
        self._running: List[_Worker] = []
        self._idle: Deque[_Worker] = collections.deque()  # the one idle longest goes first, as a shared queue
        self._waiting: Deque[asyncio.Future] = collections.deque()  # requests waiting for a free worker
        self._replacing = 0
        self._stopping = False

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
        workers = self._start(self.workers)
        with self._lock:
            self._stopping = False
            self._running = list(workers)
            self._idle = collections.deque(workers)
            self._pids()
        _LIVE.add(self)
        self.ready = True
        return True

    def _start(self, count: int) -> List[_Worker]:
        """`count` workers that have each loaded the model (started at once, waited for in turn); the model
        is ready only once all of them have, as MLServer's workers each load before the model is ready."""
        context = (EnvironmentContext(self.environment) if self.environment is not None
                   else multiprocessing.get_context("spawn"))
        started: List[_Worker] = []
        try:
            for _ in range(count):
                ours, theirs = context.Pipe()
                process = context.Process(target=_worker_main, name=f"gpuserve-worker-{self.name}", args=(
                    theirs, self.settings.model_dump_json(), self.settings.folder, self.metrics_dir,
                    self.environment))
                process.start()
                theirs.close()  # the worker holds the only other end: its death reads as the end of the pipe
                started.append(_Worker(process, ours))
            for worker in started:
                ok, description = self._ready(worker)
                if not ok:
                    raise ModelLoadError(description)
                if not self.description:
                    self.description = description
                    for name, value in description.get("attributes", {}).items():
                        setattr(self, name, value)
        except Exception as exc:
            for worker in started:
                _end(worker, 0.0)
            raise ModelLoadError(f"parallel workers for '{self.name}' failed to start: {exc}") from None
        return started

    @staticmethod
    def _ready(worker: _Worker) -> Tuple[bool, Any]:
        if not worker.conn.poll(STARTUP_S):
            return False, f"worker {worker.pid} did not load the model within {STARTUP_S:g} s"
        try:
            return pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):
            worker.process.join(5)
            return False, f"worker {worker.pid} exited with code {worker.process.exitcode} while loading"

    def _pids(self) -> None:
        self.worker_pids = sorted(worker.pid for worker in self._running)

    async def __call__(self, body, headers=None, verb: InferenceVerb = InferenceVerb.PREDICT):
        if getattr(body, "stream_rest", None) is not None:  # a gRPC stream's later requests stay unread here,
            body.stream_rest = None  # as MLServer's workers read a stream's first request only
        answer = await self._dispatch(_worker_call, body, dict(headers or {}), verb.value, MERGED_ROWS.get())
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
            ok, value = await self._call(pickle.dumps((call, args), protocol=pickle.HIGHEST_PROTOCOL))
        finally:
            self.inflight -= 1
            in_flight -= 1
        if not ok:
            raise WorkerError(*value)
        return value

    async def _call(self, message: bytes) -> Tuple[bool, Any]:
        """The worker's (ok, value) for `message`. The answer is read by the loop's reader whether or not the
        request is still waiting for it, so a request that goes away leaves its worker ready for the next."""
        loop = asyncio.get_running_loop()
        while True:
            worker = await self._take(loop)
            try:
                worker.conn.send_bytes(message)
            except OSError:  # it died while idle: the request never reached it and goes to another worker
                self._died(worker)
                continue
            answer = worker.answer = loop.create_future()
            worker.loop = loop
            loop.add_reader(worker.fd, self._answered, worker)
            return await answer

    async def _take(self, loop: asyncio.AbstractEventLoop) -> _Worker:
        with self._lock:
            if self._stopping or not (self._running or self._replacing):
                raise ModelNotReady(self.name, "Its worker processes are not running"
                                    + (f" ({self.reason})." if self.reason else "."))
            if self._idle:
                return self._idle.popleft()
            waiter = loop.create_future()
            self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a worker just as it went away
                self._free(waiter.result())
            raise

    def _answered(self, worker: _Worker) -> None:
        """The loop's reader: the worker's answer (or its end) is there."""
        worker.loop.remove_reader(worker.fd)
        answer, worker.answer = worker.answer, None
        try:
            frame = pickle.loads(worker.conn.recv_bytes())
        except Exception as exc:  # its end (it died), or a message cut short: either way it is replaced
            if not isinstance(exc, (EOFError, OSError)):
                logger.error("model '%s': worker process %s sent an unreadable answer (%s: %s)", self.name,
                             worker.pid, type(exc).__name__, exc)
                worker.process.kill()
            _fail(answer, InferenceError(
                f"model '{self.name}': its worker process was stopped with the model while serving this request"
                if self._stopping else f"model '{self.name}': a worker process stopped unexpectedly while serving "
                "this request; it has been restarted"))
            self._died(worker)
            return
        if not answer.done():
            answer.set_result(frame)
        self._free(worker)

    def _free(self, worker: _Worker) -> None:
        """`worker` to the request waiting longest, else to the idle ones."""
        with self._lock:
            if self._stopping or worker not in self._running:
                worker.quit()
                return
            while self._waiting:
                waiter = self._waiting.popleft()
                if not waiter.done() and _on_loop(waiter, self._hand, waiter, worker):
                    return
            self._idle.append(worker)

    def _hand(self, waiter: asyncio.Future, worker: _Worker) -> None:
        if waiter.done():  # the request went away while the worker was on its way to it
            self._free(worker)
        else:
            waiter.set_result(worker)

    def _died(self, worker: _Worker) -> None:
        with self._lock:
            if worker not in self._running:
                return
            self._running.remove(worker)
            self._pids()
            if self._stopping:
                worker.conn.close()
                return
            self._replacing += 1
            self.restarts += 1
        logger.error("model '%s': worker process %s stopped unexpectedly (exit code %s); starting another",
                     self.name, worker.pid, worker.process.exitcode)
        threading.Thread(target=self._replace, args=(worker,), name=f"gpuserve-restart-{self.name}",
                         daemon=True).start()

    def _replace(self, dead: _Worker) -> None:
        _end(dead, 5.0)
        try:
            worker = self._start(1)[0]
        except ModelLoadError as exc:
            logger.error("%s", exc)
            with self._lock:
                self._replacing -= 1
                if self._running or self._replacing:
                    return
                self.ready = False  # no worker left: the model is not ready, with the reason
                self.reason = str(exc)
                waiting, self._waiting = self._waiting, collections.deque()
            for waiter in waiting:
                _on_loop(waiter, _fail, waiter, ModelNotReady(self.name, f"Its worker processes are not running "
                                                                         f"({exc})."))
            return
        with self._lock:
            self._replacing -= 1
            stopping = self._stopping
            if not stopping:
                self._running.append(worker)
                self._pids()
        if stopping:  # the model was stopped while this one loaded: it never serves
            _end(worker, 5.0)
            return
        self._free(worker)

    # Where the workers' metric files go (MLServer's metrics_dir; None: the system's temporary folder), one
    # folder per model below it
    metrics_root: Optional[str] = None

    # Seconds a stop waits for the workers to finish what they run before killing them (MLServer's
    # parallel_workers_timeout, default 5): a model stuck in predict must not hold an unload or a shutdown
    stop_timeout = 5.0

    def get_input_types(self):
        return self.description.get("inputs", [])

    def get_output_types(self):
        return self.description.get("outputs", [])

    def metadata(self) -> Dict[str, Any]:
        meta = self.description.get("metadata") or super().metadata()
        return {**meta, "name": self.name}

    def stop(self) -> None:
        """Idle workers exit at once; a busy one exits once it has answered, or is killed at the timeout (its
        request then answers 500). Requests still waiting for a worker answer 503."""
        super().stop()
        self.ready = False
        with self._lock:
            self._stopping = True
            workers = list(self._running)
            idle, self._idle = self._idle, collections.deque()
            waiting, self._waiting = self._waiting, collections.deque()
        _LIVE.discard(self)
        for waiter in waiting:
            _on_loop(waiter, _fail, waiter, ModelNotReady(self.name, "It is being unloaded."))
        for worker in idle:
            worker.quit()
        deadline = time.monotonic() + max(0.0, self.stop_timeout)
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                logger.warning("model '%s': worker process %s still running after %.3g s; killed", self.name,
                               worker.pid, self.stop_timeout)
            _end(worker, 5.0, close=worker.answer is None)
        if self.metrics_dir:
            worker_metric_dirs.discard(self.metrics_dir)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None


def _end(worker: _Worker, wait_s: float, close: bool = True) -> None:
    """Kill `worker` unless it has exited; reap it. The pipe of a worker killed while serving is closed by
    the loop's reader, which answers its request first."""
    if worker.process.exitcode is None:
        worker.process.kill()
    worker.process.join(wait_s)
    if close:
        worker.conn.close()


@atexit.register  # registered after multiprocessing's own (imported above), so it runs before that one
def _stop_workers() -> None:  # joins the workers: ours would otherwise wait for work, and the exit for them
    for model in list(_LIVE):
        with model._lock:
            model._stopping = True
            workers = list(model._running)
        for worker in workers:
            worker.quit()
        for worker in workers:
            worker.process.join(1.0)
            _end(worker, 1.0)
