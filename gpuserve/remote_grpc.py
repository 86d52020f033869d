"""Forwarding to a remote predictor over gRPC ("grpc-v2"): KServe's transformer pattern.

`grpc_infer` sends an `InferRequest` as one `inference.GRPCInferenceService/ModelInfer` call
(inputs as `raw_input_contents`) and decodes the reply into an `InferResponse`; `grpc_model_ready`
asks the predictor's ModelReady. One grpc.aio channel per predictor host is kept and reused.

`gpuserve` never imports `gpuserve.server`, so the few messages this needs (ModelInfer's and
ModelReady's, with their parts) are described here, with the same names and field numbers as
server/grpc/inference.proto, and built into a private descriptor pool on first use; a test checks
they match the server's. grpc and protobuf are imported inside the functions (gpuserve[grpc]), so
`import gpuserve` stays free of them.

The tensor helpers (`tensors_from_proto`, `tensor_to_raw`, parameters both ways) work on any
message with those field names, so the gRPC server's conversions use them too.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Dict, Optional, Union

import numpy as np

from gpuserve.datatypes import deserialize_bytes_tensor, numpy_to_raw, raw_to_numpy, to_numpy_dtype
from gpuserve.errors import InvalidInput, RemotePredictorError, Unimplemented
from gpuserve.types import InferOutput, InferRequest, InferResponse

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_READY = "/inference.GRPCInferenceService/ModelReady"

# Which InferTensorContents list carries each datatype (FP16 and BF16 travel as fp32 values).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP16": "fp32_contents", "FP32": "fp32_contents", "BF16": "fp32_contents", "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

# REST-only tensor parameters (binary tensor extension) that mean nothing on gRPC.
_REST_ONLY = frozenset({"binary_data_size", "binary_data"})

# gRPC status of the predictor -> HTTP status our REST callers get.
_HTTP_OF_GRPC = {
    "INVALID_ARGUMENT": 400, "OUT_OF_RANGE": 400, "FAILED_PRECONDITION": 400, "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "RESOURCE_EXHAUSTED": 413,
    "INTERNAL": 500, "DATA_LOSS": 500, "UNKNOWN": 500, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


# -- tensors and parameters (shared with the gRPC server) -------------------------------------------

def params_from_proto(mapping) -> Dict[str, Any]:
    """map<string, InferParameter> -> {name: bool | int | str | float}."""
    out = {}
    for key, value in mapping.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def params_to_proto(params: Optional[Dict[str, Any]], mapping, skip=frozenset()) -> None:
    """Fill a map<string, InferParameter>; None values are left out, other non-scalars sent as JSON text."""
    for key, value in (params or {}).items():
        if value is None or key in skip:
            continue
        entry = mapping[str(key)]
        if isinstance(value, (bool, np.bool_)):
            entry.bool_param = bool(value)
        elif isinstance(value, (int, np.integer)):
            value = int(value)
            if -(2**63) <= value < 2**63:
                entry.int64_param = value
            elif 0 <= value < 2**64:
                entry.uint64_param = value
            else:
                raise InvalidInput(f"parameter '{key}' = {value} does not fit in 64 bits")
        elif isinstance(value, (float, np.floating)):
            entry.double_param = float(value)
        elif isinstance(value, str):
            entry.string_param = value
        elif isinstance(value, bytes):
            entry.string_param = value.decode("utf-8", "replace")
        else:
            import orjson

            entry.string_param = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def contents_to_numpy(contents, datatype: str, shape: list, where: str) -> Union[np.ndarray, list]:
    """Typed InferTensorContents -> an array of `shape` (one copy; raw contents are the fast path).

    BYTES whose element count differs from the shape come back as a plain list, as JSON data does: an
    MLServer runtime reads them as they are (MLServer's docs send one string with shape [its length]),
    and a model that asks for the array (`as_numpy`) gets the same 400 as before."""
    field = CONTENTS_FIELD[datatype]
    values = getattr(contents, field)
    count = int(np.prod(shape)) if shape else 1
    if datatype == "BYTES" and len(values) != count and len(values):
        return list(values)
    if len(values) != count:
        hint = ""
        if not len(values):
            used = [name for name in set(CONTENTS_FIELD.values()) if len(getattr(contents, name))]
            if used:
                hint = f" ({datatype} data goes in {field}, not {', '.join(sorted(used))})"
        raise InvalidInput(f"{where}: shape {list(shape)} needs {count} elements but {field} holds "
                           f"{len(values)}{hint}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
    else:
        try:
            array = np.array(list(values), dtype=to_numpy_dtype(datatype))
        except (OverflowError, ValueError, TypeError) as exc:
            raise InvalidInput(f"{where}: data does not fit datatype {datatype}: {exc}") from None
    return array.reshape(shape)


def tensors_from_proto(cls, messages, raw_contents, kind: str) -> list:
    """Input (or output) tensor messages plus raw_{kind}_contents -> InferInput/InferOutput objects.

    Raw contents are decoded zero-copy (read-only arrays over the message's bytes).
    """
    if len(raw_contents) and len(raw_contents) != len(messages):
        raise InvalidInput(f"raw_{kind}_contents has {len(raw_contents)} entries for {len(messages)} {kind}s; "
                           f"send one per {kind}, in the order of the {kind}s, or none")
    tensors = []
    for index, message in enumerate(messages):
        if not message.name:
            raise InvalidInput(f"{kind} {index}: 'name' is required")
        where = f"{kind} '{message.name}'"
        datatype = message.datatype
        try:
            to_numpy_dtype(datatype)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        shape = [int(d) for d in message.shape]
        if any(d < 0 for d in shape):
            raise InvalidInput(f"{where}: 'shape' must hold non-negative integers, got {shape}")
        params = params_from_proto(message.parameters)
        if len(raw_contents):
            if message.HasField("contents"):
                raise InvalidInput(f"{where}: data is in both 'contents' and raw_{kind}_contents; use one")
            try:
                array = raw_to_numpy(raw_contents[index], datatype, shape)
            except InvalidInput as exc:
                array = _uncounted_bytes(raw_contents[index]) if datatype == "BYTES" else None
                if array is None:
                    raise InvalidInput(f"{where}: {exc}") from None
        elif "shared_memory_region" in params:
            raise Unimplemented(f"{where}: shared-memory tensors are not supported by gpuserve; "
                                f"send the data in raw_{kind}_contents")
        elif message.HasField("contents"):
            array = contents_to_numpy(message.contents, datatype, shape, where)
        elif shape and 0 in shape:
            array = np.empty(shape, dtype=to_numpy_dtype(datatype))
        else:
            raise InvalidInput(f"{where} has no data: set its 'contents' or send raw_{kind}_contents")
        tensor = cls(message.name, shape, datatype, array, params)
        if tensor._array is not None:
            tensor._data = None  # decoded here: `data` reads as a list, as KServe's tensors from the wire do
        tensors.append(tensor)
    return tensors


def _uncounted_bytes(raw: bytes) -> Optional[list]:
    """Raw BYTES that decode but do not fill the shape, as a list (see `contents_to_numpy`); None if
    they do not decode at all."""
    try:
        return list(deserialize_bytes_tensor(raw)) or None
    except (InvalidInput, ValueError):
        return None


def tensor_to_raw(tensor) -> tuple:
    """A tensor's (shape, raw bytes) as gRPC carries it."""
    array = tensor.as_numpy()
    return wire_shape(tensor, array), numpy_to_raw(array, tensor.datatype)


def fill_contents(contents, array, datatype: str) -> None:
    """Typed InferTensorContents from an array (the inverse of contents_to_numpy): BYTES elements as bytes
    (text as UTF-8), FP16/BF16 as fp32 values."""
    values = array.ravel().tolist()
    if datatype == "BYTES" and set(map(type, values)) - {bytes}:  # a C-level test first: mostly all bytes
        values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]
    getattr(contents, CONTENTS_FIELD[datatype]).extend(values)


def wire_shape(tensor, array) -> list:
    """The declared shape wins when it fits the data, or always for an MLServer runtime's output
    (`keeps_declared_shape`), as MLServer answers it."""
    shape = list(tensor.shape)
    if not shape or (math.prod(shape) != array.size and not getattr(tensor, "keeps_declared_shape", False)):
        shape = list(array.shape)
    return shape


# -- the client's messages ----------------------------------------------------------------------

_TENSOR_FIELDS = [("name", 1, "string"), ("datatype", 2, "string"), ("shape", 3, "repeated int64"),
                  ("parameters", 4, "map InferParameter"), ("contents", 5, "InferTensorContents")]

# (message path, fields as (name, number, kind), oneof holding every field or None)
_SCHEMA = [
    ("InferParameter", [("bool_param", 1, "bool"), ("int64_param", 2, "int64"), ("string_param", 3, "string"),
                        ("double_param", 4, "double"), ("uint64_param", 5, "uint64")], "parameter_choice"),
    ("InferTensorContents", [("bool_contents", 1, "repeated bool"), ("int_contents", 2, "repeated int32"),
                             ("int64_contents", 3, "repeated int64"), ("uint_contents", 4, "repeated uint32"),
                             ("uint64_contents", 5, "repeated uint64"), ("fp32_contents", 6, "repeated float"),
                             ("fp64_contents", 7, "repeated double"), ("bytes_contents", 8, "repeated bytes")], None),
    ("ModelInferRequest", [("model_name", 1, "string"), ("model_version", 2, "string"), ("id", 3, "string"),
                           ("parameters", 4, "map InferParameter"),
                           ("inputs", 5, "repeated ModelInferRequest.InferInputTensor"),
                           ("outputs", 6, "repeated ModelInferRequest.InferRequestedOutputTensor"),
                           ("raw_input_contents", 7, "repeated bytes")], None),
    ("ModelInferRequest.InferInputTensor", _TENSOR_FIELDS, None),
    ("ModelInferRequest.InferRequestedOutputTensor", [("name", 1, "string"), ("parameters", 2, "map InferParameter")],
     None),
    ("ModelInferResponse", [("model_name", 1, "string"), ("model_version", 2, "string"), ("id", 3, "string"),
                            ("parameters", 4, "map InferParameter"),
                            ("outputs", 5, "repeated ModelInferResponse.InferOutputTensor"),
                            ("raw_output_contents", 6, "repeated bytes")], None),
    ("ModelInferResponse.InferOutputTensor", _TENSOR_FIELDS, None),
    ("ModelReadyRequest", [("name", 1, "string"), ("version", 2, "string")], None),
    ("ModelReadyResponse", [("ready", 1, "bool")], None),
]
_SCALARS = frozenset({"bool", "int32", "int64", "uint32", "uint64", "float", "double", "string", "bytes"})
_MESSAGES: Optional[Dict[str, type]] = None


def client_file_descriptor():
    """The FileDescriptorProto of the client's messages (package `inference`, proto3)."""
    from google.protobuf import descriptor_pb2

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="gpuserve/remote_grpc.proto", package="inference", syntax="proto3")
    protos = {}
    for path, fields, oneof in _SCHEMA:
        parent, _, name = path.rpartition(".")
        message = (protos[parent].nested_type if parent else file.message_type).add(name=name)
        protos[path] = message
        if oneof:
            message.oneof_decl.add(name=oneof)
        for field_name, number, kind in fields:
            field = message.field.add(name=field_name, number=number, label=F.LABEL_OPTIONAL)
            if oneof:
                field.oneof_index = 0
            if kind.startswith("repeated "):
                field.label = F.LABEL_REPEATED
                kind = kind[len("repeated "):]
            if kind.startswith("map "):
                entry = message.nested_type.add(name="".join(p.title() for p in field_name.split("_")) + "Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_STRING)
                entry.field.add(name="value", number=2, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE,
                                type_name=f".inference.{kind[len('map '):]}")
                field.label = F.LABEL_REPEATED
                field.type = F.TYPE_MESSAGE
                field.type_name = f".inference.{path}.{entry.name}"
            elif kind in _SCALARS:
                field.type = getattr(F, f"TYPE_{kind.upper()}")
            else:
                field.type = F.TYPE_MESSAGE
                field.type_name = f".inference.{kind}"
    return file


def client_messages() -> Dict[str, type]:
    """The client's message classes by name, from a private descriptor pool (built once)."""
    global _MESSAGES
    if _MESSAGES is None:
        from google.protobuf import descriptor_pool, message_factory

        pool = descriptor_pool.DescriptorPool()  # private: tritonclient may fill the default one
        pool.Add(client_file_descriptor())
        _MESSAGES = {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{name}"))
                     for name, _, _ in _SCHEMA if "." not in name}
    return _MESSAGES


# -- the client -----------------------------------------------------------------------------------

# (host, use_ssl) -> (event loop, channel, {method: callable}); a channel belongs to one loop.
_CHANNELS: Dict[tuple, tuple] = {}


def _target(host: str) -> str:
    for scheme in ("grpc://", "http://", "https://"):
        if host.startswith(scheme):
            return host[len(scheme):].rstrip("/")
    return host


def _method(model, path: str, request: str, response: str):
    """A callable for one RPC on the cached channel to `model.predictor_host`."""
    import grpc

    loop = asyncio.get_running_loop()
    key = (model.predictor_host, bool(model.use_ssl))
    cached = _CHANNELS.get(key)
    if cached is None or cached[0] is not loop:
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        target = _target(model.predictor_host)
        if model.use_ssl:
            channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
        else:
            channel = grpc.aio.insecure_channel(target, options=options)
        cached = _CHANNELS[key] = (loop, channel, {})
    _, channel, calls = cached
    call = calls.get(path)
    if call is None:
        messages = client_messages()
        call = calls[path] = channel.unary_unary(path, request_serializer=messages[request].SerializeToString,
                                                 response_deserializer=messages[response].FromString)
    return call


async def close_channels() -> None:
    """Close the cached channels that belong to the running loop (call before the loop ends)."""
    loop = asyncio.get_running_loop()
    for key, (owner, channel, _) in list(_CHANNELS.items()):
        if owner is loop:
            del _CHANNELS[key]
            await channel.close()


def encode_request(model_name: str, payload: InferRequest):
    request = client_messages()["ModelInferRequest"](model_name=model_name, model_version=payload.model_version or "",
                                                     id=payload.id or "")
    return fill_request(request, payload)


def fill_request(request, payload: InferRequest):
    """A ModelInferRequest message (of any pool: ours, KServe's stubs') given the payload's parameters,
    raw inputs and requested outputs."""
    params_to_proto(payload.parameters, request.parameters)
    for tensor in payload.inputs:
        shape, raw = tensor_to_raw(tensor)
        message = request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=shape)
        params_to_proto(tensor.parameters, message.parameters, skip=_REST_ONLY)
        request.raw_input_contents.append(raw)
    for wanted in payload.request_outputs or []:
        params_to_proto(wanted.parameters, request.outputs.add(name=wanted.name).parameters, skip=_REST_ONLY)
    return request


def decode_response(reply, payload: InferRequest, model_name: str) -> InferResponse:
    outputs = tensors_from_proto(InferOutput, reply.outputs, reply.raw_output_contents, "output")
    return InferResponse(reply.id or payload.id, reply.model_name or model_name, outputs,
                         model_version=reply.model_version or None, parameters=params_from_proto(reply.parameters))


async def grpc_infer(model, payload: InferRequest, headers: Optional[Dict[str, str]]) -> InferResponse:
    """One ModelInfer call on `model.predictor_host` for the model the payload names (else `model.name`, a
    transformer's own, as most deployments name both alike), within `model.timeout` seconds."""
    import grpc

    request = encode_request(payload.model_name or model.name, payload)
    metadata = []
    for key in ("x-request-id", "x-b3-traceid", "traceparent", "authorization"):
        value = (headers or {}).get(key)
        if isinstance(value, str):
            metadata.append((key, value))
    host = model.predictor_host
    try:
        call = _method(model, MODEL_INFER, "ModelInferRequest", "ModelInferResponse")
        reply = await call(request, timeout=model.timeout or None, metadata=metadata or None)
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
        error = RemotePredictorError(f"predictor at {host} answered {code}: {exc.details()}",
                                     status=_HTTP_OF_GRPC.get(code, 502))
        # Keep the predictor's status for our gRPC callers too (never UNKNOWN).
        error.grpc = code if code in _HTTP_OF_GRPC and code != "UNKNOWN" else "INTERNAL"
        raise error from None
    try:
        return decode_response(reply, payload, model.name)
    except InvalidInput as exc:
        raise RemotePredictorError(f"predictor at {host} sent a malformed response: {exc}", status=502) from None


async def grpc_model_ready(model) -> bool:
    """The predictor's ModelReady for `model.name`; any failure to ask counts as not ready."""
    import grpc

    request = client_messages()["ModelReadyRequest"](name=model.name)
    call = _method(model, MODEL_READY, "ModelReadyRequest", "ModelReadyResponse")
    try:
        reply = await call(request, timeout=model.timeout or None)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.ready)
