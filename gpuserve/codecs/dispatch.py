"""Choosing the codec for a tensor, request or response: the calls the server and runtimes make.

A content type named on the wire wins over the model's metadata default, as in MLServer; with
neither, tensors stay NumPy arrays. Every failure (an unknown content type, a payload no codec
takes, data a codec cannot read) is an InvalidInput, so the client gets a 400 naming the tensor
instead of a 500 from deep inside a model.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from gpuserve.codecs.base import (
    CONTENT_TYPE,
    find_input_codec,
    find_input_codec_by_payload,
    find_request_codec,
    find_request_codec_by_payload,
    input_codecs,
    request_codecs,
)
from gpuserve.errors import InvalidInput
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse


def content_type_of(parameters: Optional[dict], where: str) -> Optional[str]:
    """The `content_type` named in `parameters`, or None; a non-string one is the client's error."""
    content_type = parameters.get(CONTENT_TYPE) if parameters else None
    if content_type is None or content_type == "":
        return None
    if not isinstance(content_type, str):
        raise InvalidInput(f"{where}: 'content_type' must be a string, got {content_type!r}")
    return content_type


def _input_codec(content_type: str, where: str):
    codec = find_input_codec(content_type)
    if codec is None:
        raise InvalidInput(f"{where}: unknown content type '{content_type}'; "
                           f"tensors know {', '.join(input_codecs()) or 'none'}")
    return codec


def _request_codec(content_type: str, where: str):
    codec = find_request_codec(content_type)
    if codec is None:
        raise InvalidInput(f"{where}: unknown content type '{content_type}'; "
                           f"requests know {', '.join(request_codecs()) or 'none'}")
    return codec


def _type_name(payload: Any) -> str:
    return f"{type(payload).__module__}.{type(payload).__qualname__}".removeprefix("builtins.")


def decode_input(tensor: Union[InferInput, InferOutput], default_content_type: Optional[str] = None) -> Any:
    """The tensor's own content type, else the model's default for it, else its NumPy array."""
    kind = "output" if isinstance(tensor, InferOutput) else "input"
    where = f"{kind} '{tensor.name}'"
    content_type = content_type_of(tensor.parameters, where) or default_content_type
    if content_type is None:
        return tensor.as_numpy()
    codec = _input_codec(content_type, where)
    return codec.decode_output(tensor) if kind == "output" else codec.decode_input(tensor)


def decode_output(tensor: InferOutput, default_content_type: Optional[str] = None) -> Any:
    """Client side of decode_input: a response output by its content type."""
    return decode_input(tensor, default_content_type)


def decode_request(request: InferRequest, default_content_type: Optional[str] = None) -> Any:
    """By the request's content type, else the model's default; else {input name: decoded input}."""
    content_type = content_type_of(request.parameters, "request") or default_content_type
    if content_type is not None:
        return _request_codec(content_type, "request").decode_request(request)
    return {tensor.name: decode_input(tensor) for tensor in request.inputs}


def decode_response(response: InferResponse, default_content_type: Optional[str] = None) -> Any:
    """Client side of decode_request: by content type, else {output name: decoded output}."""
    content_type = content_type_of(response.parameters, "response") or default_content_type
    if content_type is not None:
        return _request_codec(content_type, "response").decode_response(response)
    return {tensor.name: decode_input(tensor) for tensor in response.outputs}


def _encode_tensor(kind: str, name: str, payload: Any, content_type: Optional[str]):
    where = f"{kind} '{name}'"
    if content_type is not None:
        codec = _input_codec(content_type, where)
    else:
        codec = find_input_codec_by_payload(payload)
        if codec is None:
            raise InvalidInput(f"{where}: no content type encodes a {_type_name(payload)}; "
                               f"return a numpy array, a list of str, bytes or datetime, or name a content type")
    return codec.encode_output(name, payload) if kind == "output" else codec.encode_input(name, payload)


def encode_output(name: str, payload: Any, content_type: Optional[str] = None) -> InferOutput:
    """A model's value as an output: by the content type given, else by the payload's type."""
    if isinstance(payload, InferOutput):
        return payload
    return _encode_tensor("output", name, payload, content_type)


def encode_input(name: str, payload: Any, content_type: Optional[str] = None) -> InferInput:
    """Client side of encode_output."""
    if isinstance(payload, InferInput):
        return payload
    return _encode_tensor("input", name, payload, content_type)


def encode_response(model_name: str, payload: Any, content_type: Optional[str] = None,
                    model_version: Optional[str] = None) -> InferResponse:
    """A model's return value as a response.

    By the content type given, else the first request codec that takes the payload; a dict maps
    output names to values encoded one by one (the inverse of decode_request's dict).
    """
    if isinstance(payload, InferResponse):
        return payload
    if content_type is not None:
        codec = _request_codec(content_type, f"model '{model_name}'")
    else:
        codec = find_request_codec_by_payload(payload)
    if codec is not None:
        return codec.encode_response(model_name, payload, model_version=model_version)
    if isinstance(payload, dict):
        outputs = [encode_output(str(name), value) for name, value in payload.items()]
        return InferResponse(None, model_name, outputs, model_version=model_version)
    raise InvalidInput(f"model '{model_name}': no content type encodes a {_type_name(payload)} as a response; "
                       f"return a numpy array, a DataFrame, a list of str or a dict of outputs")


def encode_request(payload: Any, content_type: Optional[str] = None, model_name: str = "") -> InferRequest:
    """Client side of encode_response: a value or a dict of named values as a request."""
    if isinstance(payload, InferRequest):
        return payload
    if content_type is not None:
        codec = _request_codec(content_type, "request")
    else:
        codec = find_request_codec_by_payload(payload)
    if codec is not None:
        return codec.encode_request(payload, model_name=model_name)
    if isinstance(payload, dict):
        inputs = [encode_input(str(name), value) for name, value in payload.items()]
        return InferRequest(model_name, inputs)
    raise InvalidInput(f"no content type encodes a {_type_name(payload)} as a request")


__all__ = [
    "content_type_of", "decode_input", "decode_output", "decode_request", "decode_response",
    "encode_input", "encode_output", "encode_request", "encode_response",
]
