"""The `np` content type: a tensor is a NumPy array of its V2 datatype and shape.

Shapes are kept as they are: unlike MLServer, an [N] array is not rewritten to [N, 1], so what a
model returns is what the client receives (as Triton and KServe do). A BYTES tensor decodes as
MLServer's NumpyCodec decodes it, so a model trained on strings sees strings: JSON text gives a
NumPy unicode array (`<U`), bytes from binary data or gRPC a fixed-width bytes array (`S`), whose
trailing NUL bytes NumPy drops (send blobs with content type `base64` or none to keep them). Unlike
MLServer, elements of different lengths decode too (it splits raw bytes by the shape's last
dimension). BF16 has no NumPy dtype: it is held as float32, and `datatype="BF16"`
marks a float32 array to be sent as BF16.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from gpuserve.codecs.base import (
    InputCodec,
    SingleInputRequestCodec,
    register_input_codec,
    register_request_codec,
    with_content_type,
)
from gpuserve.datatypes import from_numpy_dtype, to_numpy_dtype
from gpuserve.errors import InvalidInput
from gpuserve.types import InferInput, InferOutput


def _v2_datatype(dtype: np.dtype) -> Optional[str]:
    try:
        return from_numpy_dtype(dtype)
    except InvalidInput:
        return None


def as_bytes_elements(array: np.ndarray, name: str) -> np.ndarray:
    """An object array of `bytes` (str as UTF-8); the same array when it already is one."""
    flat = array.ravel()
    if array.dtype == object and all(type(item) is bytes for item in flat):
        return array
    out = np.empty(flat.size, dtype=object)
    for index, item in enumerate(flat):
        if isinstance(item, bytes):
            out[index] = bytes(item)
        elif isinstance(item, str):
            out[index] = item.encode("utf-8")
        else:
            raise InvalidInput(
                f"'{name}' element {index}: BYTES elements must be bytes or str, got {type(item).__name__}")
    return out.reshape(array.shape)


def _array_tensor(cls: type, name: str, payload: Any, datatype: Optional[str], parameters: Any):
    if not isinstance(payload, np.ndarray):
        raise InvalidInput(f"content type 'np' encodes a numpy.ndarray, got {type(payload).__name__} for '{name}'")
    natural = _v2_datatype(payload.dtype)
    if natural is None:
        raise InvalidInput(f"'{name}': NumPy dtype {payload.dtype} has no V2 datatype")
    if datatype is None or datatype == natural:
        datatype = natural
    else:
        target = to_numpy_dtype(datatype)
        if (datatype == "BYTES") != (natural == "BYTES") or not np.can_cast(payload.dtype, target, "same_kind"):
            raise InvalidInput(f"'{name}': a {payload.dtype} array cannot be sent as {datatype}")
        payload = payload.astype(target, copy=False)
    if datatype == "BYTES":
        payload = as_bytes_elements(payload, name)
    return cls(name, list(payload.shape), datatype, payload, with_content_type(parameters, NumpyCodec.ContentType))


def _decode_array(tensor: Any) -> np.ndarray:
    array = tensor.as_numpy()
    if tensor.datatype == "BYTES":
        return text_or_bytes_array(np.asarray(array, dtype=object), tensor.name)
    return array


def text_or_bytes_array(array: np.ndarray, name: str) -> np.ndarray:
    """All `str` (JSON): a unicode array; otherwise a fixed-width bytes array, `str` as UTF-8."""
    flat = array.ravel()
    if all(type(item) is str for item in flat):
        return np.array(flat.tolist(), dtype=str).reshape(array.shape)
    return np.array(as_bytes_elements(flat, name).tolist(), dtype=bytes).reshape(array.shape)


@register_input_codec
class NumpyCodec(InputCodec):
    """A tensor as an ndarray of any V2 datatype; `datatype=` casts within the same kind."""

    ContentType = "np"

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return isinstance(payload, np.ndarray) and _v2_datatype(payload.dtype) is not None

    @classmethod
    def encode_output(cls, name: str, payload: np.ndarray, datatype: Optional[str] = None,
                      parameters: Optional[dict] = None, **kwargs) -> InferOutput:
        return _array_tensor(InferOutput, name, payload, datatype, parameters)

    @classmethod
    def decode_output(cls, response_output: InferOutput) -> np.ndarray:
        return _decode_array(response_output)

    @classmethod
    def encode_input(cls, name: str, payload: np.ndarray, datatype: Optional[str] = None,
                     parameters: Optional[dict] = None, **kwargs) -> InferInput:
        return _array_tensor(InferInput, name, payload, datatype, parameters)

    @classmethod
    def decode_input(cls, request_input: InferInput) -> np.ndarray:
        return _decode_array(request_input)


@register_request_codec
class NumpyRequestCodec(SingleInputRequestCodec):
    """A single-tensor request or response as one ndarray."""

    ContentType = "np"
    InputCodec = NumpyCodec
