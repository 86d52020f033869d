"""`mlserver.grpc.dataplane_pb2_grpc`: `GRPCInferenceServiceStub` and the servicer base, over the server's
generated V2 service (which also has Triton's extension methods); the same names KServe's path exports."""

from gpuserve.protocol.grpc.grpc_predict_v2_pb2_grpc import (  # noqa: F401
    GRPCInferenceService, GRPCInferenceServiceServicer, GRPCInferenceServiceStub, __all__,
    add_GRPCInferenceServiceServicer_to_server)
