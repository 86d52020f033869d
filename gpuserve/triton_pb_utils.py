"""`triton_python_backend_utils` for Triton Python-backend models served in process by gpuserve.

A Triton user's `model.py` does `import triton_python_backend_utils as pb_utils`; gpuserve puts this
module under that name before it imports the file, so the model runs unchanged. Triton runs each
instance in a stub process and moves tensors through shared memory; here a model instance is an
object on its own thread in the server process, and tensors are the request's NumPy arrays (no
copy). BLS calls (`InferenceRequest.exec`) go through the server's own data plane, so another
model's batching, statistics and errors apply exactly as for a client's request.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import sys
import threading
from typing import Any, Dict, List, Optional, Set

import numpy as np

from gpuserve.datatypes import deserialize_bytes_tensor as _deserialize_bytes
from gpuserve.datatypes import from_numpy_dtype, object_map, serialize_bytes_tensor
from gpuserve.triton_metrics import Metric, MetricFamily  # noqa: F401 - part of pb_utils' API

logger = logging.getLogger("gpuserve.python_model")

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2
TRITONSERVER_MEMORY_CPU = 0
TRITONSERVER_MEMORY_CPU_PINNED = 1
TRITONSERVER_MEMORY_GPU = 2

TRITON_STRING_TO_NUMPY = {
    "TYPE_BOOL": bool, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16, "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8, "TYPE_INT16": np.int16, "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64, "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


# errors -------------------------------------------------------------------------------------------
class TritonError:
    """An error a model puts in a response (`InferenceResponse(error=...)`); INTERNAL unless a code is given."""

    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = INTERNAL):
        self._message = str(message)
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, {self._code})"


class TritonModelException(Exception):
    """Raised by models (and by BLS helpers) to fail the whole execute call."""

    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


def _text(value):
    """Triton's bindings take names as C++ strings, which accept bytes too: the usual BLS example passes a
    BYTES input's element (`as_numpy()[0]`, a bytes object) as `model_name`."""
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray, np.bytes_)) else value


# Triton's bindings are pybind11 functions: an argument of the wrong type (None included) is a TypeError before
# any of their own checks run (qa L0_backend_python argument_validation).
def _str_arg(where: str, name: str, value) -> str:
    if not isinstance(value, (str, bytes, bytearray, np.bytes_)):
        raise TypeError(f"{where}: incompatible function arguments: '{name}' must be str, not "
                        f"{type(value).__name__}")
    return _text(value)


def _int_arg(where: str, name: str, value, unsigned: bool = False) -> int:
    if isinstance(value, (bool, float)) or not isinstance(value, (int, np.integer)) or (unsigned and value < 0):
        raise TypeError(f"{where}: incompatible function arguments: '{name}' must be "
                        f"{'a non-negative ' if unsigned else 'an '}int, not {value!r}")
    return int(value)


def _list_arg(where: str, name: str, value) -> list:
    if value is None or isinstance(value, (str, bytes, dict)):
        raise TypeError(f"{where}: incompatible function arguments: '{name}' must be a list, not "
                        f"{type(value).__name__}")
    return list(value)


def _tensors_arg(where: str, name: str, value) -> list:
    """A list of Tensor; a None in it passes the binding (an empty pointer) and the constructor refuses it."""
    tensors = _list_arg(where, name, value)
    for tensor in tensors:
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"{where}: incompatible function arguments: '{name}' must hold Tensor objects, not "
                            f"{type(tensor).__name__}")
    return tensors


# tensors ------------------------------------------------------------------------------------------
class Tensor:
    # BF16 data is held as float32 (NumPy has no bfloat16); as in Triton, such a tensor refuses as_numpy()
    # and travels through DLPack as bfloat16 (a model checks that as_numpy() fails, qa's identity_bf16)
    _bf16 = False

    def __init__(self, name: str, data, dtype=None):
        name = _str_arg("Tensor.__init__()", "name", name)
        if data is None:
            raise TypeError("Tensor.__init__(): incompatible constructor arguments: the data must be a NumPy array, "
                            "not None")
        if not isinstance(data, np.ndarray) and hasattr(data, "__dlpack__"):
            data = np.from_dlpack(data)
        array = np.asarray(data) if dtype is None else np.asarray(data, dtype=dtype)
        if array.dtype.kind == "U":  # as Triton: text becomes BYTES elements
            array = object_map(str.encode, array)
        elif not array.flags.c_contiguous:  # as Triton, which copies a tensor into its shared memory
            array = np.ascontiguousarray(array)
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        if self._bf16:
            raise TritonModelException("Tensor dtype is BF16 and cannot be converted to NumPy. Use to_dlpack() "
                                       "and from_dlpack() instead.")
        return self._array

    def shape(self) -> List[int]:
        return list(self._array.shape)

    def triton_dtype(self) -> str:
        return "BF16" if self._bf16 else numpy_to_triton_type(self._array.dtype) or ""

    def is_cpu(self) -> bool:
        return True

    def to_dlpack(self):
        if self._bf16:  # a bfloat16 DLPack tensor, as Triton hands it over (its values are exact in bfloat16)
            import torch
            return torch.from_numpy(np.ascontiguousarray(self._array)).to(torch.bfloat16).__dlpack__()
        if not self._array.flags.writeable:  # a request's bytes, read in place: this NumPy's DLPack refuses
            self._array = self._array.copy()  # read-only arrays, so export (and keep) a copy, once
        return self._array.__dlpack__()

    @staticmethod
    def from_dlpack(name: str, capsule) -> "Tensor":
        """From a DLPack capsule (`torch.utils.dlpack.to_dlpack(t)`, as Triton's examples pass) or any object
        with `__dlpack__`; device data is copied to the host, where gpuserve's tensors live."""
        if _str_arg("Tensor.from_dlpack()", "name", name) == "":
            raise TritonModelException("Tensor name cannot be an empty string.")
        if capsule is None or (not hasattr(capsule, "__dlpack__") and type(capsule).__name__ != "PyCapsule"):
            raise TritonModelException("Provided tensor is not supported. Tensor must be a DLPack capsule or have "
                                       "`__dlpack__` and `__dlpack_device__` attributes")
        if hasattr(capsule, "cpu") and hasattr(capsule, "numpy"):  # a torch tensor, possibly on the GPU
            return _from_torch(name, capsule)
        if hasattr(capsule, "__dlpack__"):
            if getattr(capsule, "__dlpack_device__", lambda: (1, 0))()[0] != 1 and hasattr(capsule, "get"):
                return Tensor(name, capsule.get())  # a CuPy array
            return Tensor(name, np.from_dlpack(capsule))
        try:  # a raw capsule: only a framework can open it (NumPy needs the producing object)
            import torch.utils.dlpack
        except ImportError:
            raise TritonModelException("Tensor.from_dlpack got a raw DLPack capsule and PyTorch is not installed "
                                       "to read it; pass the tensor itself") from None
        return _from_torch(name, torch.utils.dlpack.from_dlpack(capsule))

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, shape={list(self._array.shape)}, dtype={self._array.dtype})"


def _from_torch(name: str, tensor) -> Tensor:
    """A torch tensor on the host; bfloat16 (which NumPy cannot hold) becomes a BF16 Tensor kept as float32."""
    tensor = tensor.detach().cpu()
    bf16 = str(tensor.dtype) == "torch.bfloat16"
    made = Tensor(name, (tensor.float() if bf16 else tensor).numpy())
    made._bf16 = bf16
    return made


def host_array(tensor: Tensor):
    """(array, V2 datatype) of a tensor for the server's own use: BF16 tensors refuse as_numpy()."""
    if tensor._bf16:
        return tensor._array, "BF16"
    return tensor._array, None


def _checked_parameters(parameters) -> dict:
    """A response's parameters as Triton's stub takes them: a dict of str keys and bool/int/str values, refused
    in its words otherwise (qa's response_parameters model relays the message to its client)."""
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise TritonModelException(f"Expect dict, got {type(parameters)}")
    for key, value in parameters.items():
        if not isinstance(key, str):
            raise TritonModelException(f"Expect parameters keys to have type str, found type {type(key)}")
        if not isinstance(value, (bool, int, str)):
            raise TritonModelException(f"Expect parameters values to have type bool/int/str, found type {type(value)}")
    return dict(parameters)


# requests and responses ---------------------------------------------------------------------------
_NO_OUTPUTS: List[Tensor] = []  # InferenceResponse's default (a None given is refused, as Triton's binding does)


class InferenceResponse:
    def __init__(self, output_tensors: List[Tensor] = _NO_OUTPUTS, error: Optional[TritonError] = None,
                 parameters: Optional[dict] = None):
        self._outputs = _tensors_arg("InferenceResponse.__init__()", "output_tensors",
                                     [] if output_tensors is _NO_OUTPUTS else output_tensors)
        if any(tensor is None for tensor in self._outputs):
            raise TritonModelException("Output tensor for inference response should not be empty.")
        if isinstance(error, str):
            error = TritonError(error)
        self._error = error
        if isinstance(parameters, str):
            parameters = json.loads(parameters or "{}")
        self._parameters = _checked_parameters(parameters)

    def output_tensors(self) -> List[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> Optional[TritonError]:
        return self._error

    def parameters(self) -> str:
        return json.dumps(self._parameters)


class InferenceResponseSender:
    """Decoupled models answer through this; `gpuserve.triton_python` gives it where responses go."""

    def __init__(self, deliver, cancelled, single: bool = False):
        self._deliver = deliver
        self._cancelled = cancelled
        self._closed = False
        # A non-decoupled model's sender (Triton 24.06 on): its one response completes the request, during
        # execute or after it returned; a final flag after it changes nothing
        self._single = single
        self._answered = False
        self._stats = None  # the model's statistics, where gpuserve's own backends report each response
        self._reported = 0

    def _report_statistics(self, start_ns: int, output_start_ns: int, end_ns: int, outcome: str) -> None:
        """A response's statistics under its index in this request's responses, as Triton's C++ backends
        report them (TRITONBACKEND_ModelInstanceReportResponseStatistics); not part of the Python backend's
        API, whose models report none. Used by gpuserve's stand-ins of Triton's test backends."""
        index, self._reported = self._reported, self._reported + 1
        if self._stats is not None:
            self._stats.record_response(index, start_ns, output_start_ns, end_ns, outcome)

    def send(self, response: Optional[InferenceResponse] = None, flags: int = 0) -> None:
        final = bool(flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        if self._closed:
            if self._single and self._answered and response is None and final:
                return
            raise TritonModelException("Unable to send response. Response sender has been closed.")
        if response is None and not final:
            raise TritonModelException("send() needs a response or the TRITONSERVER_RESPONSE_COMPLETE_FINAL flag")
        if self._single and response is None:
            raise TritonModelException("Non-decoupled model cannot send complete final before sending a response")
        if final or self._single:
            self._closed = True
        self._answered = self._answered or response is not None
        self._deliver(response, flags)

    def is_cancelled(self) -> bool:
        return self._cancelled()


def _never() -> bool:
    return False


class InferenceTrace:
    """What `request.trace()` returns: given as a BLS request's `trace=`, that request is traced as a
    child of the traced request it came from (gpuserve/tracing.py), as in Triton."""

    def __init__(self, trace=None):
        self._trace = trace

    def get_context(self, mode: str = "opentelemetry"):
        return None  # no context string: a BLS request joins its parent's spans through trace= instead


class InferenceRequest:
    """Both what `execute` receives and what a model builds for BLS (`exec` / `async_exec`)."""

    # model_name, requested_output_names and inputs have no default: Triton's constructor refuses a call
    # without one with a TypeError (qa's bls test_bls_incorrect_args)
    def __init__(self, *, model_name: str, requested_output_names: List[str], inputs: List[Tensor],
                 request_id: str = "", correlation_id=0, flags: int = 0,
                 timeout: int = 0, model_version: int = -1, parameters: Optional[Any] = None,
                 preferred_memory=None, trace=None):
        where = "InferenceRequest.__init__()"
        self._model_name = _str_arg(where, "model_name", model_name)
        self._outputs = [_str_arg(where, "requested_output_names", name)
                         for name in _list_arg(where, "requested_output_names", requested_output_names)]
        self._inputs = _tensors_arg(where, "inputs", inputs)
        self._request_id = _str_arg(where, "request_id", request_id)
        if correlation_id is None:
            raise TypeError(f"{where}: incompatible function arguments: 'correlation_id' must not be None")
        if isinstance(correlation_id, np.integer):
            correlation_id = int(correlation_id)
        if not isinstance(correlation_id, (int, str)):
            raise TritonModelException("Correlation ID must be integer or string")
        self._correlation_id = correlation_id
        self._flags = _int_arg(where, "flags", flags, unsigned=True)
        self._timeout = _int_arg(where, "timeout", timeout, unsigned=True)
        self._model_version = _int_arg(where, "model_version", model_version)
        if any(tensor is None for tensor in self._inputs):
            raise TritonModelException(f"Input tensor for request with id '{self._request_id}' and model name "
                                       f"'{self._model_name}' should not be empty.")
        if "" in self._outputs:
            raise TritonModelException(f"Requested output name for request with id '{self._request_id}' and model "
                                       f"name '{self._model_name}' should not be empty.")
        if isinstance(parameters, str):
            parameters = json.loads(parameters or "{}")
        self._parameters = dict(parameters) if parameters else {}
        self._trace = trace
        self._start()

    @classmethod
    def _received(cls, model_name: str, outputs: List[str], inputs: List[Tensor], request_id: str,
                  correlation_id, flags: int, timeout: int, model_version: int, parameters: dict
                  ) -> "InferenceRequest":
        """A request an execute receives, from values the server has of the right types already: the
        constructor's argument checks (which models' own BLS requests need) took half of the ~4.4 us a
        request took to become this. The caller passes a dict of its own as `parameters`."""
        request = cls.__new__(cls)
        request._model_name, request._outputs, request._inputs = model_name, outputs, inputs
        request._request_id, request._correlation_id, request._flags = request_id, correlation_id, flags
        request._timeout, request._model_version, request._parameters = timeout, model_version, parameters
        request._trace = None
        request._start()
        return request

    def _start(self) -> None:
        self._sender: Optional[InferenceResponseSender] = None
        self._make_sender = None  # set by the server for the requests an execute receives
        self._cancelled = _never
        self._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL

    def trace(self) -> InferenceTrace:
        return self._trace if isinstance(self._trace, InferenceTrace) else InferenceTrace()

    def inputs(self) -> List[Tensor]:
        return self._inputs

    def requested_output_names(self) -> Set[str]:
        """A set, as Triton's stub hands it (a std::set made a Python set): models written for Triton may use
        set operations on it, and none can rely on an order."""
        return set(self._outputs)

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self):
        return self._correlation_id

    def flags(self) -> int:
        return self._flags

    def set_flags(self, flags: int) -> None:
        """As Triton's: a BLS request's sequence flags set after it was made."""
        self._flags = _int_arg("InferenceRequest.set_flags()", "flags", flags, unsigned=True)

    def timeout(self) -> int:
        return self._timeout

    def model_name(self) -> str:
        return self._model_name

    def model_version(self) -> int:
        return self._model_version

    def parameters(self) -> str:
        return json.dumps(self._parameters)

    def is_cancelled(self) -> bool:
        return bool(self._cancelled())

    def get_response_sender(self) -> InferenceResponseSender:
        if self._sender is None:
            if self._make_sender is None:
                raise TritonModelException("this request has no response sender (only requests a model's execute "
                                           "receives do)")
            self._sender = self._make_sender(self)
        return self._sender

    def set_release_flags(self, flags: int) -> None:
        """RESCHEDULE: once execute returns, the request runs again in a later batch (Triton's iterative
        sequence batching; a model without it fails the request then, as Triton's core does)."""
        self._release_flags = flags

    # BLS ---------------------------------------------------------------------------------------
    def exec(self, decoupled: bool = False):
        _bls_allowed()
        bridge = current_bridge()
        if bridge.on_loop_thread():
            bridge.loop_thread_call()  # a quick execute ran on the loop's thread: later ones will not
            raise TritonModelException("InferenceRequest.exec() blocks, and this execute runs on the server's "
                                       "event loop (an async execute must 'await request.async_exec()'); the "
                                       "model's next executes run on its own thread")
        if decoupled:
            return ResponseIterator(bridge.open_stream(self))
        return bridge.infer_blocking(self)

    async def async_exec(self, decoupled: bool = False):
        _bls_allowed()
        bridge = current_bridge()
        if bridge.on_loop_thread():
            if decoupled:  # all at once: waiting here for each response would stop the loop that brings it
                return ResponseIterator(await bridge.infer_stream(self))
            return await bridge.infer(self)
        if decoupled:
            return ResponseIterator(bridge.open_stream(self))
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(bridge.infer(self), bridge.loop))


class ResponseIterator:
    """A decoupled BLS call's responses (`exec(decoupled=True)`), as Triton's iterator hands them: each as it
    comes (`next()` waits for it), StopIteration past the last; once the last has come, a new `for` over an
    iterator gone to its end starts again from the first response, while one over an iterator left midway
    goes on from there (qa bls test_response_iterator). `cancel()` asks the callee to stop (its
    `is_cancelled()` turns true); the responses it still sends come, and once the last has come it does
    nothing."""

    def __init__(self, source):
        if isinstance(source, (list, tuple)):  # every response already here
            self._responses, self._source, self._finished = list(source), None, True
        else:  # a stream the server fills (gpuserve.triton_bls.BlsStream)
            self._responses, self._source, self._finished = [], source, False
        self._next = 0

    def __iter__(self):
        if self._finished and self._next >= len(self._responses):
            self._next = 0
        return self

    def __next__(self):
        if not self._finished:
            response, final = self._source.get()
            if response is not None:
                self._responses.append(response)
            if final:
                self._finished = True
                self._next = len(self._responses)
            if response is not None:
                return response
        if self._next >= len(self._responses):
            raise StopIteration("Iteration is done for the responses.")
        self._next += 1
        return self._responses[self._next - 1]

    def cancel(self) -> None:
        if not self._finished and self._source is not None:
            self._source.cancel()


class PreferredMemory:
    """Where a BLS call would like its outputs; gpuserve answers BLS calls with host arrays."""

    def __init__(self, preferred_memory_type: int = TRITONSERVER_MEMORY_CPU, preferred_device_id: int = 0):
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


# the server a model talks to (BLS, model loading API) ---------------------------------------------
_local = threading.local()
_default: Dict[str, Any] = {"bridge": None}


def set_bridge(bridge, thread_default: bool = True) -> None:
    """The bridge of the model whose instance runs on this thread; also the process-wide default."""
    _local.bridge = bridge
    if thread_default or _default["bridge"] is None:
        _default["bridge"] = bridge


def outside_execute(flag: bool) -> None:
    """This thread runs a model's initialize or finalize (True), or no longer does: Triton's stub refuses BLS
    there."""
    _local.outside_execute = flag


def _bls_allowed() -> None:
    if getattr(_local, "outside_execute", False):
        raise TritonModelException("BLS is only supported during the 'execute' function.")


def get_model_dir() -> str:
    """The folder of the running model's model.py (its version folder), as Triton's stub answers."""
    path = getattr(sys.modules.get("model"), "__file__", None)  # the module of the model this thread runs
    if not path:
        raise TritonModelException("get_model_dir() answers only in a model's own code (its import, "
                                   "initialize, execute or finalize)")
    return os.path.dirname(path)


def current_bridge():
    bridge = getattr(_local, "bridge", None) or _default["bridge"]
    if bridge is None:
        raise TritonModelException("no gpuserve server is running this model: BLS calls and the model loading "
                                   "API work only inside a served model")
    return bridge


def is_model_ready(model_name: str, model_version: str = "") -> bool:
    return current_bridge().model_ready(_text(model_name), str(_text(model_version) or ""))


def load_model(model_name: str, config: str = "", files: Optional[dict] = None) -> None:
    """Load or reload, with Triton's load-time overrides: `config` (JSON) and `files` ({"file:PATH": bytes})."""
    bridge = current_bridge()
    bridge.run(bridge.load(_text(model_name), config or None, dict(files) if files else None))


def unload_model(model_name: str, unload_dependents: bool = False) -> None:
    current_bridge().run(current_bridge().unload(_text(model_name)))


# logging ------------------------------------------------------------------------------------------
class LogLevel(enum.IntEnum):
    """Triton's Logger.LogLevel (a pybind11 enum): Logger.log takes one of these, not a bare int."""
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


class Logger:
    LogLevel = LogLevel
    INFO, WARNING, ERROR, VERBOSE = LogLevel.INFO, LogLevel.WARNING, LogLevel.ERROR, LogLevel.VERBOSE
    _LEVELS = {LogLevel.INFO: logging.INFO, LogLevel.WARNING: logging.WARNING, LogLevel.ERROR: logging.ERROR,
               LogLevel.VERBOSE: logging.DEBUG}

    @staticmethod
    def log(message: str, level: LogLevel = LogLevel.INFO) -> None:
        message = _str_arg("Logger.log()", "message", message)
        if not isinstance(level, LogLevel):
            raise TypeError(f"Logger.log(): incompatible function arguments: 'level' must be a "
                            f"pb_utils.Logger.LogLevel, not {level!r}")
        logger.log(Logger._LEVELS[level], "%s", message)

    @staticmethod
    def log_info(message: str) -> None:
        logger.info("%s", _str_arg("Logger.log_info()", "message", message))

    @staticmethod
    def log_warn(message: str) -> None:
        logger.warning("%s", _str_arg("Logger.log_warn()", "message", message))

    @staticmethod
    def log_error(message: str) -> None:
        logger.error("%s", _str_arg("Logger.log_error()", "message", message))

    @staticmethod
    def log_verbose(message: str) -> None:
        logger.debug("%s", _str_arg("Logger.log_verbose()", "message", message))


# tensor and config helpers ------------------------------------------------------------------------
def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Optional[Tensor]:
    for tensor in inference_request._inputs:  # called per request and input: no generator
        if tensor._name == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Optional[Tensor]:
    for tensor in inference_response._outputs:
        if tensor._name == name:
            return tensor
    return None


def get_input_config_by_name(model_config: dict, name: str) -> Optional[dict]:
    return next((t for t in model_config.get("input", []) if t.get("name") == name), None)


def get_output_config_by_name(model_config: dict, name: str) -> Optional[dict]:
    return next((t for t in model_config.get("output", []) if t.get("name") == name), None)


def using_decoupled_model_transaction_policy(model_config: dict) -> bool:
    return bool((model_config.get("model_transaction_policy") or {}).get("decoupled", False))


def triton_string_to_numpy(triton_type_string: str):
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def triton_to_numpy_type(data_type):
    """Triton's DataType enum number (TYPE_BOOL = 1 ... TYPE_STRING = 13) -> a NumPy type."""
    names = ["TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8", "TYPE_INT16",
             "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING"]
    if isinstance(data_type, str):
        return TRITON_STRING_TO_NUMPY.get(data_type)
    return TRITON_STRING_TO_NUMPY[names[data_type - 1]] if 1 <= data_type <= len(names) else None


def numpy_to_triton_type(data_type) -> Optional[str]:
    try:
        return "TYPE_STRING" if from_numpy_dtype(np.dtype(data_type)) == "BYTES" else \
            "TYPE_" + from_numpy_dtype(np.dtype(data_type))
    except Exception:
        return None


def serialize_byte_tensor(input_tensor: np.ndarray):
    """BYTES elements as Triton lays them out: 4-byte little-endian length, then the bytes."""
    if input_tensor.size == 0:
        return ()
    if input_tensor.dtype != np.object_ and input_tensor.dtype.type != np.bytes_:
        return None
    return serialize_bytes_tensor(input_tensor)


def deserialize_bytes_tensor(encoded_tensor) -> np.ndarray:
    """The inverse of serialize_byte_tensor: an object array of bytes."""
    data = encoded_tensor.tobytes() if isinstance(encoded_tensor, np.ndarray) else bytes(encoded_tensor)
    return _deserialize_bytes(data)


# auto-complete ------------------------------------------------------------------------------------
class ModelConfig:
    """The configuration `auto_complete_config` may extend: inputs, outputs, max_batch_size, the dynamic
    batcher and the transaction policy. A conflict with what config.pbtxt says is a ValueError, which
    makes the model not ready with that reason."""

    _INPUT_KEYS = ("name", "data_type", "dims", "optional")
    _OUTPUT_KEYS = ("name", "data_type", "dims")

    def __init__(self, model_config):
        config = json.loads(model_config) if isinstance(model_config, (str, bytes)) else dict(model_config)
        config.setdefault("input", [])
        config.setdefault("output", [])
        config.setdefault("max_batch_size", 0)
        self._model_config = config

    def as_dict(self) -> dict:
        return self._model_config

    def _name(self) -> str:
        return str(self._model_config.get("name", ""))

    def set_max_batch_size(self, max_batch_size: int) -> None:
        declared = int(self._model_config.get("max_batch_size", 0) or 0)
        if declared > max_batch_size:
            raise ValueError(f"configuration specified max_batch_size {declared}, but in auto-complete-config "
                             f"function for model '{self._name()}' specified max_batch_size {max_batch_size}")
        self._model_config["max_batch_size"] = int(max_batch_size)

    def set_dynamic_batching(self) -> None:
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._model_config:
                raise ValueError(f"Configuration specified scheduling_choice as '{other}', but auto-complete-config "
                                 f"function for model '{self._name()}' tries to set scheduling_choice as "
                                 "'dynamic_batching'")
        self._model_config.setdefault("dynamic_batching", {})

    def set_model_transaction_policy(self, transaction_policy_dict: dict) -> None:
        if any(k != "decoupled" for k in transaction_policy_dict):
            raise ValueError(f"model transaction property in auto-complete-config function for model "
                             f"'{self._name()}' contains property other than 'decoupled'.")
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in policy and "decoupled" in transaction_policy_dict \
                and bool(policy["decoupled"]) != bool(transaction_policy_dict["decoupled"]):
            raise ValueError(f"trying to change decoupled property in auto-complete-config for model "
                             f"'{self._name()}', which is already set to '{bool(policy['decoupled'])}'.")
        policy.update(transaction_policy_dict)

    def add_input(self, input: dict) -> None:  # noqa: A002 - Triton's parameter name
        self._add("input", input, self._INPUT_KEYS, "'name', 'data_type', 'dims' and 'optional'")

    def add_output(self, output: dict) -> None:
        self._add("output", output, self._OUTPUT_KEYS, "'name', 'data_type' and 'dims'")

    def _add(self, kind: str, tensor: dict, allowed, allowed_words: str) -> None:
        """Triton's pb_utils checks, in its order and words (its qa greps the log for them)."""
        where = f"in auto-complete-config function for model '{self._name()}'"
        if any(k not in allowed for k in tensor):
            raise ValueError(f"{kind} '{tensor.get('name', '')}' {where} contains property other than "
                             f"{allowed_words}.")
        if "name" not in tensor:
            raise ValueError(f"{kind} {where} is missing 'name' property.")
        for key in ("data_type", "dims"):
            if key not in tensor:
                raise ValueError(f"{kind} '{tensor['name']}' {where} is missing '{key}' property.")
        for current in self._model_config[kind]:
            if current.get("name") != tensor["name"]:
                continue
            declared_type = current.get("data_type", "TYPE_INVALID")
            if declared_type not in ("", "TYPE_INVALID") and declared_type != tensor["data_type"]:
                raise ValueError(f"unable to load model '{self._name()}', configuration expects datatype "
                                 f"{declared_type} for {kind} '{tensor['name']}', model provides {tensor['data_type']}")
            if current.get("dims") and list(current["dims"]) != list(tensor["dims"]):
                raise ValueError(f"model '{self._name()}', tensor '{tensor['name']}': the model expects dims "
                                 f"{list(tensor['dims'])} but the model configuration specifies dims "
                                 f"{list(current['dims'])}")
            if "optional" in current and "optional" in tensor and bool(current["optional"]) != bool(tensor["optional"]):
                raise ValueError(f"model '{self._name()}', tensor '{tensor['name']}': the model expects optional "
                                 f"{bool(tensor['optional'])} but the model configuration specifies optional "
                                 f"{bool(current['optional'])}")
            current.update({k: tensor[k] for k in tensor})
            return
        self._model_config[kind].append(dict(tensor))
