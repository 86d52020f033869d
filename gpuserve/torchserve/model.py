"""A TorchServe archive served as a gpuserve model: `initialize(context)` once when the model loads, then
`handle(data, context)` per batch, `data` one entry per request, the answer one item per request.

How requests reach `handle`:
- TorchServe's inference API (server/torchserve_api.py): each request is one `Entry` (the dict TorchServe's
  worker would build, its headers and id), carried as a one-row object input `ENTRY_INPUT`, so gpuserve's adaptive
  batcher (the model's settings: batchSize -> max_batch_size, maxBatchDelay -> max_batch_time) merges concurrent
  requests into one call. The answers come back as `Answer`s, one row per request.
- KServe V1 (`{"instances": [...]}`): as TorchServe's KServe envelope (ts/torch_handler/request_envelope/
  kserve.py) does it, the instances, as they are, are the batch; the answers are `{"predictions": [...]}`.
- KServe V2: each element (row) of the first input is one entry `{"data": value}` (a bytearray for BYTES, a list
  for a numeric row); the answers are a BYTES output "output" (bytes as they are, str as UTF-8, else JSON).

Calls run one at a time on one thread of the model's own, as in one TorchServe worker (handlers are not
thread-safe). minWorkers > 1 makes that many worker processes instead (gpuserve/torchserve/store.py sets
parallel_workers; gpuserve/parallel.py), each loading this model, as TorchServe's workers each load the handler.
A failing handler fails the whole batch with TorchServe's statuses: 503 "Prediction failed", 507 "Out of
resources" (MemoryError, CUDA errors), PredictionException's own code (ts/service.py).
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from gpuserve.errors import GpuserveError, InvalidInput
from gpuserve.hook_placement import Placement
from gpuserve.hooks import placed
from gpuserve.model import Model
from gpuserve.torchserve import stream
from gpuserve.torchserve.archive import open_archive
from gpuserve.torchserve.context import Headers, make_context
from gpuserve.torchserve.handler import load_handler
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse

logger = logging.getLogger("gpuserve")
ENTRY_INPUT = "__torchserve_entry__"
ENTRY_OUTPUT = "__torchserve_answer__"
NO_WORKERS = "no worker: minWorkers is 0 (TorchServe's scale workers API adds them)"
# model name -> the last answered batch's {"PredictionTime": ms, "HandlerTime": ms the handler added}: TorchServe's
# gauges (server/torchserve_metrics.py), kept past an unregister as TorchServe keeps them
LAST_TIMES: Dict[str, Dict[str, float]] = {}


@dataclass
class Entry:
    """One request as TorchServe's worker hands it over: `data` goes into handle's list, `headers` are what
    context.get_request_header(i, ...) reads."""

    data: Any
    headers: Dict[str, Any] = field(default_factory=dict)
    request_id: str = ""
    created: float = field(default_factory=time.monotonic)  # (system-wide: worker processes read it too)


@dataclass
class Answer:
    """One request's answer: the handler's item, the status and headers it set through the context; or, when
    the batch failed, `value` None and TorchServe's message."""

    value: Any
    status: int = 200
    phrase: Optional[str] = None
    headers: Dict[str, str] = field(default_factory=dict)
    error: Optional[str] = None
    queued_us: float = 0.0  # from the request's arrival to its batch's handle() call (ts_queue_latency)


class HandlerFailed(GpuserveError):
    """The batch failed in the handler: TorchServe's status (503, 507, a PredictionException's) and message."""

    grpc = "UNAVAILABLE"

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.http = status
        self.grpc = "INTERNAL" if status == 500 else "RESOURCE_EXHAUSTED" if status == 507 else "UNAVAILABLE"


def gpu_id(device: Optional[str]) -> Optional[int]:
    """system_properties["gpu_id"]: N for cuda:N (0 for cuda), None on the CPU, as TorchServe's worker passes it."""
    if device and device.startswith("cuda"):
        _, _, index = device.partition(":")
        return int(index) if index.isdigit() else 0
    return None


def object_input(name: str, rows: List[Any]) -> InferInput:
    array = np.empty(len(rows), dtype=object)
    array[:] = rows
    tensor = InferInput(name, [], "BYTES")
    tensor._array = array
    tensor.set_shape(array.shape)
    return tensor


class TorchServeModel(Model):
    platform = "torchserve"
    streams = False  # its handler can send intermediate answers (set at load)

    def __init__(self, settings):
        super().__init__(settings.name)
        self.settings = settings
        self.version = settings.parameters.version
        self.options: Dict[str, Any] = dict((settings.parameters.extra or {}).get("torchserve") or {})
        self.archive = None
        self._pool: Optional[ThreadPoolExecutor] = None

    @property
    def batch_size(self) -> int:
        return int(self.settings.max_batch_size or 1)

    def load(self) -> bool:
        if self.options.get("minWorkers") is not None and int(self.options["minWorkers"]) == 0:
            self.reason = NO_WORKERS  # TorchServe's model with no worker: registered, its requests refused
            return False
        uri = self.settings.parameters.uri
        if not uri or not Path(uri).exists():
            raise GpuserveError(f"model '{self.name}': archive '{uri}' does not exist")
        self.archive = open_archive(uri)
        # the register API's `handler` overrides the manifest's, as in TorchServe
        handler = self.options.get("handler") or self.archive.handler
        entry, initialize, self.service = load_handler(handler, self.archive.folder, self.name)
        self.context, self._processor = make_context(self.name, str(self.archive.folder), self.archive.manifest,
                                                     self.batch_size, gpu_id(self.settings.device))
        stream.install()  # a handler's intermediate answers reach their clients (gpuserve/torchserve/stream.py)
        self._sink = stream.Sink(self.name)
        self.streams = stream.sends_parts(self.service)
        initialize(self.context)
        self._handle = entry
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"torchserve-{self.name}")
        self._placement = Placement()
        self.ready = True
        return True

    def stop(self) -> None:
        super().stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _run(self, entries: List[Entry]) -> List[Answer]:
        """One handle() call over a batch, with the statuses TorchServe's worker gives (ts/service.py)."""
        begin = time.monotonic()
        context = self.context
        context.cl_socket = self._sink
        context.request_ids = {i: e.request_id for i, e in enumerate(entries)}
        context.request_processor = [self._processor(Headers(e.headers)) for e in entries]
        if hasattr(context.metrics, "request_ids"):
            context.metrics.request_ids = context.request_ids
        answers = self._answers(entries, context)
        if not answers or answers[0].error is None:  # TorchServe times predictions that answered
            times = LAST_TIMES.setdefault(self.name, {})
            times["PredictionTime"] = (time.monotonic() - begin) * 1000.0
            if "HandlerTime" in getattr(context.metrics, "times", {}):
                times["HandlerTime"] = context.metrics.times["HandlerTime"]
        for answer, entry in zip(answers, entries):
            answer.queued_us = max(begin - entry.created, 0.0) * 1e6
        return answers

    def _answers(self, entries: List[Entry], context) -> List[Answer]:
        try:
            results = self._handle([e.data for e in entries], context)
        except MemoryError:
            logger.error("model %s: out of memory in its handler", self.name, exc_info=True)
            return _failed(entries, 507, "Out of resources")
        except Exception as exc:
            if type(exc).__name__ == "PredictionException" and hasattr(exc, "error_code"):
                return _failed(entries, int(exc.error_code), str(getattr(exc, "message", exc)))
            if "CUDA" in str(exc):
                logger.error("model %s: CUDA out of memory in its handler", self.name, exc_info=True)
                return _failed(entries, 507, "Out of resources")
            logger.warning("model %s: invoking its TorchServe handler failed", self.name, exc_info=True)
            return _failed(entries, 503, "Prediction failed")
        if not isinstance(results, list):
            logger.warning("model %s: invalid return type %s", self.name, type(results).__name__)
            return _failed(entries, 503, "Invalid model predict output")
        if len(results) != len(entries):
            logger.warning("model %s: number of batch response mismatched, expect: %d, got: %d", self.name,
                           len(entries), len(results))
            return _failed(entries, 503, "number of batch response mismatched")
        answers = []
        for i, value in enumerate(results):
            status, phrase = context.get_response_status(i)
            answers.append(Answer(value, status or 200, phrase, dict(context.get_response_headers(i))))
        return answers

    inflight = 0  # batches handed to the handler's thread and not yet answered (a stop waits for them)

    async def run_entries(self, entries: List[Entry]) -> List[Answer]:
        if self._pool is None:
            raise GpuserveError(f"model '{self.name}' is not loaded")
        self.inflight += 1
        try:
            # a quick handler runs on the loop (hook_placement.py); one that streams parts stays on its thread,
            # where each part reaches its client as it is sent
            return await placed(None if self.streams else self._placement, self._pool, self._run, entries)
        finally:
            self.inflight -= 1

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            if payload.inputs and payload.inputs[0].name == ENTRY_INPUT:
                answers = await self.run_entries(list(payload.inputs[0].as_numpy()))
                output = InferOutput(ENTRY_OUTPUT, [len(answers)], "BYTES", _objects(answers))
                return InferResponse(payload.id, self.name, [output], model_version=self.version)
            return await self._v2(payload, headers)
        if isinstance(payload, dict) and isinstance(payload.get("instances"), list):
            entries = [Entry(instance, _plain_headers(headers)) for instance in payload["instances"]]
            answers = _checked(await self.run_entries(entries))
            return {"predictions": [a.value for a in answers]}
        raise InvalidInput(f"model '{self.name}' (a TorchServe archive) takes V1 {{\"instances\": [...]}}, V2 "
                           "inputs, or TorchServe's /predictions API")

    async def _v2(self, request: InferRequest, headers) -> InferResponse:
        if not request.inputs:
            raise InvalidInput(f"model '{self.name}' needs one input")
        array = request.inputs[0].as_numpy()
        rows = [_row(row) for row in array] if array.ndim else [_row(array.item())]
        answers = _checked(await self.run_entries([Entry({"data": row}, _plain_headers(headers)) for row in rows]))
        encoded = [_as_bytes(a.value) for a in answers]
        return InferResponse(request.id, self.name, [InferOutput("output", [len(encoded)], "BYTES",
                                                                 _objects(encoded))], model_version=self.version)


def _row(row: Any) -> Any:
    """A V2 row as a handler reads a raw body: BYTES as bytearray (as TorchServe hands a raw body), numbers as lists."""
    if isinstance(row, (bytes, bytearray, str)):
        return bytearray(row.encode() if isinstance(row, str) else row)
    return np.asarray(row).tolist()


def _objects(items: list) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _failed(entries: List[Entry], status: int, message: str) -> List[Answer]:
    return [Answer(None, status, None, {}, message) for _ in entries]


def _checked(answers: List[Answer]) -> List[Answer]:
    for answer in answers:
        if answer.error is not None:
            raise HandlerFailed(answer.status, answer.error)
    return answers


def _plain_headers(headers) -> Dict[str, Any]:
    return {"explain": "False", **{str(k): str(v) for k, v in (headers or {}).items()}}


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, default=_tolist).encode()


def _tolist(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
