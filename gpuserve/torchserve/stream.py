"""A TorchServe handler's intermediate answers: what it sends with `send_intermediate_predict_response(ret,
req_id_map, message, code, context)` (TorchServe's LLM handlers stream tokens so) reaches its request's client
as the streamed answer's next part, before the handler's final return.

TorchServe's function builds a wire frame (`create_predict_response`) and writes it to `context.cl_socket`, the
worker's socket. Here the handler's context gets a `Sink` for a socket, and TorchServe's frame builder is
wrapped so that, for a Sink, it hands over the items themselves; each item goes to the channel its request
opened (`open_channel`), from the handler's thread to the request's event loop. A request no channel listens to
(a unary gRPC call, a model in worker processes) gets only the final answer; the parts are dropped, said once in
the log.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
from typing import Any, Dict, Tuple

logger = logging.getLogger("gpuserve")
_FRAME = object()  # marks what the wrapped frame builder hands a Sink
_CHANNELS: Dict[str, Tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
_LOCK = threading.Lock()
_WARNED = set()


def open_channel(request_id: str) -> asyncio.Queue:
    """A queue the request's intermediate answers arrive in (on the running loop), until `close_channel`."""
    queue: asyncio.Queue = asyncio.Queue()
    with _LOCK:
        _CHANNELS[request_id] = (asyncio.get_running_loop(), queue)
    return queue


def close_channel(request_id: str) -> None:
    with _LOCK:
        _CHANNELS.pop(request_id, None)


class Sink:
    """`context.cl_socket` while a handler runs here: intermediate answers go to their requests' channels."""

    def __init__(self, model_name: str):
        self.model_name = model_name

    def sendall(self, frame: Any) -> None:
        if not (isinstance(frame, tuple) and len(frame) == 3 and frame[0] is _FRAME):
            return  # bytes: a frame for a TorchServe frontend, which is not here
        _, items, request_ids = frame
        for index, item in enumerate(items or ()):
            request_id = (request_ids or {}).get(index)
            with _LOCK:
                channel = _CHANNELS.get(request_id)
            if channel is None:
                if self.model_name not in _WARNED:
                    _WARNED.add(self.model_name)
                    logger.warning("model %s: its handler sent an intermediate answer to a request that takes one "
                                   "answer (a unary gRPC call, or worker processes); it gets the final one only",
                                   self.model_name)
                continue
            loop, queue = channel
            loop.call_soon_threadsafe(queue.put_nowait, item)


def sends_parts(handler: Any) -> bool:
    """Whether a handler (its module, or an object of its class) can send intermediate answers: its module or a
    base class's imports `send_intermediate_predict_response`, as TorchServe's streaming handlers do. Only such
    models' requests listen for parts (a listening request costs a task and a queue); another model's parts
    would be dropped with the warning above."""
    modules = [handler] if inspect.ismodule(handler) else \
        [sys.modules.get(cls.__module__) for cls in type(handler).__mro__]
    return any(getattr(module, "send_intermediate_predict_response", None) is not None for module in modules)


def install() -> None:
    """Wrap TorchServe's frame builder (in both modules handlers import `send_intermediate_predict_response`
    from) so that a Sink gets the items; once, and only where torchserve is installed."""
    for module_name in ("ts.handler_utils.utils", "ts.protocol.otf_message_handler"):
        try:
            module = __import__(module_name, fromlist=["create_predict_response"])
        except ImportError:
            continue
        original = getattr(module, "create_predict_response", None)
        if original is None or getattr(original, "gpuserve_wrapped", False):
            continue
        module.create_predict_response = _wrapped(original)


def _wrapped(original):
    def create_predict_response(ret, req_id_map, message, code, context=None, ts_stream_next=False):
        if isinstance(getattr(context, "cl_socket", None), Sink):
            return _FRAME, ret, req_id_map
        return original(ret, req_id_map, message, code, context, ts_stream_next)

    create_predict_response.gpuserve_wrapped = True
    return create_predict_response

