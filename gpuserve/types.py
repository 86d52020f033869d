"""Request and response tensors backed by NumPy, with the names and methods KServe users call.

JSON `data` is turned into an array once, lazily, on the first `as_numpy()`; binary and raw data
arrive as arrays already (zero-copy, read-only). Responses keep arrays until the transport encodes
them, so orjson writes them directly (OPT_SERIALIZE_NUMPY) without building Python lists.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from gpuserve.datatypes import FLOAT_TYPES, from_numpy_dtype, to_numpy_dtype
from gpuserve.errors import InvalidInput


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


def json_to_array(data: Any, datatype: str, shape: list[int], where: str) -> np.ndarray:
    """Flat or nested JSON data -> array of `shape`; mismatches are the client's error."""
    dtype = to_numpy_dtype(datatype)
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
    expected = _count(shape)
    if array.size != expected:
        raise InvalidInput(
            f"{where}: shape {shape} needs {expected} elements but data has {array.size}"
        )
    return array.reshape(shape)


def array_to_json(array: np.ndarray, datatype: str) -> Any:
    """Flat data for a JSON response: an array orjson serialises, or a list for BYTES."""
    if datatype == "BYTES":
        return [_bytes_to_text(item) for item in np.asarray(array, dtype=object).ravel()]
    return np.ascontiguousarray(array).ravel()


def _bytes_to_text(item: Any) -> Any:
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("BYTES output is not valid UTF-8; ask for it as binary data") from None
    if isinstance(item, np.generic):
        return item.item()
    return item


class _Tensor:
    """Shared parts of inputs and outputs: a name, a V2 datatype, a shape and NumPy data."""

    __slots__ = ("name", "_shape", "_datatype", "_data", "_array", "parameters")

    def __init__(self, name: str, shape: Iterable[int], datatype: str, data: Any = None,
                 parameters: Optional[dict] = None):
        self.name = name
        self._shape = list(shape) if shape is not None else []
        self._datatype = datatype
        self.parameters = parameters if parameters is not None else {}
        self._data = None
        self._array: Optional[np.ndarray] = None
        if isinstance(data, np.ndarray):
            self._array = data
        else:
            self._data = data

    @property
    def shape(self) -> list[int]:
        return self._shape

    def set_shape(self, shape: Iterable[int]) -> None:
        self._shape = list(shape)

    @property
    def datatype(self) -> str:
        return self._datatype

    @property
    def data(self) -> Any:
        """The data as the JSON protocol carries it (a flat list) when it came from JSON."""
        if self._data is None and self._array is not None:
            out = array_to_json(self._array, self._datatype)
            return out.tolist() if isinstance(out, np.ndarray) else out
        return self._data

    def as_numpy(self) -> np.ndarray:
        if self._array is None:
            if self._data is None:
                raise InvalidInput(f"tensor '{self.name}' has no data")
            self._array = json_to_array(self._data, self._datatype, self._shape, f"tensor '{self.name}'")
        return self._array

    def as_string(self) -> list:
        """BYTES elements decoded as UTF-8 strings, nested to the shape."""
        array = self.as_numpy()
        decoded = np.array([x.decode("utf-8") if isinstance(x, bytes) else x for x in array.ravel()],
                           dtype=object).reshape(array.shape)
        return decoded.tolist()

    def set_data_from_numpy(self, input_tensor: np.ndarray, binary_data: bool = True) -> None:
        if not isinstance(input_tensor, np.ndarray):
            raise InvalidInput("input_tensor must be a numpy array")
        datatype = from_numpy_dtype(input_tensor.dtype)
        if datatype != self._datatype and not (self._datatype == "BF16" and datatype == "FP32"):
            raise InvalidInput(
                f"got unexpected datatype {datatype} from numpy array, expected {self._datatype}")
        if list(input_tensor.shape) != list(self._shape):
            raise InvalidInput(
                f"got unexpected numpy array shape {list(input_tensor.shape)}, expected {self._shape}")
        self._array = input_tensor
        self._data = None
        if binary_data:
            self.parameters.pop("binary_data_size", None)

    def to_dict(self, lists: bool = True) -> dict:
        """The JSON form. `lists=False` keeps NumPy data for orjson's fast path."""
        out: dict[str, Any] = {"name": self.name, "shape": self._shape, "datatype": self._datatype}
        if self.parameters:
            out["parameters"] = self.parameters
        if self._array is not None:
            data = array_to_json(self._array, self._datatype)
            out["data"] = data.tolist() if lists and isinstance(data, np.ndarray) else data
        elif self._data is not None:
            out["data"] = self._data
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Tensor):
            return NotImplemented
        if (self.name, self._datatype, list(self._shape)) != (other.name, other._datatype, list(other._shape)):
            return False
        a, b = self.as_numpy(), other.as_numpy()
        if a.dtype.kind == "f":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, shape={self._shape}, datatype={self._datatype!r})"

    @classmethod
    def from_numpy(cls, name: str, array: np.ndarray, parameters: Optional[dict] = None):
        array = np.asarray(array)
        return cls(name, list(array.shape), from_numpy_dtype(array.dtype), array, parameters)


class InferInput(_Tensor):
    """One named input tensor of a V2 request."""

    __slots__ = ()


class InferOutput(_Tensor):
    """One named output tensor of a V2 response."""

    __slots__ = ()


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

    def __repr__(self) -> str:
        return f"RequestedOutput(name={self.name!r}, parameters={self.parameters!r})"


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


def read_binary_data(tensors: Iterable["_Tensor"], body: Any, offset: int, kind: str) -> int:
    """Triton's binary tensor extension, both ways (the server's requests, the REST client's answers):
    each tensor whose parameters carry `binary_data_size` takes that many bytes of `body` from `offset`
    on, in order, zero-copy and read-only. Returns the offset after them."""
    from gpuserve.datatypes import raw_to_numpy

    view = memoryview(body)
    for tensor in tensors:
        size = tensor.parameters.get("binary_data_size")
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"{kind} '{tensor.name}': binary_data_size must be a non-negative integer")
        if offset + size > len(view):
            raise InvalidInput(f"{kind} '{tensor.name}': binary_data_size {size} runs past the end of the body")
        tensor._array = raw_to_numpy(view[offset:offset + size], tensor.datatype, tensor.shape)
        offset += size
    return offset


class InferRequest:
    """A V2 inference request: inputs, requested outputs, id and parameters."""

    __slots__ = ("id", "model_name", "model_version", "inputs", "parameters", "request_outputs",
                 "from_grpc", "headers", "cache_key")

    def __init__(self, model_name: str, infer_inputs: list[InferInput], request_id: Optional[str] = None,
                 raw_inputs=None, from_grpc: bool = False, parameters: Optional[dict] = None,
                 request_outputs: Optional[list[RequestedOutput]] = None, model_version: Optional[str] = None):
        self.id = request_id
        self.model_name = model_name
        self.model_version = model_version
        self.inputs = list(infer_inputs)
        self.parameters = parameters if parameters is not None else {}
        self.request_outputs = request_outputs
        self.from_grpc = from_grpc
        self.headers: Optional[dict] = None
        self.cache_key: Optional[bytes] = None  # the response cache's entry that answers it (dataplane.py)
        if raw_inputs:
            from gpuserve.datatypes import raw_to_numpy

            for tensor, raw in zip(self.inputs, raw_inputs):
                tensor._array = raw_to_numpy(raw, tensor.datatype, tensor.shape)

    @classmethod
    def from_rest(cls, model_name: str, body: Any, model_version: Optional[str] = None) -> "InferRequest":
        """Build from a decoded V2 JSON body, raising InvalidInput for anything malformed."""
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInput("request must have a non-empty 'inputs' list")
        tensors = [_tensor_from_json(InferInput, item, i, "input") for i, item in enumerate(inputs)]
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
        return cls(model_name, tensors, request_id=request_id, parameters=_dict_field(body, "parameters", "request"),
                   request_outputs=requested, model_version=model_version)

    @classmethod
    def from_numpy(cls, model_name: str, arrays: dict[str, np.ndarray], **kwargs) -> "InferRequest":
        return cls(model_name, [InferInput.from_numpy(k, v) for k, v in arrays.items()], **kwargs)

    def get_input_by_name(self, name: str) -> Optional[InferInput]:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        return None

    def to_rest(self) -> dict:
        out: dict[str, Any] = {"inputs": [t.to_dict() for t in self.inputs]}
        if self.id is not None:
            out["id"] = self.id
        if self.parameters:
            out["parameters"] = self.parameters
        if self.request_outputs:
            out["outputs"] = [o.to_dict() for o in self.request_outputs]
        return out

    def as_dataframe(self):
        """One column per input (pandas is optional; imported here only). Rows of a 2-D input
        become list cells, as KServe's DataFrame view does."""
        import pandas as pd

        columns = {}
        for tensor in self.inputs:
            array = tensor.as_numpy()
            if tensor.datatype == "BYTES":
                array = np.array([x.decode("utf-8") if isinstance(x, bytes) else x for x in array.ravel()],
                                 dtype=object).reshape(array.shape)
            columns[tensor.name] = list(array) if array.ndim > 1 else array.reshape(-1)
        return pd.DataFrame(columns)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InferRequest):
            return NotImplemented
        return (self.id, self.model_name, self.parameters, self.inputs) == \
            (other.id, other.model_name, other.parameters, other.inputs)

    def __repr__(self) -> str:
        return f"InferRequest(model_name={self.model_name!r}, id={self.id!r}, inputs={self.inputs!r})"


class InferResponse:
    """A V2 inference response: named outputs plus id, model name/version and parameters."""

    __slots__ = ("id", "model_name", "model_version", "outputs", "parameters", "from_grpc",
                 "use_binary_outputs", "requested_outputs")

    def __init__(self, response_id: Optional[str], model_name: str, infer_outputs: list[InferOutput],
                 model_version: Optional[str] = None, raw_outputs=None, from_grpc: bool = False,
                 parameters: Optional[dict] = None, use_binary_outputs: bool = False,
                 requested_outputs: Optional[list[RequestedOutput]] = None):
        self.id = response_id  # the request's id when it had one (V2); no id is invented
        self.model_name = model_name
        self.model_version = model_version
        self.outputs = list(infer_outputs)
        self.parameters = parameters if parameters is not None else {}
        self.from_grpc = from_grpc
        self.use_binary_outputs = use_binary_outputs
        self.requested_outputs = requested_outputs
        if raw_outputs:
            from gpuserve.datatypes import raw_to_numpy

            for tensor, raw in zip(self.outputs, raw_outputs):
                tensor._array = raw_to_numpy(raw, tensor.datatype, tensor.shape)

    @classmethod
    def from_rest(cls, *args) -> "InferResponse":
        """`from_rest(body)` or KServe's older `from_rest(model_name, body)`."""
        body = args[-1]
        if not isinstance(body, dict):
            raise InvalidInput("response body must be a JSON object")
        model_name = body.get("model_name") or (args[0] if len(args) > 1 else "")
        outputs = body.get("outputs")
        if not isinstance(outputs, list):
            raise InvalidInput("response must have an 'outputs' list")
        tensors = [_tensor_from_json(InferOutput, item, i, "output") for i, item in enumerate(outputs)]
        return cls(body.get("id"), model_name, tensors, model_version=body.get("model_version"),
                   parameters=body.get("parameters") or {})

    def get_output_by_name(self, name: str) -> Optional[InferOutput]:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        return None

    def to_rest(self, lists: bool = True) -> dict:
        out: dict[str, Any] = {"model_name": self.model_name}
        if self.model_version is not None:
            out["model_version"] = str(self.model_version)
        if self.id is not None:
            out["id"] = self.id
        if self.parameters:
            out["parameters"] = self.parameters
        out["outputs"] = [t.to_dict(lists=lists) for t in self.outputs]
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InferResponse):
            return NotImplemented
        return (self.id, self.model_name, self.parameters, self.outputs) == \
            (other.id, other.model_name, other.parameters, other.outputs)

    def __repr__(self) -> str:
        return f"InferResponse(model_name={self.model_name!r}, id={self.id!r}, outputs={self.outputs!r})"
