"""`mlserver.grpc.dataplane_pb2_grpc`: `GRPCInferenceServiceStub` and the servicer base, over the server's
generated V2 service (which also has Triton's extension methods); the same names KServe's path exports.

One difference from the server's stub, as MLServer's own: `ModelStreamInfer` answers `ModelInferResponse`
messages (MLServer's stream; Triton's wraps each in a `ModelStreamInferResponse`), which is what gpuserve
sends to an MLServer runtime that streams (server/grpc/mlserver_stream.py)."""

from gpuserve.protocol.grpc.grpc_predict_v2_pb2_grpc import (  # noqa: F401
    GRPCInferenceService, GRPCInferenceServiceServicer, __all__, add_GRPCInferenceServiceServicer_to_server)
from gpuserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub as _Stub
from gpuserve.mlserver.grpc import dataplane_pb2 as _pb


class GRPCInferenceServiceStub(_Stub):
    def __init__(self, channel):
        super().__init__(channel)
        self.ModelStreamInfer = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=_pb.ModelInferRequest.SerializeToString,
            response_deserializer=_pb.ModelInferResponse.FromString)
