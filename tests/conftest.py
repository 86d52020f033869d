"""Shared fixtures: a real gpuserve on loopback, ephemeral ports, driven by real clients."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from gpuserve.settings import ServerSettings


@contextlib.contextmanager
def running_server(models=(), repository=None, **settings):
    """Start a ModelServer in a thread on ports chosen by the OS; yield it with `.ports` filled."""
    from gpuserve.server.model_server import ModelServer

    options = dict(host="127.0.0.1", http_port=0, grpc_port=0, metrics_port=0)
    options.update(settings)
    server = ModelServer(settings=ServerSettings.load(None, **options), registered_models=repository)
    failure = []

    def run():
        try:
            asyncio.run(server.serve(list(models)))
        except BaseException as exc:  # surfaced to the test below
            failure.append(exc)
            server.started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not server.started.wait(60):
        raise RuntimeError("server did not start within 60 s")
    if failure:
        raise failure[0]
    try:
        yield server
    finally:
        server.stop()
        thread.join(60)
        assert not thread.is_alive(), "server did not stop within 60 s"


@pytest.fixture
def serve():
    """`with serve(models) as server:` inside a test."""
    return running_server
