"""Triton's trace and logging extensions: settings a client reads and changes while the server runs.

Values are kept in Triton's JSON form (trace values are strings, `trace_level` a list of strings;
log flags are booleans, `log_verbose_level` an integer), so REST answers them as they are and gRPC
maps them onto its SettingValue messages. Both transports share one `RuntimeSettings`.

Trace settings: global ones plus per-model overrides; a model's view is the global settings with
its own overrides on top (a cleared override falls back to the global value, a cleared global value
to its start-up default). `tracer` (gpuserve/tracing.py) traces requests as they say; `trace_count`
reads back what is left of it, as in Triton.

Log settings change the level of the "gpuserve" logger: verbose -> DEBUG, else the lowest enabled of
info/warning/error; a log_format set writes tritonserver's lines in that layout from then on
(gpuserve/logging_setup.py). The file locations (`trace_file`, `log_file`) cannot be changed over the
network, as in Triton: a request could otherwise make the server write anywhere.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Dict, Optional

from gpuserve import logging_setup
from gpuserve.errors import InvalidInput, Unimplemented
from gpuserve import otlp
from gpuserve.tracing import Tracer

logger = logging.getLogger("gpuserve")

TRACE_DEFAULTS: Dict[str, Any] = {"trace_file": "", "trace_level": ["OFF"], "trace_rate": "1000",
                                  "trace_count": "-1", "log_frequency": "0", "trace_mode": "triton"}
TRACE_LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
_OLD_LEVELS = {"MIN": "TIMESTAMPS", "MAX": "TIMESTAMPS"}  # tritonserver's deprecated --trace-level values
LOG_KEYS = ("log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format")
LOG_FORMATS = ("default", "ISO8601")
_U32 = 2**32 - 1
_SILENT = logging.CRITICAL + 10


def _one(key: str, value: Any) -> Any:
    """A scalar setting as sent: a value, or (gRPC's repeated string) a list of exactly one."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise InvalidInput(f"expect only 1 value for '{key}'")
        value = value[0]
    return value


def _integer(key: str, value: Any, low: int, high: int) -> str:
    value = _one(key, value)
    if isinstance(value, bool):
        raise InvalidInput(f"Unable to parse '{key}', got: {value!r}")
    try:
        number = int(value.strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"Unable to parse '{key}', got: {value!r}") from None
    if isinstance(value, float) and value != number:
        raise InvalidInput(f"Unable to parse '{key}', got: {value!r}")
    if not low <= number <= high:
        raise InvalidInput(f"Unable to parse '{key}', value is out of range [ {low}, {high} ], got: {value}")
    return str(number)


def _level(value: Any) -> list:
    levels = [value] if isinstance(value, str) else value
    if not isinstance(levels, (list, tuple)) or not all(isinstance(v, str) for v in levels):
        raise InvalidInput(f"'trace_level' must be a list of strings from {', '.join(TRACE_LEVELS)}, got {value!r}")
    unknown = [v for v in levels if v not in TRACE_LEVELS]
    if unknown:
        raise InvalidInput(f"unknown trace level {unknown[0]!r}; expected {', '.join(TRACE_LEVELS)}")
    if "OFF" in levels and len(levels) > 1:
        raise InvalidInput("Expect only one trace level 'OFF' is specified")
    ordered = [v for v in TRACE_LEVELS if v in levels]  # TIMESTAMPS before TENSORS, no repeats
    return ordered


_TRACE_PARSERS: Dict[str, Callable[[Any], Any]] = {
    "trace_level": _level,
    "trace_rate": lambda v: _integer("trace_rate", v, 0, _U32),
    "trace_count": lambda v: _integer("trace_count", v, -1, 2**31 - 1),
    "log_frequency": lambda v: _integer("log_frequency", v, 0, _U32),
}


# Triton's --trace-config keys (global, or after "triton,") -> our setting names
_TRACE_FLAG_KEYS = {"file": "trace_file", "level": "trace_level", "rate": "trace_rate", "count": "trace_count",
                    "log-frequency": "log_frequency", "log_frequency": "log_frequency", "mode": "trace_mode"}


def trace_start_settings(configs: Optional[list]) -> Dict[str, Any]:
    """The start-up trace settings of Triton's `--trace-config [triton,]KEY=VALUE` flags (repeated; each
    `level` adds one level), checked as an update over the network is. They are what a client reads before
    any update and what a cleared global setting returns to, as in Triton (qa/L0_trace checks both)."""
    settings: Dict[str, Any] = {}
    levels: list = []
    otel: Dict[str, str] = {}
    resources: list = []
    for config in configs or ():
        mode, _, pair = config.rpartition(",")
        key, sep, value = pair.partition("=")
        name = _TRACE_FLAG_KEYS.get(key.strip())
        if not sep:
            raise InvalidInput(f"--trace-config {config}: expected [MODE,]KEY=VALUE")
        if mode == "opentelemetry":  # shown as given in opentelemetry mode (url, resource, bsp_*)
            otel[key.strip()] = value
            if key.strip() == "resource":  # repeated: each adds (or replaces) one resource attribute
                resources.append(value)
            continue
        if name == "trace_mode" and value == "opentelemetry":
            settings[name] = value
            continue
        if name is None or mode not in ("", "triton") or name == "trace_mode" and value != "triton":
            logger.warning("--trace-config %s is not served by gpuserve; ignored", config)  # as Triton: started
            continue
        if name == "trace_level":
            levels.append(_OLD_LEVELS.get(value.upper(), value.upper()))
            settings[name] = _level(levels)
        elif name in _TRACE_PARSERS:
            settings[name] = _TRACE_PARSERS[name](value)
        else:
            settings[name] = value
    if settings.get("trace_mode") == "opentelemetry":
        for key, (variable, default) in _OTEL_BSP.items():
            otel.setdefault(key, os.environ.get(variable, default))
        settings[_OTEL] = otel
        settings[_OTEL_RESOURCES] = resources
    return settings


def otel_exporter(otel: Dict[str, str], resources: list) -> otlp.BatchExporter:
    """The opentelemetry mode's exporter: Triton's spans as OTLP/HTTP JSON to `url` (Triton's default
    http://localhost:4318/v1/traces), resource attributes service.name=triton-inference-server, then
    OTEL_RESOURCE_ATTRIBUTES, then each `resource=KEY=VALUE` given (a later one wins)."""
    from gpuserve import otel_triton
    from gpuserve.version import __version__

    resource = {"telemetry.sdk.name": "gpuserve", "telemetry.sdk.language": "python",
                "telemetry.sdk.version": __version__, "service.name": otel_triton.DEFAULT_SERVICE}
    resource.update(otlp.resource_pairs(os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    for pair in resources:
        resource.update(otlp.resource_pairs(pair))
    url = otel.get("url") or "http://localhost:4318/v1/traces"
    sender = otlp.HttpJsonSender(url, resource, otel_triton.SCOPE)
    return otlp.exporter(otel_triton.spans_of, sender, otlp.bsp_settings(otel), sender.url)


_OTEL = "opentelemetry"  # the opentelemetry mode's own settings, shown in place of trace_file and log_frequency
_OTEL_RESOURCES = "opentelemetry_resources"  # every resource=K=V given (the view shows the last, as Triton)
_OTEL_BSP = {"bsp_max_export_batch_size": ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
             "bsp_schedule_delay": ("OTEL_BSP_SCHEDULE_DELAY", "5000"),
             "bsp_max_queue_size": ("OTEL_BSP_MAX_QUEUE_SIZE", "2048")}


class RuntimeSettings:
    """Trace and log settings; thread-safe. `model_exists(name)` tells whether a model is known;
    `trace_defaults` (trace_start_settings) overrides TRACE_DEFAULTS from the launch line."""

    def __init__(self, model_exists: Optional[Callable[[str], bool]] = None, logger_name: str = "gpuserve",
                 trace_defaults: Optional[Dict[str, Any]] = None):
        self._model_exists = model_exists
        self._logger = logging.getLogger(logger_name)
        self._lock = threading.Lock()
        self._defaults: Dict[str, Any] = {**TRACE_DEFAULTS, **(trace_defaults or {})}
        resources = self._defaults.pop(_OTEL_RESOURCES, [])
        self._trace: Dict[str, Any] = {k: (list(v) if isinstance(v, list) else v) for k, v in self._defaults.items()}
        self._model_trace: Dict[str, Dict[str, Any]] = {}
        self._log: Optional[Dict[str, Any]] = None  # read from the logger on first use
        otel = self._defaults.get(_OTEL) if self._defaults["trace_mode"] == "opentelemetry" else None
        self.tracer = Tracer(otel_exporter(otel, resources) if otel is not None else None)
        self._retrace(None)

    # trace -------------------------------------------------------------------------------------
    def _check_model(self, model: Optional[str]) -> None:
        if model and self._model_exists is not None and not self._model_exists(model):
            raise InvalidInput(f"Request for unknown model : {model}")

    def trace(self, model: Optional[str] = None) -> Dict[str, Any]:
        """The trace settings in force globally, or for one model."""
        self._check_model(model)
        with self._lock:
            return self._trace_view(model)

    def _trace_view(self, model: Optional[str], live: bool = True) -> Dict[str, Any]:
        merged = dict(self._trace)
        if model:
            merged.update(self._model_trace.get(model, {}))
        if live:
            left = self.tracer.remaining(model)
            if left is not None and left >= 0 and merged["trace_count"] != "-1":
                merged["trace_count"] = str(left)
            otel = merged.pop(_OTEL, None)
            if merged["trace_mode"] == "opentelemetry":  # as Triton shows that mode's settings
                del merged["trace_file"], merged["log_frequency"]
                merged.update(otel or {})
        return {k: list(v) if isinstance(v, list) else v for k, v in merged.items()}

    def _retrace(self, model: Optional[str]) -> None:
        """New tracer settings (and counters) for `model`, or for all (None); under the lock."""
        views = {name: self._trace_view(name, live=False) for name, own in self._model_trace.items() if own}
        self.tracer.configure(self._trace_view(None, live=False), views, [model] if model else None)

    def update_trace(self, updates: Dict[str, Any], model: Optional[str] = None) -> Dict[str, Any]:
        """Apply `updates` (a value sets, None clears) globally or for one model; returns the result.
        Every key is checked before anything changes."""
        if not isinstance(updates, dict):
            raise InvalidInput("trace settings must be an object of setting names to values")
        self._check_model(model)
        parsed = {}
        for key, value in updates.items():
            if key in ("trace_file", "trace_mode"):
                what = "trace file location" if key == "trace_file" else "trace mode"
                raise Unimplemented(f"{what} can not be updated through network protocol")
            parser = _TRACE_PARSERS.get(key)
            if parser is None:
                raise InvalidInput(f"unknown trace setting '{key}'; expected one of "
                                   f"{', '.join(k for k in TRACE_DEFAULTS if k in _TRACE_PARSERS)}")
            cleared = value is None or (isinstance(value, (list, tuple)) and not value)
            parsed[key] = None if cleared else parser(value)
        with self._lock:
            target = self._model_trace.setdefault(model, {}) if model else self._trace
            for key, value in parsed.items():
                if value is not None:
                    target[key] = value
                elif model:
                    target.pop(key, None)
                else:
                    default = self._defaults[key]
                    target[key] = list(default) if isinstance(default, list) else default
            if parsed:
                self._retrace(model)
            view = self._trace_view(model)
        return view

    def clear_model_trace(self, model: str) -> Dict[str, Any]:
        """Drop a model's own trace settings (REST: POST with an empty body); returns its view."""
        self._check_model(model)
        with self._lock:
            if self._model_trace.pop(model, None):
                self._retrace(model)
            return self._trace_view(model)

    # logging -----------------------------------------------------------------------------------
    def _log_state(self) -> Dict[str, Any]:
        if self._log is None:
            level = self._logger.getEffectiveLevel()
            switch = logging_setup.level_switch() or logging_setup.LevelSwitch()
            self._log = {"log_file": logging_setup.given_log_file, "log_info": level <= logging.INFO and switch.info,
                         "log_warning": level <= logging.WARNING and switch.warning,
                         "log_error": level <= logging.ERROR and switch.error,
                         "log_verbose_level": 1 if level <= logging.DEBUG else 0,
                         "log_format": logging_setup.triton_layout()}
        return self._log

    def log(self) -> Dict[str, Any]:
        with self._lock:
            return dict(self._log_state())

    def update_log(self, updates: Dict[str, Any]) -> Dict[str, Any]:
        """Apply `updates` to the log settings and the "gpuserve" logger's level; returns the result."""
        if not isinstance(updates, dict):
            raise InvalidInput("log settings must be an object of setting names to values")
        parsed = {}
        for key, value in updates.items():
            if key == "log_file":
                raise Unimplemented("log file location can not be updated through network protocol")
            if key in ("log_info", "log_warning", "log_error"):
                if not isinstance(value, bool):
                    raise InvalidInput(f"expect boolean for '{key}'")
            elif key == "log_verbose_level":
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U32:
                    raise InvalidInput(f"expect unsigned integer for '{key}'")
            elif key == "log_format":
                if value not in LOG_FORMATS:
                    raise InvalidInput(f"invalid argument for log_format, got: {value!r}; "
                                       f"expected {' or '.join(LOG_FORMATS)}")
            else:
                raise InvalidInput(f"unknown log setting '{key}'; expected one of {', '.join(LOG_KEYS)}")
            parsed[key] = value
        with self._lock:
            state = self._log_state()
            state.update(parsed)
            if parsed:
                self._logger.setLevel(self._level_of(state))
                switch = logging_setup.level_switch()
                if switch is not None:
                    switch.info, switch.warning = state["log_info"], state["log_warning"]
                    switch.error = state["log_error"]
            if "log_format" in parsed:
                logging_setup.set_triton_layout(parsed["log_format"])
            return dict(state)

    @staticmethod
    def _level_of(state: Dict[str, Any]) -> int:
        if state["log_verbose_level"] > 0:
            return logging.DEBUG
        for flag, level in (("log_info", logging.INFO), ("log_warning", logging.WARNING),
                            ("log_error", logging.ERROR)):
            if state[flag]:
                return level
        return _SILENT
