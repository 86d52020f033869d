"""`kserve.protocol.grpc`: the V2 gRPC messages under KServe's module path."""
