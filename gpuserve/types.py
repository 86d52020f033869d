"""Request and response tensors backed by NumPy, with the names and methods KServe users call.

JSON `data` is turned into an array once, lazily, on the first `as_numpy()`; binary and raw data
arrive as arrays already (zero-copy, read-only). Responses keep arrays until the transport encodes
them (`wire_dict`, or the binary and gRPC encoders), so orjson writes them directly
(OPT_SERIALIZE_NUMPY) without building Python lists. KServe's own conversions (`to_rest`, `to_grpc`,
`from_grpc`, `from_bytes`) are for user code and live in gpuserve.types_kserve.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from gpuserve.datatypes import DATATYPES, FLOAT_TYPES, from_numpy_dtype, to_numpy_dtype
from gpuserve.errors import InferenceError, InvalidInput


def _check_shape(shape: Any, where: str) -> list[int]:
    if not isinstance(shape, (list, tuple)):
        raise InvalidInput(f"{where}: 'shape' must be a list of integers, got {shape!r}")
    out = []
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 0:
            raise InvalidInput(f"{where}: 'shape' must hold non-negative integers, got {list(shape)!r}")
        out.append(int(dim))
    return out


def _count(shape: list[int]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def plain_count(shape: Any) -> Optional[int]:
    """The element count of a JSON shape the transports' short paths take: a list of non-negative ints (no
    bools); None for anything else, which the general path (_check_shape) refuses or reads."""
    if type(shape) is not list:
        return None
    n = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            return None
        n *= dim
    return n


def _floats_with_nulls(data: Any, dtype: np.dtype) -> np.ndarray:
    """JSON null stands for NaN in floating-point tensors (orjson writes NaN as null)."""
    raw = np.array(data, dtype=object)
    if raw.dtype != object:
        return raw.astype(dtype)
    nulls = np.equal(raw, None)
    raw[nulls] = np.nan
    return raw.astype(dtype)


def _json_integers(data: Any, dtype: np.dtype, datatype: str) -> np.ndarray:
    """JSON numbers for an integer tensor, parsed once: a fraction (5.5) or a value outside the type
    is the client's error (as Triton), never silently truncated or wrapped."""
    parsed = np.asarray(data)
    kind = parsed.dtype.kind
    if kind in "iu":
        if parsed.size and parsed.dtype != dtype:
            info = np.iinfo(dtype)
            if parsed.min() < info.min or parsed.max() > info.max:
                raise OverflowError(f"values outside the range of {datatype} ({info.min}..{info.max})")
        return parsed.astype(dtype, copy=False)
    if kind == "b":
        return parsed.astype(dtype)
    if kind == "f" and not np.array_equal(parsed, np.trunc(parsed)):
        raise ValueError("non-integer values for an integer tensor")
    # whole floats (5.0), huge integers, strings, nulls: numpy converts exactly or says what is wrong
    return np.asarray(data, dtype=dtype)


_INT64_MAX = 2**63 - 1
_JSON_DEPTH = 100  # Triton's HTTP front end refuses tensor data nested this deep


def _nesting(data: Any) -> int:
    """How many lists enclose the first scalar of `data` (the top list not counted)."""
    depth = 0
    while isinstance(data, list) and data and isinstance(data[0], list):
        data = data[0]
        depth += 1
    return depth


def json_to_array(data: Any, datatype: str, shape: list[int], where: str, name: str = "") -> np.ndarray:
    """Flat or nested JSON data -> array of `shape`; mismatches are the client's error. Shapes too large
    to count in 64 bits and data nested past Triton's limit are refused first with Triton's words."""
    dtype = to_numpy_dtype(datatype)
    expected = _count(shape)
    if dtype.kind == "f" and type(data) is list and len(data) == expected and (not data or type(data[0]) is not list):
        # the common case, flat floats of the shape's count: what the checks below would pass, read at once
        try:
            return np.asarray(data, dtype=dtype).reshape(shape)
        except (TypeError, ValueError):
            pass  # nulls, lists further on, text that is no number: the general way below says what is wrong
    if expected > _INT64_MAX:
        raise InvalidInput(f"invalid shape for input '{name}': shape {shape} causes total element count to exceed "
                           f"maximum size of {_INT64_MAX}")
    if datatype != "BYTES" and dtype.itemsize > 1 and expected > _INT64_MAX // dtype.itemsize:
        raise InvalidInput(f"byte size overflow for input '{name}': element count ({expected}) * data type size "
                           f"({dtype.itemsize}) exceeds maximum allowed size ({_INT64_MAX})")
    if _nesting(data) + 1 >= _JSON_DEPTH:
        raise InvalidInput(f"{where}: JSON nesting depth exceeds maximum allowed limit ({_JSON_DEPTH})")
    try:
        if datatype == "BYTES":
            array = np.array(data, dtype=object)
            if array.ndim > 1 or (array.ndim == 1 and len(shape) != 1):
                array = array.reshape(-1)
        elif dtype.kind in "iu":
            array = _json_integers(data, dtype, datatype)
        else:
            try:
                array = np.asarray(data, dtype=dtype)
            except (TypeError, ValueError):
                if datatype not in FLOAT_TYPES:
                    raise
                array = _floats_with_nulls(data, dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"{where}: data does not fit datatype {datatype}: {exc}") from None
    if array.size != expected:
        raise InvalidInput(
            f"{where}: shape {shape} needs {expected} elements but data has {array.size}"
        )
    return array.reshape(shape)


def array_to_json(array: np.ndarray, datatype: str, nan_literals: bool = False) -> Any:
    """Flat data for a JSON response: an array orjson serialises, or a list for BYTES. NaN and infinities
    are null (orjson, MLServer, KServe), or with `nan_literals` NaN, Infinity, -Infinity (Triton)."""
    if datatype == "BYTES":
        items = np.asarray(array, dtype=object).ravel().tolist()
        if set(map(type, items)) == {bytes}:  # the common case, decoded by a C-level map (3x quicker at 100k)
            try:
                return list(map(bytes.decode, items))
            except UnicodeDecodeError:
                raise InvalidInput("BYTES output is not valid UTF-8; ask for it as binary data") from None
        return [_bytes_to_text(item) for item in items]
    flat = np.ascontiguousarray(array).ravel()
    if nan_literals and flat.dtype.kind == "f" and flat.size and not np.isfinite(flat).all():
        return _non_finite(flat)
    return json_numbers(flat)


_NARROW_FLOATS = "fe"  # dtype.char of float32 and float16


def json_numbers(array: np.ndarray) -> Any:
    """FP32/FP16 values written as the doubles they are, as Triton, KServe (`tolist()`) and MLServer write
    them (0.2852080166339874, not float32's shortest 0.28520802): the same number either way, but clients
    that compare a response's JSON with `expected.tolist()` need the digits to match. orjson writes
    float64 no slower than float32; a short array goes as Python floats, quicker than a copy."""
    if array.dtype.char not in _NARROW_FLOATS:
        return array
    return array.tolist() if array.size <= 32 else array.astype(np.float64)


def _non_finite(array: np.ndarray) -> Any:
    """Floats with NaN or infinities, written as Triton writes them (NaN, Infinity, -Infinity: what
    Python's json and tritonclient read); orjson alone would write null. A raw JSON fragment for orjson."""
    import json

    import orjson

    return orjson.Fragment(json.dumps(array.tolist(), separators=(",", ":")))


def _bytes_to_text(item: Any) -> Any:
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("BYTES output is not valid UTF-8; ask for it as binary data") from None
    if isinstance(item, np.generic):
        return item.item()
    return item


_CANONICAL = frozenset(DATATYPES)


def _numpy_datatype(array: np.ndarray) -> Optional[str]:
    try:
        return from_numpy_dtype(array.dtype)
    except InvalidInput:
        return None


class _Tensor:
    """Shared parts of inputs and outputs: a name, a V2 datatype, a shape and NumPy data.

    KServe users see three states, as KServe keeps them: JSON data (`data` a list), NumPy data (`data` the
    array they gave) and binary data (after `set_data_from_numpy(binary_data=True)`: `data` is None). The
    server's decoded tensors hold only `_array` and read as lists, as KServe's REST tensors do; `_array`
    is always the values when set, so the server never builds lists."""

    __slots__ = ("name", "_shape", "_datatype", "_data", "_array", "parameters", "_binary")
    _KIND = "tensor"

    def __init__(self, name: str, shape: Iterable[int], datatype: str, data: Any = None,
                 parameters: Optional[dict] = None):
        self.name = name
        self._shape = list(shape) if shape is not None else []
        if datatype not in _CANONICAL and isinstance(datatype, str):
            datatype = datatype.upper()  # KServe takes "fp32"
        self._datatype = datatype
        self.parameters = parameters if parameters is not None else {}
        self._data = data
        self._array: Optional[np.ndarray] = data if isinstance(data, np.ndarray) else None
        self._binary = False

    @property
    def shape(self) -> list[int]:
        return self._shape

    @shape.setter
    def shape(self, shape: Iterable[int]) -> None:
        self._shape = list(shape)
        array = self._array
        if array is not None and list(array.shape) != self._shape and array.size == _count(self._shape):
            self._array = array.reshape(self._shape)  # as_numpy follows the new shape, as KServe's does

    def set_shape(self, shape: Iterable[int]) -> None:
        self.shape = shape

    @property
    def datatype(self) -> str:
        return self._datatype

    @property
    def data(self) -> Any:
        """What KServe's `data` holds: the list or array given, None for binary data, and a flat list for
        tensors the server decoded (never computed by the server itself)."""
        if self._data is not None:
            return self._data
        if self._binary or self._array is None:
            return None
        out = array_to_json(self._array, self._datatype)
        return out.tolist() if isinstance(out, np.ndarray) else out

    @data.setter
    def data(self, value: Any) -> None:
        if self._binary and self.parameters:
            self.parameters.pop("binary_data_size", None)
        self._data = value
        self._array = value if isinstance(value, np.ndarray) else None
        self._binary = False

    def as_numpy(self) -> np.ndarray:
        if self._array is None:
            if self._data is None:
                raise InvalidInput(f"tensor '{self.name}' has no data")
            self._array = json_to_array(self._data, self._datatype, self._shape, f"tensor '{self.name}'", self.name)
        return self._array

    def set_data_from_numpy(self, input_tensor: np.ndarray, binary_data: bool = True) -> None:
        """KServe's errors (InferenceError) and states: binary data is announced in `binary_data_size`,
        which the server drops again whenever it answers the tensor as JSON."""
        if not isinstance(input_tensor, np.ndarray):
            raise InferenceError("input_tensor must be a numpy array")
        if input_tensor.dtype.kind == "M":  # dates travel as their text, as KServe sends them
            input_tensor = input_tensor.astype(np.object_)
        datatype = _numpy_datatype(input_tensor)
        if datatype != self._datatype and not (self._datatype == "BF16" and datatype == "FP32"):
            raise InferenceError(f"got unexpected datatype {datatype} from numpy array, expected {self._datatype}")
        if list(input_tensor.shape) != list(self._shape):
            raise InferenceError(f"got unexpected numpy array shape [{str(tuple(input_tensor.shape))[1:-1]}], "
                                 f"expected [{str(self._shape)[1:-1]}]")
        if binary_data:
            self._to_binary(input_tensor)
        else:
            self._to_json(input_tensor)

    def _to_binary(self, array: np.ndarray) -> None:
        from gpuserve.datatypes import deserialize_bytes_tensor, element_size, serialize_bytes_tensor

        if self._datatype == "BYTES":
            raw = serialize_bytes_tensor(array)
            size = len(raw)
            array = deserialize_bytes_tensor(raw).reshape(array.shape)  # reads back as bytes, as KServe's
        else:
            size = array.size * element_size(self._datatype)
        self._array, self._data, self._binary = array, None, True
        if self.parameters is None:
            self.parameters = {}
        self.parameters["binary_data_size"] = size

    def _to_json(self, array: np.ndarray) -> None:
        if self.parameters:
            self.parameters.pop("binary_data_size", None)
        self._binary = False
        if self._datatype != "BYTES":
            self._array, self._data = array, None  # `data` lists it on demand
            return
        values = []
        for item in array.ravel():
            if isinstance(item, bytes):
                try:
                    item = item.decode("utf-8")
                except UnicodeDecodeError:
                    raise InferenceError(f'Failed to encode "{item}" using UTF-8. Please use binary_data=True, '
                                         "if you want to pass a byte array.") from None
            values.append(item if isinstance(item, str) else str(item))
        self._array, self._data = None, values

    def _state(self) -> str:
        """How KServe's to_rest/to_grpc treat the tensor: binary, array (NumPy data given) or list."""
        if self._binary:
            return "binary"
        return "array" if isinstance(self._data, np.ndarray) else "list"

    def has_data(self) -> bool:
        return self._array is not None or self._data is not None

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": self._shape, "datatype": self._datatype, "data": self.data,
                "parameters": self.parameters}

    def wire_dict(self, nan_literals: bool = False) -> dict:
        """The V2 JSON the server writes: NumPy data for orjson's fast path, and no `binary_data_size`
        (the data is right here)."""
        out: dict[str, Any] = {"name": self.name, "shape": self._shape, "datatype": self._datatype}
        parameters = self.parameters
        if parameters:
            if "binary_data_size" in parameters:
                parameters = {k: v for k, v in parameters.items() if k != "binary_data_size"}
            if parameters:
                out["parameters"] = parameters
        if self._array is not None:
            out["data"] = array_to_json(self._array, self._datatype, nan_literals)
        elif self._data is not None:
            out["data"] = self._data
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Tensor) or other._KIND != self._KIND:
            return False
        if (self.name, self._datatype, list(self._shape)) != (other.name, other._datatype, list(other._shape)):
            return False
        if (self.parameters or {}) != (other.parameters or {}):
            return False
        if not (self.has_data() and other.has_data()):
            return self.has_data() == other.has_data()
        a, b = self.as_numpy(), other.as_numpy()
        if a.dtype.kind == "f":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        try:
            data = self.data
        except InvalidInput:  # BYTES that are not text: shown as they are, never an error in a log line
            data = self._array
        return (f'"name": "{self.name}","shape": {self._shape},"datatype": "{self._datatype}",'
                f'"data": {data},"parameters": {self.parameters}')

    __str__ = __repr__

    @classmethod
    def from_numpy(cls, name: str, array: np.ndarray, parameters: Optional[dict] = None):
        array = np.asarray(array)
        return cls(name, array.shape, from_numpy_dtype(array.dtype), array, parameters)  # (__init__ lists it)


class InferInput(_Tensor):
    """One named input tensor of a V2 request."""

    __slots__ = ()
    _KIND = "input"

    def as_string(self) -> list:
        """BYTES elements as UTF-8 text, flat in row-major order (what KServe's gives for its nested form)."""
        if self._datatype != "BYTES":
            raise InvalidInput(f"invalid datatype {self._datatype} in the input")
        return [x.decode("utf-8") if isinstance(x, bytes) else x for x in self.as_numpy().ravel()]


class InferOutput(_Tensor):
    """One named output tensor of a V2 response."""

    __slots__ = ()
    _KIND = "output"


class RequestedOutput:
    """An entry of a request's `outputs`: which output to return, and how (binary, class_count)."""

    __slots__ = ("name", "parameters")

    def __init__(self, name: str, parameters: Optional[dict] = None):
        self.name = name
        self.parameters = parameters if parameters is not None else {}

    @property
    def binary_data(self) -> Optional[bool]:
        return self.parameters.get("binary_data")

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name}
        if self.parameters:
            out["parameters"] = self.parameters
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RequestedOutput) and (self.name, self.parameters or {}) == \
            (other.name, other.parameters or {})

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RequestedOutput(name={self.name}, parameters={self.parameters})"

    __str__ = __repr__


def _dict_field(body: dict, key: str, where: str) -> dict:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: '{key}' must be an object")
    return value


def _tensor_from_json(cls, item: Any, index: int, kind: str):
    where = f"{kind} {index}"
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} must be an object with name, shape, datatype and data")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}: 'name' is required")
    where = f"{kind} '{name}'"
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"{where}: 'datatype' is required")
    to_numpy_dtype(datatype)
    shape = _check_shape(item.get("shape"), where)
    parameters = _dict_field(item, "parameters", where)
    data = item.get("data")
    if data is None and "binary_data_size" not in parameters and "shared_memory_region" not in parameters:
        raise InvalidInput(f"{where}: 'data' is required")
    return cls(name, shape, datatype, data, parameters)


def _plain_json_inputs(inputs: list) -> Optional[list]:
    """The common JSON request's inputs (each exactly a name, a known datatype, a shape of non-negative integers
    and a list of data), made without _tensor_from_json's checks and wordings; None for anything else, which
    _tensor_from_json then makes or refuses. The data stays the list, read when the model asks (as_numpy)."""
    tensors = []
    for item in inputs:
        if type(item) is not dict or len(item) != 4:
            return None
        name, datatype, shape, data = item.get("name"), item.get("datatype"), item.get("shape"), item.get("data")
        if type(name) is not str or not name or type(datatype) is not str or datatype not in _CANONICAL \
                or type(data) is not list or plain_count(shape) is None:
            return None
        tensors.append(InferInput(name, shape, datatype, data))
    return tensors


def read_binary_data(tensors: Iterable["_Tensor"], body: Any, offset: int, kind: str,
                     model: Optional[str] = None, request_id: Optional[str] = None) -> int:
    """Triton's binary tensor extension, both ways (the server's requests, the REST client's answers):
    each tensor whose parameters carry `binary_data_size` takes that many bytes of `body` from `offset`
    on, in order, zero-copy (read-only where `body` is). Returns the offset after them. With `model` (a request the
    server reads), a size that does not fit the input's shape is refused in Triton's words."""
    from gpuserve.datatypes import check_input_byte_size, raw_to_numpy

    view = memoryview(body)  # a large body read into a buffer of the server's own stays writable: Triton's
    for tensor in tensors:  # Python models may change their inputs in place (a bytes body's are read-only)
        size = tensor.parameters.get("binary_data_size")
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"{kind} '{tensor.name}': binary_data_size must be a non-negative integer")
        if offset + size > len(view):
            raise InvalidInput(f"{kind} '{tensor.name}': binary_data_size {size} runs past the end of the body")
        if model is not None:
            check_input_byte_size(tensor.name, tensor.datatype, tensor.shape, size, model, request_id)
        tensor._array = raw_to_numpy(view[offset:offset + size], tensor.datatype, tensor.shape)
        offset += size
    return offset


class _FromGrpc:
    """KServe spells two things `from_grpc`: the class method that builds one from a gRPC message, and each
    instance's flag saying it came over gRPC. Slots cannot hold both; this gives each its meaning."""

    def __init__(self, build):
        self._build = build

    def __get__(self, obj, owner=None):
        if obj is None:
            return self._build.__get__(owner)
        return obj._from_grpc

    def __set__(self, obj, value) -> None:
        obj._from_grpc = value


def _mark_raw(tensors: list, raw_contents) -> None:
    from gpuserve.datatypes import raw_to_numpy

    for tensor, raw in zip(tensors, raw_contents):
        tensor._array = raw_to_numpy(raw, tensor.datatype, tensor.shape)
        tensor._binary = True


def _request_from_grpc(cls, request) -> "InferRequest":
    from gpuserve.types_kserve import request_from_grpc

    return request_from_grpc(cls, request)


def _response_from_grpc(cls, response) -> "InferResponse":
    from gpuserve.types_kserve import response_from_grpc

    return response_from_grpc(cls, response)


def rest_request(cls, model_name: str, body: dict, tensors: list, model_version: Optional[str] = None):
    """The request a V2 JSON body makes around inputs already decoded (by from_rest, or the binary extension's
    short path): requested outputs, id and parameters, refused as from_rest refuses them."""
    outputs = body.get("outputs")
    requested = None
    if outputs is not None:
        if not isinstance(outputs, list):
            raise InvalidInput("'outputs' must be a list")
        requested = []
        for i, item in enumerate(outputs):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidInput(f"requested output {i} must be an object with a 'name'")
            requested.append(RequestedOutput(item["name"], _dict_field(item, "parameters", f"output {i}")))
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        request_id = str(request_id)
    parameters = _dict_field(body, "parameters", "request")
    if parameters and any(isinstance(key, str) and key.startswith("triton_") for key in parameters):
        # Triton's HTTP refusal, in its words: the prefix is for the server's own use (gRPC streams)
        raise InvalidInput("parameter keys starting with 'triton_' are reserved for Triton usage and should "
                           "not be specified.")
    return cls(model_name, tensors, request_id=request_id, parameters=parameters,
               request_outputs=requested, model_version=model_version)


class InferRequest:
    """A V2 inference request: inputs, requested outputs, id and parameters."""

    # `stream_rest`, set only on the first request of an MLServer-form gRPC stream (never in __init__: read
    # with getattr), holds the stream's later requests (server/grpc/mlserver_stream.py)
    __slots__ = ("id", "model_name", "model_version", "inputs", "parameters", "request_outputs",
                 "_from_grpc", "_use_raw_outputs", "headers", "cache_key", "trace", "stream_rest")

    from_grpc = _FromGrpc(_request_from_grpc)

    def __init__(self, model_name: str, infer_inputs: list[InferInput], request_id: Optional[str] = None,
                 raw_inputs=None, from_grpc: bool = False, parameters: Optional[dict] = None,
                 request_outputs: Optional[list[RequestedOutput]] = None, model_version: Optional[str] = None):
        self.id = request_id
        self.model_name = model_name
        self.model_version = model_version
        self.inputs = list(infer_inputs)
        self.parameters = parameters if parameters is not None else {}
        self.request_outputs = request_outputs
        self._from_grpc = from_grpc
        self._use_raw_outputs = False
        self.headers: Optional[dict] = None
        self.cache_key: Optional[bytes] = None  # the response cache's entry that answers it (dataplane.py)
        self.trace = None  # gpuserve/tracing.py's Trace when this request is traced
        if raw_inputs:
            self._use_raw_outputs = True
            _mark_raw(self.inputs, raw_inputs)

    @property
    def use_binary_outputs(self) -> bool:
        """KServe's rule: raw gRPC inputs ask for raw outputs; over REST, `binary_data_output` asks."""
        if self._use_raw_outputs and self._from_grpc:
            return True
        if self.parameters and not self._from_grpc:
            return self.parameters.get("binary_data_output", False)
        return False

    @classmethod
    def from_rest(cls, model_name: str, body: Any, model_version: Optional[str] = None) -> "InferRequest":
        """Build from a decoded V2 JSON body, raising InvalidInput for anything malformed."""
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        inputs = body.get("inputs")
        if not isinstance(inputs, list):  # an empty list is the model's to judge (DataPlane.infer)
            raise InvalidInput("request must have a non-empty 'inputs' list")
        tensors = _plain_json_inputs(inputs)
        if tensors is None:
            tensors = [_tensor_from_json(InferInput, item, i, "input") for i, item in enumerate(inputs)]
        return rest_request(cls, model_name, body, tensors, model_version)

    @classmethod
    def from_bytes(cls, req_bytes: bytes, json_length: int, model_name: str) -> "InferRequest":
        from gpuserve.types_kserve import request_from_bytes

        return request_from_bytes(cls, req_bytes, json_length, model_name)

    @classmethod
    def from_inference_request(cls, request: Any, model_name: str) -> "InferRequest":
        from gpuserve.types_kserve import request_from_inference_request

        return request_from_inference_request(cls, request, model_name)

    @classmethod
    def from_numpy(cls, model_name: str, arrays: dict[str, np.ndarray], **kwargs) -> "InferRequest":
        return cls(model_name, [InferInput.from_numpy(k, v) for k, v in arrays.items()], **kwargs)

    def get_input_by_name(self, name: str) -> Optional[InferInput]:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        return None

    def to_rest(self) -> tuple:
        """KServe's `(body, json_length)`: a dict and None, or bytes and the JSON's length when an input
        holds binary data."""
        from gpuserve.types_kserve import request_to_rest

        return request_to_rest(self)

    def to_grpc(self):
        from gpuserve.types_kserve import request_to_grpc

        return request_to_grpc(self)

    def as_dataframe(self):
        from gpuserve.types_kserve import request_as_dataframe

        return request_as_dataframe(self)

    def to_dict(self) -> dict:
        return {"id": self.id, "model_name": self.model_name, "inputs": [t.to_dict() for t in self.inputs],
                "parameters": self.parameters, "from_grpc": self._from_grpc}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InferRequest):
            return False
        return (self.model_name, self.id, bool(self._from_grpc), self.parameters or {}, self.inputs,
                self.request_outputs or None) == \
            (other.model_name, other.id, bool(other._from_grpc), other.parameters or {}, other.inputs,
             other.request_outputs or None)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f'"id": "{self.id}","model_name": "{self.model_name}","inputs": {self.inputs!r},'
                f'"parameters": {self.parameters},"from_grpc": {self._from_grpc}')

    __str__ = __repr__


class InferResponse:
    """A V2 inference response: named outputs plus id, model name/version and parameters."""

    __slots__ = ("id", "model_name", "model_version", "outputs", "parameters", "_from_grpc",
                 "use_binary_outputs", "requested_outputs", "nan_literals")

    from_grpc = _FromGrpc(_response_from_grpc)

    def __init__(self, response_id: Optional[str], model_name: str, infer_outputs: list[InferOutput],
                 model_version: Optional[str] = None, raw_outputs=None, from_grpc: bool = False,
                 parameters: Optional[dict] = None, use_binary_outputs: bool = False,
                 requested_outputs: Optional[list[RequestedOutput]] = None):
        self.id = response_id  # the request's id when it had one (V2); no id is invented
        self.model_name = model_name
        self.model_version = model_version
        self.outputs = list(infer_outputs)
        self.parameters = parameters if parameters is not None else {}
        self._from_grpc = from_grpc
        self.use_binary_outputs = use_binary_outputs
        self.requested_outputs = requested_outputs
        self.nan_literals = False  # set by the server for a Triton model: JSON NaN/Infinity as Triton writes
        if raw_outputs:
            _mark_raw(self.outputs, raw_outputs)

    @classmethod
    def from_rest(cls, *args, response: Optional[dict] = None) -> "InferResponse":
        """`from_rest(body)`, KServe 0.16's keyword form `from_rest(response=body)`, or KServe's older
        `from_rest(model_name, body)`."""
        body = response if response is not None else (args[-1] if args else None)
        if not isinstance(body, dict):
            raise InvalidInput("response body must be a JSON object")
        model_name = body.get("model_name") or (args[0] if len(args) > 1 else "")
        outputs = body.get("outputs")
        if not isinstance(outputs, list):
            raise InvalidInput("response must have an 'outputs' list")
        tensors = [_tensor_from_json(InferOutput, item, i, "output") for i, item in enumerate(outputs)]
        return cls(body.get("id"), model_name, tensors, model_version=body.get("model_version"),
                   parameters=body.get("parameters") or {})

    @classmethod
    def from_bytes(cls, res_bytes: bytes, json_length: int) -> "InferResponse":
        from gpuserve.types_kserve import response_from_bytes

        return response_from_bytes(cls, res_bytes, json_length)

    def get_output_by_name(self, name: str) -> Optional[InferOutput]:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        return None

    def to_rest(self) -> tuple:
        """KServe's `(body, json_length)`: binary outputs when `use_binary_outputs` or the requested
        outputs' `binary_data` say so (then bytes and the JSON's length), else a dict and None."""
        from gpuserve.types_kserve import response_to_rest

        return response_to_rest(self)

    def to_grpc(self):
        from gpuserve.types_kserve import response_to_grpc

        return response_to_grpc(self)

    def wire_dict(self) -> dict:
        """The V2 JSON the server answers with (NumPy data for orjson; no invented id)."""
        out: dict[str, Any] = {"model_name": self.model_name}
        if self.model_version is not None:
            out["model_version"] = str(self.model_version)
        if self.id is not None:
            out["id"] = self.id
        if self.parameters:
            out["parameters"] = self.parameters
        out["outputs"] = [t.wire_dict(self.nan_literals) for t in self.outputs]
        return out

    def to_dict(self) -> dict:
        return {"id": self.id, "model_name": self.model_name, "outputs": [t.to_dict() for t in self.outputs],
                "parameters": self.parameters, "from_grpc": self._from_grpc}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InferResponse):
            return False
        return (self.model_name, self.model_version, self.id, bool(self._from_grpc), self.parameters or {},
                self.outputs) == \
            (other.model_name, other.model_version, other.id, bool(other._from_grpc), other.parameters or {},
             other.outputs)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f'"id": "{self.id}","model_name": "{self.model_name}","outputs": {self.outputs!r},'
                f'"parameters": {self.parameters},"from_grpc": {self._from_grpc}')

    __str__ = __repr__
