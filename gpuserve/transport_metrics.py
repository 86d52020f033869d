"""Request counts and duration histograms per REST endpoint and gRPC method, kept as plain integers.

The transports add to these inline (a dict lookup and a few integer additions per request); the
Prometheus collector turns them into metric families only when scraped, so the hot path never
touches prometheus_client.
"""

from __future__ import annotations

import threading
from typing import Dict, Tuple

from gpuserve.engine.stats import Histogram

class TransportMetrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rest: Dict[Tuple[str, str, str], Histogram] = {}
        self.grpc: Dict[Tuple[str, str], Histogram] = {}
        self.grpc_started: Dict[str, int] = {}  # calls begun per method (MLServer's grpc_server_started_total)
        self.rest_in_progress = 0
        self.grpc_in_progress = 0
        # Shown with the REST families: their name prefix (MLServer's metrics_rest_server_prefix) and each
        # endpoint's route template, the `path` label MLServer's dashboards group by (set by the REST app)
        self.rest_prefix = "rest_server"
        self.paths: Dict[str, str] = {}

    def observe_rest(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, str(status))
        histogram = self.rest.get(key)
        if histogram is None:
            with self.lock:
                histogram = self.rest.setdefault(key, Histogram())
        histogram.observe(seconds)

    def start_grpc(self, method: str) -> None:
        with self.lock:
            self.grpc_started[method] = self.grpc_started.get(method, 0) + 1

    def observe_grpc(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        histogram = self.grpc.get(key)
        if histogram is None:
            with self.lock:
                histogram = self.grpc.setdefault(key, Histogram())
        histogram.observe(seconds)
