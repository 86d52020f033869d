"""MLServer's gRPC model repository service (`inference.model_repository.ModelRepositoryService`), served on
the gRPC port beside the V2 service, as MLServer serves it.

Its three RPCs are the V2 service's repository extension under another path: MLServer's messages have the
same field numbers as Triton's (without the load parameters), so the servicer's own methods and messages
answer both, and a model loaded through either is the same model.
"""

from __future__ import annotations

import grpc

from gpuserve.server.grpc import inference_pb2 as pb

SERVICE = "inference.model_repository.ModelRepositoryService"
METHODS = ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")


def repository_rpcs():
    """(name, request class, response class) of each RPC."""
    for name in METHODS:
        yield name, getattr(pb, f"{name}Request"), getattr(pb, f"{name}Response")


def repository_handler(servicer) -> grpc.GenericRpcHandler:
    """The service for grpc.aio, bound to the V2 servicer's repository methods."""
    handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name), request_deserializer=request.FromString,
                                                          response_serializer=response.SerializeToString)
                for name, request, response in repository_rpcs()}
    return grpc.method_handlers_generic_handler(SERVICE, handlers)
