"""What TensorFlow Serving's and TorchServe's gRPC services (tfserving.py, torchserve.py) share: their RPCs are
listed as rows (service, name, request class or None for raw bytes, response class or None, server streaming),
bound for grpc.aio here and for the native transport in native.py, and an RPC gpuserve does not serve answers
UNIMPLEMENTED with what to use instead, through the V2 service's guard (its error table and metrics)."""

from __future__ import annotations

from typing import Dict, Iterable, Tuple

import grpc

from gpuserve.errors import Unimplemented
from gpuserve.server.grpc.service import _guard

Row = Tuple[str, str, type, type, bool]


def not_served(name: str, reason: str):
    """A servicer method refusing every call to RPC `name` with `reason`."""
    async def refuse(self, request: bytes, context):
        raise Unimplemented(reason)

    refuse.__name__ = name
    return _guard(refuse)


def aio_handlers(servicer, rows: Iterable[Row]):
    """One generic handler per service for grpc.aio, each RPC bound to the servicer's method of its name."""
    by_service: Dict[str, dict] = {}
    for service, name, request, response, streaming in rows:
        make = grpc.unary_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        by_service.setdefault(service, {})[name] = make(
            getattr(servicer, name), request_deserializer=request.FromString if request else None,
            response_serializer=response.SerializeToString if response else None)
    return tuple(grpc.method_handlers_generic_handler(service, methods) for service, methods in by_service.items())
