"""`mlserver.grpc.dataplane_pb2_grpc`: `GRPCInferenceServiceStub` and the servicer base, over the server's
generated V2 service (which also has Triton's extension methods)."""

from gpuserve.server.grpc.inference_pb2_grpc import (  # noqa: F401
    GRPCInferenceService,
    GRPCInferenceServiceServicer,
    GRPCInferenceServiceStub,
    add_GRPCInferenceServiceServicer_to_server,
)

__all__ = ["GRPCInferenceService", "GRPCInferenceServiceServicer", "GRPCInferenceServiceStub",
           "add_GRPCInferenceServiceServicer_to_server"]
