"""`kserve.protocol.infer_type`: the V2 request and response types, under KServe's module path."""

from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

__all__ = ["InferInput", "InferOutput", "InferRequest", "InferResponse", "RequestedOutput"]
