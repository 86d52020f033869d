"""Several serving processes on the same ports (`workers` > 1), for CPU-bound request handling.

One event loop saturates one core with per-request Python work long before a batched model does;
on a machine with more cores, N processes each run the whole server (its own event loop, engine and
model instances) on sockets bound with SO_REUSEPORT, and the kernel spreads connections over them.
Workers are spawned, never forked (model runtimes' threads and CUDA do not survive a fork), and each
builds its models from the repository folder itself. The parent only checks the ports, starts the
workers, forwards SIGTERM/SIGINT and waits; it exits 0 when they all stopped cleanly.

Each worker keeps its own engine and counts its own statistics; the worker a client reaches gathers the
others' statistics and metrics and tells them of loads, unloads and trace and log settings changed through
it, CUDA shared-memory registrations included (server/peers.py, over Unix sockets in a folder the parent
makes). The metrics port is served by worker 0. System shared-memory registrations are shared through
record files in a folder inside it (gpuserve/shm_mirror.py).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from typing import List

from gpuserve import shm_mirror
from gpuserve.settings import ServerSettings
from gpuserve.server import peers
from gpuserve.server.model_server import PortInUse, bind

logger = logging.getLogger("gpuserve")


def _check_free(host: str, port: int) -> None:
    if port:
        bind(host, port).close()  # raises PortInUse with a clear message


def _worker(folder: str, settings_json: str, index: int) -> None:
    from gpuserve.logging_setup import configure_logging
    from gpuserve.model_repository import ModelRepository
    from gpuserve.repository import DiskRepository
    from gpuserve.server.model_server import ModelServer

    settings = ServerSettings.model_validate_json(settings_json)
    updates = {"workers": 1, "reuse_port": True}
    if index:
        updates["enable_metrics_server"] = False
    settings = settings.model_copy(update=updates)
    configure_logging(settings)
    os.environ[peers.INDEX_ENV] = str(index)
    registry = DiskRepository.for_server(folder, settings).populate(ModelRepository(), settings.startup_selection())
    ModelServer(settings=settings, registered_models=registry).start()


def serve_workers(folder: str, settings: ServerSettings) -> int:
    for port in (settings.http_port, settings.grpc_port if settings.enable_grpc else 0,
                 settings.metrics_port if settings.enable_metrics_server else 0):
        _check_free(settings.host, port)
    if 0 in (settings.http_port,) or (settings.enable_grpc and settings.grpc_port == 0):
        raise PortInUse("workers > 1 need fixed ports (port 0 would give each worker its own)")
    context = multiprocessing.get_context("spawn")
    # Split the cores between the workers' model runtimes instead of oversubscribing them.
    os.environ["GPUSERVE_CPU_SHARE"] = str(settings.workers)
    # Where the workers answer each other (statistics, metrics, loads, settings: server/peers.py), and the
    # system shared-memory registrations they share (gpuserve/shm_mirror.py)
    shared = tempfile.mkdtemp(prefix="gpuserve-workers-")
    os.environ[peers.ENV] = f"{shared}:{settings.workers}"
    os.environ[shm_mirror.ENV] = os.path.join(shared, "shm")
    os.mkdir(os.environ[shm_mirror.ENV], 0o700)
    children: List[multiprocessing.Process] = []
    for index in range(settings.workers):
        child = context.Process(target=_worker, args=(folder, settings.model_dump_json(), index),
                                name=f"gpuserve-worker-{index}")
        child.start()
        children.append(child)
    logger.info("gpuserve: %d workers on %s:%d (pids %s)", len(children), settings.host, settings.http_port,
                ", ".join(str(c.pid) for c in children))

    def forward(signum, _frame):
        for child in children:
            if child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    shutil.rmtree(shared, ignore_errors=True)
    codes = [c.exitcode for c in children]
    return 0 if all(code == 0 for code in codes) else 1

