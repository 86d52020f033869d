"""MLServer's codec interfaces and registry, over `gpuserve.mlserver.types`.

Codecs here take and give MLServer's pydantic tensors (RequestInput, ResponseOutput) and requests.
The built-in ones are thin: they convert at the edge and let gpuserve's own codecs do the work, so
both APIs decode a tensor the same way. A content type registered only with gpuserve's registry
(`gpuserve.codecs.register_input_codec`) is found here too, wrapped on first use.

Lookups: by content type, by payload (`can_encode`, in registration order) or by type hint
(`TypeHint`, what `@decode_args` asks). As in gpuserve (and unlike MLServer) a second, different
codec for a taken content type raises instead of silently replacing the first.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any, ClassVar, Dict, Optional, Type, Union

from gpuserve import codecs as native_codecs
from gpuserve.codecs.base import _same_codec
from gpuserve.mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestInput,
    ResponseOutput,
    from_native_input,
    from_native_output,
    from_native_request,
    from_native_response,
    to_native_input,
    to_native_output,
    to_native_request,
    to_native_response,
)
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse


class LazyType:
    """A `TypeHint` naming a class of a module imported only when the hint is read (pandas)."""

    def __init__(self, module: str, name: str):
        self.module = module
        self.name = name

    def __get__(self, obj: Any, owner: Any = None) -> type:
        return getattr(importlib.import_module(self.module), self.name)

    def matches(self, hint: Any) -> bool:
        module = getattr(hint, "__module__", "") or ""
        if module.split(".")[0] != self.module.split(".")[0] or getattr(hint, "__qualname__", None) != self.name:
            return False
        return hint is self.__get__(None)  # the module is loaded already: the hint came from it


class InputCodec:
    """Maps one tensor (a request input or a response output) to a Python object and back."""

    ContentType: ClassVar[str] = ""
    TypeHint: ClassVar[Any] = type(None)

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return False

    @classmethod
    def encode_output(cls, name: str, payload: Any, **kwargs) -> ResponseOutput:
        raise NotImplementedError

    @classmethod
    def decode_output(cls, response_output: ResponseOutput) -> Any:
        raise NotImplementedError

    @classmethod
    def encode_input(cls, name: str, payload: Any, **kwargs) -> RequestInput:
        raise NotImplementedError

    @classmethod
    def decode_input(cls, request_input: RequestInput) -> Any:
        raise NotImplementedError

    # MLServer's older names
    @classmethod
    def encode(cls, name: str, payload: Any) -> ResponseOutput:
        return cls.encode_output(name, payload)

    @classmethod
    def decode(cls, request_input: RequestInput) -> Any:
        return cls.decode_input(request_input)


class RequestCodec:
    """Maps a whole request (or response) to one Python object and back."""

    ContentType: ClassVar[str] = ""
    TypeHint: ClassVar[Any] = type(None)

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return False

    @classmethod
    def encode_response(cls, model_name: str, payload: Any, model_version: Optional[str] = None,
                        **kwargs) -> InferenceResponse:
        raise NotImplementedError

    @classmethod
    def decode_response(cls, response: InferenceResponse) -> Any:
        raise NotImplementedError

    @classmethod
    def encode_request(cls, payload: Any, **kwargs) -> InferenceRequest:
        raise NotImplementedError

    @classmethod
    def decode_request(cls, request: InferenceRequest) -> Any:
        raise NotImplementedError

    @classmethod
    def encode(cls, model_name: str, payload: Any, model_version: Optional[str] = None) -> InferenceResponse:
        return cls.encode_response(model_name, payload, model_version)

    @classmethod
    def decode(cls, request: InferenceRequest) -> Any:
        return cls.decode_request(request)


InputCodecLike = Union[Type[InputCodec], InputCodec]
RequestCodecLike = Union[Type[RequestCodec], RequestCodec]


# -- built-ins backed by gpuserve's codecs ----------------------------------------------------------

def _native_tensor(tensor: Any, kind: type) -> Any:
    if isinstance(tensor, (InferInput, InferOutput)):
        return tensor
    if isinstance(tensor, RequestInput):
        return to_native_input(tensor)
    if isinstance(tensor, ResponseOutput):
        return to_native_output(tensor)
    if isinstance(tensor, dict):
        model = RequestInput if kind is InferInput else ResponseOutput
        return _native_tensor(model.model_validate(tensor), kind)
    raise TypeError(f"expected a RequestInput or ResponseOutput, got {type(tensor).__name__}")


def _native_kwargs(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    parameters = kwargs.get("parameters")
    if isinstance(parameters, Parameters):
        kwargs = dict(kwargs, parameters=parameters.model_dump())
    return kwargs


class NativeInputCodec(InputCodec):
    """An input codec whose work is done by gpuserve's codec `Native` (MLServer types at the edge)."""

    Native: ClassVar[Any] = None

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return cls.Native.can_encode(payload)

    @classmethod
    def encode_output(cls, name: str, payload: Any, **kwargs) -> ResponseOutput:
        return from_native_output(cls.Native.encode_output(name, payload, **_native_kwargs(kwargs)))

    @classmethod
    def decode_output(cls, response_output: ResponseOutput) -> Any:
        return cls.Native.decode_output(_native_tensor(response_output, InferOutput))

    @classmethod
    def encode_input(cls, name: str, payload: Any, **kwargs) -> RequestInput:
        return from_native_input(cls.Native.encode_input(name, payload, **_native_kwargs(kwargs)))

    @classmethod
    def decode_input(cls, request_input: RequestInput) -> Any:
        return cls.Native.decode_input(_native_tensor(request_input, InferInput))


def _native_request(request: Any) -> InferRequest:
    if isinstance(request, InferRequest):
        return request
    if isinstance(request, dict):
        request = InferenceRequest.model_validate(request)
    return to_native_request(request)


def _native_response(response: Any) -> InferResponse:
    if isinstance(response, InferResponse):
        return response
    if isinstance(response, dict):
        response = InferenceResponse.model_validate(response)
    return to_native_response(response)


class NativeRequestCodec(RequestCodec):
    """A request codec whose work is done by gpuserve's request codec `Native`."""

    Native: ClassVar[Any] = None

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return cls.Native.can_encode(payload)

    @classmethod
    def encode_response(cls, model_name: str, payload: Any, model_version: Optional[str] = None,
                        **kwargs) -> InferenceResponse:
        return from_native_response(cls.Native.encode_response(model_name, payload, model_version=model_version,
                                                               **_native_kwargs(kwargs)))

    @classmethod
    def decode_response(cls, response: InferenceResponse) -> Any:
        return cls.Native.decode_response(_native_response(response))

    @classmethod
    def encode_request(cls, payload: Any, **kwargs) -> InferenceRequest:
        return from_native_request(cls.Native.encode_request(payload, **_native_kwargs(kwargs)))

    @classmethod
    def decode_request(cls, request: InferenceRequest) -> Any:
        return cls.Native.decode_request(_native_request(request))


# -- registry -------------------------------------------------------------------------------------

_INPUT_CODECS: Dict[str, Any] = {}
_REQUEST_CODECS: Dict[str, Any] = {}
_WRAPPED: Dict[int, Any] = {}
_CHANGES = [0]
_MERGED: Dict[str, Any] = {}  # kind -> ((changes here, changes in gpuserve's registry), codecs by content type)


def _register(registry: Dict[str, Any], base: type, codec: Any, kind: str, content_type: Optional[str]) -> None:
    is_codec = (isinstance(codec, type) and issubclass(codec, base)) or isinstance(codec, base)
    if not is_codec:
        raise TypeError(f"{codec!r} is not an MLServer {base.__name__} (gpuserve.mlserver.codecs.{base.__name__})")
    content_type = content_type or codec.ContentType
    if not isinstance(content_type, str) or not content_type:
        raise ValueError(f"{kind} codec {codec!r} has no ContentType")
    existing = registry.get(content_type)
    if existing is not None and not _same_codec(existing, codec):
        raise ValueError(f"content type '{content_type}' already has {kind} codec {existing!r}; "
                         f"refusing to replace it with {codec!r}")
    registry[content_type] = codec
    _CHANGES[0] += 1


def register_input_codec(codec: Any, content_type: Optional[str] = None):
    """Register an input codec under its ContentType; returns it, so it works as a decorator."""
    _register(_INPUT_CODECS, InputCodec, codec, "input", content_type)
    return codec


def register_request_codec(codec: Any, content_type: Optional[str] = None):
    """Register a request codec under its ContentType; returns it, so it works as a decorator."""
    _register(_REQUEST_CODECS, RequestCodec, codec, "request", content_type)
    return codec


def unregister_input_codec(content_type: str) -> None:
    _INPUT_CODECS.pop(content_type, None)
    _CHANGES[0] += 1


def unregister_request_codec(content_type: str) -> None:
    _REQUEST_CODECS.pop(content_type, None)
    _CHANGES[0] += 1


def _wrap(native: Any, base: type) -> Any:
    """A native codec registered only with gpuserve, seen through MLServer's types."""
    wrapped = _WRAPPED.get(id(native))
    if wrapped is None or wrapped.Native is not native:
        name = getattr(native, "__name__", type(native).__name__)
        wrapped = type(name, (base,), {"Native": native, "ContentType": native.ContentType,
                                       "__module__": __name__})
        _WRAPPED[id(native)] = wrapped
    return wrapped


def _merged(kind: str, own: Dict[str, Any], natives, base: type) -> Dict[str, Any]:
    """MLServer-registered codecs, then gpuserve's own wrapped; made again only after a registry changed
    (every request through an MLServer runtime looks a codec up). Callers read it, never change it."""
    key = (_CHANGES[0], native_codecs.base.changes())
    kept = _MERGED.get(kind)
    if kept is not None and kept[0] == key:
        return kept[1]
    out = dict(own)
    for content_type, native in natives().items():
        out.setdefault(content_type, _wrap(native, base))
    _MERGED[kind] = (key, out)
    return out


def _all_input_codecs() -> Dict[str, Any]:
    return _merged("input", _INPUT_CODECS, native_codecs.input_codecs, NativeInputCodec)


def _all_request_codecs() -> Dict[str, Any]:
    return _merged("request", _REQUEST_CODECS, native_codecs.request_codecs, NativeRequestCodec)


def _by_payload(codecs: Dict[str, Any], payload: Any) -> Any:
    for codec in codecs.values():
        if codec.can_encode(payload):
            return codec
    return None


def _hint_key(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is None:
        return hint
    return origin, tuple(_hint_key(arg) for arg in typing.get_args(hint))


def _matches_hint(codec: Any, hint: Any) -> bool:
    declared = inspect.getattr_static(codec, "TypeHint", None)
    if isinstance(declared, LazyType):  # no import just to compare: the hint's module must be loaded
        return declared.matches(hint)
    declared = codec.TypeHint
    if declared is type(None) or declared is None:
        return False
    return declared == hint or _hint_key(declared) == _hint_key(hint)


def _by_type_hint(codecs: Dict[str, Any], hint: Any) -> Any:
    for codec in codecs.values():
        if _matches_hint(codec, hint):
            return codec
    return None


def _find(codecs, content_type: Optional[str], payload: Any, type_hint: Any):
    if content_type:
        return codecs.get(content_type)
    if payload is not None:
        return _by_payload(codecs, payload)
    if type_hint is not None:
        return _by_type_hint(codecs, type_hint)
    return None


def find_input_codec(content_type: Optional[str] = None, payload: Any = None,
                     type_hint: Any = None) -> Optional[InputCodecLike]:
    """By content type, else by payload, else by type hint; None when nothing matches."""
    return _find(_all_input_codecs(), content_type, payload, type_hint)


def find_input_codec_by_payload(payload: Any) -> Optional[InputCodecLike]:
    return _by_payload(_all_input_codecs(), payload)


def find_input_codec_by_type_hint(type_hint: Any) -> Optional[InputCodecLike]:
    return _by_type_hint(_all_input_codecs(), type_hint)


def find_request_codec(content_type: Optional[str] = None, payload: Any = None,
                       type_hint: Any = None) -> Optional[RequestCodecLike]:
    return _find(_all_request_codecs(), content_type, payload, type_hint)


def find_request_codec_by_payload(payload: Any) -> Optional[RequestCodecLike]:
    return _by_payload(_all_request_codecs(), payload)


def find_request_codec_by_type_hint(type_hint: Any) -> Optional[RequestCodecLike]:
    return _by_type_hint(_all_request_codecs(), type_hint)


def input_codecs() -> Dict[str, InputCodecLike]:
    """Every input codec by content type (MLServer-registered first, then gpuserve's own)."""
    return dict(_all_input_codecs())


def request_codecs() -> Dict[str, RequestCodecLike]:
    return dict(_all_request_codecs())


__all__ = [
    "InputCodec", "RequestCodec", "NativeInputCodec", "NativeRequestCodec", "InputCodecLike", "RequestCodecLike",
    "LazyType", "register_input_codec", "register_request_codec", "unregister_input_codec",
    "unregister_request_codec", "find_input_codec", "find_input_codec_by_payload", "find_input_codec_by_type_hint",
    "find_request_codec", "find_request_codec_by_payload", "find_request_codec_by_type_hint", "input_codecs",
    "request_codecs",
]
