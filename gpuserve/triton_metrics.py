"""`pb_utils.MetricFamily` / `Metric`: Triton Python models' custom metrics, on gpuserve's /metrics.

Triton lets each Metric of a family carry its own label set, which prometheus_client's own metric
classes (fixed label names per family) cannot hold; so values live here and one collector in the
default registry reports them at scrape time, under the exact names the model chose (a counter keeps
its name, without the `_total` prometheus_client would add), as Triton exposes them.
"""

from __future__ import annotations

import bisect
import threading
from typing import Dict, List, Optional, Tuple

_lock = threading.Lock()
_families: Dict[str, "MetricFamily"] = {}


class MetricFamily:
    COUNTER, GAUGE, HISTOGRAM = 0, 1, 2
    _KINDS = {0: "counter", 1: "gauge", 2: "histogram"}

    def __init__(self, name: str, description: str, kind: int):
        if kind not in self._KINDS:
            raise ValueError(f"metric family '{name}': kind must be COUNTER, GAUGE or HISTOGRAM")
        with _lock:
            existing = _families.get(name)
            if existing is not None and existing.kind != kind:
                raise ValueError(f"metric family '{name}' already exists with a different kind")
            self.name, self.description, self.kind = name, description, kind
            self.metrics: Dict[Tuple[Tuple[str, str], ...], "Metric"] = existing.metrics if existing else {}
            _families[name] = self

    def Metric(self, labels: Optional[dict] = None, buckets: Optional[List[float]] = None) -> "Metric":  # noqa: N802
        if self.kind == self.HISTOGRAM and not buckets:
            raise ValueError(f"histogram metric family '{self.name}' needs buckets")
        if self.kind != self.HISTOGRAM and buckets:
            raise ValueError(f"only histogram metrics take buckets ('{self.name}')")
        key = tuple(sorted((str(k), str(v)) for k, v in (labels or {}).items()))
        with _lock:
            metric = self.metrics.get(key)
            if metric is None:
                metric = self.metrics[key] = Metric(self, dict(key), sorted(buckets or []))
        return metric


class Metric:
    def __init__(self, family: MetricFamily, labels: Dict[str, str], buckets: List[float]):
        self.family = family
        self.labels = labels
        self.buckets = buckets
        self._value = 0.0
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def increment(self, value: float) -> None:
        if self.family.kind == MetricFamily.HISTOGRAM:
            raise ValueError("a histogram metric is observed, not incremented")
        if self.family.kind == MetricFamily.COUNTER and value < 0:
            raise ValueError("a counter can only increase")
        with self._lock:
            self._value += value

    def set(self, value: float) -> None:
        if self.family.kind != MetricFamily.GAUGE:
            raise ValueError("only a gauge metric can be set")
        with self._lock:
            self._value = float(value)

    def value(self) -> float:
        if self.family.kind == MetricFamily.HISTOGRAM:
            raise ValueError("a histogram metric has no single value")
        return self._value

    def observe(self, value: float) -> None:
        if self.family.kind != MetricFamily.HISTOGRAM:
            raise ValueError("only a histogram metric is observed")
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value


def families():
    """Every family as a prometheus_client Metric marked `exact`: Triton (prometheus-cpp) prints a counter under
    its own name, with no `_total` added, and whole values as integers; the exposition does too
    (server/metrics.py)."""
    from prometheus_client.core import Metric as PromMetric

    with _lock:
        known = list(_families.values())
    for family in known:
        out = PromMetric(family.name, family.description, MetricFamily._KINDS[family.kind])
        out.exact = True
        for metric in list(family.metrics.values()):
            if family.kind != MetricFamily.HISTOGRAM:
                out.add_sample(family.name, metric.labels, metric._value)
                continue
            running = 0
            for bound, count in zip(metric.buckets, metric._counts):
                running += count
                out.add_sample(family.name + "_bucket", {**metric.labels, "le": _bound(bound)}, running)
            total = running + metric._counts[-1]
            out.add_sample(family.name + "_bucket", {**metric.labels, "le": "+Inf"}, total)
            out.add_sample(family.name + "_count", metric.labels, total)
            out.add_sample(family.name + "_sum", metric.labels, metric._sum)
        yield out


def _bound(value: float) -> str:
    """A bucket bound as Triton prints it: `1`, not `1.0`."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)
