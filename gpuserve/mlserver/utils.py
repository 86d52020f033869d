"""`mlserver.utils`, the import path MLServer runtimes use (`get_model_uri`); the code is in `model_uri`."""

from gpuserve.mlserver.model_uri import get_model_uri

__all__ = ["get_model_uri"]
