"""Slicing a batch's outputs back to its requests, checking the row count first.

A model that returns the wrong number of rows fails the whole batch with a clear error rather than
giving one request every row and the others none (SeldonIO/MLServer#1306).
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from gpuserve.errors import InferenceError


def split_rows(outputs: Dict[str, np.ndarray], rows: List[int], model: str) -> List[Dict[str, np.ndarray]]:
    """Per request, its rows of every output. Outputs the kernel stage packed (ragged rows, top-k) are
    objects with `rows` and `take_rows(start, count)`; they are sliced by those."""
    total = sum(rows)
    for name, array in outputs.items():
        got = _rows(array)
        if got != total:
            got = "a scalar" if got is None else f"{got} rows"
            raise InferenceError(f"model '{model}' returned {got} for output '{name}' in a batch of {total} rows")
    if len(rows) == 1:
        return [whole(outputs)]
    jobs, first = len(rows), rows[0]
    if first * jobs == total and rows.count(first) == jobs and all(type(a) is np.ndarray for a in outputs.values()):
        # Equal row counts (batch-1 traffic): one reshape per output and NumPy yields the per-request
        # views, the same views as slicing [start:start + count] (splitting axis 0 never copies).
        names = list(outputs)
        views = [list(a.reshape((jobs, first) + a.shape[1:])) for a in outputs.values()]
        if len(names) == 1:
            name = names[0]
            return [{name: v} for v in views[0]]
        return [dict(zip(names, parts)) for parts in zip(*views)]
    per_job: List[Dict[str, np.ndarray]] = [{} for _ in rows]
    for name, array in outputs.items():
        take = getattr(array, "take_rows", None)
        start = 0
        for i, count in enumerate(rows):
            per_job[i][name] = take(start, count) if take is not None else array[start:start + count]
            start += count
    return per_job


def whole(outputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """One request's outputs, packed ones made whole (ragged rows back to a dense array)."""
    for array in outputs.values():  # (a loop, not any(): this runs once per request)
        if hasattr(array, "take_rows"):
            break
    else:
        return outputs
    return {name: a.take_rows(0, a.rows) if hasattr(a, "take_rows") else a for name, a in outputs.items()}


def _rows(array):
    if hasattr(array, "take_rows"):
        return array.rows
    return None if np.ndim(array) == 0 else array.shape[0]
