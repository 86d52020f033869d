"""Adaptive batching for custom Python models (MLServer's semantics, gpuserve's scheduling).

Requests whose inputs agree on names, datatypes, content types and non-batch shapes are merged into
one InferRequest (inputs concatenated by rows; each custom parameter becomes the list of the
requests' values), the model runs once, and its response is split back by rows (list-valued output
parameters with one value per request are split too). Unlike MLServer's timer-driven batcher this
one is work-conserving: an idle model runs a request at once, and batches grow only while the
model is busy, or up to `max_batch_time` when that is set. A batch that fails is retried request by
request, so one bad request never fails its neighbours.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from gpuserve.engine.batcher import cancel_and_wait
from gpuserve.engine.job import Job
from gpuserve.engine.queue import BatchQueue
from gpuserve.engine.stats import PROMETHEUS_BUCKETS, Histogram
from gpuserve.errors import InferenceError, InvalidInput, ModelNotReady
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

logger = logging.getLogger("gpuserve")
SCALAR_PARAMETERS = frozenset({"content_type", "headers"})
# While a merged request runs: the rows each of its requests brought, in order (None otherwise). A runtime whose
# requests mean something only one at a time reads it (a HuggingFace pipeline's `args`: gpuserve/huggingface).
MERGED_ROWS: "contextvars.ContextVar[Optional[Tuple[int, ...]]]" = contextvars.ContextVar("gpuserve_merged_rows",
                                                                                          default=None)


def _key(request: InferRequest, by_parameters: bool = False) -> Tuple:
    parts = []
    for tensor in request.inputs:
        array = tensor.as_numpy()
        if array.ndim == 0:
            raise InvalidInput(f"input '{tensor.name}' needs a batch dimension for adaptive batching")
        parts.append((tensor.name, tensor.datatype, array.shape[1:], tensor.parameters.get("content_type")))
    wanted = tuple(o.name for o in request.request_outputs) if request.request_outputs else None
    if by_parameters:  # only requests asking with the same parameters share a batch (see merge_requests)
        own = {k: v for k, v in request.parameters.items() if k not in SCALAR_PARAMETERS}
        return tuple(parts), wanted, request.parameters.get("content_type"), \
            json.dumps(own, sort_keys=True, default=repr)
    return tuple(parts), wanted, request.parameters.get("content_type")


def _rows(request: InferRequest) -> int:
    shapes = [(t.name, t.as_numpy().shape) for t in request.inputs]
    for name, shape in shapes:
        if not shape:  # a scalar has no rows to batch by (_key says so in the same words)
            raise InvalidInput(f"input '{name}' needs a batch dimension for adaptive batching")
    rows = {shape[0] for _, shape in shapes}
    if len(rows) != 1:
        raise InvalidInput("inputs disagree on the batch dimension")
    return rows.pop()


def merge_parameters(all_parameters: List[dict]) -> dict:
    """Each key's values across requests as a list; content types stay single values (the first given)."""
    merged: Dict[str, Any] = {}
    keys = [k for params in all_parameters for k in params]
    for key in dict.fromkeys(keys):
        values = [params.get(key) for params in all_parameters]
        merged[key] = next((v for v in values if v is not None), None) if key in SCALAR_PARAMETERS else values
    return merged


def split_parameters(parameters: dict, index: int) -> dict:
    """One request's share of a batched output's parameters, as MLServer documents it: a list-valued one
    gives the i-th request its i-th element, and none to requests past its end; other values go to all."""
    out = {}
    for key, value in parameters.items():
        if key in SCALAR_PARAMETERS or not isinstance(value, list):
            out[key] = value
        elif index < len(value):
            out[key] = value[index]
    return out


def merge_requests(requests: List[InferRequest], by_parameters: bool = False) -> InferRequest:
    """One request of all their rows. `by_parameters`: the requests were batched because their parameters are
    equal (a model whose parameters apply to the whole call, as an MLflow model's `params`), and the batch
    keeps them as they are rather than as lists."""
    first = requests[0]
    inputs = []
    for position, tensor in enumerate(first.inputs):
        arrays = [r.inputs[position].as_numpy() for r in requests]
        merged = InferInput(tensor.name, [], tensor.datatype,
                            parameters=merge_parameters([r.inputs[position].parameters for r in requests]))
        array = np.concatenate(arrays, axis=0)
        merged._array = array
        merged.set_shape(array.shape)
        inputs.append(merged)
    outputs = [RequestedOutput(o.name, dict(o.parameters)) for o in first.request_outputs] \
        if first.request_outputs else None
    return InferRequest(first.model_name, inputs, request_id=str(uuid.uuid4()),
                        parameters=dict(first.parameters) if by_parameters else
                        merge_parameters([r.parameters for r in requests]), request_outputs=outputs,
                        model_version=first.model_version)


def split_response(response: Any, requests: List[InferRequest], rows: List[int], model: str) -> List[InferResponse]:
    if not isinstance(response, InferResponse):
        raise InferenceError(f"model '{model}' returned {type(response).__name__} to a batched request; "
                             "adaptive batching needs an InferResponse")
    total = sum(rows)
    pieces: List[List[InferOutput]] = [[] for _ in requests]
    for output in response.outputs:
        array = output.as_numpy()
        if array.ndim == 0 or array.shape[0] != total:
            got = "a scalar" if array.ndim == 0 else f"{array.shape[0]} rows"
            raise InferenceError(f"model '{model}' returned {got} for output '{output.name}' "
                                 f"in a batch of {total} rows")
        start = 0
        for i, n in enumerate(rows):
            part = array[start:start + n]
            start += n
            pieces[i].append(InferOutput(output.name, list(part.shape), output.datatype, part,
                                         split_parameters(output.parameters, i)))
    # the response's own parameters reach every request as they are (MLServer 1.7.1 does not split them)
    return [InferResponse(request.id, response.model_name, pieces[i], model_version=response.model_version,
                          parameters=dict(response.parameters or {}))
            for i, request in enumerate(requests)]


class AdaptiveBatcher:
    def __init__(self, model, max_batch_size: int, max_batch_time: float = 0.0, stats=None):
        """`stats` (engine/stats.py's ModelStats): each model call is recorded there as one execution of the rows
        it took, each request's wait in the queue too, as Triton counts a batching model; the caller records each
        request's own outcome (gpuserve/dataplane.py)."""
        self.model = model
        self.stats = stats
        self.by_parameters = bool(getattr(model, "batches_by_parameters", False))  # see merge_requests
        self.max_batch_size = max_batch_size
        self.max_batch_time = max_batch_time
        self.queue = BatchQueue()
        self.batches_formed: Dict[int, int] = {}
        # MLServer's batch_request_queue: how many requests wait as each one arrives (server/metrics.py)
        self.queue_sizes = Histogram(PROMETHEUS_BUCKETS)
        self._task: Optional[asyncio.Task] = None
        self._busy = False  # the loop holds a batch (from the moment it takes one off the queue)
        self._direct = asyncio.Event()  # set while no request runs directly in its caller's task
        self._direct.set()

    def busy(self) -> bool:
        """Requests taken and not yet answered: queued, in a batch, or running in their caller's task."""
        return self._busy or bool(len(self.queue)) or not self._direct.is_set()

    async def submit(self, request: InferRequest, headers: Optional[dict]) -> Tuple[Any, dict]:
        if self._stopped:  # found the model before its unload: refused, not queued on a loop nobody runs
            raise ModelNotReady(self.model.name, "the model is being unloaded")
        rows, key = _rows(request), _key(request, self.by_parameters)
        self.queue_sizes.observe(len(self.queue))
        if self.max_batch_time <= 0 and not self._busy and self._direct.is_set() and not len(self.queue):
            # Idle model, nothing queued, no batch window: run in this task. Skipping the queue and the
            # loop's task saves a loop turn (30-90 us here); requests arriving meanwhile queue up and
            # the loop batches them once this call is done, as if the loop had run it. One turn is
            # yielded after the call, so a model that never suspends still lets a burst arriving with
            # this request queue (and batch), and an in-process caller submitting back to back shares.
            self._direct.clear()
            self.batches_formed[rows] = self.batches_formed.get(rows, 0) + 1
            if self.stats is not None:
                self.stats.record_queue([0])
            try:
                result = await self._executed(self.model(request, headers), rows, 1)
                await asyncio.sleep(0)
                return result
            finally:
                self._direct.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"adaptive-{self.model.name}")
        future = asyncio.get_running_loop().create_future()
        # As MLServer, max_batch_size counts requests, not rows: each job takes one place in a batch.
        job = Job({}, 1, key, future, parameters={"request": request, "headers": headers, "rows": rows})
        self.queue.put(job)
        return await future

    async def _loop(self) -> None:
        while True:
            first = await self.queue.get()
            self._busy = True
            try:
                await self._direct.wait()  # a request running in its caller's task finishes first
                if not first.future.done():  # its caller may have gone away meanwhile
                    await self._form_and_run(first)
            finally:
                self._busy = False

    async def _form_and_run(self, first: Job) -> None:
        batch = self._current = [first]  # (grown in place below: stop() answers it if the loop is cancelled)
        batch += self.queue.take_matching(first.key, self.max_batch_size - 1)
        if self.max_batch_time > 0:
            deadline = first.arrival + self.max_batch_time
            while len(batch) < self.max_batch_size and (remaining := deadline - time.monotonic()) > 0:
                if not await self.queue.wait_for_more(remaining):
                    break
                batch += self.queue.take_matching(first.key, self.max_batch_size - len(batch))
        rows = sum(job.parameters["rows"] for job in batch)
        self.batches_formed[rows] = self.batches_formed.get(rows, 0) + 1
        if self.stats is not None:
            now = time.monotonic()
            self.stats.record_queue([int((now - job.arrival) * 1e9) for job in batch])
        await self._run(batch)
        self._current = []  # (its requests' arrays are not kept until the next batch)

    async def _run(self, batch: List[Job]) -> None:
        requests = [job.parameters["request"] for job in batch]
        headers = batch[0].parameters["headers"]
        if len(batch) == 1:
            await self._run_alone(batch[0])
            return
        rows = [job.parameters["rows"] for job in batch]
        try:
            response, response_headers = await self._run_merged(requests, rows, headers)
            parts = split_response(response, requests, rows, self.model.name)
        except Exception as exc:
            logger.warning("batch of %d for %s failed (%s); running each request alone", len(batch),
                           self.model.name, exc)
            for job in batch:
                await self._run_alone(job)
            return
        for job, part in zip(batch, parts):
            if not job.future.done():
                job.future.set_result((part, dict(response_headers)))

    async def _run_merged(self, requests: List[InferRequest], rows: List[int], headers: Optional[dict]):
        """The model's call on the requests merged, with MERGED_ROWS saying what each brought."""
        merged = MERGED_ROWS.set(tuple(rows))
        try:
            return await self._executed(self.model(merge_requests(requests, self.by_parameters), headers),
                                        sum(rows), len(rows))
        finally:
            MERGED_ROWS.reset(merged)

    async def _executed(self, call, rows: int, jobs: int):
        """Await one model call, recorded as one execution of `rows` rows for `jobs` requests (or a failed one)."""
        if self.stats is None:
            return await call
        start = time.perf_counter_ns()
        try:
            result = await call
        except BaseException:
            self.stats.record_failed_execution()
            raise
        self.stats.record_batch(rows, jobs, 0, time.perf_counter_ns() - start, 0)
        return result

    async def _run_alone(self, job: Job) -> None:
        try:
            result = await self._executed(self.model(job.parameters["request"], job.parameters["headers"]),
                                          job.parameters["rows"], 1)
        except Exception as exc:
            if not job.future.done():
                job.future.set_exception(exc)
            return
        if not job.future.done():
            job.future.set_result(result)

    _stopped = False
    _current: List[Job] = []

    async def stop(self) -> None:
        self._stopped = True
        await cancel_and_wait(self._task)
        self._task = None
        unloaded = ModelNotReady(self.model.name, "the model is being unloaded")
        self.queue.fail_all(unloaded)  # queued, or in the batch the cancel cut short: answered, not left waiting
        for job in self._current:
            if not job.future.done():
                job.future.set_exception(unloaded)
