"""The `base64` content type: binary blobs (images, audio) carried as base64 text.

JSON cannot hold arbitrary bytes, so clients that only speak JSON base64-encode them; the model
receives the original `bytes`. An element that is not valid base64 reaches the model as its own raw
bytes (text as UTF-8), as MLServer passes it: clients that send raw bytes over gRPC or the binary
extension with this content type keep working.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Optional

from gpuserve.codecs.base import InputCodec, register_input_codec
from gpuserve.codecs.bytes_lists import bytes_tensor, decode_each, is_list_of, require_list
from gpuserve.errors import InvalidInput
from gpuserve.types import InferInput, InferOutput

_BINARY = (bytes, bytearray, memoryview)


def _encode_blobs(cls: type, name: str, payload: Any, use_bytes: bool, parameters: Any):
    items = require_list(payload, "content type 'base64'", "bytes")
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, _BINARY):
            raise InvalidInput(
                f"'{name}' element {index}: content type 'base64' encodes bytes, got {type(item).__name__}")
        encoded = base64.b64encode(bytes(item))
        out.append(encoded if use_bytes else encoded.decode("ascii"))
    return bytes_tensor(cls, name, out, Base64Codec.ContentType, parameters)


def _b64decode(item: Any) -> bytes:
    raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        return raw


def _decode_blobs(tensor: Any) -> list[bytes]:
    return decode_each(tensor, Base64Codec.ContentType, _b64decode, "valid base64")


@register_input_codec
class Base64Codec(InputCodec):
    """A list of bytes as a [N, 1] BYTES tensor of base64 text; decoding gives the bytes back."""

    ContentType = "base64"

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return is_list_of(payload, _BINARY)

    @classmethod
    def encode_output(cls, name: str, payload: list[bytes], use_bytes: bool = True,
                      parameters: Optional[dict] = None, **kwargs) -> InferOutput:
        return _encode_blobs(InferOutput, name, payload, use_bytes, parameters)

    @classmethod
    def decode_output(cls, response_output: InferOutput) -> list[bytes]:
        return _decode_blobs(response_output)

    @classmethod
    def encode_input(cls, name: str, payload: list[bytes], use_bytes: bool = True,
                     parameters: Optional[dict] = None, **kwargs) -> InferInput:
        return _encode_blobs(InferInput, name, payload, use_bytes, parameters)

    @classmethod
    def decode_input(cls, request_input: InferInput) -> list[bytes]:
        return _decode_blobs(request_input)
