"""`mlserver.context`: which model the current request or load belongs to, as MLServer keeps it.

Runtimes and log formatters read `model_name_var.get()` / `model_version_var.get()`; the adapter
(gpuserve/mlserver/model.py) sets both around a runtime's `load` and each `predict`, as MLServer's registry and
data plane do. Outside those calls `get()` without a default raises LookupError, as it does in MLServer.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

model_name_var: ContextVar[str] = ContextVar("model_name")
model_version_var: ContextVar[str] = ContextVar("model_version")


@contextmanager
def model_context(model_settings: Any) -> Iterator[None]:
    """Run a block as `model_settings`'s model (an unversioned model's version reads "")."""
    name = model_name_var.set(model_settings.name)
    version = model_version_var.set(getattr(model_settings, "version", None) or "")
    try:
        yield
    finally:
        model_name_var.reset(name)
        model_version_var.reset(version)


__all__ = ["model_name_var", "model_version_var", "model_context"]
