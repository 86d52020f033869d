"""Top-k over the last axis. The NumPy version is the reference (and the CPU path); a GPU version
(issue 9) must match it, so only k values per row cross PCIe."""

from __future__ import annotations

from typing import Tuple

import numpy as np


def topk_reference(values: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """(values, indices) of the k largest entries along the last axis, largest first; ties by index."""
    if values.ndim == 0:
        raise ValueError("top-k needs at least one axis")
    k = max(0, min(int(k), values.shape[-1]))
    order = np.argsort(-values.astype(np.float64, copy=False), axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(values, order, axis=-1), order
