"""Top-k over the last axis, so only k values per row (and their indices) leave the device.

`topk_reference` is the definition (a full stable sort of float64 copies); `topk_cpu` picks the same
k with a partial sort; `topk_device` runs topk.cu through CuPy. All three order larger first, NaN
after every number, ties by lower index.
"""

from __future__ import annotations

import contextlib
from typing import Tuple

import numpy as np

_THREADS = 256  # topk.cu's TOPK_THREADS
DEVICE_KERNELS = {np.dtype(np.float16): "topk_f16", np.dtype(np.float32): "topk_f32",
                  np.dtype(np.float64): "topk_f64", np.dtype(np.int32): "topk_i32", np.dtype(np.int64): "topk_i64"}


def topk_reference(values: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """(values, indices) of the k largest entries along the last axis, largest first; ties by index."""
    if values.ndim == 0:
        raise ValueError("top-k needs at least one axis")
    k = max(0, min(int(k), values.shape[-1]))
    order = np.argsort(-values.astype(np.float64, copy=False), axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(values, order, axis=-1), order


def topk_cpu(values: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The reference's answer with a partial sort: O(n + k log k) per row instead of O(n log n).

    Each element becomes the complex number (-value) + 1j * index: NumPy orders complex numbers by
    real then imaginary part and puts NaN real parts last, ordered by their imaginary part, which is
    exactly the reference's stable order, and every key is distinct, so partitioning cannot split ties
    differently.
    """
    if values.ndim == 0:
        raise ValueError("top-k needs at least one axis")
    columns = values.shape[-1]
    k = max(0, min(int(k), columns))
    if k == 0 or 4 * k >= columns:
        return topk_reference(values, k)
    keys = np.empty(values.shape, dtype=np.complex128)
    keys.real = values
    np.negative(keys.real, out=keys.real)
    keys.imag = np.arange(columns, dtype=np.float64)
    chosen = np.argpartition(keys, k - 1, axis=-1)[..., :k]
    order = np.take_along_axis(chosen, np.argsort(np.take_along_axis(keys, chosen, axis=-1), axis=-1), axis=-1)
    return np.take_along_axis(values, order, axis=-1), order


def topk_device(values, k: int, stream=None):
    """CuPy path: a 2-D device array [rows, columns] -> (values [rows, k], int64 indices [rows, k]) on the device.

    Dtypes without a kernel (see DEVICE_KERNELS) raise TypeError; callers reduce those on the host.
    """
    import cupy

    from gpuserve.kernels.cuda_module import function

    if values.ndim != 2:
        raise ValueError("topk_device takes [rows, columns]")
    name = DEVICE_KERNELS.get(np.dtype(values.dtype))
    if name is None:
        raise TypeError(f"no device top-k for {values.dtype}")
    rows, columns = values.shape
    k = max(0, min(int(k), columns))
    with stream if stream is not None else contextlib.nullcontext():  # allocations and copies on `stream` too
        top = cupy.empty((rows, k), dtype=values.dtype)
        index = cupy.empty((rows, k), dtype=np.int64)
        if rows == 0 or k == 0:
            return top, index
        values = cupy.ascontiguousarray(values)
        kernel = function("topk.cu", name, values.device.id)
        kernel((rows,), (_THREADS,), (values, np.int64(columns), np.int32(k), top, index))
    return top, index


class TopK:
    """A reduced output as the engine carries it: per-row top values and their indices, sliced per request."""

    __slots__ = ("values", "indices")

    def __init__(self, values: np.ndarray, indices: np.ndarray):
        self.values, self.indices = values, indices

    @property
    def rows(self) -> int:
        return self.values.shape[0]

    def take_rows(self, start: int, count: int) -> "TopK":
        return TopK(self.values[start:start + count], self.indices[start:start + count])

    def first(self, k: int) -> "TopK":
        return TopK(self.values[..., :k], self.indices[..., :k])
