"""Ragged batching: requests whose inputs differ in length along axis 1 share one batch.

On the host the batch stays packed: every row's elements one after another, no padding (`pack`), so
only real elements are copied into staging and across PCIe. Next to the model the rows are padded to
the batch's longest (`pad_*`), and outputs that carry the ragged axis are packed again (`unpad_*`)
before they leave the device, then handed back per request at its own length (`RaggedBatch.take_rows`).

`pad_reference`/`unpad_reference` are the definitions (one row at a time); the `_cpu` versions are
vectorised with a boolean mask; the `_device` versions launch ragged.cu through CuPy.
"""

from __future__ import annotations

import contextlib
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

_THREADS = 256


class RaggedBatch:
    """Rows packed without padding: `packed` is 1-D, row r holds lengths[r] * prod(inner) elements."""

    __slots__ = ("packed", "lengths", "inner", "_offsets")

    def __init__(self, packed: np.ndarray, lengths: np.ndarray, inner: Tuple[int, ...]):
        self.packed = packed
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.inner = tuple(int(d) for d in inner)
        self._offsets: Optional[np.ndarray] = None

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def max_length(self) -> int:
        return int(self.lengths.max()) if len(self.lengths) else 0

    @property
    def dtype(self) -> np.dtype:
        return self.packed.dtype

    @property
    def offsets(self) -> np.ndarray:
        """rows + 1 row starts, in units of one position along the ragged axis."""
        if self._offsets is None:
            offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
            np.cumsum(self.lengths, out=offsets[1:])
            self._offsets = offsets
        return self._offsets

    def take_rows(self, start: int, count: int) -> np.ndarray:
        """Rows start..start+count as a dense [count, length, *inner] array; they must share one length."""
        lengths = self.lengths[start:start + count]
        length = int(lengths[0]) if count else 0
        if count and not np.all(lengths == length):
            raise ValueError("rows of one request must share a length along the ragged axis")
        width = math.prod(self.inner)
        begin = int(self.offsets[start]) * width
        return self.packed[begin:begin + count * length * width].reshape((count, length) + self.inner)


def pack(parts: Sequence[np.ndarray], pool=None) -> Tuple[RaggedBatch, object]:
    """Requests [n_i, L_i, *inner] -> one RaggedBatch (copied into a pooled buffer when there are several).

    Returns the batch and the pool lease holding its memory (None when nothing was copied).
    """
    first = parts[0]
    inner = first.shape[2:]
    for part in parts:
        if part.ndim < 2 or part.shape[2:] != inner or part.dtype != first.dtype:
            raise ValueError(f"ragged parts must share dtype and every axis after the ragged one; got "
                             f"{[(p.dtype.str, p.shape) for p in parts]}")
    lengths = np.concatenate([np.full(p.shape[0], p.shape[1], dtype=np.int64) for p in parts])
    if len(parts) == 1:
        return RaggedBatch(np.ascontiguousarray(first).reshape(-1), lengths, inner), None
    total = sum(p.size for p in parts)
    lease = None
    if pool is not None and first.dtype != object:
        lease = pool.acquire(first.dtype, (total,))
        packed = lease.array
    else:
        packed = np.empty(total, dtype=first.dtype)
    start = 0
    for part in parts:
        packed[start:start + part.size] = part.reshape(-1)
        start += part.size
    return RaggedBatch(packed, lengths, inner), lease


def pad_reference(parts: Sequence[np.ndarray], pad_value) -> Tuple[np.ndarray, np.ndarray]:
    """The definition: each row padded along axis 1 to the longest row; returns (dense, lengths)."""
    rows = [row for part in parts for row in part]
    longest = max(row.shape[0] for row in rows)
    dense = [np.pad(row, [(0, longest - row.shape[0])] + [(0, 0)] * (row.ndim - 1), constant_values=pad_value)
             for row in rows]
    return np.stack(dense), np.array([row.shape[0] for row in rows], dtype=np.int64)


def unpad_reference(dense: np.ndarray, lengths: Sequence[int]) -> List[np.ndarray]:
    """The definition: row r cut back to its own length."""
    return [dense[r, :int(length)] for r, length in enumerate(lengths)]


def mask(lengths: np.ndarray, max_length: int, dtype) -> np.ndarray:
    """[rows, max_length]: 1 where a position holds a real element, 0 where it is padding."""
    return (np.arange(max_length)[None, :] < np.asarray(lengths)[:, None]).astype(dtype)


def pad_cpu(batch: RaggedBatch, pad_value, max_length: Optional[int] = None) -> np.ndarray:
    longest = batch.max_length if max_length is None else max_length
    if batch.rows and np.all(batch.lengths == longest):  # nothing to pad: a view of the packed rows
        return batch.packed.reshape((batch.rows, longest) + batch.inner)
    dense = np.full((batch.rows, longest) + batch.inner, pad_value, dtype=batch.dtype)
    dense[mask(batch.lengths, longest, bool)] = batch.packed.reshape((-1,) + batch.inner)
    return dense


def unpad_cpu(dense: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[rows, max_length, *inner] -> the packed 1-D form of the rows' real elements."""
    check_dense(dense, lengths)
    if np.all(lengths == dense.shape[1]):
        return np.ascontiguousarray(dense).reshape(-1)
    return dense[mask(lengths, dense.shape[1], bool)].reshape(-1)


def check_dense(dense, lengths: np.ndarray) -> None:
    if dense.ndim < 2 or dense.shape[0] != len(lengths) or (len(lengths) and dense.shape[1] < lengths.max()):
        raise ValueError(f"an output of shape {list(dense.shape)} does not carry the ragged axis of "
                         f"{len(lengths)} rows up to {int(lengths.max()) if len(lengths) else 0} long")


def check_packed(packed, lengths: np.ndarray) -> None:
    total = int(lengths.sum())
    if packed.ndim < 1 or packed.shape[0] != total:
        raise ValueError(f"an output of shape {list(packed.shape)} does not hold the {total} packed positions "
                         f"of {len(lengths)} rows")


def _suffix(dtype: np.dtype) -> Tuple[str, type]:
    return {1: ("b1", np.uint8), 2: ("b2", np.uint16), 4: ("b4", np.uint32), 8: ("b8", np.uint64)}[dtype.itemsize]


def pad_device(packed, offsets, rows: int, max_length: int, inner: Tuple[int, ...], pad_value, stream=None):
    """CuPy path: packed device rows (+ device offsets, rows + 1 of them) -> a dense device array."""
    import cupy

    from gpuserve.kernels.cuda_module import blocks, function

    dtype = packed.dtype
    width = max_length * math.prod(inner)
    with stream if stream is not None else contextlib.nullcontext():  # allocations on `stream` too
        dense = cupy.empty((rows, max_length) + tuple(inner), dtype=dtype)
        if rows == 0 or width == 0:
            return dense
        suffix, bits = _suffix(dtype)
        pad = np.array(pad_value, dtype=dtype).view(bits)[()]  # the pad value's bit pattern
        kernel = function("ragged.cu", f"pad_{suffix}", packed.device.id)
        kernel((rows, blocks(width, _THREADS)), (_THREADS,),
               (packed, offsets, dense, pad, np.int64(max_length), np.int64(math.prod(inner))))
    return dense


def unpad_device(dense, offsets, total_length: int, stream=None):
    """CuPy path: dense device [rows, max_length, *inner] -> packed 1-D device array of real elements."""
    import cupy

    from gpuserve.kernels.cuda_module import blocks, function

    inner = math.prod(dense.shape[2:])
    rows, max_length = dense.shape[0], dense.shape[1]
    with stream if stream is not None else contextlib.nullcontext():  # allocations and copies on `stream` too
        packed = cupy.empty(total_length * inner, dtype=dense.dtype)
        if rows == 0 or packed.size == 0:
            return packed
        suffix, _ = _suffix(dense.dtype)
        kernel = function("ragged.cu", f"unpad_{suffix}", dense.device.id)
        dense = cupy.ascontiguousarray(dense)
        kernel((rows, blocks(max_length * inner, _THREADS)), (_THREADS,),
               (dense, offsets, packed, np.int64(max_length), np.int64(inner)))
    return packed
