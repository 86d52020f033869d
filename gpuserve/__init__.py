"""gpuserve: a GPU-first inference server with KServe's Model API.

`from gpuserve import Model, ModelServer, InferRequest, InferInput, InferResponse, InferOutput`
is the one line a KServe user changes. Importing this package loads no server, gRPC or framework
code: `ModelServer` is resolved lazily.
"""

from gpuserve.errors import (
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotReady,
)
from gpuserve.model import BaseKServeModel, InferenceModel, InferenceVerb, Model, PredictorConfig
from gpuserve.model_repository import ModelRepository
from gpuserve.settings import ModelSettings, ServerSettings
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput
from gpuserve.version import __version__

__all__ = [
    "BaseKServeModel", "InferenceModel", "InferenceVerb", "Model", "ModelServer", "ModelRepository",
    "PredictorConfig", "InferInput", "InferOutput", "InferRequest", "InferResponse", "RequestedOutput",
    "InferenceError", "InvalidInput", "ModelNotFound", "ModelNotReady", "ServerNotReady",
    "ModelSettings", "ServerSettings", "__version__",
]


def __getattr__(name: str):
    if name == "ModelServer":
        from gpuserve.server.model_server import ModelServer

        return ModelServer
    raise AttributeError(f"module 'gpuserve' has no attribute {name!r}")
