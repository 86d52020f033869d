"""The `context` a TorchServe handler is given: TorchServe's own `ts.context.Context` when torchserve is
installed (handlers type-check it, and BaseHandler reads it field by field), else `Context` below, which has the
same public surface (model_name, manifest, system_properties, request ids and headers per batch index, response
status, headers and content type per index, metrics).

Metrics: handlers call `context.metrics.add_time(...)` (BaseHandler does, per batch) and the like; gpuserve counts
requests and latency itself, so `NullMetrics` takes every such call and keeps nothing.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

SERVER_NAME = "MMS"  # what TorchServe 0.12's worker puts in system_properties["server_name"]


class Headers(dict):
    """A request's headers as a handler reads them. HTTP servers here hand header names lowercased, where
    TorchServe keeps the client's spelling ("Content-Type"), so a lookup that misses tries the lowercase name."""

    def get(self, key, default=None):
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        return dict.get(self, key.lower(), default) if isinstance(key, str) else default

    def __getitem__(self, key):
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key):
        return self.get(key, _MISSING) is not _MISSING


_MISSING = object()


class RequestProcessor:
    """One request's headers in, its status and headers out (TorchServe's ts.context.RequestProcessor API)."""

    def __init__(self, request_header: dict) -> None:
        self._status_code = 200
        self._reason_phrase = None
        self._response_header: Dict[str, str] = {}
        self._request_header = request_header

    def get_request_property(self, key: str) -> Optional[str]:
        return self._request_header.get(key)

    def report_status(self, code, reason_phrase=None) -> None:
        self._status_code = code
        self._reason_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> Optional[str]:
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        self._response_header[key] = value

    def get_response_headers(self) -> dict:
        return self._response_header

    def get_response_header(self, key: str) -> Optional[str]:
        return self._response_header.get(key)

    def get_request_properties(self) -> dict:
        return self._request_header


class _NoMetric:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class NullMetrics:
    """Takes every metrics call a handler makes (add_time, add_counter, add_metric, get_metric(...).add_or_update),
    keeping the last value of each time it adds: BaseHandler's HandlerTime, which server/torchserve_metrics.py
    shows as TorchServe does (a handler that adds none has none)."""

    request_ids = None

    def __init__(self):
        self.times: Dict[str, float] = {}

    def add_time(self, name, value, *args, **kwargs):
        self.times[str(name)] = float(value)

    def __getattr__(self, name):
        if name.startswith("get_") or name.startswith("add_metric"):
            return lambda *args, **kwargs: _NoMetric()
        return lambda *args, **kwargs: None


class Context:
    """TorchServe's Context API for where torchserve is not installed (same names, same behaviour)."""

    def __init__(self, model_name, model_dir, manifest, batch_size, gpu, mms_version, limit_max_image_pixels=True,
                 metrics=None, model_yaml_config=None):
        self.model_name = model_name
        self.manifest = manifest
        self._system_properties = {"model_dir": model_dir, "gpu_id": gpu, "batch_size": batch_size,
                                   "server_name": SERVER_NAME, "server_version": mms_version,
                                   "limit_max_image_pixels": limit_max_image_pixels}
        self.request_ids: Optional[Dict[int, str]] = None
        self._request_processor: Optional[List[RequestProcessor]] = None
        self.metrics = metrics
        self.model_yaml_config = model_yaml_config or {}
        self.stopping_criteria = None
        self.header_key_sequence_id = os.getenv("TS_REQUEST_SEQUENCE_ID", "ts_request_sequence_id")

    @property
    def system_properties(self):
        return self._system_properties

    @property
    def request_processor(self):
        return self._request_processor

    @request_processor.setter
    def request_processor(self, value):
        self._request_processor = value

    def get_request_id(self, idx: int = 0) -> Optional[str]:
        return None if self.request_ids is None else self.request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> Optional[str]:
        return self._request_processor[idx].get_request_property(key)

    def get_all_request_header(self, idx: int) -> Dict[str, str]:
        return self._request_processor[idx].get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> Optional[str]:
        return self.get_response_headers(idx).get("content-type")

    def get_response_status(self, idx: int) -> Tuple[int, Optional[str]]:
        processor = self._request_processor[idx]
        return processor.get_response_status_code(), processor.get_response_status_phrase()

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0):
        if self._request_processor is not None and self._request_processor[idx] is not None:
            self._request_processor[idx].report_status(code, reason_phrase=phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for processor in self._request_processor or []:
            processor.report_status(code, reason_phrase=phrase)

    def get_response_headers(self, idx: int) -> Dict[str, str]:
        return self._request_processor[idx].get_response_headers()

    def set_response_header(self, idx, key, value):
        self._request_processor[idx].add_response_property(key, value)

    def get_sequence_id(self, idx: int) -> str:
        return self.get_request_header(idx, self.header_key_sequence_id)


def _yaml_config(model_dir: str, manifest: dict) -> dict:
    """The archive's `configFile` (model-config.yaml), which BaseHandler reads as context.model_yaml_config."""
    name = (manifest.get("model") or {}).get("configFile")
    if not name:
        return {}
    import yaml

    with open(os.path.join(model_dir, name)) as f:
        return yaml.safe_load(f) or {}


def make_context(model_name: str, model_dir: str, manifest: dict, batch_size: int, gpu: Optional[int]):
    """TorchServe's Context where torchserve is installed (most faithful), else ours; metrics that keep nothing."""
    config = _yaml_config(model_dir, manifest)
    try:
        import ts
        from ts.context import Context as TsContext, RequestProcessor as TsProcessor
    except ImportError:
        return Context(model_name, model_dir, manifest, batch_size, gpu, _version(), True, NullMetrics(), config), \
            RequestProcessor
    return TsContext(model_name, model_dir, manifest, batch_size, gpu, ts.__version__, True, NullMetrics(),
                     config), TsProcessor


def _version() -> str:
    from gpuserve.version import __version__

    return __version__
