"""One request's work as the engine sees it: input arrays, a row count, a batching key and a future."""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from gpuserve.errors import InvalidInput


def batch_key(arrays: Dict[str, np.ndarray], batched: bool, ragged: Tuple[str, ...] = (),
              any_shape: bool = False) -> Tuple:
    """Jobs share a batch only when every input agrees on name, dtype and non-batch shape; a ragged
    input's axis 1 may differ (the kernel stage packs and pads those), or with `any_shape` its whole
    shape (Triton's allow_ragged_batch: the backend concatenates each request's elements)."""
    if batched:
        return tuple((name, a.dtype.str, (() if any_shape else a.shape[2:]) if name in ragged else a.shape[1:])
                     for name, a in arrays.items())
    return tuple((name, a.dtype.str, a.shape) for name, a in arrays.items())


def describe(arrays: Dict[str, np.ndarray], batch_dim: bool, batched: bool, ragged: Tuple[str, ...] = (),
             any_shape: bool = False) -> Tuple[int, Tuple]:
    """`row_count(arrays, batch_dim)` and `batch_key(arrays, batched, ragged)` in one pass over the inputs
    (the submit path runs it once per request, batched or not). The key holds dtype objects, which compare
    like their `.str` and cost no string to build."""
    if not batch_dim or batched and ragged:
        return row_count(arrays, batch_dim), batch_key(arrays, batched, ragged, any_shape)
    rows = None
    key = []
    for name, array in arrays.items():
        shape = array.shape
        if not shape:
            raise InvalidInput(f"input '{name}' needs a batch dimension")
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise InvalidInput(f"inputs disagree on the batch dimension: '{name}' has {shape[0]} rows, "
                               f"others {rows}")
        key.append((name, array.dtype, shape[1:] if batched else shape))
    if not rows:
        raise InvalidInput("a request needs at least one row")
    return rows, tuple(key)


def row_count(arrays: Dict[str, np.ndarray], batched: bool) -> int:
    if not batched:
        return 1
    rows = None
    for name, array in arrays.items():
        if array.ndim == 0:
            raise InvalidInput(f"input '{name}' needs a batch dimension")
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            raise InvalidInput(f"inputs disagree on the batch dimension: '{name}' has {array.shape[0]} rows, "
                               f"others {rows}")
    if not rows:
        raise InvalidInput("a request needs at least one row")
    return rows


class _Tracing:
    """Request tracing as the engine sees it (gpuserve/tracing.py sets both): `on` is the one test a job
    pays while no request is traced (a slot: the cheapest attribute to read); `current` holds the trace of
    the request a task works on."""

    __slots__ = ("on", "current")

    def __init__(self):
        self.on = False
        self.current: contextvars.ContextVar = contextvars.ContextVar("gpuserve_trace", default=None)


TRACING = _Tracing()


class Job:
    __slots__ = ("arrays", "rows", "key", "priority", "deadline", "future", "arrival", "outputs", "parameters",
                 "reduce", "started", "delayed", "trace", "cancel_counted")

    def __init__(self, arrays: Dict[str, np.ndarray], rows: int, key: Tuple, future: asyncio.Future,
                 priority: int = 0, deadline: Optional[float] = None, outputs: Optional[Sequence[str]] = None,
                 parameters: Optional[dict] = None, reduce: Optional[Dict[str, int]] = None):
        self.arrays = arrays
        self.rows = rows
        self.key = key
        self.priority = priority
        self.deadline = deadline  # time.monotonic() seconds, or None
        self.future = future
        self.arrival = time.monotonic()
        self.outputs = tuple(outputs) if outputs else None
        self.parameters = parameters
        self.reduce = reduce  # output name -> k: the caller wants only that output's top-k per row
        self.started = False  # set by the instance (on its thread) as it begins the job; then it runs to the end
        self.delayed = False  # timed out under a DELAY policy: it waits behind its level's other jobs
        self.cancel_counted = False  # its caller went away before it ran, and the statistics said so (batcher.py)
        # `trace`: the request's trace (gpuserve/tracing.py), set by the batcher only while tracing is on

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline
