"""BYTES tensors for TorchScript models, as Triton's libtorch backend passes them.

TorchScript has no string tensor: a model that takes or returns text declares `List[str]`. Triton hands
such a model every element of a BYTES input as one flat `List[str]` (row-major, batch rows included) and
reads a returned `List[str]` back as a BYTES output; Triton's own qa models (`libtorch_*_object_*`) are
written that way. Without this a TYPE_STRING input reached `torch.from_numpy`, which refuses object arrays.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def is_bytes_array(array) -> bool:
    """True for the arrays the transports build for BYTES tensors (object or fixed-width bytes/str)."""
    return isinstance(array, np.ndarray) and array.dtype.kind in ("O", "S", "U")


def to_list(array: np.ndarray) -> list:
    """Every element, row-major, as a Python str (bytes decoded as UTF-8, bad bytes replaced)."""
    out = []
    for item in np.asarray(array).reshape(-1):
        if isinstance(item, (bytes, bytearray, memoryview)):
            out.append(bytes(item).decode("utf-8", "replace"))
        else:
            out.append(str(item))
    return out


def from_list(values, declared: Optional[Sequence[int]] = None, rows: Optional[int] = None) -> np.ndarray:
    """A returned List[str] as a BYTES array. Its shape is the declared one where the element count fits
    it (a leading -1 taken as `rows`, the batch); otherwise the list's own length."""
    array = np.empty(len(values), dtype=object)
    array[:] = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
    shape = _fitting_shape(len(values), declared, rows)
    return array.reshape(shape) if shape is not None else array


def _fitting_shape(count: int, declared: Optional[Sequence[int]], rows: Optional[int]):
    if not declared:
        return None
    dims = [int(d) for d in declared]
    if dims and dims[0] < 0 and rows is not None:
        dims[0] = rows
    if any(d < 0 for d in dims) or int(np.prod(dims)) != count:
        return None
    return dims
