"""`base64`: a list of bytes carried as base64 text."""

from __future__ import annotations

from typing import List

from gpuserve import codecs as native_codecs
from gpuserve.mlserver.codecs.base import NativeInputCodec, register_input_codec


@register_input_codec
class Base64Codec(NativeInputCodec):
    """Codec that converts to / from a base64 input."""

    ContentType = "base64"
    TypeHint = List[bytes]
    Native = native_codecs.Base64Codec
