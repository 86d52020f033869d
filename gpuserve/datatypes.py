"""V2 datatype names <-> NumPy dtypes, and the byte rules tritonclient uses on binary paths.

BYTES: each element on the wire is a 4-byte little-endian length then the bytes.
BF16: NumPy has no bfloat16, so BF16 tensors are held as float32 (as tritonclient does) and
packed to the upper 16 bits (round-to-nearest-even) only when written as raw bytes.
"""

from __future__ import annotations

import math
import struct
from typing import Optional, Sequence

import numpy as np

from gpuserve.errors import InvalidInput
from gpuserve.triton_refusals import byte_size_mismatch

_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(np.float32),
    "BYTES": np.dtype(np.object_),
}
_FROM_NUMPY: dict[np.dtype, str] = {dt: name for name, dt in _TO_NUMPY.items() if name != "BF16"}

DATATYPES = tuple(_TO_NUMPY)
# The datatypes whose raw bytes are exactly their elements' (not BYTES' length prefixes, not BF16's halves):
# what the transports' short paths for the common request decode with one np.frombuffer
FIXED_SIZE_DTYPES = {name: dtype for name, dtype in _TO_NUMPY.items() if name not in ("BYTES", "BF16")}
FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})


def to_numpy_dtype(datatype: str) -> np.dtype:
    try:
        return _TO_NUMPY[datatype]
    except (KeyError, TypeError):
        raise InvalidInput(f"unknown datatype '{datatype}'; expected one of {', '.join(DATATYPES)}") from None


def from_numpy_dtype(dtype: np.dtype) -> str:
    if not isinstance(dtype, np.dtype):  # (most callers pass an array's dtype: no call to make it one)
        dtype = np.dtype(dtype)
    name = _FROM_NUMPY.get(dtype)
    if name is not None:
        return name
    if dtype.kind in "SUO":
        return "BYTES"
    if dtype.name == "bfloat16":  # ml_dtypes.bfloat16, as tritonclient and torch hand it over
        return "BF16"
    raise InvalidInput(f"NumPy dtype {dtype} has no V2 datatype")


def element_size(datatype: str) -> int:
    """Bytes per element on raw paths; 0 for BYTES (variable)."""
    if datatype == "BYTES":
        return 0
    if datatype == "BF16":
        return 2
    return to_numpy_dtype(datatype).itemsize


def check_input_byte_size(name: str, datatype: str, shape, size: int, model: str,
                          request_id: Optional[str] = None) -> None:
    """Raw data of a fixed-size input must be exactly its shape's bytes; refused in Triton's words, the
    request's id first (clients match them). Unknown datatypes, BYTES and bad shapes are left to the decode,
    which says what is wrong."""
    try:
        itemsize = element_size(datatype)
    except InvalidInput:
        return
    if not itemsize or any(not isinstance(d, int) or d < 0 for d in shape):
        return
    expected = itemsize * math.prod(shape)
    if size != expected:
        raise byte_size_mismatch(request_id, model, name, expected, size)


def _as_bytes(item) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    return str(item).encode("utf-8")


_LENGTH = struct.Struct("<I")
# A BYTES buffer up to this size is copied whole before it is split: slicing bytes makes each element in one
# step (a memoryview slice, then its bytes, took twice as long for 100k short strings); above it the elements
# are cut from views, so a huge tensor is not held a third time
SPLIT_COPY_BYTES = 1 << 24


def serialize_bytes_tensor(array: np.ndarray) -> bytes:
    """Length-prefixed BYTES elements, C order. Built by C-level maps rather than a Python loop per element
    (100k short strings: 35 ms before, about 20 now)."""
    items = np.asarray(array, dtype=object).ravel(order="C").tolist()
    if not items:
        return b""
    if set(map(type, items)) != {bytes}:
        items = list(map(_as_bytes, items))
    parts = [b""] * (2 * len(items))
    parts[0::2] = map(_LENGTH.pack, map(len, items))
    parts[1::2] = items
    return b"".join(parts)


def object_map(function, array: np.ndarray) -> np.ndarray:
    """`function` of every element, as an object array of `array`'s shape. One C-level map: np.vectorize
    goes through its output-type machinery per element (ONNX string inputs of 16 elements 11 -> 4 us,
    100k 21 -> 13 ms). `function` returns scalars (text, bytes), never sequences."""
    out = np.empty(np.shape(array), dtype=object)
    if out.size:
        out.reshape(-1)[:] = list(map(function, np.asarray(array).reshape(-1)))
    return out


def deserialize_bytes_tensor(buffer: bytes | memoryview) -> np.ndarray:
    """Inverse of serialize_bytes_tensor: a flat object array of `bytes`."""
    data = buffer
    if type(data) is not bytes:
        data = bytes(data) if len(data) <= SPLIT_COPY_BYTES else memoryview(data).cast("B")
    unpack = _LENGTH.unpack_from
    items: list = []
    append = items.append
    offset, end = 0, len(data)
    try:
        while offset < end:
            start = offset + 4
            offset = start + unpack(data, offset)[0]
            append(data[start:offset])
    except struct.error:
        raise InvalidInput("truncated BYTES element: missing 4-byte length prefix") from None
    if offset > end:
        raise InvalidInput("truncated BYTES element: length prefix runs past the data")
    if type(data) is not bytes:
        items = list(map(bytes, items))
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def bf16_to_bytes(array: np.ndarray) -> bytes:
    """float32 values -> bfloat16 bytes, rounding to nearest even (NaN stays NaN)."""
    if array.dtype.name == "bfloat16":  # already bfloat16 (ml_dtypes): its bytes are the answer
        return np.ascontiguousarray(array).view(np.uint16).tobytes()
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    upper = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(array.astype(np.float32, copy=False)).ravel()
    if nan.any():
        flat = upper.ravel()
        flat[nan] = 0x7FC0
        upper = flat.reshape(upper.shape)
    return upper.tobytes()


def bf16_from_bytes(buffer: bytes | memoryview) -> np.ndarray:
    """bfloat16 bytes -> float32 values (exact)."""
    upper = np.frombuffer(buffer, dtype=np.uint16)
    return (upper.astype(np.uint32) << 16).view(np.float32)


def raw_to_numpy(buffer: bytes | memoryview, datatype: str, shape) -> np.ndarray:
    """Decode one tensor's raw bytes; zero-copy (read-only) for fixed-size types."""
    count = math.prod(shape)  # plain ints: numpy's reduction costs more than the decode itself
    if datatype == "BYTES":
        array = deserialize_bytes_tensor(buffer)
    elif datatype == "BF16":
        if len(buffer) != 2 * count:
            raise InvalidInput(f"expected {2 * count} bytes of BF16 data for shape {list(shape)}, got {len(buffer)}")
        array = bf16_from_bytes(buffer)
    else:
        dtype = to_numpy_dtype(datatype)
        if len(buffer) != dtype.itemsize * count:
            raise InvalidInput(
                f"expected {dtype.itemsize * count} bytes of {datatype} data for shape {list(shape)}, got {len(buffer)}"
            )
        array = np.frombuffer(buffer, dtype=dtype)
    if array.size != count:
        raise InvalidInput(f"shape {list(shape)} needs {count} elements, got {array.size}")
    return array.reshape(shape)


def numpy_to_raw(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return serialize_bytes_tensor(array)
    if datatype == "BF16":
        return bf16_to_bytes(array)
    return np.ascontiguousarray(array, dtype=to_numpy_dtype(datatype)).tobytes()


def raw_view(array: np.ndarray, datatype: str):
    """numpy_to_raw without the copy where the array already holds the wire bytes (C order, the wire's
    dtype): a read-only view of it, for answers too large to copy."""
    if datatype in ("BYTES", "BF16"):
        return numpy_to_raw(array, datatype)
    array = np.ascontiguousarray(array, dtype=to_numpy_dtype(datatype))
    return memoryview(array).toreadonly().cast("B") if array.ndim else array.tobytes()


# Raw tensor data from this size on is passed around as views rather than copied, on both transports: an
# answer's outputs leave as views of their arrays (HTTP binary, gRPC raw_output_contents), an HTTP body is
# read into one buffer of its declared length, a gRPC message is parsed around its raw inputs. At 400-800 KB
# the copies took 2-10 ms a request against 0.6-1.8 ms as views (benchmarks/payload_bench.py); below 64 KiB
# one copy (and one joined write) is cheaper than the views
VIEW_BYTES = 1 << 16


def wire_raw(array: np.ndarray, datatype: str):
    """An output's raw bytes for the wire: a view of the array from VIEW_BYTES on, a copy below."""
    if array.nbytes >= VIEW_BYTES:
        return raw_view(array, datatype)
    return numpy_to_raw(array, datatype)


def shape_fits(spec_shape: Sequence[int], shape: tuple) -> bool:
    """A declared shape (-1: any size; empty: not declared) admits `shape`. Runs per request and input."""
    if not spec_shape:
        return True
    if len(spec_shape) != len(shape):
        return False
    for want, got in zip(spec_shape, shape):
        if want != -1 and want != got:
            return False
    return True
