"""`kserve.protocol.grpc.grpc_predict_v2_pb2`: KServe's and Triton's V2 messages are the same proto (package
`inference`), so KServe's names are gpuserve's generated messages."""

from gpuserve.server.grpc.inference_pb2 import *  # noqa: F401,F403
