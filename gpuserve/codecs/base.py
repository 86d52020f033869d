"""Codec interfaces and the content-type registry.

A content type names how a V2 tensor (input codecs) or a whole request/response (request codecs)
maps to a Python object. Runtimes find the codec by the `content_type` a client or the model
metadata names, or by the type of the object a model returns. Unlike MLServer, registering a second,
different codec under a taken content type raises: a silent replacement would change how every
model decodes its inputs, depending on import order.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar, Union

from gpuserve.errors import InvalidInput
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse

CONTENT_TYPE = "content_type"


class InputCodec:
    """Maps one tensor to a Python object and back.

    Subclasses set `ContentType` and override the four conversions. Encoders mark the tensor
    with `parameters["content_type"]`, so the other side can decode it without being told.
    """

    ContentType: str = ""

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return False

    @classmethod
    def encode_output(cls, name: str, payload: Any, **kwargs) -> InferOutput:
        raise NotImplementedError

    @classmethod
    def decode_output(cls, response_output: InferOutput) -> Any:
        raise NotImplementedError

    @classmethod
    def encode_input(cls, name: str, payload: Any, **kwargs) -> InferInput:
        raise NotImplementedError

    @classmethod
    def decode_input(cls, request_input: InferInput) -> Any:
        raise NotImplementedError


class RequestCodec:
    """Maps a whole request or response (all its tensors) to one Python object and back."""

    ContentType: str = ""

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return False

    @classmethod
    def encode_response(cls, model_name: str, payload: Any, model_version: Optional[str] = None,
                        **kwargs) -> InferResponse:
        raise NotImplementedError

    @classmethod
    def decode_response(cls, response: InferResponse) -> Any:
        raise NotImplementedError

    @classmethod
    def encode_request(cls, payload: Any, **kwargs) -> InferRequest:
        raise NotImplementedError

    @classmethod
    def decode_request(cls, request: InferRequest) -> Any:
        raise NotImplementedError


def with_content_type(parameters: Optional[dict], content_type: str) -> dict:
    """A copy of `parameters` naming `content_type`; the caller's dict is never changed."""
    out = dict(parameters) if parameters else {}
    out[CONTENT_TYPE] = content_type
    return out


class SingleInputRequestCodec(RequestCodec):
    """A request codec for models that take one tensor: the request is its only input.

    A request with several inputs is refused rather than read by its first input (MLServer's
    choice), so a client sending extra inputs learns they would be ignored.
    """

    InputCodec: type[InputCodec] = InputCodec
    DefaultInputName = "input-0"
    DefaultOutputName = "output-0"

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return cls.InputCodec.can_encode(payload)

    @classmethod
    def encode_request(cls, payload: Any, **kwargs) -> InferRequest:
        model_name = kwargs.pop("model_name", "")
        request_id = kwargs.pop("request_id", None)
        parameters = with_content_type(kwargs.pop("parameters", None), cls.ContentType)
        name = kwargs.pop("name", cls.DefaultInputName)
        tensor = cls.InputCodec.encode_input(name, payload, **kwargs)
        return InferRequest(model_name, [tensor], request_id=request_id, parameters=parameters)

    @classmethod
    def decode_request(cls, request: InferRequest) -> Any:
        return cls.InputCodec.decode_input(_only(request.inputs, "request", "input", cls.ContentType))

    @classmethod
    def encode_response(cls, model_name: str, payload: Any, model_version: Optional[str] = None,
                        **kwargs) -> InferResponse:
        response_id = kwargs.pop("response_id", None)
        parameters = with_content_type(kwargs.pop("parameters", None), cls.ContentType)
        name = kwargs.pop("name", cls.DefaultOutputName)
        tensor = cls.InputCodec.encode_output(name, payload, **kwargs)
        return InferResponse(response_id, model_name, [tensor], model_version=model_version,
                             parameters=parameters)

    @classmethod
    def decode_response(cls, response: InferResponse) -> Any:
        return cls.InputCodec.decode_output(_only(response.outputs, "response", "output", cls.ContentType))


def _only(tensors: list, where: str, kind: str, content_type: str):
    if len(tensors) != 1:
        names = ", ".join(repr(t.name) for t in tensors)
        raise InvalidInput(
            f"content type '{content_type}' decodes a {where} with exactly one {kind}, "
            f"got {len(tensors)} ({names})")
    return tensors[0]


# Registries keep insertion order: lookup by payload asks codecs in the order they were registered.
_INPUT_CODECS: dict[str, Any] = {}
_REQUEST_CODECS: dict[str, Any] = {}
_CHANGES = [0]

InputCodecLike = Union[type[InputCodec], InputCodec]
RequestCodecLike = Union[type[RequestCodec], RequestCodec]
C = TypeVar("C")


def _same_codec(a: Any, b: Any) -> bool:
    # A module reloaded (tests, notebooks) defines a new class object for the same codec.
    if a is b:
        return True
    ta = a if isinstance(a, type) else type(a)
    tb = b if isinstance(b, type) else type(b)
    return (ta.__module__, ta.__qualname__) == (tb.__module__, tb.__qualname__)


def _register(registry: dict, base: type, codec: Any, kind: str) -> None:
    is_codec = (isinstance(codec, type) and issubclass(codec, base)) or isinstance(codec, base)
    if not is_codec:
        raise TypeError(f"{codec!r} is not a {base.__name__} (class or instance)")
    content_type = codec.ContentType
    if not isinstance(content_type, str) or not content_type:
        raise ValueError(f"{kind} codec {codec!r} has no ContentType")
    existing = registry.get(content_type)
    if existing is not None and not _same_codec(existing, codec):
        raise ValueError(
            f"content type '{content_type}' already has {kind} codec {_name(existing)}; "
            f"refusing to replace it with {_name(codec)}")
    registry[content_type] = codec
    _CHANGES[0] += 1


def changes() -> int:
    """How many times the registries changed: views built from them (gpuserve/mlserver/codecs) are kept
    until this moves."""
    return _CHANGES[0]


def _name(codec: Any) -> str:
    cls = codec if isinstance(codec, type) else type(codec)
    return f"{cls.__module__}.{cls.__qualname__}"


def register_input_codec(codec: C) -> C:
    """Register an input codec under its ContentType; returns it, so it works as a decorator."""
    _register(_INPUT_CODECS, InputCodec, codec, "input")
    return codec


def register_request_codec(codec: C) -> C:
    """Register a request codec under its ContentType; returns it, so it works as a decorator."""
    _register(_REQUEST_CODECS, RequestCodec, codec, "request")
    return codec


def unregister_input_codec(content_type: str) -> None:
    """Forget the input codec of `content_type` (for plugins that unload, and tests)."""
    _INPUT_CODECS.pop(content_type, None)
    _CHANGES[0] += 1


def unregister_request_codec(content_type: str) -> None:
    """Forget the request codec of `content_type` (for plugins that unload, and tests)."""
    _REQUEST_CODECS.pop(content_type, None)
    _CHANGES[0] += 1


def input_codecs() -> dict[str, InputCodecLike]:
    """Registered input codecs by content type, in registration order (a copy)."""
    return dict(_INPUT_CODECS)


def request_codecs() -> dict[str, RequestCodecLike]:
    """Registered request codecs by content type, in registration order (a copy)."""
    return dict(_REQUEST_CODECS)


def _by_payload(registry: dict, payload: Any):
    for codec in registry.values():
        if codec.can_encode(payload):
            return codec
    return None


def find_input_codec_by_payload(payload: Any) -> Optional[InputCodecLike]:
    """The first registered input codec that can encode `payload`, or None."""
    return _by_payload(_INPUT_CODECS, payload)


def find_request_codec_by_payload(payload: Any) -> Optional[RequestCodecLike]:
    """The first registered request codec that can encode `payload`, or None."""
    return _by_payload(_REQUEST_CODECS, payload)


def _find(registry: dict, content_type: Optional[str], payload: Any, by_payload: Callable):
    if content_type is not None:
        return registry.get(content_type) if isinstance(content_type, str) else None
    if payload is not None:
        return by_payload(payload)
    return None


def find_input_codec(content_type: Optional[str] = None, payload: Any = None) -> Optional[InputCodecLike]:
    """By content type when one is given, else by payload; None when nothing matches.

    Lookups answer None so callers choose their error; the helpers in `dispatch` raise InvalidInput.
    """
    return _find(_INPUT_CODECS, content_type, payload, find_input_codec_by_payload)


def find_request_codec(content_type: Optional[str] = None, payload: Any = None) -> Optional[RequestCodecLike]:
    """By content type when one is given, else by payload; None when nothing matches."""
    return _find(_REQUEST_CODECS, content_type, payload, find_request_codec_by_payload)
