"""Per model-version statistics with Triton's field names, read by the statistics extension and metrics.

Written from instance threads and read from the event loop; every update is a handful of integer
additions under one lock, cheap next to a batch.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Tuple



FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")

# Seconds; chosen to resolve both sub-millisecond CPU answers and slow model calls.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# prometheus_client's default buckets, which MLServer's histograms keep.
PROMETHEUS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class Histogram:
    __slots__ = ("counts", "total", "count", "bounds")

    def __init__(self, bounds: Tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts: List[int] = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> List[Tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


# Triton's default summary quantiles, (quantile, allowed error) pairs
DEFAULT_QUANTILES = ((0.5, 0.05), (0.9, 0.01), (0.95, 0.001), (0.99, 0.001), (0.999, 0.001))


class LatencySummaries:
    """Whether models keep latency summaries (Triton's --metrics-config summary_latencies=true) and their
    quantiles. Process-wide, as Triton's metrics config is; off by default, so serving records none."""

    def __init__(self) -> None:
        self.on = False
        self.quantiles: Tuple[Tuple[float, float], ...] = DEFAULT_QUANTILES


SUMMARIES = LatencySummaries()


class FirstResponseTimes:
    """Whether models keep Triton's nv_inference_first_response_histogram_ms (--metrics-config
    histogram_latencies=true); off by default."""

    def __init__(self) -> None:
        self.on = False


FIRST_RESPONSE = FirstResponseTimes()


class Summary:
    """One Prometheus summary in microseconds, as Triton's: count and sum since start, quantiles over the
    last minute's observations (the latest WINDOW_KEEP of them, so a busy model costs bounded memory)."""

    WINDOW_S = 60.0
    WINDOW_KEEP = 4096
    __slots__ = ("count", "total", "window")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.window: Deque[Tuple[float, int]] = deque(maxlen=self.WINDOW_KEEP)

    def observe(self, us: int, times: int = 1, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        self.count += times
        self.total += us * times
        for _ in range(min(times, self.WINDOW_KEEP)):
            self.window.append((now, us))

    def quantiles(self, wanted, now: Optional[float] = None) -> List[Tuple[float, float]]:
        """(quantile, value) for each wanted quantile over the window; NaN where it is empty."""
        now = time.monotonic() if now is None else now
        values = sorted(us for at, us in list(self.window) if now - at <= self.WINDOW_S)
        if not values:
            return [(q, math.nan) for q in wanted]
        last = len(values) - 1
        return [(q, float(values[min(max(math.ceil(q * len(values)) - 1, 0), last)])) for q in wanted]


RESPONSE_KEYS = ("compute_infer", "compute_output", "success", "fail", "empty_response", "cancel")
SUMMARY_KEYS = ("request", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


class ModelStats:
    def __init__(self, name: str, version: str = ""):
        self.name = name
        self.version = version
        self.lock = threading.Lock()
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.cache_hit = Duration()
        self.cache_miss = Duration()
        self.batches: Dict[int, BatchStats] = {}
        # failed requests by Triton's reasons (nv_inference_request_failure{reason}): REJECTED (timed out in the
        # queue), CANCELED (the client went away), BACKEND (the model failed), OTHER
        self.fail_reasons: Dict[str, int] = dict.fromkeys(FAILURE_REASONS, 0)
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.request_seconds = Histogram()
        self.summaries: Optional[Dict[str, Summary]] = None  # made at the first observation once SUMMARIES.on
        # whole milliseconds from request to first response -> requests, once FIRST_RESPONSE.on: Triton's
        # histogram, whose buckets (a model's own in its config) are applied when scraped
        self.first_response_ms: Optional[Dict[int, int]] = None
        # Triton's per-response statistics, which a backend reports for each response of a decoupled request
        # (by its index in the request's responses): "0" -> compute_infer, compute_output, success, fail,
        # empty_response, cancel
        self.responses: Optional[Dict[str, Dict[str, Duration]]] = None

    def record_first_responses(self, durations_ns) -> None:
        """Requests' times to their first response (a no-op unless FIRST_RESPONSE.on)."""
        if not FIRST_RESPONSE.on:
            return
        with self.lock:
            for ns in durations_ns:
                self._first_response(ns)

    def record_first_response(self, ns: int) -> None:
        self.record_first_responses((ns,))

    def _first_response(self, ns: int) -> None:
        kept = self.first_response_ms
        if kept is None:
            kept = self.first_response_ms = {}
        ms = max(int(ns), 0) // 1_000_000
        kept[ms] = kept.get(ms, 0) + 1

    def _summarize(self, key: str, ns: int, times: int = 1) -> None:
        """Observe `ns` (as whole microseconds, as Triton) in the `key` summary; the caller holds the lock."""
        if self.summaries is None:
            self.summaries = {k: Summary() for k in SUMMARY_KEYS}
        self.summaries[key].observe(ns // 1000, times)

    def record_batch(self, size: int, jobs: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One executed batch of `size` rows from `jobs` requests; per-request durations are shared.
        Runs once a batch on the serving path: the Durations are added to in place, as `Duration.add` would,
        without its six calls."""
        last_ms = int(time.time() * 1000)
        with self.lock:
            self.execution_count += 1
            self.inference_count += size
            self.last_inference_ms = last_ms
            batch = self.batches.get(size)
            if batch is None:
                batch = self.batches[size] = BatchStats()
            batch.compute_input.count += 1
            batch.compute_input.ns += input_ns
            batch.compute_infer.count += 1
            batch.compute_infer.ns += infer_ns
            batch.compute_output.count += 1
            batch.compute_output.ns += output_ns
            self.compute_input.count += jobs
            self.compute_input.ns += input_ns * jobs
            self.compute_infer.count += jobs
            self.compute_infer.ns += infer_ns * jobs
            self.compute_output.count += jobs
            self.compute_output.ns += output_ns * jobs
            if SUMMARIES.on:
                for key, ns in (("compute_input", input_ns), ("compute_infer", infer_ns), ("compute_output", output_ns)):
                    self._summarize(key, ns, jobs)

    def record_alone(self, queue_ns: int, rows: int, input_ns: int, infer_ns: int, output_ns: int,
                     total_ns: int) -> None:
        """A request that ran alone through the engine and succeeded: record_queue([queue_ns]),
        record_batch(rows, 1, ...) and record_requests([total_ns]) under one lock, as one call (a lone client's
        every request runs so: batcher.py's _run_now)."""
        last_ms = int(time.time() * 1000)
        with self.lock:
            queue = self.queue
            queue.count += 1
            queue.ns += queue_ns
            self.execution_count += 1
            self.inference_count += rows
            self.last_inference_ms = last_ms
            batch = self.batches.get(rows)
            if batch is None:
                batch = self.batches[rows] = BatchStats()
            batch.compute_input.count += 1  # (spelled out, as in record_batch: this runs once a request)
            batch.compute_input.ns += input_ns
            batch.compute_infer.count += 1
            batch.compute_infer.ns += infer_ns
            batch.compute_output.count += 1
            batch.compute_output.ns += output_ns
            self.compute_input.count += 1
            self.compute_input.ns += input_ns
            self.compute_infer.count += 1
            self.compute_infer.ns += infer_ns
            self.compute_output.count += 1
            self.compute_output.ns += output_ns
            self.success.count += 1
            self.success.ns += total_ns
            self.request_seconds.observe(total_ns / 1e9)
            if SUMMARIES.on:
                for key, ns in (("queue", queue_ns), ("compute_input", input_ns), ("compute_infer", infer_ns),
                                ("compute_output", output_ns), ("request", total_ns)):
                    self._summarize(key, ns)

    def forget_padding(self, rows: int) -> None:
        """Rows a Direct sequence batch was padded with (Triton's null requests), just recorded with their
        batch: they count in its size, not as inferences, queue passes or requests' compute."""
        with self.lock:
            self.inference_count -= rows
            self.queue.count -= rows
            for duration in (self.compute_input, self.compute_infer, self.compute_output):
                duration.count -= rows

    def record_failed_execution(self) -> None:
        """An execution none of whose requests succeeded: Triton counts the execution, no inference."""
        with self.lock:
            self.execution_count += 1

    def record_unbatched(self, ns: int) -> None:
        """A request that ran alone outside the engine and succeeded in `ns`: as Triton counts it, it passed
        its (empty) queue, then its execution of one row took the whole time (record_queue([0]),
        record_request(True, ns), record_batch(1, 1, 0, ns, 0) under one lock)."""
        with self.lock:
            self.queue.count += 1
            self.success.add(ns)
            self.request_seconds.observe(ns / 1e9)
            self.execution_count += 1
            self.inference_count += 1
            self.last_inference_ms = int(time.time() * 1000)
            batch = self.batches.get(1)
            if batch is None:
                batch = self.batches[1] = BatchStats()
            batch.compute_input.count += 1
            batch.compute_infer.add(ns)
            batch.compute_output.count += 1
            self.compute_input.count += 1
            self.compute_infer.add(ns)
            self.compute_output.count += 1
            if FIRST_RESPONSE.on:
                self._first_response(ns)
            if SUMMARIES.on:
                for key, spent in (("queue", 0), ("request", ns), ("compute_input", 0), ("compute_infer", ns),
                                   ("compute_output", 0)):
                    self._summarize(key, spent)

    def record_cache_hit(self, ns: int) -> None:
        """A request answered from the response cache in `ns`: a success and a pass through the queue, as
        Triton 2.51 counts it (perf_analyzer finds the version to report by the queue count that moved, and
        reports nothing for a model whose every request hits), but neither an inference nor an execution."""
        with self.lock:
            self.queue.count += 1
            self.cache_hit.add(ns)
            self.success.add(ns)
            self.request_seconds.observe(ns / 1e9)
            if FIRST_RESPONSE.on:
                self._first_response(ns)
            if SUMMARIES.on:  # as Triton: its queue pass and the hit, no request summary for a cached model
                self._summarize("queue", 0)
                self._summarize("cache_hit", ns)

    def record_cache_miss(self, ns: int) -> None:
        """A request the cache did not hold: `ns` is its lookup plus the insertion of its answer."""
        with self.lock:
            self.cache_miss.add(ns)
            if SUMMARIES.on:
                self._summarize("cache_miss", ns)

    def record_queue(self, waits_ns) -> None:
        waits = waits_ns if type(waits_ns) is list else list(waits_ns)
        total = sum(waits)
        with self.lock:
            queue = self.queue
            queue.count += len(waits)
            queue.ns += total
            if SUMMARIES.on:
                for ns in waits:
                    self._summarize("queue", ns)

    def record_request(self, ok: bool, total_ns: int, reason: str = "BACKEND") -> None:
        with self.lock:
            (self.success if ok else self.fail).add(total_ns)
            if not ok:
                self.fail_reasons[reason] = self.fail_reasons.get(reason, 0) + 1
            elif SUMMARIES.on:  # as Triton: successes only
                self._summarize("request", total_ns)
            self.request_seconds.observe(total_ns / 1e9)

    def record_requests(self, ok_ns: List[int], failed_ns: List[int] = ()) -> None:
        """`record_request` for every request of a batch, under one lock."""
        hist = self.request_seconds
        counts, bisect_left = hist.counts, bisect.bisect_left
        with self.lock:
            for durations, outcome in ((ok_ns, self.success), (failed_ns, self.fail)):
                if not durations:
                    continue
                total = sum(durations)
                outcome.count += len(durations)
                outcome.ns += total
                if outcome is self.fail:
                    self.fail_reasons["BACKEND"] += len(durations)
                hist.total += total / 1e9
                hist.count += len(durations)
                for ns in durations:
                    counts[bisect_left(BUCKETS, ns / 1e9)] += 1
                if outcome is self.success and SUMMARIES.on:
                    for ns in durations:
                        self._summarize("request", ns)

    def record_response(self, index: int, start_ns: int, output_start_ns: int, end_ns: int,
                        outcome: str = "success") -> None:
        """One response's statistics as Triton's backends report them: `output_start_ns` 0 when it had no
        outputs (an empty response, or a failure before any); `outcome` success, fail or cancel."""
        if output_start_ns and not start_ns <= output_start_ns <= end_ns or not start_ns <= end_ns:
            raise ValueError("response start, compute output start and response end out of order")
        total = end_ns - start_ns
        with self.lock:
            if self.responses is None:
                self.responses = {}
            entry = self.responses.get(str(index))
            if entry is None:
                entry = self.responses[str(index)] = {key: Duration() for key in RESPONSE_KEYS}
            if outcome == "cancel":  # as Triton: the clean-up only, no compute
                entry["cancel"].add(total)
                return
            entry["compute_infer"].add((output_start_ns or end_ns) - start_ns)
            if output_start_ns and (outcome == "success" or end_ns > output_start_ns):
                entry["compute_output"].add(end_ns - output_start_ns)
            entry["fail" if outcome == "fail" else "success" if output_start_ns else "empty_response"].add(total)

    def as_dict(self) -> dict:
        """Triton's ModelStatistics JSON shape."""
        with self.lock:
            responses = {} if self.responses is None else {"response_stats": {
                index: {key: d.as_dict() for key, d in entry.items()}
                for index, entry in sorted(self.responses.items())}}  # as Triton: indexes ordered as text
            return {
                **responses,
                "name": self.name,
                "version": self.version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": self.success.as_dict(), "fail": self.fail.as_dict(), "queue": self.queue.as_dict(),
                    "compute_input": self.compute_input.as_dict(), "compute_infer": self.compute_infer.as_dict(),
                    "compute_output": self.compute_output.as_dict(), "cache_hit": self.cache_hit.as_dict(),
                    "cache_miss": self.cache_miss.as_dict(),
                },
                "batch_stats": [
                    {"batch_size": size, "compute_input": b.compute_input.as_dict(),
                     "compute_infer": b.compute_infer.as_dict(), "compute_output": b.compute_output.as_dict()}
                    for size, b in sorted(self.batches.items())
                ],
            }
