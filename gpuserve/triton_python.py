"""Triton Python-backend models (`backend: "python"`, `<version>/model.py` with `TritonPythonModel`), served
in process through gpuserve's engine.

Why in process: Triton runs each instance in a stub process and copies every tensor through shared
memory both ways; here an instance is the user's object on its own engine thread and `execute` gets
the request's own NumPy arrays. The engine's scheduler does what Triton's does for this backend:
without `dynamic_batching` one request per `execute`; with it, the requests that queue while the
instance is busy (same input shapes, up to `max_batch_size` rows, `max_queue_delay_microseconds`,
priorities, timeouts) arrive together as the `requests` list, never concatenated. Statistics count
requests and executions as Triton's do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import inspect
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from gpuserve import triton_pb_utils as pb
from gpuserve.backends.base import TensorSpec
from gpuserve.batching import batching_config, request_priority, request_timeout_s
from gpuserve.dataplane import STREAMING
from gpuserve.declared_tensors import config_reshapes, from_reshape, to_reshape
from gpuserve.engine.batcher import BatchingConfig, Scheduler
from gpuserve.engine.device import choose_device
from gpuserve.engine import rate_limiter
from gpuserve.engine.instance import Instance
from gpuserve.errors import (GpuserveError, InvalidInput, InvalidSettings, ModelMissingError, ModelNotReady,
                             RequestCancelled, Unimplemented)
from gpuserve.ownership import owned, roots
from gpuserve.response_stream import ResponseStream
from gpuserve.runtimes import FrameworkModel
from gpuserve.triton_bls import BLS_STREAM, PythonModelError, ServerBridge
from gpuserve.triton_input_order import backend_order
from gpuserve.triton_config import delay_scheduler_count, dynamic_batching_settings, read_config
from gpuserve.triton_python_env import environment_for
from gpuserve.triton_python_env import use as use_environment
from gpuserve.triton_instance_update import LoadedFrom, file_digest, signature
from gpuserve.sequence_direct import DirectBatches, Entry
from gpuserve.sequence_state import direct_batching
from gpuserve.triton_sequence import SequenceRouter
from gpuserve.triton_python_config import (checked_inputs, complete_config, completed_config,
                                           import_model_file, may_block, running_model, tensor_specs)
from gpuserve.types import InferOutput, InferRequest, InferResponse
from gpuserve.warmup import run_warmup, warmup_samples

logger = logging.getLogger("gpuserve")

HOLDING_GIL_INLINE_S = 0.002  # a quick execute that holds the GIL runs on the loop's thread up to this long
SLOW_ON_LOOP_S = 0.01  # an execute on the loop's thread that takes longer stops executes running there
WARMUP_WAIT_S = 60.0  # a warmup request whose response never comes fails the load after this
READY_CHECK_S = 5.0  # as Triton: a model's is_ready() that takes longer means not ready
MAX_PARALLEL_INSTANCES = 16  # instances of one model that initialize at once
# Request parameters the protocol itself uses; `request.parameters()` shows only the client's own.
PROTOCOL_PARAMETERS = frozenset({"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority",
                                 "timeout", "triton_enable_empty_final_response"})


_SERVER_PACKAGES = ("gpuserve", "asyncio", "concurrent", "threading")  # frames Triton's stub runs in C++


def _where(exc: BaseException) -> str:
    """Triton's stub reports an exception from execute as pybind11 words it: the message, then "At:" and the
    model's own frames, innermost first (the bls example prints it). The server's frames, which Triton's stub
    has in C++, are left out."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        package = str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0]
        if package not in _SERVER_PACKAGES:
            code = tb.tb_frame.f_code
            frames.append(f"  {code.co_filename}({tb.tb_lineno}): {code.co_name}\n")
        tb = tb.tb_next
    return "\n\nAt:\n" + "".join(reversed(frames)) if frames else ""


class PythonInstance:
    """One `TritonPythonModel` object as the engine's backend: `run_requests` hands it whole requests."""

    max_concurrency = 1
    close_timeout_s = 10.0  # unload waits this long for a running execute (Triton kills a stuck stub)

    def __init__(self, owner: "TritonPythonBackendModel", obj, name: str, device: str):
        self.owner = owner
        self.obj = obj
        self.name = name
        self.device = device
        self.signature = ("KIND_CPU", ())  # (kind, gpus): what a reload's instance update matches instances by
        self.passive = False
        self.inputs = owner.input_specs
        self.outputs = owner.output_specs
        self._declared = {spec.name for spec in self.outputs}
        # The instance's coroutines (`async def execute`, initialize, finalize) run on an event loop of its
        # own. This thread runs it for each call (a hand-over to another thread costs ~55 us a call); once a
        # call leaves tasks behind (a decoupled model answering after execute returned, as Triton's stub lets
        # it), the loop keeps running in a thread of its own, as the stub's does, and calls go there
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None

    def _run_loop_on_its_own(self) -> None:
        loop = self._loop

        def run() -> None:
            pb.set_bridge(self.owner.bridge, thread_default=False)  # BLS from the model's coroutines
            running_model(self.owner.module)
            asyncio.set_event_loop(loop)
            loop.run_forever()

        self._loop_thread = threading.Thread(target=run, name=f"{self.name}-async", daemon=True)
        self._loop_thread.start()

    def _call(self, function, *args, background: Optional[Callable[[BaseException], None]] = None):
        """Call a model method and wait for a coroutine it returns; with `background` (a decoupled model's
        execute once its loop runs on its own, as Triton runs it) it is not waited for: `background` gets
        its error."""
        result = function(*args)
        if not inspect.isawaitable(result):
            return result
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        if self._loop_thread is None and background is None:
            try:
                return self._loop.run_until_complete(_awaited(result))
            finally:
                if asyncio.all_tasks(self._loop):
                    self._run_loop_on_its_own()
        if self._loop_thread is None:  # a decoupled execute never holds its instance: its executes overlap
            self._run_loop_on_its_own()
        future = asyncio.run_coroutine_threadsafe(_awaited(result), self._loop)
        if background is None:
            return future.result()
        future.add_done_callback(lambda done: done.cancelled() or background(
            done.exception() or (self._decoupled_return() if done.result() is not None else None)))
        return None

    def _decoupled_return(self) -> "_DecoupledReturn":
        return _DecoupledReturn(f"Python model '{self.name}' is using the decoupled mode and the execute function "
                                "must return None.")

    def run_requests(self, jobs) -> List[object]:
        """Per job, its InferResponse or the error that fails it alone; execute runs once for all."""
        pb.set_bridge(self.owner.bridge)
        running_model(self.owner.module)
        requests = [self._request(job) for job in jobs]
        started = time.perf_counter()
        decoupled = self.owner.decoupled
        try:
            answers = self._call(self.obj.execute, requests, background=(
                lambda exc: exc and self._failed_in_background(jobs, requests, exc)) if decoupled else None)
            if decoupled and answers is not None:  # Triton's stub refuses it, and the requests end with that
                raise self._decoupled_return()
        except (Exception, SystemExit) as exc:  # Triton's stub reports a SystemExit as any error; the server stays
            if decoupled:
                self._end_streams(jobs, requests, self._failure(exc))
                return [None for _ in jobs]
            # a request its sender already answered keeps that answer (Triton drops the error for it)
            return [self._response(job, _sent(request)) if _sent(request) is not None
                    else PythonModelError(self._failure(exc)) for job, request in zip(jobs, requests)]
        elapsed = time.perf_counter() - started
        if elapsed > SLOW_ON_LOOP_S and self.owner.bridge.on_loop_thread():
            logger.warning("model %s: an execute took %.0f ms on the server's event loop; its executes run on "
                           "the instance's thread from now on", self.owner.name, elapsed * 1e3)
            self.owner.forbid_inline()
        if self.owner.decoupled:  # the responses travel through each request's sender, now or later
            return [RESCHEDULED if request._release_flags & pb.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE else None
                    for request in requests]
        if answers is None:  # answered through response senders (allowed in default mode since Triton 24.06)
            answers = [None for _ in requests]
        try:
            answers = list(answers)
        except TypeError:
            answers = []
        if len(answers) != len(requests):
            message = (f"Failed to process the request(s) for model '{self.name}', message: Number of "
                       f"InferenceResponse objects do not match the number of InferenceRequest objects. "
                       f"InferenceRequest(s) size is:{len(requests)}, and InferenceResponse(s) size is:{len(answers)}")
            return [PythonModelError(message) for _ in jobs]
        if any(request._release_flags & pb.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE for request in requests):
            return self._rescheduled(jobs, requests, answers)
        return [self._answer(job, request, answer) for job, request, answer in zip(jobs, requests, answers)]

    def _rescheduled(self, jobs, requests, answers) -> List[object]:
        """A request released with RESCHEDULE runs again later, so it has no answer now: as Triton's stub,
        a response returned for one fails the whole execute."""
        for request, answer in zip(requests, answers):
            if request._release_flags & pb.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE and answer is not None:
                message = (f"Failed to process the request(s) for model '{self.name}', message: Expected a None "
                           f"object in the execute function return list for reschduled request, found type "
                           f"'{type(answer)}'.")
                return [PythonModelError(message) for _ in jobs]
        return [RESCHEDULED if request._release_flags & pb.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE
                else self._answer(job, request, answer) for job, request, answer in zip(jobs, requests, answers)]

    def _answer(self, job, request: pb.InferenceRequest, answer) -> object:
        """A request's answer, as Triton's stub settles it: a response its sender sent wins over one returned
        (which is dropped); one it will send after execute returned is awaited by the request (_Later)."""
        sent = _sent(request)
        if sent is not None:
            return self._response(job, sent)
        if answer is None and getattr(request, "_later", None) is not None:
            return _Later(request._later, functools.partial(self._response, job))
        return self._response(job, answer)

    def _failure(self, exc: BaseException) -> str:
        if isinstance(exc, _DecoupledReturn):  # Triton's stub words it with no exception type
            return f"Failed to process the request(s) for model '{self.name}', message: {exc}"
        return (f"Failed to process the request(s) for model '{self.name}', message: {type(exc).__name__}: "
                f"{exc}{_where(exc)}")

    def _failed_in_background(self, jobs, requests, exc: BaseException) -> None:
        """A decoupled coroutine execute that failed after execute returned: Triton's stub logs the error
        (the model may have closed its streams already, then the log is the only trace of it)."""
        message = self._failure(exc)
        logger.error("%s", message)
        self._end_streams(jobs, requests, message)

    @staticmethod
    def _end_streams(jobs, requests, message: str) -> None:
        """A decoupled request that failed: responses already sent stay sent; its stream ends with the error
        unless the model closed it (then, as in Triton, the error reaches nobody)."""
        for job, request in zip(jobs, requests):
            sender = request.get_response_sender()
            if not sender._closed:
                sender._closed = True
                job.parameters["stream"].put(PythonModelError(message), True)

    def _request(self, job) -> pb.InferenceRequest:
        if job.parameters is None:  # a Direct batch's null request: a slot's row with no request in it
            null = pb.InferenceRequest(model_name=self.owner.name, requested_output_names=[],
                                       inputs=[_tensor(name, array) for name, array in job.arrays.items()],
                                       model_version=int(self.owner.version) if str(self.owner.version).isdigit()
                                       else -1)
            null._cancelled = pb._never
            null._make_sender = functools.partial(self._sender_for, job)
            return null
        request: InferRequest = job.parameters["request"]
        tensors = _in_backend_order([_tensor(t.name, array, t.datatype == "BF16")
                                     for t, array in zip(request.inputs, job.parameters["arrays"])],
                                    [_tensor(name, array) for name, array in job.parameters.get("controls", ())])
        names = [o.name for o in request.request_outputs] if request.request_outputs else \
            [s.name for s in self.outputs]
        given = request.parameters or {}
        parameters = {k: v for k, v in given.items() if k not in PROTOCOL_PARAMETERS} if given else {}
        sequence = job.parameters.get("sequence", given)  # an iterative sequence's own ID and flags
        flags = (pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START if sequence.get("sequence_start") else 0) | \
                (pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END if sequence.get("sequence_end") else 0)
        correlation_id, timeout = sequence.get("sequence_id", 0), int(given.get("timeout", 0) or 0)
        version = int(self.owner.version) if str(self.owner.version).isdigit() else -1
        request_id = request.id or ""
        if type(correlation_id) in (int, str) and type(request_id) is str and timeout >= 0 and "" not in names:
            wrapped = pb.InferenceRequest._received(self.owner.name, names, tensors, request_id, correlation_id,
                                                    flags, timeout, version, parameters)
        else:  # what the constructor refuses, refused in its words
            wrapped = pb.InferenceRequest(model_name=self.owner.name, requested_output_names=names, inputs=tensors,
                                          request_id=request_id, correlation_id=correlation_id, flags=flags,
                                          timeout=timeout, model_version=version, parameters=parameters)
        stream = job.parameters.get("stream")
        # the client went away: its future was cancelled (or, decoupled, it stopped reading the stream)
        wrapped._cancelled = job.future.done if stream is None else stream.is_cancelled
        # made on first use: a sender refers back to its request, and a cycle per request would leave every
        # request's arrays to the garbage collector (10-60 ms pauses under load, measured)
        wrapped._make_sender = functools.partial(self._sender_for, job)
        if request.trace is not None:  # its BLS requests may be traced under it (trace=request.trace())
            wrapped._trace = pb.InferenceTrace(request.trace)
        return wrapped

    def _sender_for(self, job, request: pb.InferenceRequest) -> pb.InferenceResponseSender:
        stream = job.parameters.get("stream") if job.parameters is not None else None
        if stream is None:  # the request's one response, maybe sent after execute returned (run_requests)
            request._later = later = concurrent.futures.Future()  # the sender delivers once (single=True)
            return pb.InferenceResponseSender(lambda response, flags: later.set_result(_detached(job, response)),
                                              request._cancelled, single=True)
        else:
            def deliver(response, flags):
                item = None if response is None else self._response(job, response)
                stream.put(item, bool(flags & pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL))
        sender = pb.InferenceResponseSender(deliver, request._cancelled)
        sender._stats = self.owner.stats  # per-response statistics (Triton's test backends served here report them)
        return sender

    def _response(self, job, answer) -> object:
        if job.parameters is None:  # a null request's answer goes nowhere, as Triton drops it
            return None
        if not isinstance(answer, pb.InferenceResponse):
            got = "None" if answer is None else type(answer).__name__
            return PythonModelError(f"Failed to process the request(s) for model '{self.name}', message: "
                                    f"Expected an 'InferenceResponse' object in the execute function return list, "
                                    f"found type '{got}'.", counts_as_success=answer is None)
        if answer.has_error():
            error = answer.error()
            return PythonModelError(error.message(), error.code(), counts_as_success=True)
        request: InferRequest = job.parameters["request"]
        outputs = []
        declared = self._declared
        owned_already, inputs = getattr(answer, "_owned", False), None
        for tensor in answer.output_tensors():
            if not isinstance(tensor, pb.Tensor):
                return PythonModelError(f"model '{self.owner.name}' returned {type(tensor).__name__} as an output "
                                        "tensor; expected pb_utils.Tensor")
            if declared and tensor.name() not in declared:
                continue  # as Triton: an output the config does not declare is not answered (nor requestable)
            array, datatype = pb.host_array(tensor)
            if not owned_already:
                if inputs is None:
                    inputs = _input_roots(job)
                array = owned(array, inputs)
            try:
                reshape = self.owner.reshapes["output"].get(tensor.name())
                if reshape is not None:  # clients get the config's dims
                    array = from_reshape(array, reshape, self.owner.config.get("max_batch_size", 0) > 0,
                                         "the tensor")
                outputs.append(InferOutput(tensor.name(), list(array.shape), datatype, array) if datatype
                               else InferOutput.from_numpy(tensor.name(), array))
            except GpuserveError as exc:
                return PythonModelError(f"output '{tensor.name()}' of model '{self.owner.name}': {exc}")
        return InferResponse(request.id, self.owner.name, outputs, model_version=self.owner.version,
                             parameters=dict(answer._parameters))

    def run(self, inputs: Dict[str, np.ndarray], output_names=None) -> Dict[str, np.ndarray]:
        """One warmup sample through execute, as Triton's core runs it: a batch of N rows is N requests of
        one row (when the model batches), each with a response sender; a decoupled model's requests are
        done at their final flag. Every error response fails the sample, in Triton's words."""
        rows = len(next(iter(inputs.values()))) if inputs and self.owner.config.get("max_batch_size", 0) > 0 else 0
        parts = [{k: v[i:i + 1] for k, v in inputs.items()} for i in range(rows)] if rows else [inputs]
        decoupled = self.owner.decoupled
        requests, answered = [], []
        for part in parts:
            request = pb.InferenceRequest(model_name=self.owner.name,
                                          inputs=_in_backend_order([_tensor(k, v) for k, v in part.items()]),
                                          requested_output_names=[s.name for s in self.outputs])
            got, done = [], threading.Event()

            def deliver(response, flags, got=got, done=done):
                if response is not None:
                    got.append(response)
                if flags & pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL or not decoupled:
                    done.set()

            request._make_sender = lambda _, deliver=deliver: pb.InferenceResponseSender(
                deliver, pb._never, single=not decoupled)
            requests.append(request)
            answered.append((got, done))
        returned = self._call(self.obj.execute, requests)
        if decoupled and returned is not None:
            raise self._decoupled_return()
        returned = list(returned) if returned is not None else [None] * len(requests)
        if len(returned) != len(requests):
            raise PythonModelError(f"execute returned {len(returned)} responses for {len(requests)} warmup requests")
        responses = []
        for request, answer, (got, done) in zip(requests, returned, answered):
            if request._sender is not None and not done.wait(WARMUP_WAIT_S):
                raise PythonModelError(f"no final response within {WARMUP_WAIT_S:.0f} s to a warmup request")
            responses += got if request._sender is not None else [answer]
        errors = [r.error().message() for r in responses if isinstance(r, pb.InferenceResponse) and r.has_error()]
        if errors:
            raise PythonModelError("; ".join(errors))
        if any(not isinstance(r, pb.InferenceResponse) for r in responses):
            raise PythonModelError("execute returned no InferenceResponse for a warmup request")
        last = responses[-1] if responses else None
        return {t.name(): pb.host_array(t)[0] for t in last.output_tensors()} if last is not None else {}

    def unload(self) -> None:
        finalize = getattr(self.obj, "finalize", None)
        try:
            if finalize is not None:
                pb.outside_execute(True)
                self._call(finalize)
        except BaseException:  # sys.exit() and the like too: the unload goes on, as after any failure
            logger.exception("model %s: finalize() failed", self.name)
        finally:
            pb.outside_execute(False)
            if self._loop_thread is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop_thread.join(5)
            if self._loop is not None and not self._loop.is_running():
                self._loop.close()
            self._loop = self._loop_thread = None
            self.obj = None


def _input_roots(job):
    """The memory the request's inputs lie in (gpuserve/ownership.py), found once per request: a decoupled
    model's responses all ask."""
    found = job.parameters.get("input_roots")
    if found is None:
        found = job.parameters["input_roots"] = roots(job.parameters["arrays"])
    return found


def _detached(job, response):
    """A response sent through a non-decoupled request's sender, with its outputs copied now, as Triton's stub
    copies them at send(): the answer is built later, and the model may refill its arrays meanwhile."""
    if not isinstance(response, pb.InferenceResponse) or job.parameters is None:
        return response
    inputs = _input_roots(job)
    detached = pb.InferenceResponse.__new__(pb.InferenceResponse)
    detached.__dict__.update(response.__dict__)
    detached._outputs = [_tensor(t._name, owned(t._array, inputs), t._bf16) if isinstance(t, pb.Tensor) else t
                         for t in response._outputs]
    detached._owned = True
    return detached


def _sent(request: pb.InferenceRequest):
    """The response a non-decoupled request's sender has sent, if it has."""
    later = getattr(request, "_later", None)
    return later.result() if later is not None and later.done() else None


class _Later:
    """A non-decoupled request whose response its sender will send after execute returned."""

    def __init__(self, future: "concurrent.futures.Future", convert):
        self.future = future
        self.convert = convert

    async def result(self):
        return self.convert(await asyncio.wrap_future(self.future))


class _DecoupledReturn(Exception):
    """A decoupled model's execute returned responses instead of None."""


RESCHEDULED = object()  # a request's answer when execute released it with RESCHEDULE (it runs again)
RESCHEDULE_REFUSED = ("Request is released with TRITONSERVER_REQUEST_RELEASE_RESCHEDULE, while the model is not "
                      "configured to handle such a flag.")


async def _awaited(awaitable):
    return await awaitable


def _off_the_loop(config: BatchingConfig) -> BatchingConfig:
    """The batching config with no batch run on the loop's thread (engine/batcher.py's inline rule)."""
    return dataclasses.replace(config, inline_below_s=0.0, inline_alone_below_s=0.0, inline_holding_gil_below_s=0.0)


async def _submit(scheduler: Scheduler, arrays: Dict[str, np.ndarray], parameters: Dict[str, Any],
                  context: Dict[str, Any]):
    """One request to a scheduler with its Triton priority and timeout; the answer is its InferResponse."""
    answer = await scheduler.submit(arrays, request_priority(parameters, scheduler.config.priority_levels),
                                    request_timeout_s(parameters), None, None, context=context)
    if answer is RESCHEDULED:  # only iterative sequence batching runs a request again (_in_sequence)
        raise InvalidInput(RESCHEDULE_REFUSED)
    return await answer.result() if isinstance(answer, _Later) else answer


def _tensor(name: str, array: np.ndarray, bf16: bool = False) -> pb.Tensor:
    if not array.flags.writeable:  # read in place from a small body's bytes, or a client's shared memory:
        array = array.copy()  # Triton's stub hands models arrays they may change in place (`x *= 2`), so
        # here too (a large body's arrays are views of the server's own buffer, writable without a copy)
    tensor = pb.Tensor.__new__(pb.Tensor)  # the request's own array: no check
    tensor._name, tensor._array = name, array
    if bf16:
        tensor._bf16 = True
    return tensor


def _in_backend_order(inputs: List[pb.Tensor], controls: List[pb.Tensor] = ()) -> List[pb.Tensor]:
    """A request's tensors in the order Triton's backend hands them to `request.inputs()`: its input map's
    order, then the sequence batcher's controls (gpuserve/triton_input_order.py); not the order sent once
    there are three inputs or more. A control named as an input takes that input's place, as in Triton."""
    if len(inputs) < 3 and not controls:
        return inputs
    tensors = {tensor.name(): tensor for tensor in inputs}
    sent = tuple(tensors)
    added = tuple(tensor.name() for tensor in controls if tensor.name() not in tensors)
    tensors.update((tensor.name(), tensor) for tensor in controls)
    return [tensors[name] for name in backend_order(sent, added)]


STUB_NAME_REFUSES = set(";|&$`<>()[]{}\\\"'*?~#!")


def _check_stub_names(names: List[str]) -> None:
    """Triton's Python backend names a stub process after the model and each instance, and refuses names
    with shell characters in them; a model loaded under such a name fails as there."""
    if any(not name or STUB_NAME_REFUSES.intersection(name) for name in names):
        raise InvalidInput("Invalid stub name: contains invalid characters")


class TritonPythonBackendModel(FrameworkModel):
    outputs_in_model_order = True  # Triton's Python backend answers outputs as execute returned them
    plain_predict = True  # its own predict, with no user hooks: the data plane may await it directly
    platform = ""
    classifies_outputs = False

    def __init__(self, name: str, settings=None, uri: Optional[str] = None):
        super().__init__(name, settings, uri)
        self.bridge = ServerBridge(self)
        self.registry = None  # set by the ModelRepository that serves it (BLS reaches other models there)
        self.config: Dict[str, Any] = {}
        self.input_specs: List[TensorSpec] = []
        self.input_index: Dict[str, TensorSpec] = {}
        self.output_specs: List[TensorSpec] = []
        self.optional_inputs: set = set()
        self.reshapes: Dict[str, Dict[str, tuple]] = {"input": {}, "output": {}}  # applied as Triton's core does
        self.instances: List[PythonInstance] = []
        self.decoupled = False  # model_transaction_policy { decoupled: true }: any number of responses per request
        self.sequences: Optional[SequenceRouter] = None  # sequence_batching: stateful models
        self.direct: Optional[DirectBatches] = None  # their Direct batchers (slots, null requests)
        self.schedulers: List[Scheduler] = []
        self.loaded_from: Optional[LoadedFrom] = None
        self.batching: Optional[BatchingConfig] = None
        self._module_name = ""  # model.py's module in sys.modules, dropped at unload (reloads import afresh)
        self.module = None  # model.py's module: what `import model` gives the model's code

    @property
    def registry(self):
        return self._registry

    @registry.setter
    def registry(self, registry) -> None:
        """Set by the ModelRepository that serves the model; when it does so on the server's loop (a load through
        the repository API), that loop is where BLS and model loading calls go from `initialize` on."""
        self._registry = registry
        try:
            self.bind_loop(asyncio.get_running_loop())
        except RuntimeError:
            pass

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The server's loop, where BLS and model loading calls from `initialize` on go; told by the
        repository's load as well, so a model loaded at start-up may load others from its `initialize`."""
        if self.bridge.loop is None or self.bridge.loop.is_closed():
            self.bridge.loop = loop

    def artefact(self) -> Path:
        if not self.uri:
            raise ModelMissingError(f"model '{self.name}' has no model.py")
        return Path(self.uri)

    def load(self) -> bool:
        path = self.artefact()
        if not path.is_file():
            raise ModelMissingError(f"Failed to preinitialize Python stub: Python model file not found in '{path}'")
        _check_stub_names([self.name])  # before model.py is read, as Triton's stub is started before it runs
        folder, config = self.written_config()
        environment = environment_for(self.name, config, folder)  # Triton's EXECUTION_ENV_PATH
        if environment is not None:
            use_environment(self.name, environment)
        unique = self._module_name = f"gpuserve_python_model_{self.name}_{self.version or 0}_{id(self)}"
        self.module = module = import_model_file(path, unique)
        cls = module.TritonPythonModel
        config = complete_config(cls, config)
        if "ensemble_scheduling" in config:
            raise InvalidSettings(f"model '{self.name}': a Python model cannot have ensemble_scheduling")
        self.decoupled = pb.using_decoupled_model_transaction_policy(config)
        device = choose_device(self.device_wanted)
        if not device.startswith("cuda") and any(str(g.get("kind", "")).upper() == "KIND_GPU"
                                                 for g in config.get("instance_group") or []):
            logger.warning("model %s: instance_group asks for KIND_GPU but no usable CUDA device is here; "
                           "its instances run as KIND_CPU", self.name)
        config = completed_config(config, self.name, device)
        max_batch = config["max_batch_size"]
        self.config = config
        self.input_specs = tensor_specs(config.get("input", []), max_batch > 0, "input")
        self.input_index = {spec.name: spec for spec in self.input_specs}
        self.output_specs = tensor_specs(config.get("output", []), max_batch > 0, "output")
        self.optional_inputs = {e["name"] for e in config.get("input", []) if e.get("optional")}
        self.reshapes = config_reshapes(config)
        self._sync_settings(config)
        _check_stub_names([f"{g['name']}_{i}" for g in config["instance_group"] for i in range(g["count"])])
        limiter = rate_limiter.limiter()  # Triton's --rate-limit: checked before any instance starts
        tickets = limiter.tickets_for(self.name, config["instance_group"]) if limiter is not None else None
        try:
            self.instances = self._start_instances(cls, config, folder, device)
        except BaseException:
            if tickets:
                limiter.unregister(tickets)
            raise
        self._tickets = tickets or []
        self.loaded_from = LoadedFrom(cls, folder, device, file_digest(path))  # for instance updates in place
        try:
            samples = warmup_samples(self.settings, self.input_specs) if self.settings.warmup_samples else []
            if samples:
                run_warmup(self.name, self.instances, samples)
        except BaseException:
            for instance in self.instances:
                instance.unload()
            raise
        self.backend = self.instances[0]
        self.client_inputs = self.input_specs
        # a Direct-strategy sequence model runs once enough slots are ready, as the file-backed ones do
        batching = direct_batching(batching_config(self.settings, max_batch > 0), config.get("sequence_batching"))
        ragged = tuple(e["name"] for e in config.get("input", []) if e.get("allow_ragged_batch") in (True, "true"))
        if ragged:  # as Triton: requests whose ragged inputs differ in shape share a batch (execute gets each)
            batching = dataclasses.replace(batching, ragged_inputs=ragged, ragged_any_shape=True)
        # A quick sync execute may run on the loop's thread as the engine runs quick CPU batches (two
        # thread wake-ups saved, ~200 us a request here); never an async one, a decoupled model's, or one
        # whose model.py calls the server (a BLS call there would wait on the thread it blocks) or waits on
        # anything (a slow execute there would stall every request); one that turns out slow there anyway
        # ends it (run_requests).
        if self.decoupled or inspect.iscoroutinefunction(getattr(cls, "execute", None)) or may_block(path):
            batching = _off_the_loop(batching)
        else:  # an execute that holds the GIL gains nothing from its thread (engine/batcher.py says how it is seen)
            batching = dataclasses.replace(batching, inline_holding_gil_below_s=HOLDING_GIL_INLINE_S)
        # One batch at a time per instance, as Triton hands them: a model.py's execute has nothing to stage
        # ahead, and a request taken early would be out of reach of priorities, timeouts and the queue bound
        self.batching = batching
        tickets = self._tickets + [None] * (len(self.instances) - len(self._tickets))
        engine_instances = [self.engine_instance(i, t) for i, t in zip(self.instances, tickets)]
        # A passive instance is loaded and initialized but, as in Triton, given no requests
        engine_instances = [e for e, i in zip(engine_instances, self.instances) if not i.passive] or engine_instances
        if "sequence_batching" in config:  # a sequence stays on its instance: one scheduler per instance
            self.sequences = SequenceRouter(self.name, config["sequence_batching"], len(engine_instances),
                                            max_batch > 0, max_batch)
            groups = [[instance] for instance in engine_instances]
        else:
            groups = [engine_instances]
        self.schedulers = [Scheduler(self.name, group, batching, self.stats, batch_dim=max_batch > 0)
                           for group in groups]
        self.scheduler = self.schedulers[0]
        self.direct = self._direct_batches(config, [group[0] for group in groups]) if self.sequences else None
        self.ready = True
        logger.info("model %s: Python backend, %d instance(s) on %s, max_batch_size %d%s", self.name,
                    len(self.instances), device, max_batch,
                    ", sequence batching" if self.sequences is not None else
                    ", dynamic batching" if batching.max_batch_size > 1 else "")
        return True

    def _direct_batches(self, config: Dict[str, Any], engine_instances: List[Instance]) -> Optional[DirectBatches]:
        """A Direct-strategy model with a batch dimension runs as Triton's Direct batcher runs it: each
        sequence's request in its slot's row, the free slots below the highest one taken filled with null
        requests (READY, START and END false, CORRID 0, no correlation ID or flags, no outputs asked for),
        as the model files' (gpuserve/sequence_direct.py). Decoupled and iterative models keep the
        dynamic batches of their own turns."""
        batching, router = config["sequence_batching"], self.sequences
        if batching.get("oldest") is not None or not router.batch_dim or self.decoupled or router.iterative:
            return None
        return DirectBatches(self.name, router, list(engine_instances), self.stats, batching,
                             int(config["max_batch_size"]), delay_scheduler_count())

    def written_config(self):
        """(the model's folder, its config.pbtxt as written, named after the model), before auto-complete."""
        path = self.artefact()
        folder = Path(self.settings.folder) if self.settings.folder else path.parent.parent
        config = read_config(folder) if (folder / "config.pbtxt").is_file() else {"name": self.name}
        config["name"] = self.name
        config.setdefault("backend", "python")
        return folder, config

    def _sync_settings(self, config: Dict[str, Any]) -> None:
        """The completed config decides batching: Triton batches a Python model only with `dynamic_batching`."""
        max_batch = config["max_batch_size"]
        batches = "dynamic_batching" in config or "sequence_batching" in config  # sequences share batches too
        self.settings.max_batch_size = max_batch if batches and max_batch > 1 else 0
        self.settings.model_extra["triton_max_batch_size"] = max_batch
        if "dynamic_batching" in config and self.settings.dynamic_batching is None:  # added by auto-complete
            from gpuserve.settings import DynamicBatching

            self.settings.dynamic_batching = DynamicBatching.model_validate(
                dynamic_batching_settings(config["dynamic_batching"]))

    def engine_instance(self, instance: "PythonInstance", ticket=None) -> Instance:
        # A second batch waits on a busy instance (its handover then costs no loop turn: +10-20 % req/s
        # measured), still counted against the queue bound and answered at its timeout (engine/queue.py).
        # With priority levels, one batch at a time, as Triton hands them: a batch taken early would run
        # before a higher-priority request that arrives meanwhile. With a rate limiter ticket, one batch at
        # a time too (engine/rate_limiter.py).
        levels = self.batching.priority_levels if self.batching is not None else 1
        engine_instance = Instance(instance, instance.name, stats=self.stats,
                                   slots=1 if levels > 1 or ticket is not None else 2)
        engine_instance.ticket = ticket
        return engine_instance

    def _start_instances(self, cls, config: Dict[str, Any], folder: Path, device: str) -> List[PythonInstance]:
        """One object per instance, named as Triton names them (GROUP, or GROUP_i when a group has several).
        As Triton, the instances initialize in parallel (a slow `initialize` costs its time once, not once
        per instance); when one fails, those that started are unloaded and its error is the load's."""
        arguments = json.dumps(config)
        wanted = [(group, i) for group in config["instance_group"] for i in range(group["count"])]
        if len(wanted) == 1:
            return [self.start_instance(cls, wanted[0][0], 0, arguments, folder, device)]
        with concurrent.futures.ThreadPoolExecutor(min(len(wanted), MAX_PARALLEL_INSTANCES),
                                                   thread_name_prefix=f"init-{self.name}") as pool:
            started = [pool.submit(self.start_instance, cls, group, i, arguments, folder, device)
                       for group, i in wanted]
            concurrent.futures.wait(started)
        failed = next((f.exception() for f in started if f.exception() is not None), None)
        if failed is not None:
            for future in started:
                if future.exception() is None:
                    future.result().unload()
            raise failed
        return [future.result() for future in started]

    def start_instance(self, cls, group: Dict[str, Any], index: int, arguments: str, folder: Path,
                       device: str) -> "PythonInstance":
        """Instance `index` of `group`: a new TritonPythonModel object, initialized."""
        on_gpu = group["kind"] == "KIND_GPU"
        device_id = device.split(":")[1] if ":" in device else "0"
        name = f"{group['name']}_{index}"  # as Triton 2.51 names them, a lone instance too
        obj = cls()
        kind = "GPU" if on_gpu else "MODEL" if group["kind"] == "KIND_MODEL" else "CPU"  # as Triton names kinds
        args = {"model_config": arguments, "model_instance_kind": kind,
                "model_instance_name": name, "model_instance_device_id": device_id if on_gpu else "0",
                "model_repository": str(folder), "model_version": str(self.version or 1), "model_name": self.name}
        instance = PythonInstance(self, obj, name, device if on_gpu else "cpu")
        instance.signature = signature(group)
        instance.passive = group.get("passive") in (True, "true", 1)
        initialize = getattr(obj, "initialize", None)
        if initialize is not None:
            pb.set_bridge(self.bridge, thread_default=False)
            running_model(self.module)
            pb.outside_execute(True)
            try:
                instance._call(initialize, args)
            finally:
                pb.outside_execute(False)
        return instance

    async def healthy(self) -> bool:
        """Triton 25.x's optional `is_ready()` (sync or async) on every instance, each given 5 s; only a bool
        True means ready. As Triton's stub, a check still running is not started again: a later question
        waits for it (its answer comes once it ends), so a check slower than 5 s answers one question
        NOT READY and the next READY."""
        checks = self.__dict__.setdefault("_ready_checks", {})
        for instance in list(self.instances):
            check = getattr(instance.obj, "is_ready", None)
            if check is None:
                continue
            running = checks.get(instance.name)
            if running is None or running.done():
                call = (lambda c=check: asyncio.run(c())) if inspect.iscoroutinefunction(check) else check
                running = checks[instance.name] = asyncio.ensure_future(asyncio.to_thread(call))
                running.add_done_callback(lambda f: f.cancelled() or f.exception())  # read even if none waits
            try:
                answer = await asyncio.wait_for(asyncio.shield(running), READY_CHECK_S)
            except Exception as exc:  # a check that fails or hangs means not ready, never a 500
                logger.warning("model %s: is_ready() of %s failed: %s", self.name, instance.name,
                               exc or type(exc).__name__)
                return False
            if answer is not True:
                if not isinstance(answer, bool):
                    logger.warning("model %s: is_ready() of %s returned %s, not a bool: not ready", self.name,
                                   instance.name, type(answer).__name__)
                return False
        return True

    def triton_model_config(self) -> Dict[str, Any]:
        """What the model configuration endpoints answer: the completed config, as Triton shows it."""
        return json.loads(json.dumps(self.config))

    def metadata(self) -> Dict[str, Any]:
        meta = super().metadata()
        meta["platform"] = "python"  # as Triton's metadata names the backend (its config says backend: python)
        return meta

    async def predict(self, payload, headers=None, response_headers=None):
        if not isinstance(payload, InferRequest):
            raise InvalidInput(f"model '{self.name}' is a Triton Python model: send a V2 inference request")
        scheduler = self.scheduler
        if scheduler is None or not self.ready:
            raise ModelNotReady(self.name)
        if self.bridge.loop is None:
            self.bridge.loop = asyncio.get_running_loop()
        arrays = self._arrays(payload)
        context = {"request": payload, "arrays": list(arrays.values())}
        if self.direct is not None:
            return await self._in_direct(payload, context, arrays)
        if self.sequences is not None and not self.decoupled:
            return await self._in_sequence(payload, context, arrays)
        if not self.decoupled:
            return await _submit(scheduler, arrays, payload.parameters, context)
        if not STREAMING.get():
            where = "ModelInfer RPC" if payload.from_grpc else "HTTP end point"
            raise Unimplemented(f"{where} doesn't support models with decoupled transaction policy")
        context["stream"] = stream = ResponseStream(asyncio.get_running_loop())
        caller = BLS_STREAM.get()
        if caller is not None:  # a model's streaming BLS call: its cancel() reaches this request's senders
            caller.watch(stream)
        task = asyncio.ensure_future(_submit(scheduler, arrays, payload.parameters, context)
                                     if self.sequences is None else self._in_sequence(payload, context, arrays))
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or stream.put(t.exception(), True))
        return self._responses(payload, stream, task)

    def forbid_inline(self) -> None:
        """From now on every execute runs on an instance thread (a BLS call was made from the loop's)."""
        for scheduler in self.schedulers:
            scheduler.config = _off_the_loop(scheduler.config)

    async def _in_sequence(self, payload: InferRequest, context: Dict[str, Any], arrays: Dict[str, np.ndarray]):
        """A stateful model's request: on its sequence's instance, after the sequence's previous request.
        With iterative sequence batching, a request without a correlation ID starts a sequence of its own,
        a request its execute released with RESCHEDULE runs again (neither START nor END then), and the
        sequence ends once its request is released for good, as Triton's iterative sequencer does."""
        router, parameters = self.sequences, payload.parameters
        router.check_rows(arrays)
        if router.iterative and parameters.get("sequence_id") in (None, 0, ""):
            parameters = {**parameters, "sequence_id": router.next_id(), "sequence_start": True}
        key, sequence = router.open(parameters)
        waited = time.perf_counter_ns()
        try:
            async with sequence.turn():
                rows = next(iter(arrays.values())).shape[0] if arrays and router.batch_dim else 1
                scheduler = self.schedulers[sequence.instance]
                while True:
                    context["controls"] = router.control_arrays(key, parameters, rows)
                    context["sequence"] = parameters
                    answer = await scheduler.submit(
                        arrays, request_priority(payload.parameters, scheduler.config.priority_levels),
                        request_timeout_s(payload.parameters), None, None, context=context)
                    if answer is not RESCHEDULED:
                        return await answer.result() if isinstance(answer, _Later) else answer
                    if not router.iterative:
                        raise InvalidInput(RESCHEDULE_REFUSED)
                    router.requeue(key, sequence)  # as Triton: refused once the sequence idled out meanwhile
                    parameters = {**parameters, "sequence_start": False, "sequence_end": False}
        except (asyncio.CancelledError, RequestCancelled):
            if not sequence.cancelled or context.get("controls") is not None:
                raise  # cancelled while running: the engine counted it
            # cancelled while waiting for its turn (by its client, or with its sequence): Triton's CANCELED
            self.stats.record_request(False, time.perf_counter_ns() - waited, "CANCELED")
            raise
        finally:
            router.close(key, sequence, router.iterative or bool(parameters.get("sequence_end")))

    async def _in_direct(self, payload: InferRequest, context: Dict[str, Any], arrays: Dict[str, np.ndarray]):
        """A Direct sequence's request: queued in its sequence's slot, its controls set when its batch forms.
        As Triton's sequence batcher, cancelling a request still queued cancels the sequence: its other
        queued requests are answered CANCELLED instead of running."""
        router, parameters = self.sequences, payload.parameters
        router.check_rows(arrays)
        key, sequence = router.open(parameters)
        waited = time.perf_counter_ns()

        def prepare() -> Dict[str, np.ndarray]:
            if sequence.cancelled:
                raise RequestCancelled("Request cancelled: its sequence was cancelled")
            context["controls"] = controls = router.control_arrays(key, parameters, 1)
            context["sequence"] = parameters
            return {**arrays, **dict(controls)}  # what a null request of its batch copies

        try:
            ending = (lambda: router.end_slot(sequence)) if parameters.get("sequence_end") else None
            entry = Entry(arrays, prepare, lambda answer: answer, None, asyncio.get_running_loop().create_future(),
                          ending, parameters=context)
            if sequence.admit is None:
                answer = await self.direct.run(sequence.instance, sequence.slot_index, entry)
            else:
                answer = await sequence.park(entry)
            return await answer.result() if isinstance(answer, _Later) else answer
        except (asyncio.CancelledError, RequestCancelled):
            if context.get("controls") is not None:
                raise  # cancelled while its batch ran: the batch counted it
            sequence.cancelled = True  # cancelled while queued (by its client, or with its sequence)
            self.stats.record_request(False, time.perf_counter_ns() - waited, "CANCELED")
            raise
        finally:
            router.close(key, sequence, bool(parameters.get("sequence_end")))

    def _take_schedulers(self) -> List[Scheduler]:
        if getattr(self, "direct", None) is not None:
            self.direct.close()
            self.direct = None
        schedulers, self.schedulers, self.scheduler = self.schedulers, [], None
        return schedulers

    async def aclose(self) -> None:
        await super().aclose()
        self._forget()

    def stop(self) -> None:
        super().stop()
        self._forget()

    def _forget(self) -> None:
        self.instances = []
        limiter = rate_limiter.limiter()
        if limiter is not None and getattr(self, "_tickets", None):
            limiter.unregister(self._tickets)
            self._tickets = []
        sys.modules.pop(self._module_name, None)  # the package import_model_file made, and the module in it
        if self.module is not None:
            sys.modules.pop(self.module.__name__, None)

    async def _responses(self, request: InferRequest, stream: ResponseStream, task: asyncio.Future):
        """A decoupled request's responses, each marked with `triton_final_response` as Triton marks them;
        a bare final flag becomes an empty response only when the client asked for one."""
        wanted = {o.name for o in request.request_outputs} if request.request_outputs else None
        empty_final = bool(request.parameters.get("triton_enable_empty_final_response"))
        final, first = False, True
        try:
            while True:
                item, final = await stream.get()
                if item is not None and first:  # Triton's nv_inference_first_response_histogram_ms
                    first = False
                    self.stats.record_first_response(time.perf_counter_ns() - stream.created)
                if item is None:
                    if final and empty_final:  # as Triton: the bare final response names no version
                        yield InferResponse(request.id, self.name, [], model_version="",
                                            parameters={"triton_final_response": True})
                elif isinstance(item, InferResponse):
                    if wanted is not None:
                        item.outputs = [o for o in item.outputs if o.name in wanted]
                    item.parameters["triton_final_response"] = final
                    yield item
                else:  # an error: the stream reports it (final or not, as sent) and goes on with other requests
                    item.triton_final = final
                    yield item
                if final:
                    return
        finally:
            stream.close()
            if not final:  # the client went away before the end: senders see is_cancelled()
                stream.cancelled = True
                if not task.done():
                    task.cancel()

    def _arrays(self, request: InferRequest) -> Dict[str, np.ndarray]:
        arrays = checked_inputs(self.name, request, self.input_index, self.optional_inputs,
                                self.config.get("max_batch_size", 0))
        for name, entry in self.reshapes["input"].items():  # execute sees the reshape's dims
            if name in arrays:
                arrays[name] = to_reshape(arrays[name], entry, self.config.get("max_batch_size", 0) > 0,
                                          f"input '{name}'")
        return arrays
