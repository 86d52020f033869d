"""TorchServe's metrics, under its names, on gpuserve's metrics endpoint beside Triton's and MLServer's: what a
TorchServe user's dashboards scrape from TorchServe 0.12 with `metrics_mode=prometheus` (names, types, help
texts and labels as it exposes them, read from a run of it):

- ts_inference_requests_total, ts_inference_latency_microseconds, ts_queue_latency_microseconds: counters per
  {model_name, model_version (the version the request named, else "default"), hostname}; requests through
  TorchServe's API (REST or gRPC) that found their model (one with no worker too), the latency and queue time of
  the successful ones;
- Requests2XX / Requests4XX / Requests5XX: counters of TorchServe's API answers per status class {Level="Host",
  Hostname} (TorchServe counts its whole ports' requests; gpuserve those of the TorchServe routes);
- HandlerTime / PredictionTime: gauges in ms of a model's last answered batch {ModelName, Level="Model",
  Hostname}: the time the handler itself adds (BaseHandler's), the whole prediction; archives served in the server
  process only, kept past an unregister (as TorchServe keeps its gauges).

Shown only while a TorchServe archive is served (or was asked), so other repositories' expositions are unchanged.
Not shown: TorchServe's system gauges (CPUUtilization, MemoryUsed, ... ; gpuserve's own cpu and GPU metrics say
the same), QueueTime, WorkerThreadTime, WorkerLoadTime.
"""

from __future__ import annotations

import socket
from typing import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from gpuserve.server import torchserve_api as api
from gpuserve.torchserve import model as archives

HOST = socket.gethostname()


def _help(kind: str, unit: str) -> str:
    return f"Torchserve prometheus {kind} metric with unit: {unit}"


class _Counter(Metric):
    """A counter whose samples keep TorchServe's exact names (prometheus_client would add `_total`)."""

    exact = True  # (server/metrics.py's render then adds no `_total` either)

    def __init__(self, name: str, unit: str):
        super().__init__(name, _help("counter", unit), "counter")
        self.sample_name = name

    def add(self, labels: dict, value: float) -> None:
        self.add_sample(self.sample_name, labels, float(value))


def families(plane, name: Callable[[str], str]) -> Iterable[Metric]:
    if not api.torchserve_models(plane) and not api.COUNTS and not api.STATUSES:
        return
    requests = _Counter(name("ts_inference_requests_total"), "Count")
    latency = _Counter(name("ts_inference_latency_microseconds"), "Microseconds")
    queued = _Counter(name("ts_queue_latency_microseconds"), "Microseconds")
    for (model, version), (count, latency_us, queue_us) in sorted(api.COUNTS.items()):
        labels = {"model_name": model, "model_version": version, "hostname": HOST}
        requests.add(labels, count)
        if latency_us:  # as TorchServe: a model whose requests all failed has no latency sample
            latency.add(labels, latency_us)
            queued.add(labels, queue_us)
    yield from (requests, latency, queued)
    for key in ("Requests2XX", "Requests4XX", "Requests5XX"):
        counter = _Counter(name(key), "Count")
        if key in api.STATUSES:
            counter.add({"Level": "Host", "Hostname": HOST}, api.STATUSES[key])
        yield counter
    for key in ("HandlerTime", "PredictionTime"):
        gauge = GaugeMetricFamily(name(key), _help("gauge", "ms"), labels=["ModelName", "Level", "Hostname"])
        for model_name, times in sorted(archives.LAST_TIMES.items()):
            if key in times:
                gauge.add_metric([model_name, "Model", HOST], round(times[key], 2))
        yield gauge
