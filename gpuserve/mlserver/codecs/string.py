"""`str`: a list of Python strings as a BYTES tensor of shape [N, 1]."""

from __future__ import annotations

from typing import List

from gpuserve import codecs as native_codecs
from gpuserve.mlserver.codecs.base import NativeInputCodec, register_input_codec, register_request_codec
from gpuserve.mlserver.codecs.content_types import SingleInputRequestCodec


def encode_str(elem: str) -> bytes:
    return elem.encode("utf-8")


def decode_str(encoded, str_codec: str = "utf-8") -> str:
    if isinstance(encoded, bytes):
        return encoded.decode(str_codec)
    return encoded


@register_input_codec
class StringCodec(NativeInputCodec):
    """Encodes a list of Python strings as a BYTES input (output)."""

    ContentType = "str"
    TypeHint = List[str]
    Native = native_codecs.StringCodec


@register_request_codec
class StringRequestCodec(SingleInputRequestCodec):
    """Decodes the only input (output) of a request (response) as a list of strings."""

    ContentType = StringCodec.ContentType
    InputCodec = StringCodec
