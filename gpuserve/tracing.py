"""Triton's request traces ("triton" trace mode), written to the trace file as tritonserver writes them.

Why this shape: users read these files with Triton's own tools (qa/common/trace_summary.py, jq), so
each trace is a run of small JSON objects in one JSON array, exactly as tritonserver 2.51 writes it:
`{"id":N,"model_name":..,"model_version":V[,"request_id":..][,"parent_id":P]}`, then one
`{"id":N,"timestamps":[{"name":..,"ns":T}]}` per point in time (CLOCK_MONOTONIC nanoseconds, as
Triton's steady clock) and, at the TENSORS level, `{"id":N,"activity":"TENSOR_QUEUE_INPUT",..}`.
A traced request's ensemble steps (and BLS requests made with `trace=request.trace()`) are traces of
their own with `parent_id`, written together with their root trace as one sample.

Sampling follows the settings in force for the request's model (gpuserve/runtime_settings.py): every
`trace_rate`-th request is traced while `trace_count` allows (-1: no limit). A settings change starts
new counters; the traces the old settings collected are written when their last one ends. Traces are
kept in memory and written when `log_frequency` of them are collected (to `<trace_file>.<k>`), when
`trace_count` is used up (likewise), or else at shutdown (to `<trace_file>` itself when
log_frequency is 0, else to the next `.<k>`).

In the "opentelemetry" mode the same points in time become Triton's spans instead (gpuserve/otel_triton.py):
a sampled root trace, once it ends, is handed whole to the batch exporter (gpuserve/otlp.py), which turns
it into spans and posts them from its own thread. A request carrying a W3C `traceparent` is traced whatever
the rate and count say, as in Triton, and its spans join the caller's trace.

Speed: with every level OFF, `Tracer.on` and engine/job.py's `TRACING.on` are False; the transports
test the first, the data plane `request.trace`, the engine the second, once per request, and do nothing else.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Dict, List, Optional

import numpy as np

from gpuserve.engine.job import TRACING

logger = logging.getLogger("gpuserve")
CURRENT = TRACING.current  # the trace of the request a task works on, for the engine's jobs

_HOLDS = threading.Lock()  # a trace's holds and its end, taken from the loop and from instance threads

_DTYPES = {"b": "BOOL", "u1": "UINT8", "u2": "UINT16", "u4": "UINT32", "u8": "UINT64", "i1": "INT8",
           "i2": "INT16", "i4": "INT32", "i8": "INT64", "f2": "FP16", "f4": "FP32", "f8": "FP64"}


def _json_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tensor_text(array: Any, datatype: Optional[str] = None) -> str:
    """`"data":"..","shape":"..","dtype":".."` of a tensor as Triton's trace writes them."""
    array = np.asarray(array)
    if datatype is None:
        datatype = "BYTES" if array.dtype.kind in "OSU" else _DTYPES.get(
            array.dtype.str[1:] if array.dtype.kind != "b" else "b", array.dtype.name.upper())
    flat = array.reshape(-1)
    if array.dtype.kind in "OSU":  # each element in double quotes, as Triton writes them
        values = ['"' + (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)) + '"'
                  for v in flat.tolist()]
    elif array.dtype.kind == "b":
        values = ["1" if v else "0" for v in flat.tolist()]
    elif array.dtype.kind == "f":
        values = [format(v, "g") for v in flat.tolist()]
    else:
        values = [str(v) for v in flat.tolist()]
    data = ",".join(values)
    return (f'"data":{_json_string(data)},"shape":"{",".join(str(d) for d in array.shape)}",'
            f'"dtype":"{datatype}"')


class TraceFile:
    """One trace file name: the file itself, opened at its first write and closed with `]` at the end,
    and its indexed siblings `<name>.<k>`, each written whole."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._stream = None
        self._index = itertools.count()
        self._closed = False

    def save(self, traces: List[str], indexed: bool) -> None:
        text = ",".join(traces)
        if self._closed:  # a trace that ends after shutdown wrote the files
            return
        try:
            if indexed:
                with open(f"{self.path}.{next(self._index)}", "w") as out:
                    out.write("[" + text + "]")
                return
            with self._lock:
                if self._stream is None:
                    self._stream = open(self.path, "w")
                    self._stream.write("[" + text)
                else:
                    self._stream.write("," + text)
                self._stream.flush()
        except OSError as exc:  # a trace that cannot be written never fails the request it traced
            logger.error("cannot write trace file %s: %s", self.path, exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._stream is not None:
                try:
                    self._stream.write("]")
                    self._stream.close()
                except OSError as exc:
                    logger.error("cannot write trace file %s: %s", self.path, exc)
                self._stream = None


class TraceSetting:
    """The trace settings in force for some models, with their counters and collected traces."""

    def __init__(self, view: Dict[str, Any], file: Optional[TraceFile], otel: Any = None):
        levels = view["trace_level"]
        self.otel = otel  # the opentelemetry mode's exporter (gpuserve/otlp.py): spans, never a file
        self.timestamps = "TIMESTAMPS" in levels or (otel is not None and "TENSORS" in levels)
        self.tensors = "TENSORS" in levels and otel is None  # tensors have no place in Triton's spans
        self.rate = int(view["trace_rate"])
        self.count = int(view["trace_count"])
        self.log_frequency = int(view["log_frequency"])
        self.file = file
        self.on = (self.timestamps or self.tensors) and (file is not None or otel is not None)
        self._lock = threading.Lock()
        self._seen = 0  # requests counted towards the rate
        self._sampled = 0
        self._collected = 0
        self._pending: List[str] = []
        self._retired = False

    def sample(self) -> bool:
        if not self.on or self.rate <= 0:
            return False
        with self._lock:
            if self.count == 0 or self._retired:
                return False
            self._seen += 1
            if self._seen % self.rate:
                return False
            if self.count > 0:
                self.count -= 1
            self._sampled += 1
            return True

    def forced(self) -> bool:
        """A request that carries an OpenTelemetry context is traced whatever the rate and count say (Triton
        24.01 on); nothing is traced while the level is OFF."""
        return self.on and self.otel is not None and not self._retired

    def collect(self, text: Optional[str]) -> None:
        """A sampled trace ended (`text`: its objects; None: nothing worth writing)."""
        with self._lock:
            self._collected += 1
            if text:
                self._pending.append(text)
            out = None
            indexed = True
            if self._pending and ((self.log_frequency and len(self._pending) >= self.log_frequency)
                                  or (self.count == 0 and self._collected == self._sampled)):
                out, self._pending = self._pending, []
            elif self._retired and self._collected == self._sampled and self._pending:
                out, self._pending, indexed = self._pending, [], bool(self.log_frequency)
        if out:
            self.file.save(out, indexed)

    def retire(self, final: bool = False) -> None:
        """No more samples; what was collected is written once every sampled trace has ended (`final`,
        at shutdown: now, so a trace that never ended, its client gone, does not hold back the others)."""
        with self._lock:
            self._retired = True
            out = None
            if (final or self._collected == self._sampled) and self._pending:
                out, self._pending = self._pending, []
        if out:
            self.file.save(out, bool(self.log_frequency))


class Trace:
    """One traced request (or ensemble step, or BLS request); children write through their root."""

    __slots__ = ("id", "setting", "tracer", "parent", "root", "model_name", "model_version", "request_id",
                 "events", "tensors", "children", "started", "holds", "ending", "context")

    def __init__(self, tracer: "Tracer", setting: TraceSetting, parent: Optional["Trace"] = None):
        self.tracer = tracer
        self.setting = setting
        self.id = tracer.next_id()
        self.parent = parent
        self.root = self if parent is None else parent.root
        self.model_name: Optional[str] = None
        self.model_version = 1
        self.request_id: Optional[str] = None
        self.events: List[tuple] = []  # (name, CLOCK_MONOTONIC ns)
        self.tensors: List[str] = []
        self.children: List[Any] = []  # the descendants' trace texts, or (opentelemetry) the Traces themselves
        self.context: Optional[tuple] = None  # (trace id, span id) of a caller's W3C traceparent
        self.started = False  # REQUEST_START reached: the trace is written
        self.holds = 0  # executes under way that will still stamp this trace (engine/instance.py)
        self.ending = False  # end() came while held: the last release ends it

    def stamp(self, name: str, ns: Optional[int] = None) -> None:
        if self.setting.timestamps:
            self.events.append((name, time.monotonic_ns() if ns is None else ns))

    def begin(self, model_name: str, version: Any, request_id: Optional[str]) -> None:
        self.model_name = model_name
        try:
            self.model_version = int(version)
        except (TypeError, ValueError):
            self.model_version = 1
        self.request_id = request_id or None
        self.started = True
        self.stamp("REQUEST_START")

    def tensor(self, activity: str, name: str, array: Any, datatype: Optional[str] = None) -> None:
        """At the TENSORS level, one tensor (`array`: an array, or what makes one) of the request."""
        if self.setting.tensors:
            try:
                body = tensor_text(array() if callable(array) else array, datatype)
            except Exception:  # an odd tensor is left out of the trace, never fails the request
                return
            self.tensors.append(f'{{"id":{self.id},"activity":"{activity}","tensor":{{"name":'
                                f'{_json_string(name)},{body}}}}}')

    def child(self) -> "Trace":
        return Trace(self.tracer, self.setting, self)

    def text(self) -> str:
        head = f'{{"id":{self.id},"model_name":{_json_string(self.model_name or "")},' \
               f'"model_version":{self.model_version}'
        if self.request_id:
            head += f',"request_id":{_json_string(self.request_id)}'
        if self.parent is not None:
            head += f',"parent_id":{self.parent.id}'
        parts = [head + "}"] if self.setting.timestamps else []  # as Triton: TENSORS alone has no header
        parts.extend(f'{{"id":{self.id},"timestamps":[{{"name":"{name}","ns":{ns}}}]}}' for name, ns in self.events)
        parts.extend(self.tensors)
        return ",".join(parts)

    def hold(self) -> None:
        """An execute is about to run this trace's request: its compute span is stamped once it returns, and
        a decoupled model may send its final response (and the front end end the trace) before that."""
        with _HOLDS:
            self.holds += 1

    def release(self) -> None:
        with _HOLDS:
            self.holds -= 1
            due = self.ending and not self.holds
            self.ending = self.ending and not due
        if due:
            self._finish()

    def end(self) -> None:
        """The trace is complete: a child hands its objects to its root, a root writes them all. While an
        execute still holds it, the end waits for that execute's release (as Triton writes a trace only once
        both the request and its last response are released)."""
        with _HOLDS:
            if self.holds:
                self.ending = True
                return
        self._finish()

    def _finish(self) -> None:
        if self.setting.otel is not None:  # spans are made from the whole tree in the exporter's thread
            if self.parent is not None:
                self.root.children.append(self)
            elif self.started:
                self.setting.otel.add(self)
            return
        text = self.text() if self.started else ""
        if self.parent is not None:
            if text:
                self.root.children.append(text)
            return
        parts = self.children + [text] if text else self.children
        self.setting.collect(",".join(parts) if parts else None)


class Tracer:
    """The server's traces: one TraceSetting for all models plus one per model with its own settings."""

    def __init__(self, otel: Any = None):
        self.on = False
        self.otel = otel  # the opentelemetry mode's exporter (gpuserve/otlp.py), else None
        self._files: Dict[str, TraceFile] = {}
        self._global: Optional[TraceSetting] = None
        self._models: Dict[str, TraceSetting] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def next_id(self) -> int:
        return next(self._ids)

    def _file(self, path: str) -> Optional[TraceFile]:
        if not path:
            return None
        if path not in self._files:
            self._files[path] = TraceFile(path)
        return self._files[path]

    def _setting(self, view: Dict[str, Any]) -> TraceSetting:
        if self.otel is not None:
            return TraceSetting(view, None, self.otel)
        return TraceSetting(view, self._file(view["trace_file"]))

    def configure(self, global_view: Dict[str, Any], model_views: Dict[str, Dict[str, Any]],
                  models: Optional[List[str]] = None) -> None:
        """New settings from their views: globally (models=None: every model too) or for `models` only."""
        with self._lock:
            old = []
            if models is None:
                old.append(self._global)
                self._global = self._setting(global_view)
                models = list(set(self._models) | set(model_views))
            for name in models:
                old.append(self._models.pop(name, None))
                if name in model_views:
                    view = model_views[name]
                    self._models[name] = self._setting(view)
            self.on = bool(self._global is not None and self._global.on) or any(
                s.on for s in self._models.values())
            if self.on:  # process-wide, and never turned off again: another server's tracer may be on
                TRACING.on = True
        for setting in old:
            if setting is not None:
                setting.retire()

    def setting(self, model: Optional[str]) -> Optional[TraceSetting]:
        return self._models.get(model, self._global) if model else self._global

    def remaining(self, model: Optional[str]) -> Optional[int]:
        """The trace_count left to the settings in force (what a client reads back)."""
        setting = self.setting(model)
        return None if setting is None else setting.count

    def sample(self, model_name: str, headers: Optional[Dict[str, str]] = None) -> Optional[Trace]:
        """A new root trace when this request of `model_name` is sampled, else None. `headers` (HTTP headers
        or gRPC metadata, lower-case names) may carry a W3C traceparent the opentelemetry mode joins."""
        setting = self._models.get(model_name, self._global)
        if setting is None:
            return None
        if self.otel is not None and headers:
            context = traceparent(headers.get("traceparent"))
            if context is not None and setting.forced():
                trace = Trace(self, setting)
                trace.context = context
                return trace
        if not setting.sample():
            return None
        return Trace(self, setting)

    def close(self) -> None:
        """Write what every setting collected and close the files (at shutdown)."""
        with self._lock:
            settings = [self._global, *self._models.values()]
            self.on = False
        for setting in settings:
            if setting is not None:
                setting.retire(final=True)
        for file in list(self._files.values()):
            file.close()
        if self.otel is not None:
            self.otel.close()


def traceparent(value: Optional[str]) -> Optional[tuple]:
    """(trace id, parent span id) in lower-case hex from a W3C traceparent header, None when absent or
    malformed (then the request is sampled as any other). Triton joins the caller's trace whatever its
    sampled flag says, and so do we."""
    if not value:
        return None
    parts = value.strip().lower().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16 \
            or len(parts[3]) != 2 or (parts[0] == "00" and len(parts) != 4):
        return None
    try:
        if not int(parts[1], 16) or not int(parts[2], 16):
            return None
        int(parts[0], 16), int(parts[3], 16)
    except ValueError:
        return None
    return parts[1], parts[2]
