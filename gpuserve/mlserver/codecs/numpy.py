"""`np`: a tensor as a NumPy array; as in MLServer, encoding a 1-D array [N] sends shape [N, 1]."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuserve import codecs as native_codecs
from gpuserve.mlserver.codecs.base import NativeInputCodec, register_input_codec, register_request_codec
from gpuserve.mlserver.codecs.content_types import SingleInputRequestCodec, inject_batch_dimension
from gpuserve.mlserver.types import RequestInput, ResponseOutput


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
