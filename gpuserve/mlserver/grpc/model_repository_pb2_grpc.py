"""`mlserver.grpc.model_repository_pb2_grpc`: client stub and servicer base of MLServer's
`inference.model_repository.ModelRepositoryService` (RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload)."""

from __future__ import annotations

import grpc

from gpuserve.mlserver.grpc import model_repository_pb2 as pb


class ModelRepositoryServiceStub:
    def __init__(self, channel: grpc.Channel):
        for method, request, response in pb.METHODS:
            setattr(self, method, channel.unary_unary(
                f"/{pb.SERVICE}/{method}", request_serializer=getattr(pb, request).SerializeToString,
                response_deserializer=getattr(pb, response).FromString))


class ModelRepositoryServiceServicer:
    def _unimplemented(self, context):
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details("Method not implemented!")
        raise NotImplementedError("Method not implemented!")

    def RepositoryIndex(self, request, context):
        self._unimplemented(context)

    def RepositoryModelLoad(self, request, context):
        self._unimplemented(context)

    def RepositoryModelUnload(self, request, context):
        self._unimplemented(context)


def add_ModelRepositoryServiceServicer_to_server(servicer, server) -> None:
    handlers = {method: grpc.unary_unary_rpc_method_handler(
        getattr(servicer, method), request_deserializer=getattr(pb, request).FromString,
        response_serializer=getattr(pb, response).SerializeToString) for method, request, response in pb.METHODS}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(pb.SERVICE, handlers),))


__all__ = ["ModelRepositoryServiceStub", "ModelRepositoryServiceServicer", "add_ModelRepositoryServiceServicer_to_server"]
