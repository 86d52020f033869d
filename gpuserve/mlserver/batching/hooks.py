"""`mlserver.batching.hooks`: turn adaptive batching on for an MLModel by hand (`load_batching`) and the
`adaptive_batching` decorator it puts on `predict`. The attribute holding the batcher is MLServer's name."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

from gpuserve.mlserver.batching.adaptive import AdaptiveBatcher
from gpuserve.mlserver.errors import MLServerError

ATTRIBUTE = "__adaptive_batching__"


class InvalidBatchingMethod(MLServerError):
    def __init__(self, method_name: str, reason: Optional[str] = None):
        super().__init__(f"Method {method_name} can't be used for adaptive batching" + (f": {reason}" if reason else ""))


def _unwrapped(f: Callable) -> Callable:
    while hasattr(f, "__wrapped__"):
        f = f.__wrapped__
    return f


def _batcher_of(f: Callable) -> AdaptiveBatcher:
    method = _unwrapped(f)
    model = getattr(method, "__self__", None)
    if model is None:
        raise InvalidBatchingMethod(method.__name__, reason="method is not bound")
    batcher = getattr(model, ATTRIBUTE, None)
    if batcher is None:
        raise InvalidBatchingMethod(method.__name__, reason="adaptive batching has not been loaded")
    return batcher


def adaptive_batching(f: Callable) -> Callable:
    """A bound `predict` whose calls go through its model's batcher (set by `load_batching`)."""

    @functools.wraps(f)
    async def batched(payload):
        return await _batcher_of(f).predict(payload)

    return batched


async def load_batching(model: Any) -> Any:
    """Batch `model`'s predictions when its settings ask for it (max_batch_size > 1 and max_batch_time > 0)."""
    settings = model.settings
    if (settings.max_batch_size or 0) <= 1 or (settings.max_batch_time or 0) <= 0:
        return model
    setattr(model, ATTRIBUTE, AdaptiveBatcher(model))
    model.predict = adaptive_batching(model.predict)
    return model


__all__ = ["InvalidBatchingMethod", "adaptive_batching", "load_batching"]
