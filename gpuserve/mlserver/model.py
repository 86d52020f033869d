"""MLServer's `MLModel`, and the adapter that lets gpuserve serve one like any other model.

A runtime written for MLServer subclasses `MLModel` (here `gpuserve.mlserver.MLModel`) and keeps
its `load`, `predict(payload: InferenceRequest) -> InferenceResponse`, `unload`, and the codec
helpers `decode`, `decode_request`, `encode`, `encode_response`. Nothing else changes.

The server holds an `MLModelAdapter` (a gpuserve `Model`) around the runtime. For each request it
turns the native `InferRequest` into MLServer's `InferenceRequest` (incoming HTTP headers or gRPC
metadata in `payload.parameters.headers`), awaits `predict` (a sync one runs in a worker thread so
the event loop stays free), and turns the answer back; headers the runtime puts in the response's
`parameters.headers` become the response's HTTP headers. MLServer speaks only the V2 protocol, so a
V1 body is refused with a 400 naming the V2 route.

`MLModel.__gpuserve_adapter__(settings)` is the hook the model repository calls to build the
adapter for a runtime named by `implementation` in `model-settings.json`; adaptive batching and
parallel workers then apply to it as to any custom model.

Differences from MLServer, on purpose: a `load()` that returns None (as several of MLServer's own
examples do) counts as ready, like True; only False, or an exception, leaves the model not ready.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, AsyncIterator, Dict, List, Optional, Union

from gpuserve.errors import InferenceError, InvalidInput, ModelNotReady, Unimplemented
from gpuserve.hooks import guarded, in_executor
from gpuserve.metrics import set_current_model
from gpuserve.mlserver.codecs.base import InputCodecLike, RequestCodecLike
from gpuserve.mlserver.codecs.errors import CodecNotFound
from gpuserve.mlserver.codecs.content_types import (
    decode_inference_request,
    decode_request_input,
    encode_inference_response,
    encode_response_output,
    get_decoded,
    has_decoded,
)
from gpuserve.mlserver import cloudevents
from gpuserve.mlserver.context import model_context
from gpuserve.mlserver.settings import ModelSettings, as_mlserver_settings
from gpuserve.mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataTensor,
    Parameters,
    RequestInput,
    RequestOutput,
    ResponseOutput,
    from_native_request,
    to_native_response,
)
from gpuserve.model import InferenceVerb, Model
from gpuserve.types import InferRequest, InferResponse

logger = logging.getLogger("gpuserve")


def _index(tensors: Optional[List[MetadataTensor]]) -> Dict[str, MetadataTensor]:
    return {tensor.name: tensor for tensor in tensors or []}


async def _call(func: Any, *args: Any) -> Any:
    """Await an async method; run a sync one in a worker thread (with the request's context). What either
    raises outside Exception is the request's 500 (gpuserve/hooks.py)."""
    if inspect.iscoroutinefunction(func):
        return await guarded(func(*args))
    result = await in_executor(func, *args)
    if inspect.isawaitable(result):
        result = await guarded(result)
    return result


class MLModel:
    """Abstract inference runtime: override `load`, `predict` and, if needed, `unload`."""

    def __init__(self, settings: ModelSettings):
        self._settings = as_mlserver_settings(settings)
        self._inputs_index = _index(self._settings.inputs)
        self._outputs_index = _index(self._settings.outputs)
        self.ready = False

    # lifecycle ----------------------------------------------------------------------------------
    async def load(self) -> bool:
        """Load the model's artefacts; True (or None) means ready."""
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        raise NotImplementedError("predict() method not implemented")

    async def predict_stream(self, payloads: AsyncIterator[InferenceRequest]) -> AsyncIterator[InferenceResponse]:
        """MLServer's streaming entry point (REST `infer_stream`/`generate_stream`, gRPC `ModelStreamInfer`);
        a runtime that keeps this one answers a stream with its one `predict`."""
        yield await self.predict(await payloads.__anext__())

    async def unload(self) -> bool:
        return True

    # what the settings say ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def version(self) -> Optional[str]:
        return self._settings.version

    @property
    def settings(self) -> ModelSettings:
        return self._settings

    @property
    def inputs(self) -> Optional[List[MetadataTensor]]:
        return self._settings.inputs

    @inputs.setter
    def inputs(self, value: List[MetadataTensor]) -> None:
        self._settings.inputs = value
        self._inputs_index = _index(value)

    @property
    def outputs(self) -> Optional[List[MetadataTensor]]:
        return self._settings.outputs

    @outputs.setter
    def outputs(self, value: List[MetadataTensor]) -> None:
        self._settings.outputs = value
        self._outputs_index = _index(value)

    async def metadata(self) -> MetadataModelResponse:
        metadata = MetadataModelResponse(name=self.name, platform=self._settings.platform,
                                         versions=self._settings.versions, inputs=self._settings.inputs,
                                         outputs=self._settings.outputs)
        if self._settings.parameters:  # as MLServer: {} without a content type
            metadata.parameters = Parameters(content_type=self._settings.parameters.content_type)
        return metadata

    # codec helpers ------------------------------------------------------------------------------
    def decode(self, request_input: RequestInput, default_codec: Optional[InputCodecLike] = None) -> Any:
        """By the input's content type, else the model metadata's, else `default_codec`; else raw data."""
        decode_request_input(request_input, self._inputs_index)
        if has_decoded(request_input):
            return get_decoded(request_input)
        if default_codec is not None:
            return default_codec.decode_input(request_input)
        return request_input.data

    def decode_request(self, inference_request: InferenceRequest,
                       default_codec: Optional[RequestCodecLike] = None) -> Any:
        """By the request's content type, else the model's; else `default_codec`; else the request."""
        decode_inference_request(inference_request, self._settings, self._inputs_index)
        if has_decoded(inference_request):
            return get_decoded(inference_request)
        if default_codec is not None:
            return default_codec.decode_request(inference_request)
        return inference_request

    def encode_response(self, payload: Any, default_codec: Optional[RequestCodecLike] = None) -> InferenceResponse:
        response = encode_inference_response(payload, self._settings)
        if response is not None:
            return response
        if default_codec is not None:
            return default_codec.encode_response(self.name, payload, self.version)
        raise CodecNotFound(payload_type=str(type(payload)), is_input=False, is_request=True)

    def encode(self, payload: Any, request_output: RequestOutput,
               default_codec: Optional[InputCodecLike] = None) -> ResponseOutput:
        output = encode_response_output(payload, request_output, self._outputs_index)
        if output is not None:
            return output
        if default_codec is not None:
            return default_codec.encode_output(request_output.name, payload)
        raise CodecNotFound(name=request_output.name, is_input=False, is_request=False)

    # gpuserve ---------------------------------------------------------------------------------
    @classmethod
    def __gpuserve_adapter__(cls, settings: Any) -> "MLModelAdapter":
        """What the model repository serves for this runtime class (see gpuserve.repository.instantiate)."""
        return MLModelAdapter(cls(as_mlserver_settings(settings)), settings)


class MLModelAdapter(Model):
    """A gpuserve `Model` around one MLModel runtime: V2 requests in, MLServer types at the edge."""

    generates_ids = True  # as MLServer: a request without an `id` gets a fresh UUID, echoed in the answer

    @property
    def batches_by_parameters(self) -> bool:
        """The runtime's say (gpuserve/adaptive.py merge_requests): its parameters apply to a whole call."""
        return bool(getattr(self.runtime, "batches_by_parameters", False))

    @property
    def streams(self) -> bool:
        """Whether the runtime has a `predict_stream` of its own: then streaming calls reach it (else they
        run `predict` once, as any model's)."""
        return self._streams
    answers_every_output = True  # as MLServer: a request's `outputs` list does not filter what predict returns
    settings_metadata = True  # metadata lists the settings' `versions`, as MLServer's, not the repository's

    def __init__(self, runtime: MLModel, settings: Any = None):
        super().__init__(runtime.name)
        self.runtime = runtime
        self._streams = _own_predict_stream(type(runtime))
        # The gpuserve settings the repository built (adaptive batching, parallel workers, config
        # endpoints read them); the runtime has its own MLServer view of the same file.
        self.settings = settings if settings is not None else runtime.settings
        self.version = runtime.version
        self.platform = runtime.settings.platform or ""
        self._metadata: Optional[Dict[str, Any]] = None
        self._unloaded = False
        self.registry = None  # set by the ModelRepository serving it: its data plane names the server

    # lifecycle ----------------------------------------------------------------------------------
    async def load(self) -> bool:
        runtime = self.runtime
        with model_context(runtime.settings):
            result = await _call(runtime.load)
        ready = result is not False
        runtime.ready = ready
        self.ready = ready
        self._unloaded = False
        if not ready:
            self.reason = f"{type(runtime).__name__}.load() returned False"
            return False
        self._metadata = await self._fetch_metadata()
        return True

    async def _fetch_metadata(self) -> Optional[Dict[str, Any]]:
        try:
            metadata = await _call(self.runtime.metadata)
            if isinstance(metadata, dict):
                metadata = MetadataModelResponse.model_validate(metadata)
            return _metadata_dict(metadata)
        except Exception:  # metadata is informative; a failing override must not fail the load
            logger.exception("model '%s': metadata() failed; answering from its settings", self.name)
            return None

    async def aclose(self) -> None:
        """Unload from the event loop (the repository awaits this before `stop`)."""
        if self._unloaded:
            return
        self._unloaded = True
        try:
            await _call(self.runtime.unload)
        except Exception:
            logger.exception("model '%s' failed to unload", self.name)
        self.runtime.ready = False
        self.ready = False

    def stop(self) -> None:
        super().stop()
        self.ready = False
        if self._unloaded:
            return
        self._unloaded = True
        try:
            result = self.runtime.unload()
            if inspect.isawaitable(result):
                asyncio.run(_awaited(result))
        except Exception:
            logger.exception("model '%s' failed to unload", self.name)
        self.runtime.ready = False

    # inference ----------------------------------------------------------------------------------
    async def __call__(self, body: Union[Dict, InferRequest], headers: Optional[Dict[str, str]] = None,
                       verb: InferenceVerb = InferenceVerb.PREDICT):
        if verb is InferenceVerb.EXPLAIN:
            raise Unimplemented(f"model '{self.name}' is an MLServer runtime; it has no explain")
        if not isinstance(body, InferRequest):
            raise InvalidInput(f"model '{self.name}' is an MLServer runtime and speaks the V2 protocol only; "
                               f"send an inference request to /v2/models/{self.name}/infer")
        set_current_model(self.name, self.version)  # labels for custom metrics (gpuserve.metrics.log)
        if headers is None:
            headers = body.headers or {}
        # as MLServer's data plane: the runtime sees the request's CloudEvents headers beside the client's
        plane = getattr(getattr(self, "registry", None), "plane", None)
        server = getattr(plane, "server_name", None) or "gpuserve"
        seen = {**headers, **cloudevents.headers(cloudevents.REQUEST_TYPE, self.name, body.id, server)}
        payload = from_native_request(body, seen)
        if self.streams and _streaming():
            return self._streamed(body, payload, seen, server), {}
        with model_context(self.runtime.settings):
            response = await _call(self.runtime.predict, payload)
        native, answer_headers = self._answer(response)
        return native, {**cloudevents.headers(cloudevents.RESPONSE_TYPE, self.name, body.id, server), **answer_headers}

    async def _streamed(self, body: InferRequest, first: InferenceRequest, seen: Dict[str, str], server: str):
        """A streaming call's responses, as MLServer's data plane streams them: `predict_stream` reads the
        first request then, on a gRPC stream, the stream's later ones (each given the first one's id);
        every response gets that id and its CloudEvents headers in `parameters.headers` (the transports
        move them: gRPC to trailing metadata, REST's events keep them, as MLServer's). What the runtime
        raises ends the stream as its last item (a data plane error, which the transport words)."""
        later = getattr(body, "stream_rest", None)

        async def payloads():
            yield first
            if later is not None:
                async for request in later:  # the stream's headers, as the first request's
                    payload = from_native_request(request, seen)
                    payload.id = first.id
                    yield payload

        answers = self.runtime.predict_stream(payloads())
        if not hasattr(answers, "__anext__"):
            yield InferenceError(f"{type(self.runtime).__name__}.predict_stream() must be an async generator "
                                 f"(an `async def` that yields); it returned {type(answers).__name__}")
            return
        events = cloudevents.headers(cloudevents.RESPONSE_TYPE, self.name, body.id, server)
        try:
            while True:
                if self._unloaded:  # a stream outlives no unload: it ends at its next response
                    yield ModelNotReady(self.name, "it was unloaded while this stream ran")
                    return
                with model_context(self.runtime.settings):
                    try:
                        response = await guarded(answers.__anext__())
                    except StopAsyncIteration:
                        return
                    except Exception as exc:
                        yield exc
                        return
                if isinstance(response, dict):
                    try:
                        response = InferenceResponse.model_validate(response)
                    except ValueError as exc:
                        yield InferenceError(f"{type(self.runtime).__name__}.predict_stream() yielded a dict that "
                                             f"is not an InferenceResponse: {exc}")
                        return
                if not isinstance(response, InferenceResponse):
                    yield InferenceError(f"{type(self.runtime).__name__}.predict_stream() yielded "
                                         f"{type(response).__name__}; an MLServer runtime yields InferenceResponses")
                    return
                native = to_native_response(response)
                native.id = body.id
                if not native.model_name:
                    native.model_name = self.name
                native.parameters["headers"] = {**events, **(native.parameters.get("headers") or {})}
                yield native
        finally:
            close = getattr(answers, "aclose", None)
            if close is not None:
                try:
                    await guarded(close())
                except Exception:  # the stream has ended either way; its own cleanup failing is the runtime's
                    logger.exception("model '%s': closing predict_stream failed", self.name)

    def _answer(self, response: Any):
        if isinstance(response, InferResponse):
            return response, {}
        if isinstance(response, dict):
            response = InferenceResponse.model_validate(response)
        if not isinstance(response, InferenceResponse):
            raise InferenceError(f"{type(self.runtime).__name__}.predict() returned {type(response).__name__}; "
                                 f"an MLServer runtime must return an InferenceResponse")
        native = to_native_response(response)
        headers = native.parameters.pop("headers", None) or {}
        if not native.model_name:
            native.model_name = self.name
        return native, {str(k): str(v) for k, v in headers.items()}

    # metadata -----------------------------------------------------------------------------------
    def metadata(self) -> Dict[str, Any]:
        if self._metadata is not None:
            return dict(self._metadata)
        settings = self.runtime.settings
        metadata = MetadataModelResponse(name=self.name, platform=settings.platform, versions=settings.versions,
                                         inputs=settings.inputs, outputs=settings.outputs)
        if settings.parameters:
            metadata.parameters = Parameters(content_type=settings.parameters.content_type)
        return _metadata_dict(metadata)

    def get_input_types(self) -> List[Dict]:
        return list(self.metadata().get("inputs") or [])

    def get_output_types(self) -> List[Dict]:
        return list(self.metadata().get("outputs") or [])


def _own_predict_stream(runtime: type) -> bool:
    """MLServer's base class's `predict_stream` and ours (one `predict`) do not count."""
    for klass in runtime.__mro__:
        if "predict_stream" in vars(klass):
            return not (klass.__name__ == "MLModel" and klass.__module__.split(".")[0] in ("mlserver", "gpuserve"))
    return False


def _streaming() -> bool:
    from gpuserve.dataplane import STREAMING  # the data plane imports the repository, which imports this

    return STREAMING.get()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _metadata_dict(metadata: MetadataModelResponse) -> Dict[str, Any]:
    out = metadata.model_dump()
    out.setdefault("platform", "")
    out["versions"] = [str(v) for v in out.get("versions") or []]
    out["inputs"] = out.get("inputs") or []
    out["outputs"] = out.get("outputs") or []
    return out


__all__ = ["MLModel", "MLModelAdapter"]
