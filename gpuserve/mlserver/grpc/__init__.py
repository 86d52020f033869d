"""`mlserver.grpc` for clients: the V2 messages and stubs (`dataplane_pb2`, `dataplane_pb2_grpc`), MLServer's
model repository service (`model_repository_pb2`, `model_repository_pb2_grpc`) and the converters between
them and `mlserver.types` (`converters`). The V2 messages are the server's own (package `inference`, the
proto Triton and KServe share), so a message built here is what gpuserve's gRPC port reads."""
