"""`mlserver.grpc.dataplane_pb2`: the V2 messages; MLServer's dataplane proto is Triton's `inference` package,
whose generated messages gpuserve serves (a private descriptor pool, so tritonclient can load its own)."""

from gpuserve.server.grpc.inference_pb2 import *  # noqa: F401,F403
from gpuserve.server.grpc.inference_pb2 import DESCRIPTOR  # noqa: F401
