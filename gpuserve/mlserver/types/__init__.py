"""MLServer's request, response and metadata types, for runtimes written against `mlserver.types`.

These pydantic models are the compatibility surface only. The transports hand gpuserve's own
NumPy-backed `InferRequest` to the adapter, which converts at the edge (`from_native_request`,
`to_native_response`), so requests of native models never meet pydantic.

Tensor data stays as it arrived: a JSON list from REST, a flat (zero-copy) NumPy view for binary
and gRPC raw data. Runtimes index, iterate and measure `request_input.data` either way; `.dict()`
and `.json()` turn arrays into flat lists, as MLServer's payloads are. Conversions to native types
skip pydantic validation on the way out (`construct`: what `model_construct` makes, built directly): the
data came from gpuserve's own, already checked, tensors.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Dict, List, Optional, Union

import numpy as np
from pydantic import BaseModel as _PydanticModel
from pydantic import ConfigDict, RootModel, model_serializer

from gpuserve.errors import InvalidInput
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput


class BaseModel(_PydanticModel):
    """MLServer's payload base: dumps leave out unset and None fields; pydantic-1 style helpers kept."""

    model_config = ConfigDict(protected_namespaces=(), use_enum_values=True)

    def model_dump(self, exclude_unset: bool = True, exclude_none: bool = True, **kwargs) -> Dict[str, Any]:
        return super().model_dump(exclude_unset=exclude_unset, exclude_none=exclude_none, **kwargs)

    def model_dump_json(self, exclude_unset: bool = True, exclude_none: bool = True, **kwargs) -> str:
        return super().model_dump_json(exclude_unset=exclude_unset, exclude_none=exclude_none, **kwargs)

    # pydantic 1 names that MLServer's documentation and older runtimes still call. As pydantic 2 (and so
    # MLServer) defines them, they keep unset and None fields, which the content-type example prints
    # (`"content_type": null` on an input decoded through the model's metadata).
    def dict(self, *, include: Any = None, exclude: Any = None, by_alias: bool = False,  # type: ignore[override]
             exclude_unset: bool = False, exclude_defaults: bool = False, exclude_none: bool = False) -> Dict[str, Any]:
        return self.model_dump(include=include, exclude=exclude, by_alias=by_alias, exclude_unset=exclude_unset,
                               exclude_defaults=exclude_defaults, exclude_none=exclude_none)

    def json(self, *, include: Any = None, exclude: Any = None, by_alias: bool = False,  # type: ignore[override]
             exclude_unset: bool = False, exclude_defaults: bool = False, exclude_none: bool = False,
             **kwargs: Any) -> str:  # e.g. indent=2, which model_dump_json takes
        return self.model_dump_json(include=include, exclude=exclude, by_alias=by_alias, exclude_unset=exclude_unset,
                                    exclude_defaults=exclude_defaults, exclude_none=exclude_none, **kwargs)

    @classmethod
    def parse_obj(cls, obj: Any):  # type: ignore[override]
        return cls.model_validate(obj)

    @classmethod
    def parse_raw(cls, data: Union[str, bytes], **kwargs):  # type: ignore[override]
        return cls.model_validate_json(data)


class Datatype(Enum):
    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"
    BF16 = "BF16"  # gpuserve and Triton carry it; MLServer's enum stops at BYTES


class Parameters(BaseModel):
    """Free-form parameters; `content_type` and `headers` are the ones MLServer gives meaning to."""

    model_config = ConfigDict(extra="allow")

    content_type: Optional[str] = None
    headers: Optional[Dict[str, Any]] = None


class TensorData(RootModel[Any]):
    """A tensor's data: a (flat) list, or a flat NumPy array kept as it arrived."""

    root: Any

    def __iter__(self):
        return iter(self.root)

    def __getitem__(self, index):
        return self.root[index]

    def __len__(self) -> int:
        return len(self.root)

    @model_serializer(mode="plain")
    def _flat(self) -> Any:
        data = self.root
        if isinstance(data, np.ndarray):
            return data.ravel().tolist()
        return data


# MLServer 1.x code written for pydantic 1 reads `data.__root__`; pydantic 2 forbids declaring it
# in the class body, so it is attached afterwards.
TensorData.__root__ = property(lambda self: self.root)  # type: ignore[attr-defined]


class RequestOutput(BaseModel):
    name: str
    parameters: Optional[Parameters] = None


class MetadataTensor(BaseModel):
    name: str
    datatype: Datatype
    shape: List[int]
    parameters: Optional[Parameters] = None


class RequestInput(BaseModel):
    name: str
    shape: List[int]
    datatype: Datatype
    parameters: Optional[Parameters] = None
    data: TensorData


class ResponseOutput(BaseModel):
    name: str
    shape: List[int]
    datatype: Datatype
    parameters: Optional[Parameters] = None
    data: TensorData


class InferenceRequest(BaseModel):
    id: Optional[str] = None
    parameters: Optional[Parameters] = None
    inputs: List[RequestInput]
    outputs: Optional[List[RequestOutput]] = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: Optional[str] = None
    id: Optional[str] = None
    parameters: Optional[Parameters] = None
    outputs: List[ResponseOutput]


class InferenceErrorResponse(BaseModel):
    error: Optional[str] = None


class MetadataServerResponse(BaseModel):
    name: str
    version: str
    extensions: List[str]


class MetadataServerErrorResponse(BaseModel):
    error: str


class MetadataModelResponse(BaseModel):
    name: str
    versions: Optional[List[str]] = None
    platform: str
    inputs: Optional[List[MetadataTensor]] = None
    outputs: Optional[List[MetadataTensor]] = None
    parameters: Optional[Parameters] = None


class MetadataModelErrorResponse(BaseModel):
    error: str


class State(Enum):
    UNKNOWN = "UNKNOWN"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


class RepositoryIndexRequest(BaseModel):
    ready: Optional[bool] = None


class RepositoryIndexResponseItem(BaseModel):
    name: str
    version: Optional[str] = None
    state: State
    reason: str


class RepositoryIndexResponse(RootModel[List[RepositoryIndexResponseItem]]):
    root: List[RepositoryIndexResponseItem]


# -- the edge: gpuserve's native types <-> MLServer's -----------------------------------------------

_IMMUTABLE = (type(None), str, int, float, bool, tuple, frozenset, Enum)
_SPECS: Dict[type, Any] = {}


def _spec(cls: type) -> Any:
    """(field names in order, their defaults, extras kept) where `construct` can build `cls` itself; None
    for what it leaves to pydantic (aliases, default factories, mutable defaults, post-init, root models)."""
    if cls.__pydantic_root_model__ or cls.__pydantic_post_init__:
        return None
    defaults = {}
    for name, field in cls.__pydantic_fields__.items():
        if field.alias is not None or field.validation_alias is not None or field.default_factory is not None:
            return None
        if not field.is_required():
            if not isinstance(field.default, _IMMUTABLE):
                return None
            defaults[name] = field.default
    return tuple(cls.__pydantic_fields__), defaults, cls.model_config.get("extra") == "allow"


def construct(cls: type, **values: Any) -> Any:
    """`cls.model_construct(**values)`, built without pydantic's walk of each field (5-8 us a model, seven
    models a request through an MLServer runtime): the same `__dict__` (in field order), fields set, extras."""
    spec = _SPECS.get(cls)
    if spec is None:
        spec = _SPECS[cls] = _spec(cls) or False
    if spec is False:
        return cls.model_construct(**values)
    names, defaults, keeps_extra = spec
    fields = {name: values[name] if name in values else defaults[name] for name in names
              if name in values or name in defaults}
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", fields)
    object.__setattr__(model, "__pydantic_fields_set__", {name for name in names if name in values})
    object.__setattr__(model, "__pydantic_extra__", {k: v for k, v in values.items() if k not in fields}
                       if keeps_extra else None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


def tensor_data(data: Any) -> "TensorData":
    """`TensorData.model_construct(data)`, built directly (see `construct`)."""
    model = TensorData.__new__(TensorData)
    object.__setattr__(model, "__dict__", {"root": data})
    object.__setattr__(model, "__pydantic_fields_set__", {"root"})
    return model


def _parameters_dict(parameters: Optional[Parameters]) -> Dict[str, Any]:
    if parameters is None:
        return {}
    if isinstance(parameters, dict):
        return {k: v for k, v in parameters.items() if v is not None}
    out = {}
    for key in ("content_type", "headers"):
        value = getattr(parameters, key, None)
        if value is not None:
            out[key] = value
    for key, value in (parameters.model_extra or {}).items():
        if value is not None:
            out[key] = value
    return out


def _parameters_model(parameters: Optional[dict]) -> Optional[Parameters]:
    if not parameters:
        return None
    return construct(Parameters, **parameters)


def _count(shape: List[int]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def _bytes_elements(data: Any) -> np.ndarray:
    """BYTES data in any of the forms MLServer runtimes write, as a flat object array."""
    if isinstance(data, np.ndarray):
        flat = data.ravel()
        if flat.dtype == object:
            return flat
        out = np.empty(flat.size, dtype=object)
        out[:] = [x.item() if isinstance(x, np.generic) else x for x in flat]
        return out
    if isinstance(data, (str, bytes, bytearray)):
        items: List[Any] = [bytes(data) if isinstance(data, bytearray) else data]
    elif data is None or isinstance(data, (bool, int, float)):  # one element given bare: the checks after judge it
        items = [data]
    else:
        items = list(_flatten(data))
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _flatten(data: Any):
    for item in data:
        if isinstance(item, (list, tuple)):
            yield from _flatten(item)
        else:
            yield item


class DeclaredShapeOutput(InferOutput):
    """A BYTES output whose shape, as an MLServer runtime declared it, does not count its elements:
    the transports answer that shape as MLServer does (`keeps_declared_shape`), the data flat."""

    __slots__ = ()
    keeps_declared_shape = True


def _native_tensor(cls: type, tensor: Any, kind: str):
    """RequestInput / ResponseOutput -> InferInput / InferOutput, sharing the data where it can."""
    name = tensor.name
    datatype = tensor.datatype.value if isinstance(tensor.datatype, Datatype) else str(tensor.datatype)
    shape = [int(d) for d in tensor.shape]
    parameters = _parameters_dict(tensor.parameters)
    data = tensor.data.root if isinstance(tensor.data, TensorData) else tensor.data
    if datatype == "BYTES":
        array = _bytes_elements(data)
        if array.size != _count(shape):
            # MLServer lets a runtime describe BYTES by byte length ([11] for one 11-byte string) and
            # answers that shape as declared; a request input keeps the element count, which models read.
            if cls is InferOutput:
                return DeclaredShapeOutput(name, shape, datatype, array, parameters)
            shape = [int(array.size)]
        return cls(name, shape, datatype, array.reshape(shape), parameters)
    if isinstance(data, np.ndarray):
        if data.size != _count(shape):
            raise InvalidInput(f"{kind} '{name}': shape {shape} needs {_count(shape)} elements "
                               f"but data has {data.size}")
        return cls(name, shape, datatype, data.reshape(shape), parameters)
    if isinstance(data, (int, float, bool)):
        data = [data]
    return cls(name, shape, datatype, data, parameters)


def _mlserver_tensor(cls: type, tensor: Any):
    """InferInput / InferOutput -> RequestInput / ResponseOutput; data shared, arrays seen flat."""
    array = tensor._array
    data = array.reshape(-1) if array is not None else tensor._data
    parameters = _parameters_model(tensor.parameters)
    fields = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype,
              "data": tensor_data(data)}
    if parameters is not None:
        fields["parameters"] = parameters
    return construct(cls, **fields)


def to_native_input(request_input: RequestInput) -> InferInput:
    return _native_tensor(InferInput, request_input, "input")


def to_native_output(response_output: ResponseOutput) -> InferOutput:
    return _native_tensor(InferOutput, response_output, "output")


def from_native_input(tensor: InferInput) -> RequestInput:
    return _mlserver_tensor(RequestInput, tensor)


def from_native_output(tensor: InferOutput) -> ResponseOutput:
    return _mlserver_tensor(ResponseOutput, tensor)


def to_native_request(request: InferenceRequest, model_name: str = "",
                      model_version: Optional[str] = None) -> InferRequest:
    """An MLServer request as gpuserve's; `parameters.headers` become the request's headers."""
    parameters = _parameters_dict(request.parameters)
    headers = parameters.pop("headers", None)
    outputs = None
    if request.outputs:
        outputs = [RequestedOutput(o.name, _parameters_dict(o.parameters)) for o in request.outputs]
    native = InferRequest(model_name, [to_native_input(i) for i in request.inputs], request_id=request.id,
                          parameters=parameters, request_outputs=outputs, model_version=model_version)
    if headers is not None:
        native.headers = dict(headers)
    return native


def from_native_request(request: InferRequest, headers: Optional[Dict[str, Any]] = None) -> InferenceRequest:
    """gpuserve's request as MLServer's; `headers` (or the request's own) go to `parameters.headers`."""
    parameters = dict(request.parameters) if request.parameters else {}
    headers = headers if headers is not None else request.headers
    if headers is not None:
        parameters["headers"] = dict(headers)
    fields: Dict[str, Any] = {"inputs": [from_native_input(t) for t in request.inputs]}
    if request.id is not None:
        fields["id"] = request.id
    if parameters:
        fields["parameters"] = construct(Parameters, **parameters)
    if request.request_outputs:
        fields["outputs"] = [construct(RequestOutput, name=o.name, **(
            {"parameters": _parameters_model(o.parameters)} if o.parameters else {}))
            for o in request.request_outputs]
    return construct(InferenceRequest, **fields)


def to_native_response(response: InferenceResponse) -> InferResponse:
    """An MLServer response as gpuserve's (headers are left in `parameters`: the adapter takes them)."""
    outputs = [to_native_output(o) for o in response.outputs]
    version = response.model_version
    return InferResponse(response.id, response.model_name or "", outputs,
                         model_version=str(version) if version is not None else None,
                         parameters=_parameters_dict(response.parameters))


def from_native_response(response: InferResponse) -> InferenceResponse:
    fields: Dict[str, Any] = {"model_name": response.model_name or "",
                              "outputs": [from_native_output(o) for o in response.outputs]}
    if response.model_version is not None:
        fields["model_version"] = str(response.model_version)
    if response.id is not None:
        fields["id"] = response.id
    if response.parameters:
        fields["parameters"] = construct(Parameters, **response.parameters)
    return construct(InferenceResponse, **fields)


__all__ = [
    "BaseModel", "Datatype", "Parameters", "TensorData", "RequestInput", "RequestOutput", "ResponseOutput",
    "InferenceRequest", "InferenceResponse", "InferenceErrorResponse", "MetadataTensor", "MetadataModelResponse",
    "MetadataModelErrorResponse", "MetadataServerResponse", "MetadataServerErrorResponse", "State",
    "RepositoryIndexRequest", "RepositoryIndexResponse", "RepositoryIndexResponseItem",
    "to_native_input", "to_native_output", "from_native_input", "from_native_output",
    "to_native_request", "from_native_request", "to_native_response", "from_native_response",
]
