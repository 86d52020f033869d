"""The KServe model API: subclass `Model`, override the hooks you need, serve it.

`Model.__call__` runs preprocess -> validate -> predict (or explain) -> postprocess. Each hook may
be sync or async; hooks left at the pass-through defaults are skipped entirely, so a model that only
overrides an async `predict` pays for one await. With `predictor_host` set, the default `predict`
and `explain` forward to that remote predictor: KServe's transformer pattern.
"""

from __future__ import annotations

import enum
from typing import Any, AsyncIterator, Dict, List, Optional, Union

from gpuserve.constants.constants import PredictorProtocol  # noqa: F401 (KServe scripts import it from here)
from gpuserve.errors import GpuserveError, InvalidInput, ModelNotFound, mark_user_error
from gpuserve.hooks import call_hook, overrides
from gpuserve.metrics import set_current_model
from gpuserve.predictor_config import PREDICTOR_PROTOCOLS, PredictorConfig  # noqa: F401 (re-exported)
from gpuserve.types import InferRequest, InferResponse

# What a predict hook may return, under KServe's names for type hints in user code.
InferReturnValueTypes = Union[Dict, InferResponse, List[str]]
InferReturnType = Union[InferReturnValueTypes, Any]


class InferenceVerb(enum.Enum):
    EXPLAIN = 1
    PREDICT = 2


class BaseKServeModel:
    """Name, readiness and lifecycle shared by every model the server can hold."""

    def __init__(self, name: str):
        self.name = name
        self.ready = False
        self.engine = False
        # gpuserve extras: a version label, settings from model-settings.json / config.pbtxt,
        # and why the last load failed (reported by the repository index).
        self.version: Optional[str] = None
        self.settings: Any = None
        self.reason: str = ""

    def load(self) -> bool:
        self.ready = True
        return self.ready

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    async def start_engine(self) -> None:
        pass

    def stop_engine(self) -> None:
        pass

    async def healthy(self) -> bool:
        return self.ready


class InferenceModel(BaseKServeModel):
    """A model that answers inference calls; `__call__` is what the data plane invokes."""

    async def __call__(self, body: Union[Dict, InferRequest], headers: Optional[Dict[str, str]] = None,
                       verb: InferenceVerb = InferenceVerb.PREDICT):
        raise NotImplementedError

    def get_input_types(self) -> List[Dict]:
        return []

    def get_output_types(self) -> List[Dict]:
        return []


class Model(InferenceModel):
    """Subclass and override `load`, `preprocess`, `predict`, `postprocess`, `explain`, `validate`."""

    platform = ""
    # Where sync hooks run: None, on the event loop while their calls are quick, else on the default executor
    # (gpuserve/hook_placement.py); True, always on the loop (KServe's way); False, always on the executor (a
    # hook that waits for the server's loop, e.g. run_coroutine_threadsafe(...).result(), must never run on it).
    sync_hooks_on_loop: Optional[bool] = None

    def __init__(self, name: str, predictor_config: Optional[PredictorConfig] = None,
                 return_response_headers: bool = False):
        super().__init__(name)
        if isinstance(predictor_config, bool):  # KServe 0.16's signature: Model(name, return_response_headers)
            predictor_config, return_response_headers = None, predictor_config
        self.return_response_headers = return_response_headers
        self.explainer_host: Optional[str] = None
        self._remote = None
        self.use_predictor_config(predictor_config)

    def use_predictor_config(self, config: Optional[PredictorConfig]) -> None:
        """Forward the default `predict`/`explain` as `config` says (None: no remote predictor)."""
        self.predictor_config = config
        self.protocol = config.predictor_protocol if config else "v1"
        self.predictor_host = config.predictor_host if config else None
        self.timeout = config.predictor_request_timeout_seconds if config else 600
        self.use_ssl = config.predictor_use_ssl if config else False
        self.retries = config.predictor_request_retries if config else 0

    def _adopt_server_predictor(self) -> None:
        """No predictor of our own: take the one `ModelServer` set for the process, as KServe does."""
        from gpuserve.context import get_predictor_config

        config = get_predictor_config()
        if config is not None and config.predictor_host:
            self.use_predictor_config(config)

    async def __call__(self, body: Union[Dict, InferRequest], headers: Optional[Dict[str, str]] = None,
                       verb: InferenceVerb = InferenceVerb.PREDICT):
        """Run the pipeline; returns `(response, response_headers)` like KServe's data plane expects."""
        try:
            return await self._pipeline(body, headers, verb)
        except Exception as exc:
            if not type(self).__module__.startswith("gpuserve."):
                if isinstance(exc, ModelNotFound) and exc.reason == str(ModelNotFound(exc.model_name)):
                    exc.reason = f"Model with name {exc.model_name} does not exist."  # KServe's words
                elif not isinstance(exc, GpuserveError):
                    mark_user_error(exc)
            raise

    async def _pipeline(self, body, headers, verb):
        headers = headers if headers is not None else {}
        response_headers: Dict[str, str] = {}
        set_current_model(self.name, self.version)  # labels for gpuserve.metrics.log()
        payload = body
        own_validate = overrides(self, "validate", Model)
        if not own_validate and type(body) is dict and "instances" in body:
            Model.validate(self, body)  # KServe's default check of what the client sent; a type test
        if overrides(self, "preprocess", Model):
            payload = await call_hook(self.preprocess, payload, headers)
        if own_validate:
            checked = await call_hook(self.validate, payload)
            if checked is not None:
                payload = checked
        if verb is InferenceVerb.EXPLAIN:
            response = await call_hook(self.explain, payload, headers)
        else:
            response = await call_hook(self.predict, payload, headers, response_headers)
        if overrides(self, "postprocess", Model):
            response = await call_hook(self.postprocess, response, headers, response_headers)
        return response, response_headers

    def preprocess(self, payload: Union[Dict, InferRequest], headers: Optional[Dict[str, str]] = None):
        return payload

    def postprocess(self, result: Union[Dict, InferResponse], headers: Optional[Dict[str, str]] = None,
                    response_headers: Optional[Dict[str, str]] = None):
        return result

    def validate(self, payload: Any) -> Any:
        """KServe's default check: V1 `instances` must be a list, and so must a dict's V2 `inputs` when
        this model (or the server, through the context) forwards to a V2 predictor."""
        if isinstance(payload, dict) and "instances" in payload and not isinstance(payload["instances"], list):
            raise InvalidInput('Expected "instances" to be a list')
        if isinstance(payload, dict) and "inputs" in payload and not isinstance(payload["inputs"], list) \
                and self._forwards_v2():
            raise InvalidInput('Expected "inputs" to be a list')
        return payload

    def _forwards_v2(self) -> bool:
        config = self.predictor_config
        if config is None:
            from gpuserve.context import get_predictor_config

            config = get_predictor_config()
        return config is not None and str(config.predictor_protocol).lower() == "v2"

    async def predict(self, payload: Union[Dict, InferRequest], headers: Optional[Dict[str, str]] = None,
                      response_headers: Optional[Dict[str, str]] = None
                      ) -> Union[Dict, InferResponse, AsyncIterator[Any]]:
        if not self.predictor_host:
            self._adopt_server_predictor()
        if not self.predictor_host:
            raise NotImplementedError(f"model '{self.name}' has no predict() and no predictor_host to forward to")
        return await self._remote_client().predict(self, payload, headers)

    async def explain(self, payload: Dict, headers: Optional[Dict[str, str]] = None) -> Dict:
        if not self.predictor_host:
            self._adopt_server_predictor()
        host = self.explainer_host or self.predictor_host
        if not host:
            raise NotImplementedError(f"model '{self.name}' has no explain() and no predictor_host to forward to")
        return await self._remote_client().explain(self, payload, headers, host)

    async def healthy(self) -> bool:
        """Ready, and, with `predictor_health_check`, the remote predictor says it is ready too."""
        if not self.ready:
            return False
        config = self.predictor_config
        if self.predictor_host and config is not None and config.predictor_health_check:
            return await self._remote_client().is_ready(self)
        return True

    def _remote_client(self):
        if self._remote is None:
            from gpuserve.remote import RemotePredictor

            self._remote = RemotePredictor()
        return self._remote

    # Content types (MLServer's codecs) with this model's metadata as the defaults -----------------
    def _default_content_type(self, tensor_name: Optional[str] = None) -> Optional[str]:
        settings = self.settings
        if settings is None:
            return None
        for meta in list(getattr(settings, "inputs", []) or []) + list(getattr(settings, "outputs", []) or []):
            if tensor_name is not None and meta.name == tensor_name:
                content_type = (meta.parameters or {}).get("content_type")
                if content_type:
                    return content_type
        parameters = getattr(settings, "parameters", None)
        return getattr(parameters, "content_type", None) if tensor_name is None else None

    def decode(self, tensor, default_codec: Optional[str] = None) -> Any:
        """One input decoded by its own content type, else this model's metadata default, else NumPy."""
        from gpuserve.codecs import decode_input

        return decode_input(tensor, default_codec or self._default_content_type(tensor.name))

    def decode_request(self, request: InferRequest, default_codec: Optional[str] = None) -> Any:
        from gpuserve.codecs import decode_request

        return decode_request(request, default_codec or self._default_content_type())

    def encode(self, payload: Any, name: str, default_codec: Optional[str] = None):
        from gpuserve.codecs import encode_output

        return encode_output(name, payload, default_codec or self._default_content_type(name))

    def encode_response(self, payload: Any, default_codec: Optional[str] = None) -> InferResponse:
        from gpuserve.codecs import encode_response

        return encode_response(self.name, payload, default_codec or self._default_content_type(),
                               model_version=self.version)

    def metadata(self) -> Dict[str, Any]:
        """V2 model metadata (name, versions, platform, inputs, outputs)."""
        out: Dict[str, Any] = {
            "name": self.name,
            "versions": [str(self.version)] if self.version is not None else [],
            "platform": self.platform,
            "inputs": self.get_input_types(),
            "outputs": self.get_output_types(),
        }
        return out

    def stop(self) -> None:
        if self._remote is not None:
            self._remote.close_soon()
            self._remote = None
