"""KServe 0.16's conversions of the V2 types (`to_rest`, `to_grpc`, `from_grpc`, `from_bytes`) and the
helpers its `kserve.protocol.infer_type` exports, for user code that calls them (transformers, clients,
tests). The server never comes here: it encodes with server/binary.py and server/grpc/convert.py, which
build no Python lists.

Where KServe builds something its own peers cannot read (raw and typed gRPC tensors in one message, a
binary tensor without its size, a float parameter it refuses), these give the well-formed message.
"""

from __future__ import annotations

import uuid
from typing import Any, Dict

import numpy as np
import orjson

from gpuserve.constants.constants import GRPC_CONTENT_DATATYPE_MAPPINGS
from gpuserve.datatypes import deserialize_bytes_tensor, numpy_to_raw, serialize_bytes_tensor
from gpuserve.errors import InferenceError, InvalidInput
from gpuserve.types import InferInput, InferOutput, RequestedOutput, read_binary_data

__all__ = ["serialize_byte_tensor", "deserialize_bytes_tensor", "get_content", "to_grpc_parameters",
           "to_http_parameters"]  # deserialize_bytes_tensor: gpuserve.datatypes's, which returns what KServe's does


def _pb():
    from gpuserve.protocol.grpc import grpc_predict_v2_pb2

    return grpc_predict_v2_pb2


# -- KServe's module helpers ------------------------------------------------------------------------

def serialize_byte_tensor(input_tensor: np.ndarray) -> np.ndarray:
    """Length-prefixed elements as one 0-d object array holding the bytes (empty: a [0] array)."""
    if input_tensor.size == 0:
        return np.empty([0], dtype=np.object_)
    if input_tensor.dtype != np.object_ and input_tensor.dtype.type != np.bytes_:
        raise InferenceError("cannot serialize bytes tensor: invalid datatype")
    out = np.empty((), dtype=np.object_)
    out[()] = serialize_bytes_tensor(input_tensor)
    return out


def get_content(datatype: str, data) -> list:
    """The values of typed InferTensorContents; FP16 reads fp32_contents (KServe: always empty)."""
    field = "fp32_contents" if datatype == "FP16" else GRPC_CONTENT_DATATYPE_MAPPINGS.get(datatype)
    if field is None:
        raise InvalidInput("invalid content type")
    return list(getattr(data, field))


def to_grpc_parameters(parameters) -> Dict[str, Any]:
    pb = _pb()
    out = {}
    for key, value in parameters.items():
        if hasattr(value, "WhichOneof"):
            out[key] = value if isinstance(value, pb.InferParameter) else \
                pb.InferParameter.FromString(value.SerializeToString())
        elif isinstance(value, str):
            out[key] = pb.InferParameter(string_param=value)
        elif isinstance(value, (bool, np.bool_)):
            out[key] = pb.InferParameter(bool_param=bool(value))
        elif isinstance(value, (int, np.integer)):
            out[key] = pb.InferParameter(int64_param=int(value))
        elif isinstance(value, (float, np.floating)):
            out[key] = pb.InferParameter(double_param=float(value))
        else:
            raise InvalidInput(f"to_grpc: invalid parameter value: {value}")
    return out


def to_http_parameters(parameters) -> Dict[str, Any]:
    out = {}
    for key, value in parameters.items():
        if hasattr(value, "WhichOneof"):
            which = value.WhichOneof("parameter_choice")
            if which is not None:
                out[key] = getattr(value, which)
        else:
            out[key] = value
    return out


def _fill_parameters(mapping, parameters) -> None:
    for key, value in to_grpc_parameters(parameters).items():
        mapping[key].CopyFrom(value)


# -- tensor states ------------------------------------------------------------------------------------

def _values(tensor) -> np.ndarray:
    """The tensor's array in its declared shape (KServe's as_numpy reshapes; ours keeps what it holds)."""
    array = tensor._data if tensor._state() == "array" else tensor.as_numpy()
    if list(array.shape) != list(tensor.shape) and array.size == int(np.prod(tensor.shape)):
        array = array.reshape(tensor.shape)
    return array


def _raw(tensor) -> bytes:
    return numpy_to_raw(tensor.as_numpy(), tensor.datatype)


def _json_entry(tensor) -> Dict[str, Any]:
    entry = {"name": tensor.name, "shape": tensor.shape, "datatype": tensor.datatype}
    if tensor.parameters:
        entry["parameters"] = to_http_parameters(tensor.parameters)
    return entry


def _typed(tensor, contents, what: str) -> None:
    """KServe's typed contents from list data; text becomes UTF-8 in the tensor too, as KServe leaves it."""
    data = tensor.data
    if not isinstance(data, list):
        raise InvalidInput(f"{what} data is not a List")
    field = GRPC_CONTENT_DATATYPE_MAPPINGS.get(tensor.datatype)
    if field is None:
        raise InvalidInput("invalid input datatype" if what == "input" else "to_grpc: invalid output datatype")
    if data and isinstance(data[0], list):  # nested JSON: the flat values
        data = tensor.as_numpy().ravel().tolist()
    if any(isinstance(v, str) for v in data):
        data = [v.encode("utf-8") if isinstance(v, str) else v for v in data]
        if tensor._data is not None:
            tensor._data, tensor._array = data, None
    getattr(contents, field).extend(data)


def _binary_or_json(tensors, header: Dict[str, Any], key: str, binary_of, kind: str, model_name: str):
    entries, raws = [], []
    for tensor in tensors:
        binary = binary_of(tensor)
        entry = _json_entry(tensor)
        if binary:
            raw = _raw(tensor)
            entry.setdefault("parameters", {})["binary_data_size"] = len(raw)
            raws.append(raw)
        else:
            data = tensor.data
            if tensor.datatype == "FP16" and data:
                raise InvalidInput(f"Sending FP16 data via JSON is not supported. Please use the binary data "
                                   f"format for {kind} {tensor.name}")
            entry["data"] = data
        entries.append(entry)
    header[key] = entries
    return raws


def _finish_rest(body: Dict[str, Any], raws: list) -> tuple:
    if not raws:
        return body, None
    head = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join([head, *raws]), len(head)


# -- requests --------------------------------------------------------------------------------------

def request_to_rest(request) -> tuple:
    for tensor in request.inputs:
        if not tensor.has_data():
            raise InvalidInput(f"'data' field is missing for output '{tensor.name}' for model "
                               f"'{request.model_name}'")
        if tensor._state() == "array":
            tensor.set_data_from_numpy(_values(tensor), binary_data=False)
    body: Dict[str, Any] = {"id": request.id or str(uuid.uuid4()), "model_name": request.model_name}
    raws = _binary_or_json(request.inputs, body, "inputs", lambda t: t._binary, "input", request.model_name)
    if request.request_outputs:
        body["outputs"] = [_requested_entry(o) for o in request.request_outputs]
    if request.parameters:
        body["parameters"] = to_http_parameters(request.parameters)
    return _finish_rest(body, raws)


def _requested_entry(wanted: RequestedOutput) -> Dict[str, Any]:
    entry: Dict[str, Any] = {"name": wanted.name}
    if wanted.parameters:
        entry["parameters"] = to_http_parameters(wanted.parameters)
    return entry


def request_to_grpc(request):
    pb = _pb()
    message = pb.ModelInferRequest(id=request.id or "", model_name=request.model_name or "",
                                   model_version=_text(request.model_version))
    for tensor in request.inputs:
        if tensor._state() == "array":
            tensor.set_data_from_numpy(_values(tensor), binary_data=True)
    _add_tensors(message.inputs, message.raw_input_contents, request.inputs, "input")
    for wanted in request.request_outputs or ():
        _fill_parameters(message.outputs.add(name=wanted.name).parameters, wanted.parameters or {})
    _fill_parameters(message.parameters, request.parameters or {})
    return message


def _text(value) -> str:
    return "" if value is None else str(value)


def request_from_grpc(cls, message):
    inputs = [InferInput(t.name, list(t.shape), t.datatype, get_content(t.datatype, t.contents),
                         to_http_parameters(t.parameters) if len(t.parameters) else None)
              for t in message.inputs]
    wanted = [RequestedOutput(o.name, to_http_parameters(o.parameters) if len(o.parameters) else None)
              for o in message.outputs]
    return cls(message.model_name, inputs, request_id=message.id, raw_inputs=message.raw_input_contents,
               from_grpc=True, parameters=to_http_parameters(message.parameters), request_outputs=wanted or None,
               model_version=message.model_version)


def _header(body: bytes, json_length: int) -> Any:
    try:
        return orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"Unrecognized request format: {exc}") from None


def _binary_to_json(tensors) -> None:
    """KServe hands REST binary tensors over as JSON data (BYTES as text) without `binary_data_size`."""
    for tensor in tensors:
        if tensor._array is not None and "binary_data_size" in tensor.parameters:
            tensor._to_json(tensor._array)


def request_from_bytes(cls, body: bytes, json_length: int, model_name: str):
    header = _header(body, json_length)
    for item in (header.get("inputs") or []) if isinstance(header, dict) else []:
        if isinstance(item, dict) and item.get("datatype") == "FP16" and item.get("data") is not None:
            raise InvalidInput(f"Receiving FP16 data via JSON is not supported. Please use the binary data "
                               f"format for input {item.get('name')}")
    request = cls.from_rest(model_name, header)
    read_binary_data(request.inputs, body, json_length, "input", model_name, request.id)
    _binary_to_json(request.inputs)
    return request


def request_from_inference_request(cls, request: Any, model_name: str):
    """From KServe's pydantic InferenceRequest, or anything with its fields."""
    inputs = []
    for item in request.inputs:
        if item.datatype == "FP16" and item.data is not None and len(item.data) != 0:
            raise InvalidInput(f"Sending FP16 data via JSON is not supported. Please use the binary data "
                               f"format for input {item.name}")
        inputs.append(InferInput(item.name, item.shape, item.datatype, item.data, item.parameters or {}))
    wanted = [RequestedOutput(o.name, o.parameters or {}) for o in request.outputs or ()] or None
    return cls(model_name, inputs, request_id=request.id, parameters=request.parameters, request_outputs=wanted)


def request_as_dataframe(request):
    """One column per input, one row per element: KServe reads each input's flat data (pandas is imported
    here only)."""
    import pandas as pd

    frames = []
    for tensor in request.inputs:
        data = tensor.data
        if not isinstance(data, list) or (data and isinstance(data[0], list)):
            data = tensor.as_numpy().ravel().tolist()
        if tensor.datatype == "BYTES":
            data = [x.decode("utf-8") if isinstance(x, bytes) else x for x in data]
        frames.append(pd.DataFrame(data, columns=[tensor.name]))
    return pd.concat(frames, axis=1)

# -- responses -------------------------------------------------------------------------------------

def response_to_rest(response) -> tuple:
    wanted = response.requested_outputs
    chosen, binary = [], {}
    for item in wanted or response.outputs:
        tensor = response.get_output_by_name(item.name) if wanted else item
        if tensor is None:
            raise InvalidInput(f"Unexpected inference output '{item.name}' for model '{response.model_name}'")
        use_binary = bool(item.binary_data if wanted else response.use_binary_outputs)
        if not tensor.has_data():
            raise InvalidInput(f"'data' field is missing for output '{tensor.name}' for model "
                               f"'{response.model_name}'")
        tensor.set_data_from_numpy(_values(tensor), binary_data=use_binary)
        chosen.append(tensor)
        binary[id(tensor)] = use_binary
    body: Dict[str, Any] = {"id": response.id, "model_name": response.model_name,
                            "model_version": response.model_version}
    raws = _binary_or_json(chosen, body, "outputs", lambda t: binary[id(t)], "output", response.model_name)
    if response.parameters:
        body["parameters"] = to_http_parameters(response.parameters)
    return _finish_rest(body, raws)


def response_to_grpc(response):
    pb = _pb()
    outputs = response.outputs
    use_raw = response.use_binary_outputs or any(t.datatype in ("FP16", "BF16") for t in outputs)
    for tensor in outputs:
        if use_raw and tensor._state() == "list" and tensor.data:
            tensor.data = _values(tensor)
        if tensor._state() == "array":
            tensor.set_data_from_numpy(_values(tensor), binary_data=True)
    message = pb.ModelInferResponse(id=response.id or "", model_name=response.model_name or "",
                                    model_version=_text(response.model_version))
    _add_tensors(message.outputs, message.raw_output_contents, outputs, "output")
    _fill_parameters(message.parameters, response.parameters or {})
    return message


def _add_tensors(entries, raw_contents, tensors, kind: str) -> None:
    """Tensors into a request's or response's message: all raw when any is binary (one message holds one
    kind of contents, or no reader takes it), else each typed."""
    raw = any(t._binary for t in tensors)
    for tensor in tensors:
        entry = entries.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        _fill_parameters(entry.parameters, tensor.parameters or {})
        if raw:
            raw_contents.append(_raw(tensor))
        else:
            _typed(tensor, entry.contents, kind)


def response_from_grpc(cls, message):
    outputs = [InferOutput(t.name, list(t.shape), t.datatype, get_content(t.datatype, t.contents),
                           to_http_parameters(t.parameters)) for t in message.outputs]
    return cls(message.id, message.model_name, outputs, model_version=message.model_version,
               raw_outputs=message.raw_output_contents, from_grpc=True,
               parameters=to_http_parameters(message.parameters))


def response_from_bytes(cls, body: bytes, json_length: int):
    response = cls.from_rest(_header(body, json_length))
    read_binary_data(response.outputs, body, json_length, "output")
    _binary_to_json(response.outputs)
    return response

