"""Slicing a batch's outputs back to its requests, checking the row count first.

A model that returns the wrong number of rows fails the whole batch with a clear error rather than
giving one request every row and the others none (SeldonIO/MLServer#1306).
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from gpuserve.errors import InferenceError


def split_rows(outputs: Dict[str, np.ndarray], rows: List[int], model: str) -> List[Dict[str, np.ndarray]]:
    total = sum(rows)
    for name, array in outputs.items():
        if np.ndim(array) == 0 or array.shape[0] != total:
            got = "a scalar" if np.ndim(array) == 0 else f"{array.shape[0]} rows"
            raise InferenceError(f"model '{model}' returned {got} for output '{name}' in a batch of {total} rows")
    if len(rows) == 1:
        return [outputs]
    per_job: List[Dict[str, np.ndarray]] = [{} for _ in rows]
    for name, array in outputs.items():
        start = 0
        for i, count in enumerate(rows):
            per_job[i][name] = array[start:start + count]
            start += count
    return per_job
