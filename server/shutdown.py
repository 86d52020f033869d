"""A graceful stop as tritonserver does it on SIGTERM/SIGINT, in its order and with its log lines (its qa
greps them, operators read them), under one exit timeout (--exit-timeout-secs, setting
graceful_shutdown_seconds) that the stages spend in turn, never restarting it:

1. HTTP: new connections are refused; the open ones are still served (a load balancer's pooled connection
   or a client between two requests is not cut off; an answer given now says `connection: close`) until
   they close, once a second "Timeout N: Found K HTTP service connections". That is a tritonserver launch
   line's way; otherwise (KServe's, uvicorn's) connections waiting for a request close at once and those
   with one under way after its answer.
2. gRPC: new connections are refused and open ones get GOAWAY (a client's next call reconnects and is
   refused); the calls under way finish, once a second "... Found K gRPC service connections and inference
   handlers". Both endpoints refuse new connections from the start (tritonserver takes new gRPC calls while
   it waits for HTTP connections; a client is better sent elsewhere at once).
3. Models: "Waiting for in-flight requests to complete.", then until no model version has in-flight
   inferences (requests queued or running, sequences started and not ended or idled out) "Found K model
   versions that have in-flight inferences", each named; then loads still under way finish and every model
   unloads ("Found K live models ...").

The time left after one stage is what the next may wait. When it is spent: "Exit timeout expired. Exiting
immediately." and what is still running is cut off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Iterable, List, Optional, Tuple

logger = logging.getLogger("gpuserve")

POLL_S = 0.05  # how often a stage looks whether it is done (it logs once a second, as Triton)
EXPIRED = "failed to stop server: Internal - Exit timeout expired. Exiting immediately."


async def countdown(left: int, count: Callable[[], int], say: Callable[[int, int], None]) -> int:
    """While `count()` is above 0 and seconds are left, `say(seconds_left, count)` once a second; returns
    the seconds left. A second begun is spent, as Triton sleeps whole seconds."""
    loop = asyncio.get_running_loop()
    while left > 0:
        found = count()
        if not found:
            break
        say(left, found)
        left -= 1
        deadline = loop.time() + 1.0
        while loop.time() < deadline and count():
            await asyncio.sleep(POLL_S)
    return left


async def stop_endpoints(http, grpc_server, seconds: float, close_idle: bool = False) -> int:
    """Stages 1 and 2; `http`: the HTTP server (http11.HttpServer or the uvicorn wrapper) or None,
    `grpc_server`: either transport's server or None; `close_idle`: HTTP connections waiting for a request
    close at once (uvicorn's and KServe's way) instead of being served on (Triton's). Returns the seconds
    left."""
    left = max(int(seconds), 0)
    # both refuse new connections at once (a client is sent elsewhere sooner than after Triton's HTTP wait)
    if http is not None:
        http.stop_accepting(close_idle)
    stopping = None
    if grpc_server is not None:
        if hasattr(grpc_server, "stop_accepting"):  # the native transport
            grpc_server.stop_accepting()
        else:  # grpc.aio: stop() refuses new calls at once and waits for the open ones until the timeout ends
            stopping = asyncio.ensure_future(grpc_server.stop(left))
    if http is not None:
        left = await countdown(left, http.open_connections,
                               lambda n, k: logger.info("Timeout %d: Found %d HTTP service connections", n, k))
    if grpc_server is not None:
        calls = grpc_calls(grpc_server)
        left = await countdown(left, lambda: 0 if stopping is not None and stopping.done() else calls(),
                               lambda n, k: logger.info("Timeout %d: Found %d gRPC service connections and "
                                                        "inference handlers", n, k))
        if stopping is None:
            await grpc_server.stop(0)
        else:
            await stopping
    return left


def grpc_calls(server) -> Callable[[], int]:
    calls = getattr(server, "calls", None)
    if isinstance(calls, set):  # the native transport's running calls
        return lambda: len(calls)
    counter = getattr(server, "gpuserve_calls", None)  # grpc.aio: counted by service.CallCounter
    return (lambda: counter.active) if counter is not None else (lambda: 0)


def inflight(model, now: Optional[float] = None) -> int:
    """A model version's in-flight inferences as Triton counts them at shutdown: requests its batchers hold
    or run, and its sequences started and neither ended nor idled out."""
    count = 0
    for scheduler in getattr(model, "schedulers", None) or [getattr(model, "scheduler", None)]:
        # the engine's count of requests submitted and not yet answered (engine/batcher.py)
        count += int(getattr(scheduler, "_outstanding", 0) or 0) if scheduler is not None else 0
    router = getattr(model, "sequences", None)
    router = getattr(router, "router", router)
    active = getattr(router, "active", None)
    if isinstance(active, dict):
        now = time.monotonic() if now is None else now
        idle_s = getattr(router, "idle_s", 0.0)
        count += sum(1 for s in list(active.values()) if s.pending or now - s.last_used <= idle_s)
    return count


async def stop_models(registry, left: int, stop: Callable) -> bool:
    """Stage 3: wait for in-flight inferences, then for loads under way, then unload every model with
    `stop(model)`. False when the time ran out first."""
    logger.info("Waiting for in-flight requests to complete.")

    def busy() -> List[Tuple[str, str, int]]:
        now = time.monotonic()
        found = []
        for name, version, model in registry.all_versions():
            if getattr(model, "ready", False):
                count = inflight(model, now)
                if count:
                    found.append((getattr(model, "name", name), version, count))
        return found

    def say(n: int, _k: int) -> None:
        found = busy()
        logger.info("Timeout %d: Found %d model versions that have in-flight inferences", n, len(found))
        for name, version, count in found:
            logger.info("Model '%s' (version %s) has %d in-flight inferences", name, version or 1, count)

    if not busy():
        say(left, 0)
    left = await countdown(left, lambda: len(busy()), say)
    if busy():
        logger.error(EXPIRED)
        return False
    logger.info("All models are stopped, unloading models")
    unloading = asyncio.ensure_future(_unload_all(registry, stop))
    live = lambda: len(_loaded_names(registry)) + len(_loads(registry))  # noqa: E731
    while True:
        logger.info("Timeout %d: Found %d live models and 0 in-flight non-inference requests", left,
                    0 if unloading.done() else live())
        if unloading.done():
            unloading.result()
            return True
        if left <= 0:
            unloading.cancel()
            logger.error(EXPIRED)
            return False
        left -= 1
        await asyncio.wait([unloading], timeout=1.0)


def _loads(registry) -> set:
    return {task for task in getattr(registry, "loads", ()) if not task.done()}


def _loaded_names(registry) -> List[str]:
    return sorted({name for name, _, model in registry.all_versions() if getattr(model, "ready", False)})


async def _unload_all(registry, stop: Callable) -> None:
    """Loads under way finish first (as Triton: a model loading at shutdown is unloaded once loaded)."""
    while _loads(registry):
        await asyncio.wait(_loads(registry))
    names = {}
    for name, _, model in registry.all_versions():
        names.setdefault(name, []).append(model)
    await asyncio.gather(*(_unload(name, models, stop) for name, models in sorted(names.items())))


async def _unload(name: str, models: Iterable, stop: Callable) -> None:
    models = list(models)
    if any(getattr(m, "ready", False) for m in models):
        logger.debug("AsyncUnload() '%s'", name)
    for model in models:
        await stop(model)
