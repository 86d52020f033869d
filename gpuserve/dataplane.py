"""What the protocols do, independent of the transport: REST and gRPC are thin layers over this.

Every method takes decoded values and returns values or raises an error from `gpuserve.errors`;
the transports only decode, call one method, and encode.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from gpuserve.errors import InvalidInput, ModelNotFound
from gpuserve.model import InferenceVerb
from gpuserve.model_repository import ModelRepository
from gpuserve.types import InferRequest, InferResponse
from gpuserve.version import __version__

EXTENSIONS = ["model_repository", "schedule_policy", "binary_tensor_data", "statistics"]


class DataPlane:
    def __init__(self, repository: ModelRepository, server_name: str = "gpuserve",
                 server_version: str = __version__, strict_readiness: bool = False):
        self.repository = repository
        self.server_name = server_name
        self.server_version = server_version
        self.strict_readiness = strict_readiness
        self.started = False  # set once the start-up loads have finished

    # health and metadata ------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once start-up loading is done; with strict readiness, also every model ready."""
        if not self.started:
            return False
        if self.strict_readiness:
            return all(m.ready for _, _, m in self.repository.all_versions())
        return True

    def metadata(self) -> Dict[str, Any]:
        return {"name": self.server_name, "version": self.server_version, "extensions": EXTENSIONS}

    def model_ready(self, name: str, version: Optional[str] = None) -> bool:
        model = self.repository.get_model(name, version)
        if model is None:
            raise ModelNotFound(name, version)
        return bool(model.ready)

    async def model_healthy(self, name: str, version: Optional[str] = None) -> bool:
        """Readiness as the model itself judges it (`healthy()`), e.g. including a remote predictor."""
        model = self.repository.get_model(name, version)
        if model is None:
            raise ModelNotFound(name, version)
        if not model.ready:
            return False
        healthy = getattr(model, "healthy", None)
        return bool(await healthy()) if healthy is not None else True

    def model_metadata(self, name: str, version: Optional[str] = None) -> Dict[str, Any]:
        model = self.repository.get_model(name, version)
        if model is None:
            raise ModelNotFound(name, version)
        if hasattr(model, "metadata"):
            meta = dict(model.metadata())
        else:
            meta = {"name": model.name, "versions": [], "platform": "", "inputs": model.get_input_types(),
                    "outputs": model.get_output_types()}
        versions = [v for v in self.repository.versions(name) if v is not None]
        if versions:
            meta["versions"] = versions
        return meta

    def list_models(self) -> list:
        return sorted(self.repository.get_models())

    # inference ---------------------------------------------------------------------------------
    async def infer(self, request: InferRequest, headers: Optional[Dict[str, str]] = None
                    ) -> Tuple[Any, Dict[str, str]]:
        model = self.repository.resolve(request.model_name, request.model_version)
        request.headers = headers
        response, response_headers = await model(request, headers)
        if isinstance(response, InferResponse):
            if response.id is None or request.id is not None:
                response.id = request.id
            if not response.model_name:
                response.model_name = model.name
            if response.model_version is None and getattr(model, "version", None) is not None:
                response.model_version = str(model.version)
            if request.request_outputs:
                response.outputs = select_outputs(response, request)
        return response, response_headers

    async def predict_v1(self, name: str, body: Any, headers: Optional[Dict[str, str]] = None,
                         verb: InferenceVerb = InferenceVerb.PREDICT) -> Tuple[Any, Dict[str, str]]:
        model = self.repository.resolve(name)
        response, response_headers = await model(body, headers, verb)
        if isinstance(response, InferResponse):
            response = {"predictions": response.outputs[0].as_numpy() if len(response.outputs) == 1
                        else {o.name: o.as_numpy() for o in response.outputs}}
        return response, response_headers


def select_outputs(response: InferResponse, request: InferRequest) -> list:
    """Keep the outputs the client asked for, in its order, carrying its per-output parameters."""
    by_name = {o.name: o for o in response.outputs}
    chosen = []
    for wanted in request.request_outputs:
        output = by_name.get(wanted.name)
        if output is None:
            raise InvalidInput(f"unexpected inference output '{wanted.name}' for model '{request.model_name}'")
        chosen.append(output)
    return chosen
