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
    NoModelReady,
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
    "ModelSettings", "ServerSettings", "__version__", "InferenceRESTClient", "RESTConfig", "InferenceGRPCClient",
    "NoModelReady",
]


_CLIENTS = ("InferenceRESTClient", "RESTConfig", "InferenceGRPCClient")
_MODULES = ("constants", "context", "logging", "predictor_config", "model_server", "inference_client")


def __getattr__(name: str):
    """Resolved on first use, so `import gpuserve` stays light (no server, httpx or gRPC)."""
    import importlib

    if name == "ModelServer":
        from gpuserve.server.model_server import ModelServer

        return ModelServer
    if name in _CLIENTS:
        return getattr(importlib.import_module("gpuserve.inference_client"), name)
    if name in _MODULES:
        return importlib.import_module(f"gpuserve.{name}")
    raise AttributeError(f"module 'gpuserve' has no attribute {name!r}")
