"""Custom metrics from inside a model, as MLServer offers them:

    from gpuserve import metrics
    metrics.register("my_metric", "What it measures")
    metrics.log(my_metric=34)

Each metric is a Prometheus histogram labelled with the model's name and version (taken from the
request being served). In parallel worker processes the values go to prometheus_client's
multiprocess directory and the server merges them into its exposition.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Dict, Set, Tuple

_current: contextvars.ContextVar[Tuple[str, str]] = contextvars.ContextVar("gpuserve_model", default=("", ""))
_metrics: Dict[str, object] = {}
# prometheus multiprocess directories of live parallel-worker pools, merged into the exposition.
worker_metric_dirs: Set[str] = set()
_lock = threading.Lock()


def current_model() -> Tuple[str, str]:
    return _current.get()


def set_current_model(name: str, version) -> None:
    """Label the current request for `log()`; skipped (it costs a context copy) until a metric exists."""
    if _metrics:
        _current.set((name, "" if version is None else str(version)))


def register(name: str, description: str):
    """Create (once) a histogram `name`; registering the same name again returns the same metric."""
    from prometheus_client import Histogram

    with _lock:
        metric = _metrics.get(name)
        if metric is None:
            metric = _metrics[name] = Histogram(name, description, labelnames=["model_name", "model_version"])
        return metric


def log(**values: float) -> None:
    """Record one observation per keyword for the model serving the current request; a metric not yet
    registered is registered on the fly, as MLServer's `mlserver.log` does."""
    model_name, model_version = _current.get()
    for name, value in values.items():
        metric = _metrics.get(name) or register(name, name)
        metric.labels(model_name=model_name, model_version=model_version).observe(value)
