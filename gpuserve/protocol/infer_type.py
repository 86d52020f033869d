"""`kserve.protocol.infer_type`: the V2 request and response types and their helpers, under KServe's module path."""

from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput
from gpuserve.types_kserve import (deserialize_bytes_tensor, get_content, serialize_byte_tensor, to_grpc_parameters,
                                   to_http_parameters)

__all__ = ["InferInput", "InferOutput", "InferRequest", "InferResponse", "RequestedOutput", "serialize_byte_tensor",
           "deserialize_bytes_tensor", "get_content", "to_grpc_parameters", "to_http_parameters"]
