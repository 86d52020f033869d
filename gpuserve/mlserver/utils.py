"""`mlserver.utils`, the import path MLServer runtimes use: `get_model_uri` (in `model_uri`), `generate_uuid`, and
the helpers runtimes and MLServer-facing code also reach for (`to_absolute_path`, `insert_headers` /
`extract_headers` for the headers a request brought and a response sets, `get_wrapped_method`,
`install_uvloop_event_loop`, `schedule_with_callback`), each doing what MLServer 1.7.1's does."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any, Callable, Dict, Optional

from gpuserve.mlserver.model_uri import get_model_uri

logger = logging.getLogger("gpuserve")


def generate_uuid() -> str:
    return str(uuid.uuid4())


def to_absolute_path(model_settings: Any, uri: str) -> str:
    """`uri` relative to the folder of the model's model-settings.json; as given when the settings came from
    no file (relative then to the working directory)."""
    folder = getattr(model_settings, "folder", None)
    if not folder:
        return uri
    return os.path.normpath(os.path.join(folder, uri))


def get_wrapped_method(f: Callable) -> Callable:
    """The function under every decorator that kept `__wrapped__`."""
    while hasattr(f, "__wrapped__"):
        f = f.__wrapped__
    return f


def insert_headers(inference_request: Any, headers: Dict[str, str]) -> Any:
    """The transport's headers into the request's `parameters.headers` (replacing any the body carried)."""
    from gpuserve.mlserver.types import Parameters

    if inference_request.parameters is None:
        inference_request.parameters = Parameters()
    if getattr(inference_request.parameters, "headers", None) is not None:
        logger.warning("There are %d entries present in the `headers` field of the request `parameters` object. "
                       "The `headers` field of the `parameters` object SHOULDN'T BE USED directly. These entries "
                       "will be replaced by the actual headers (REST, Kafka) or metadata (gRPC) of the incoming "
                       "request.", len(inference_request.parameters.headers))
    inference_request.parameters.headers = headers
    return inference_request


def extract_headers(inference_response: Any) -> Optional[Dict[str, str]]:
    """The headers a response set in `parameters.headers`, taken off it (None when it set none)."""
    parameters = inference_response.parameters
    if parameters is None or getattr(parameters, "headers", None) is None:
        return None
    headers = parameters.headers
    parameters.headers = None
    return headers


def install_uvloop_event_loop() -> None:
    """uvloop's event loop policy where uvloop is installed (gpuserve's server runs on uvloop already)."""
    if type(asyncio.get_event_loop_policy()).__module__.startswith("uvloop"):
        return
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def schedule_with_callback(coro, cb) -> asyncio.Task:
    task = asyncio.create_task(coro)
    task.add_done_callback(cb)
    return task


__all__ = ["get_model_uri", "generate_uuid", "to_absolute_path", "get_wrapped_method", "insert_headers",
           "extract_headers", "install_uvloop_event_loop", "schedule_with_callback"]
