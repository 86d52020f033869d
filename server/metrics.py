"""Prometheus exposition: model, transport and GPU metrics under MLServer's and Triton's names.

Everything is collected at scrape time from counters the engine, the data plane and the transports
already keep, so serving requests costs no prometheus_client calls. Custom metrics that models log
(gpuserve.metrics) live in prometheus_client's default registry, and, for parallel workers, in its
multiprocess directory; both are appended to the same exposition.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
                                   SummaryMetricFamily)

from gpuserve import device_health
from gpuserve.dataplane import DataPlane
from gpuserve.engine.stats import DEFAULT_QUANTILES, FAILURE_REASONS, FIRST_RESPONSE, SUMMARIES
from gpuserve.engine.staging import pinned_bytes
from gpuserve import triton_metrics
from gpuserve.server.cpu_metrics import CpuSampler
from gpuserve.metrics import worker_metric_dirs
from gpuserve.namespacing import plain
from gpuserve.peer_merge import merge_expositions
from gpuserve.repository import DiskRepository
from gpuserve.server import torchserve_metrics
from gpuserve.server.nvml import GpuSampler

MODEL_LABELS = ["model", "version"]


class ExactCounter(Metric):
    """A counter whose samples keep their exact name: Triton's `nv_*` counters carry no `_total`."""

    def __init__(self, name: str, documentation: str, labels):
        super().__init__(name, documentation, "counter")
        self.sample_name = name
        self.label_names = list(labels)

    def add_metric(self, labels, value) -> None:
        self.add_sample(self.sample_name, dict(zip(self.label_names, labels)), value)


@dataclass(frozen=True)
class MetricsConfig:
    """Triton's --metrics-config settings: latency counters (default on), summaries and the first-response
    histogram (default off), and the summaries' quantiles."""
    counters: bool = True
    summaries: bool = False
    histograms: bool = False
    quantiles: Tuple[Tuple[float, float], ...] = DEFAULT_QUANTILES


def _leading_float(text: str) -> float:
    """As Triton reads a number (std::stod): its longest leading number, so '0.0.1' is 0.0."""
    found = re.match(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text)
    if not found:
        raise ValueError(text)
    return float(found.group(0))


def metrics_config(settings: Optional[Dict[str, str]]) -> MetricsConfig:
    """The settings Triton reads from --metrics-config (others are taken and ignored, as Triton does); a
    malformed summary_quantiles pair is logged and skipped, as Triton skips it."""
    settings = settings or {}
    quantiles = []
    for pair in str(settings.get("summary_quantiles", "")).split(",") if settings.get("summary_quantiles") else ():
        quantile, colon, error = pair.partition(":")
        try:
            if not colon:
                raise ValueError("no ':' delimiter found")
            quantiles.append((_leading_float(quantile), _leading_float(error)))
        except ValueError as exc:
            logging.getLogger("gpuserve").error("Invalid option: [%s]. Expected format is <quantile>:<error> (%s)",
                                                pair, exc)
    return MetricsConfig(counters=settings.get("counter_latencies") != "false",
                         summaries=settings.get("summary_latencies") == "true",
                         histograms=settings.get("histogram_latencies") == "true",
                         quantiles=tuple(quantiles) or DEFAULT_QUANTILES)


FIRST_RESPONSE_HISTOGRAM = "nv_inference_first_response_histogram_ms"
FIRST_RESPONSE_BUCKETS = (100.0, 500.0, 2000.0, 5000.0)  # Triton's default, in milliseconds


def _listed(value) -> list:
    """The text-format parser gives a lone repeated entry as itself."""
    return [] if value is None else value if isinstance(value, list) else [value]


_written_metrics: Dict[Tuple[str, int], Optional[dict]] = {}


def _model_metrics(model) -> Optional[dict]:
    """The model_metrics of the config.pbtxt beside the model's file, read once per version of that file (the
    served config keeps only the fields of Triton 2.51's ModelConfig)."""
    uri = getattr(model, "uri", None)
    if not isinstance(uri, str) or not uri:
        return None
    from pathlib import Path

    for folder in (Path(uri), *Path(uri).parents[:2]):
        path = folder / "config.pbtxt"
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except OSError:
            continue
        if key not in _written_metrics:
            from gpuserve.triton_config import read_config

            try:
                _written_metrics[key] = read_config(folder).get("model_metrics")
            except Exception:  # a config that no longer reads: the model keeps the default buckets
                _written_metrics[key] = None
        return _written_metrics[key]
    return None


def histogram_buckets(model) -> Tuple[float, ...]:
    """A model's first-response buckets: its config's model_metrics metric_control for the family (Triton's
    per-model override), else Triton's default."""
    metrics = _model_metrics(model)
    for control in _listed((metrics or {}).get("metric_control")) if isinstance(metrics, dict) else ():
        family = ((control or {}).get("metric_identifier") or {}).get("family")
        buckets = _listed(((control or {}).get("histogram_options") or {}).get("buckets"))
        if family == FIRST_RESPONSE_HISTOGRAM and buckets:
            return tuple(sorted(float(b) for b in buckets))
    return FIRST_RESPONSE_BUCKETS


# Triton's summary families: stats key -> name
SUMMARY_NAMES = {"request": "nv_inference_request_summary_us", "queue": "nv_inference_queue_summary_us",
                 "compute_input": "nv_inference_compute_input_summary_us",
                 "compute_infer": "nv_inference_compute_infer_summary_us",
                 "compute_output": "nv_inference_compute_output_summary_us",
                 "cache_hit": "nv_cache_hit_summary_per_model", "cache_miss": "nv_cache_miss_summary_per_model"}


class ServerCollector:
    def __init__(self, plane: DataPlane, prefix: str = "", gpus: Optional[GpuSampler] = None,
                 config: MetricsConfig = MetricsConfig(), cpu: bool = True):
        self.plane = plane
        self.prefix = prefix
        self.gpus = gpus
        self.cpu = CpuSampler() if cpu else None  # None: Triton's --allow-cpu-metrics=false
        self.config = config

    def _name(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def collect(self) -> Iterable:
        yield from self._models()
        yield from self._transports()
        yield from self._gpus()
        yield from self._lost_devices()
        yield from self._response_cache()
        yield from self._cpu()
        yield from self._pinned()
        yield from torchserve_metrics.families(self.plane, self._name)  # only while archives are served

    def _pinned(self):
        """Triton's pinned memory pool gauges: page-locked staging bytes held and leased (0 without a GPU, as
        Triton reports them there)."""
        held, leased = pinned_bytes()
        total = GaugeMetricFamily(self._name("nv_pinned_memory_pool_total_bytes"),
                                  "Pinned memory pool total memory size, in bytes")
        total.add_metric([], held)
        used = GaugeMetricFamily(self._name("nv_pinned_memory_pool_used_bytes"),
                                 "Pinned memory pool used memory size, in bytes")
        used.add_metric([], leased)
        yield from (total, used)

    def _summaries(self, cached: Dict[str, bool]):
        """Triton's latency summaries (--metrics-config summary_latencies=true): per model, count and sum since
        start and the configured quantiles over the last minute; a model using the response cache has cache
        hit and miss summaries and, as in Triton, no request summary."""
        n = self._name
        wanted = [q for q, _ in self.config.quantiles]
        families = {}
        for key, name in SUMMARY_NAMES.items():
            family = Metric(n(name), f"Summary of {key.replace('_', ' ')} duration in microseconds", "summary")
            family.exact = True
            families[key] = family
        for entry in self.plane.statistics(unversioned="")["model_stats"]:
            model = self.plane.repository.get_model(entry["name"], entry["version"] or None)
            labels = self._triton_labels(entry, model)
            kept = (self.plane.stats_of(model).summaries if model is not None else None) or {}
            is_cached = cached.get(entry["name"], False)
            for key, family in families.items():
                if (key == "request" and is_cached) or (key.startswith("cache") and not is_cached):
                    continue
                summary = kept.get(key)
                family.add_sample(family.name + "_count", labels, summary.count if summary else 0)
                family.add_sample(family.name + "_sum", labels, summary.total if summary else 0)
                values = summary.quantiles(wanted) if summary else [(q, float("nan")) for q in wanted]
                for quantile, value in values:
                    family.add_sample(family.name, {**labels, "quantile": repr(quantile)}, value)
        yield from (family for family in families.values() if family.samples)

    def _cpu(self):
        """Triton's host gauges (server/cpu_metrics.py)."""
        if self.cpu is None:
            return
        n = self._name
        utilization = self.cpu.utilization()
        if utilization is not None:
            family = GaugeMetricFamily(n("nv_cpu_utilization"), "CPU utilization rate [0.0 - 1.0]")
            family.add_metric([], utilization)
            yield family
        memory = self.cpu.memory()
        if memory is not None:
            total = GaugeMetricFamily(n("nv_cpu_memory_total_bytes"), "CPU total memory (RAM), in bytes")
            total.add_metric([], memory[0])
            used = GaugeMetricFamily(n("nv_cpu_memory_used_bytes"), "CPU used memory (RAM), in bytes")
            used.add_metric([], memory[1])
            yield from (total, used)

    def _response_cache(self):
        """Triton's server-wide cache gauges (its per-model counters are in `_models`)."""
        cache = self.plane.response_cache
        if cache is None:
            return
        n = self._name
        util = GaugeMetricFamily(n("nv_cache_util"), "Cache utilization [0.0 - 1.0]")
        util.add_metric([], cache.bytes / cache.max_bytes if cache.max_bytes else 0.0)
        entries = GaugeMetricFamily(n("nv_cache_num_entries"), "Number of responses stored in response cache")
        entries.add_metric([], len(cache))
        evictions = GaugeMetricFamily(n("nv_cache_num_evictions"), "Number of cache evictions in response cache")
        evictions.add_metric([], cache.evictions)
        yield from (util, entries, evictions)
        # the rest of Triton's local cache gauges: its own lookups (a hit or a miss each) and their times
        for name, value, help_text in (
                ("nv_cache_num_hits", cache.hits, "Number of cache hits in response cache"),
                ("nv_cache_num_misses", cache.misses, "Number of cache misses in response cache"),
                ("nv_cache_num_lookups", cache.hits + cache.misses, "Number of cache lookups in response cache"),
                ("nv_cache_lookup_duration", cache.lookup_ns // 1000,
                 "Total cache lookup duration (hit and miss), in microseconds"),
                ("nv_cache_insertion_duration", cache.insertion_ns // 1000,
                 "Total cache insertion duration, in microseconds")):
            gauge = GaugeMetricFamily(n(name), help_text)
            gauge.add_metric([], value)
            yield gauge

    def _lost_devices(self):
        """1 for each device that reported an error no process recovers from (gpuserve/device_health.py):
        what to alert on, beside the liveness probe that restarts the server."""
        lost = device_health.lost()
        if lost:
            family = GaugeMetricFamily(self._name("gpuserve_device_lost"),
                                       "1 once a device reported an unrecoverable (sticky) CUDA error",
                                       labels=["device"])
            for device in sorted(lost):
                family.add_metric([device], 1)
            yield family

    @staticmethod
    def _triton_labels(entry, model) -> Dict[str, str]:
        """A model's labels on Triton's per-model metrics; with --model-namespacing=true, as Triton 2.51:
        the model's own name and its repository folder as `namespace` (a name two folders hold is two)."""
        if not DiskRepository.namespacing:
            return {"model": entry["name"], "version": entry["version"]}
        folder = getattr(getattr(model, "settings", None), "folder", None)
        return {"model": plain(entry["name"]), "namespace": str(Path(folder).parent) if folder else "",
                "version": entry["version"]}

    def _models(self):
        n = self._name
        labelled = ["model", "namespace", "version"] if DiskRepository.namespacing else MODEL_LABELS
        success = ExactCounter(n("nv_inference_request_success"), "Successful inference requests (Triton)",
                                      labels=labelled)
        failure = ExactCounter(n("nv_inference_request_failure"), "Failed inference requests (Triton)",
                               labels=[*labelled[:-1], "reason", "version"])
        # MLServer's own request metrics, labelled {model, version} as MLServer 1.5 and 1.7.1 label them
        ml_success = CounterMetricFamily(n("model_infer_request_success"),
                                         "Successful inference requests (MLServer)", labels=MODEL_LABELS)
        ml_failure = CounterMetricFamily(n("model_infer_request_failure"),
                                         "Failed inference requests (MLServer)", labels=MODEL_LABELS)
        ml_duration = SummaryMetricFamily(n("model_infer_request_duration"), "Inference request duration (MLServer)",
                                          labels=MODEL_LABELS)
        count = ExactCounter(n("nv_inference_count"), "Inferences performed (rows)", labels=labelled)
        executions = ExactCounter(n("nv_inference_exec_count"), "Batches executed", labels=labelled)
        durations = {key: ExactCounter(n(f"nv_inference_{key}_duration_us"),
                                              f"Cumulative {key.replace('_', ' ')} time in microseconds",
                                              labels=labelled)
                     for key in ("request", "queue", "compute_input", "compute_infer", "compute_output")}
        cache = {"hits": ExactCounter(n("nv_cache_num_hits_per_model"), "Response cache hits", labels=labelled),
                 "misses": ExactCounter(n("nv_cache_num_misses_per_model"), "Response cache misses (kept or not)",
                                        labels=labelled),
                 "hit_us": ExactCounter(n("nv_cache_hit_duration_per_model"),
                                        "Cumulative time answering from the response cache in microseconds",
                                        labels=labelled),
                 "miss_us": ExactCounter(n("nv_cache_miss_duration_per_model"),
                                         "Cumulative response cache lookup and insertion time on misses in microseconds",
                                         labels=labelled)}
        latency = HistogramMetricFamily(n("model_infer_request_duration_seconds"),
                                        "Inference request duration per model", labels=MODEL_LABELS)
        batch_size = HistogramMetricFamily(n("gpuserve_batch_size"), "Rows per executed batch", labels=MODEL_LABELS)
        # MLServer's two queue histograms: its names, help texts and labels (no labels on the parallel one)
        queue = HistogramMetricFamily(n("batch_request_queue"), "counter of request queue batch size",
                                      labels=["model_name", "model_version"])
        pending = GaugeMetricFamily(n("nv_inference_pending_request_count"), "Requests queued, not yet running",
                                    labels=labelled)
        cached: Dict[str, bool] = {}
        for entry in self.plane.statistics(unversioned="")["model_stats"]:
            labels = [entry["name"], entry["version"]]
            stats = entry["inference_stats"]
            model = self.plane.repository.get_model(entry["name"], entry["version"] or None)
            triton = list(self._triton_labels(entry, model).values())
            success.add_metric(triton, stats["success"]["count"])
            reasons = dict(self.plane.stats_of(model).fail_reasons) if model is not None else \
                {**dict.fromkeys(FAILURE_REASONS, 0), "BACKEND": stats["fail"]["count"]}
            for reason, failed in reasons.items():  # Triton's four, each present
                failure.add_metric([*triton[:-1], reason, entry["version"]], failed)
            # MLServer labels an unversioned model's requests version="None" (str of its missing version)
            ml_labels = labels if entry["version"] or not getattr(model, "settings_metadata", False) \
                else [entry["name"], "None"]
            ml_success.add_metric(ml_labels, stats["success"]["count"])
            ml_failure.add_metric(ml_labels, stats["fail"]["count"])
            count.add_metric(triton, entry["inference_count"])
            executions.add_metric(triton, entry["execution_count"])
            # whole microseconds, as Triton counts them; the request time of successes only
            durations["request"].add_metric(triton, stats["success"]["ns"] // 1000)
            for key in ("queue", "compute_input", "compute_infer", "compute_output"):
                durations[key].add_metric(triton, stats[key]["ns"] // 1000)
            cached[entry["name"]] = is_cached = self._uses_cache(model)
            if is_cached:  # as Triton: only for models that use the cache
                cache["hits"].add_metric(triton, stats["cache_hit"]["count"])
                cache["misses"].add_metric(triton, stats["cache_miss"]["count"])
                cache["hit_us"].add_metric(triton, stats["cache_hit"]["ns"] // 1000)
                cache["miss_us"].add_metric(triton, stats["cache_miss"]["ns"] // 1000)
            if model is not None:
                histogram = self.plane.stats_of(model).request_seconds
                latency.add_metric(labels, histogram.cumulative(), histogram.total)
                ml_duration.add_metric(ml_labels, histogram.count, histogram.total)
            sizes, running, rows_total = [], 0, 0
            batches = sorted((b["batch_size"], b["compute_infer"]["count"]) for b in entry["batch_stats"])
            for size, times in batches:
                running += times
                rows_total += size * times
                sizes.append((repr(float(size)), running))
            sizes.append(("+Inf", running))
            batch_size.add_metric(labels, sizes, rows_total)
            depth = _pending(model)
            adaptive = getattr(model, "_adaptive_batcher", None)
            if adaptive is not None:
                depth += len(adaptive.queue)
                sizes = adaptive.queue_sizes
                queue.add_metric(labels, sizes.cumulative(), sizes.total)
            pending.add_metric(triton, depth)
        # Triton's latency counters, unless --metrics-config counter_latencies=false
        latencies = [*durations.values(), *(c for c in cache.values() if c.samples)] if self.config.counters else []
        yield from (success, failure, ml_success, ml_failure, ml_duration, count, executions, *latencies,
                    latency, batch_size, *([queue] if queue.samples else []), pending)
        parallel = sys.modules.get("gpuserve.parallel")  # imported once a model has parallel workers
        if parallel is not None and parallel.dispatched is not None:
            family = HistogramMetricFamily(n("parallel_request_queue"), "counter of request queue size for workers")
            family.add_metric([], parallel.dispatched.cumulative(), parallel.dispatched.total)
            yield family
        if self.config.summaries:
            yield from self._summaries(cached)
        if self.config.histograms:
            yield from self._first_responses()

    def _first_responses(self):
        """Triton's nv_inference_first_response_histogram_ms (--metrics-config histogram_latencies=true): per
        model, whole milliseconds from each request to its first response, in the model's buckets."""
        family = Metric(self._name(FIRST_RESPONSE_HISTOGRAM), "Duration from request to first response in "
                        "milliseconds", "histogram")
        family.exact = True
        name = family.name
        for entry in self.plane.statistics(unversioned="")["model_stats"]:
            model = self.plane.repository.get_model(entry["name"], entry["version"] or None)
            labels = self._triton_labels(entry, model)
            kept = (self.plane.stats_of(model).first_response_ms if model is not None else None) or {}
            times = sorted(kept.items())
            count, total = sum(n for _, n in times), sum(ms * n for ms, n in times)
            family.add_sample(name + "_count", labels, count)
            family.add_sample(name + "_sum", labels, total)
            running, index = 0, 0
            for bound in histogram_buckets(model):
                while index < len(times) and times[index][0] <= bound:
                    running += times[index][1]
                    index += 1
                family.add_sample(name + "_bucket", {**labels, "le": _bound(bound)}, running)
            family.add_sample(name + "_bucket", {**labels, "le": "+Inf"}, count)
        if family.samples:
            yield family

    def _uses_cache(self, model) -> bool:
        cache = self.plane.response_cache
        if model is None or cache is None:
            return False
        from gpuserve import response_cache

        return bool(response_cache.enabled_for(model, cache.mlserver))

    def _transports(self):
        n = self._name
        metrics = self.plane.transport_metrics
        rest = metrics.rest_prefix
        rest_count = CounterMetricFamily(n(f"{rest}_requests"), "REST requests by endpoint, method and status",
                                         labels=["endpoint", "method", "status_code", "path"])
        rest_time = HistogramMetricFamily(n(f"{rest}_request_duration_seconds"), "REST request duration",
                                          labels=["endpoint", "method", "status_code", "path"])
        for (endpoint, method, status), histogram in sorted(metrics.rest.items()):
            labels = [endpoint, method, status, metrics.paths.get(endpoint, "")]
            rest_count.add_metric(labels, histogram.count)
            rest_time.add_metric(labels, histogram.cumulative(), histogram.total)
        grpc_count = CounterMetricFamily(n("grpc_server_handled"), "gRPC calls by method and status code",
                                         labels=["grpc_method", "grpc_code"])
        grpc_time = HistogramMetricFamily(n("grpc_server_handling_seconds"), "gRPC call duration",
                                          labels=["grpc_method", "grpc_code"])
        for (method, code), histogram in sorted(metrics.grpc.items()):
            grpc_count.add_metric([method, code], histogram.count)
            grpc_time.add_metric([method, code], histogram.cumulative(), histogram.total)
        grpc_started = CounterMetricFamily(n("grpc_server_started"), "gRPC calls begun by method",
                                           labels=["grpc_method"])
        for method, count in sorted(metrics.grpc_started.items()):
            grpc_started.add_metric([method], count)
        in_progress = GaugeMetricFamily(n(f"{rest}_requests_in_progress"), "REST requests being handled")
        in_progress.add_metric([], metrics.rest_in_progress)
        yield from (rest_count, rest_time, grpc_count, grpc_time, grpc_started, in_progress)

    def _gpus(self):
        if self.gpus is None or not self.gpus.available:
            return
        n = self._name
        families = {
            "utilization": GaugeMetricFamily(n("nv_gpu_utilization"), "GPU utilization (0.0-1.0)", labels=["gpu_uuid"]),
            "memory_total_bytes": GaugeMetricFamily(n("nv_gpu_memory_total_bytes"), "GPU memory total",
                                                    labels=["gpu_uuid"]),
            "memory_used_bytes": GaugeMetricFamily(n("nv_gpu_memory_used_bytes"), "GPU memory used",
                                                   labels=["gpu_uuid"]),
            "power_watts": GaugeMetricFamily(n("nv_gpu_power_usage"), "GPU power draw in watts", labels=["gpu_uuid"]),
            "power_limit_watts": GaugeMetricFamily(n("nv_gpu_power_limit"), "GPU power limit in watts",
                                                   labels=["gpu_uuid"]),
            "energy_joules": ExactCounter(n("nv_energy_consumption"), "GPU energy since driver load (joules)",
                                                 labels=["gpu_uuid"]),
            "temperature_celsius": GaugeMetricFamily(n("nv_gpu_temperature_celsius"), "GPU temperature",
                                                     labels=["gpu_uuid"]),
        }
        for sample in self.gpus.samples:
            for key, family in families.items():
                if key in sample:
                    family.add_metric([sample["gpu_uuid"]], sample[key])
        yield from families.values()


def _pending(model) -> int:
    """Requests not yet begun, as Triton counts them: in the queue, held while a batch grows, staged behind a
    busy instance, or waiting for their sequence's previous request."""
    schedulers = getattr(model, "schedulers", None) or [getattr(model, "scheduler", None)]
    depth = sum(s.queue.pending() for s in schedulers if s is not None and getattr(s, "queue", None) is not None)
    router = getattr(model, "sequences", None)
    router = getattr(router, "router", router)
    return depth + (router.waiting() if hasattr(router, "waiting") else 0)


def _bound(value: float) -> str:
    """A bucket bound as Triton prints it: `1`, `2.5`."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(metrics: Iterable[Metric]) -> bytes:
    """Prometheus text format 0.0.4 for our families, keeping Triton's exact counter names."""
    from prometheus_client.utils import floatToGoString

    lines = []
    for metric in metrics:
        name = metric.name
        exact = isinstance(metric, ExactCounter) or getattr(metric, "exact", False)
        if metric.type == "counter" and not exact:
            name += "_total"
        lines.append(f"# HELP {name} {metric.documentation}")
        lines.append(f"# TYPE {name} {metric.type}")
        for sample in metric.samples:
            labels = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sample.labels.items())
            value = float(sample.value)
            # Whole numbers print as integers, as Triton prints them (`nv_gpu_memory_total_bytes{...}
            # 150754820096`): perf_analyzer's metric regex reads digits and one optional fraction only, so
            # Go's `1.50754820096e+11` would read as 1 byte.
            value = str(int(value)) if value.is_integer() and abs(value) < 2 ** 63 else floatToGoString(value)
            lines.append(f"{sample.name}{{{labels}}} {value}" if labels else f"{sample.name} {value}")
    return ("\n".join(lines) + "\n").encode()


class _Families:
    """Ready families, in the shape generate_latest reads (a registry's `collect`)."""

    def __init__(self, families: List[Metric]):
        self.families = families

    def collect(self) -> List[Metric]:
        return self.families


class Exposition:
    """One server's scrape: its own collector, then the default registry (process metrics and custom
    metrics), then parallel workers' custom metrics from the multiprocess directory."""

    def __init__(self, plane: DataPlane, prefix: str = "", gpus: Optional[GpuSampler] = None,
                 config: Optional[Dict[str, str]] = None, cpu: bool = True):
        """`config`: Triton's --metrics-config settings; summaries, when asked for, are kept from now on.
        `gpus` None or `cpu` false: no GPU or CPU gauges (Triton's --allow-gpu-metrics / --allow-cpu-metrics)."""
        self.config = metrics_config(config)
        SUMMARIES.quantiles, SUMMARIES.on = self.config.quantiles, self.config.summaries
        FIRST_RESPONSE.on = self.config.histograms
        self.collector = ServerCollector(plane, prefix, gpus, self.config, cpu)

    def render(self) -> bytes:
        own = render(self.collector.collect()) + render(triton_metrics.families())
        directories = [d for d in sorted(worker_metric_dirs) if os.path.isdir(d)]
        if not directories:
            return own + generate_latest(REGISTRY)
        from prometheus_client import multiprocess

        # The process's own families and one collector per worker pool (a directory each), merged by name:
        # models in process and in workers may log the same metric, and the text format allows one HELP/TYPE
        # per name.
        merged: Dict[str, Metric] = {}
        registries = [REGISTRY]
        for directory in directories:
            workers = CollectorRegistry()
            multiprocess.MultiProcessCollector(workers, path=directory)
            registries.append(workers)
        for registry in registries:
            for family in registry.collect():
                kept = merged.get(family.name)
                if kept is None:
                    merged[family.name] = family
                else:
                    kept.samples.extend(family.samples)
        return own + generate_latest(_Families(list(merged.values())))

    async def render_everywhere(self) -> bytes:
        """The scrape as a client sees it: with workers, every worker's exposition merged (peer_merge.py)."""
        own = self.render()
        peers = self.collector.plane.peers
        if peers is None:
            return own
        others = await peers.gather("metrics", {})
        return merge_expositions([own.decode(), *others]).encode()

    async def asgi(self, scope, receive, send) -> None:
        """A bare ASGI app for the metrics port: every GET answers the exposition."""
        if scope["type"] != "http":
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 405, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"method not allowed"})
            return
        body = await self.render_everywhere()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())]})
        await send({"type": "http.response.body", "body": body})

