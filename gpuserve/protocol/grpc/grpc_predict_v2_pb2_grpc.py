"""`kserve.protocol.grpc.grpc_predict_v2_pb2_grpc`: the V2 service's stub and servicer base. KServe's
service is `inference.GRPCInferenceService`, the same as gpuserve's (Triton's superset), so a stub made
here calls gpuserve, KServe or Triton alike."""

from gpuserve.server.grpc.inference_pb2_grpc import (  # noqa: F401
    GRPCInferenceService,
    GRPCInferenceServiceServicer,
    GRPCInferenceServiceStub,
    add_GRPCInferenceServiceServicer_to_server,
)

__all__ = ["GRPCInferenceService", "GRPCInferenceServiceServicer", "GRPCInferenceServiceStub",
           "add_GRPCInferenceServiceServicer_to_server"]
