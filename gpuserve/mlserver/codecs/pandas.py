"""`pd`: a request (response) as a DataFrame, one input (output) per column; pandas loads on first use."""

from __future__ import annotations

from typing import Any, List

from gpuserve import codecs as native_codecs
from gpuserve.mlserver.codecs.base import LazyType, NativeRequestCodec, register_request_codec
from gpuserve.mlserver.types import ResponseOutput, from_native_output
from gpuserve.types import InferOutput


@register_request_codec
class PandasCodec(NativeRequestCodec):
    """Decodes a request (response) into a DataFrame, each input (output) being one column."""

    ContentType = "pd"
    JsonContentType = "pd_json"  # a column of objects, one JSON text a row
    TypeHint = LazyType("pandas", "DataFrame")
    Native = native_codecs.PandasCodec

    @classmethod
    def encode_outputs(cls, payload: Any, use_bytes: bool = True) -> List[ResponseOutput]:
        """Just the columns as outputs (for runtimes that add them to a response of their own)."""
        response = cls.Native.encode_response("", payload, use_bytes=use_bytes)
        return [from_native_output(o) for o in response.outputs if isinstance(o, InferOutput)]
