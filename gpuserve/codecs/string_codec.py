"""The `str` content type: a list of Python strings, one per row, as UTF-8 BYTES.

Models that take text (tokenisers, classifiers) want `str`, not `bytes`, whether the client sent
JSON strings or binary BYTES; this codec makes both arrive the same. `use_bytes=False` keeps `str`
elements in the tensor (MLServer's flag); the wire form is identical either way.
"""

from __future__ import annotations

from typing import Any, Optional

from gpuserve.codecs.base import (
    InputCodec,
    SingleInputRequestCodec,
    register_input_codec,
    register_request_codec,
)
from gpuserve.codecs.bytes_lists import bytes_tensor, decode_each, is_list_of, require_list
from gpuserve.errors import InvalidInput
from gpuserve.types import InferInput, InferOutput


def _to_text(item: Any) -> str:
    return item.decode("utf-8") if isinstance(item, bytes) else item


def _encode_strings(cls: type, name: str, payload: Any, use_bytes: bool, parameters: Any):
    items = require_list(payload, "content type 'str'", "str")
    out = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            out.append(item.encode("utf-8") if use_bytes else item)
        elif isinstance(item, bytes):
            try:
                text = item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"'{name}' element {index} is not valid UTF-8; "
                                   f"use content type 'base64' or 'np' for binary data") from None
            out.append(bytes(item) if use_bytes else text)
        else:
            raise InvalidInput(
                f"'{name}' element {index}: content type 'str' encodes str, got {type(item).__name__}")
    return bytes_tensor(cls, name, out, StringCodec.ContentType, parameters)


def _decode_strings(tensor: Any) -> list[str]:
    return decode_each(tensor, StringCodec.ContentType, _to_text, "UTF-8 text")


@register_input_codec
class StringCodec(InputCodec):
    """A list of str as a [N, 1] BYTES tensor; decoding gives a flat list of str."""

    ContentType = "str"

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return is_list_of(payload, str, allow_empty=True)

    @classmethod
    def encode_output(cls, name: str, payload: list[str], use_bytes: bool = True,
                      parameters: Optional[dict] = None, **kwargs) -> InferOutput:
        return _encode_strings(InferOutput, name, payload, use_bytes, parameters)

    @classmethod
    def decode_output(cls, response_output: InferOutput) -> list[str]:
        return _decode_strings(response_output)

    @classmethod
    def encode_input(cls, name: str, payload: list[str], use_bytes: bool = True,
                     parameters: Optional[dict] = None, **kwargs) -> InferInput:
        return _encode_strings(InferInput, name, payload, use_bytes, parameters)

    @classmethod
    def decode_input(cls, request_input: InferInput) -> list[str]:
        return _decode_strings(request_input)


@register_request_codec
class StringRequestCodec(SingleInputRequestCodec):
    """A single-input request or response as one list of str."""

    ContentType = "str"
    InputCodec = StringCodec
