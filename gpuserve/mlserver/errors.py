"""`mlserver.errors`: exceptions runtimes raise, with the HTTP status they name.

Each is a gpuserve error, so the transports' one error table answers with the status MLServer
would (an `InferenceError` is a 400) and the matching gRPC code.
"""

from __future__ import annotations

from typing import Optional

from gpuserve.errors import GpuserveError

_GRPC = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 413: "RESOURCE_EXHAUSTED",
         422: "FAILED_PRECONDITION", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class MLServerError(GpuserveError):
    def __init__(self, msg: str = "", status_code: int = 400):
        super().__init__(msg)
        self.status_code = status_code
        self.http = status_code
        self.grpc = _GRPC.get(status_code, "INTERNAL" if status_code >= 500 else "UNKNOWN")


class InvalidModelURI(MLServerError):
    def __init__(self, name: str, model_uri: Optional[str] = None):
        detail = f" ({model_uri})" if model_uri else ""
        super().__init__(f"Invalid URI specified for model {name}{detail}", 422)


class ModelNotFound(MLServerError):
    def __init__(self, name: str, version: Optional[str] = None):
        which = f"Model {name} with version {version}" if version is not None else f"Model {name}"
        super().__init__(f"{which} not found", 404)


class ModelNotReady(MLServerError):
    def __init__(self, name: str, version: Optional[str] = None):
        which = f"Model {name} with version {version}" if version is not None else f"Model {name}"
        super().__init__(f"{which} is not ready yet.", 503)


class InferenceError(MLServerError):
    def __init__(self, msg: str):
        super().__init__(msg, 400)


class ModelParametersMissing(MLServerError):
    def __init__(self, model_name: str):
        super().__init__(f"Parameters missing for model {model_name}", 400)


__all__ = ["MLServerError", "InvalidModelURI", "ModelNotFound", "ModelNotReady", "InferenceError",
           "ModelParametersMissing"]
