"""OpenTelemetry export without the OpenTelemetry SDK: a batch span processor of our own and OTLP/HTTP JSON.

Why not the SDK: our spans are made after the fact from points in time the tracer already recorded (and
MLServer's server spans from a request's start and end), so the SDK's live-span machinery (context, locks,
attribute checks per span) would only add cost to the request path. Here the request path appends one
finished item to a deque; a daemon thread turns items into OTLP spans and sends them, in batches, as the
OpenTelemetry batch span processor does (Triton's bsp_* settings and OTEL_BSP_* variables mean the same):
at most `max_queue_size` items wait (more are dropped), a batch leaves every `schedule_delay_ms` or as soon
as `max_export_batch_size` items wait, and no request to the collector carries more spans than that.

Triton 2.51 posts OTLP/HTTP **JSON** (Content-Type application/json; its opentelemetry-cpp exporter does so
whatever OTEL_EXPORTER_OTLP_TRACES_PROTOCOL says), so `HttpJsonSender` does too: ids in hex, 64-bit numbers
as strings, enums as numbers. It needs nothing beyond the standard library and orjson.

A collector that is down or slow never touches serving: sending happens in the exporter's thread only, a
failed batch is dropped, and the failure is logged once until a batch gets through again.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import urllib.error
import urllib.request
from collections import deque
from typing import Any, Callable, Dict, List, Optional

import orjson

logger = logging.getLogger("gpuserve")

SERVER = 2  # SpanKind.SPAN_KIND_SERVER in OTLP's numbering
BSP_DEFAULTS = {"bsp_max_queue_size": 2048, "bsp_schedule_delay": 5000, "bsp_max_export_batch_size": 512}
BSP_VARIABLES = {"bsp_max_queue_size": "OTEL_BSP_MAX_QUEUE_SIZE", "bsp_schedule_delay": "OTEL_BSP_SCHEDULE_DELAY",
                 "bsp_max_export_batch_size": "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"}


def span_id() -> str:
    return secrets.token_hex(8)


def trace_id() -> str:
    return secrets.token_hex(16)


def attribute(key: str, value: Any) -> Dict[str, Any]:
    """One OTLP/JSON KeyValue; ints travel as strings, as the JSON mapping of int64 says."""
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def resource_pairs(text: str) -> Dict[str, str]:
    """`k=v,k2=v2` (OTEL_RESOURCE_ATTRIBUTES' form) as a dict; pieces without `=` are left out."""
    pairs = {}
    for piece in text.split(","):
        key, sep, value = piece.partition("=")
        if sep and key.strip():
            pairs[key.strip()] = value.strip()
    return pairs


def bsp_settings(given: Dict[str, Any]) -> Dict[str, int]:
    """The batch span processor's numbers: given (--trace-config opentelemetry,bsp_*=N), else OTEL_BSP_*,
    else the OpenTelemetry defaults Triton uses."""
    out = {}
    for key, default in BSP_DEFAULTS.items():
        value = given.get(key, os.environ.get(BSP_VARIABLES[key]))
        try:
            out[key] = int(value) if value is not None else default
        except ValueError:
            out[key] = default
    out["bsp_max_export_batch_size"] = max(1, min(out["bsp_max_export_batch_size"], out["bsp_max_queue_size"]))
    return out


class HttpJsonSender:
    """POSTs one OTLP ExportTraceServiceRequest as JSON to `url` (Triton's `opentelemetry,url`)."""

    def __init__(self, url: str, resource: Dict[str, str], scope: Dict[str, Any], timeout: float = 10.0):
        self.url = url if "://" in url else "http://" + url
        self.resource = {"attributes": [attribute(k, v) for k, v in resource.items()]}
        self.scope = scope
        self.timeout = timeout

    def __call__(self, spans: List[Dict[str, Any]]) -> None:
        body = orjson.dumps({"resourceSpans": [{"resource": self.resource,
                                                "scopeSpans": [{"scope": self.scope, "spans": spans}]}]})
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "gpuserve-otlp-exporter"})
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            answer.read()


class BatchExporter:
    """The batch span processor: `add(item)` from any thread (cheap, never blocks on the network);
    `spans_of(item)` makes an item's spans in the exporter's thread; `send(spans)` delivers one batch."""

    def __init__(self, spans_of: Callable[[Any], List[Any]], send: Callable[[List[Any]], None],
                 max_queue_size: int = 2048, schedule_delay_ms: int = 5000, max_export_batch_size: int = 512,
                 where: str = ""):
        self.spans_of = spans_of
        self.send = send
        self.max_queue_size = max(1, max_queue_size)
        self.delay = max(0, schedule_delay_ms) / 1000.0
        self.batch_size = max(1, min(max_export_batch_size, self.max_queue_size))
        self.where = where
        self.dropped = 0
        self._queue: deque = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="gpuserve-otlp-export", daemon=True)
        self._thread.start()

    def add(self, item: Any) -> None:
        if len(self._queue) >= self.max_queue_size or self._closed:
            self.dropped += 1  # as the batch span processor: a full queue drops, never waits
            return
        self._queue.append(item)
        if len(self._queue) >= self.batch_size:
            with self._wake:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._closed and len(self._queue) < self.batch_size:
                    self._wake.wait(self.delay)
                closing = self._closed
            self._drain()
            if closing:
                return

    def _drain(self) -> None:
        spans: List[Any] = []
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _Marker):  # flush: what came before it is sent first
                if spans:
                    self._deliver(spans)
                    spans = []
                item.done.set()
                continue
            try:
                spans.extend(self.spans_of(item))
            except Exception:  # a trace that cannot become spans is left out, never stops the exporter
                logger.exception("cannot make OpenTelemetry spans of a trace")
            while len(spans) >= self.batch_size:
                self._deliver(spans[:self.batch_size])
                spans = spans[self.batch_size:]
        if spans:
            self._deliver(spans)

    def _deliver(self, spans: List[Any]) -> None:
        try:
            self.send(spans)
        except Exception as exc:  # the collector is down or refuses: drop the batch, say so once
            self.dropped += len(spans)
            if not self._failing:
                self._failing = True
                logger.warning("cannot export OpenTelemetry spans to %s (%s); spans are dropped until it "
                               "answers again", self.where, exc)
            return
        if self._failing:
            self._failing = False
            logger.info("exporting OpenTelemetry spans to %s again", self.where)

    def flush(self, timeout: float = 5.0) -> None:
        """Send what waits now (tests; shutdown goes through close)."""
        done = threading.Event()
        self._queue.append(_Marker(done))
        with self._wake:
            self._wake.notify()
        done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Send what waits, then stop (at shutdown; a dead collector costs at most `timeout`)."""
        with self._wake:
            if self._closed:
                return
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)


class _Marker:
    """A queue item that makes no spans and tells `flush` its turn came."""

    def __init__(self, done: threading.Event):
        self.done = done


def exporter(spans_of: Callable[[Any], List[Any]], send: Callable[[List[Any]], None], bsp: Dict[str, int],
             where: str) -> BatchExporter:
    return BatchExporter(spans_of, send, bsp["bsp_max_queue_size"], bsp["bsp_schedule_delay"],
                         bsp["bsp_max_export_batch_size"], where)
