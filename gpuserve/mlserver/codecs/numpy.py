"""`np`: a tensor as a NumPy array; as in MLServer, encoding a 1-D array [N] sends shape [N, 1]."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuserve import codecs as native_codecs
from gpuserve.datatypes import from_numpy_dtype, to_numpy_dtype
from gpuserve.mlserver.codecs.base import NativeInputCodec, register_input_codec, register_request_codec
from gpuserve.mlserver.codecs.content_types import InputOrOutput, SingleInputRequestCodec, inject_batch_dimension
from gpuserve.mlserver.codecs.lists import is_list_of
from gpuserve.mlserver.types import Datatype, RequestInput, ResponseOutput


def to_dtype(input_or_output: InputOrOutput) -> np.dtype:
    """The NumPy dtype a tensor decodes to: `str` for BYTES given as text, else fixed-width bytes sized
    by the last dimension (MLServer's rule, kept for custom codecs that call it)."""
    datatype = getattr(input_or_output.datatype, "value", input_or_output.datatype)
    if datatype == "BYTES":
        data = getattr(input_or_output.data, "root", input_or_output.data)
        if is_list_of(data, str):
            return np.dtype(str)
        return np.dtype((bytes, input_or_output.shape[-1])) if input_or_output.shape else np.dtype(bytes)
    return np.dtype(to_numpy_dtype(datatype))


def to_datatype(dtype: np.dtype) -> Datatype:
    return Datatype(from_numpy_dtype(dtype))


def _batched(payload: Any) -> Any:
    if isinstance(payload, np.ndarray) and payload.ndim <= 1:
        return payload.reshape(inject_batch_dimension(list(payload.shape)))
    return payload


@register_input_codec
class NumpyCodec(NativeInputCodec):
    """Decodes a request input (response output) as a NumPy array of its datatype and shape."""

    ContentType = "np"
    TypeHint = np.ndarray
    Native = native_codecs.NumpyCodec

    @classmethod
    def encode_output(cls, name: str, payload: np.ndarray, **kwargs) -> ResponseOutput:
        return super().encode_output(name, _batched(payload), **kwargs)

    @classmethod
    def encode_input(cls, name: str, payload: np.ndarray, **kwargs) -> RequestInput:
        return super().encode_input(name, _batched(payload), **kwargs)


@register_request_codec
class NumpyRequestCodec(SingleInputRequestCodec):
    """Decodes the only input (output) of a request (response) as a NumPy array."""

    ContentType = NumpyCodec.ContentType
    InputCodec = NumpyCodec
    TypeHint = type(None)  # np.ndarray names NumpyCodec for @decode_args
