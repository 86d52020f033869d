"""Protobuf messages <-> gpuserve values, so the servicer only decodes, calls the data plane, encodes.

Inputs arrive as `raw_input_contents` (what tritonclient sends; decoded zero-copy) or as typed
`contents`; outputs leave as `raw_output_contents`, as Triton answers, unless the request was typed (then
typed, as MLServer answers). Tensors in system
shared memory carry no data here: the data plane reads and writes the regions, and an output
written there leaves an empty raw entry, so entries stay aligned with outputs by index (what
tritonclient's `as_numpy` relies on). The tensor and parameter helpers are shared with the gRPC
client in `gpuserve.remote_grpc`.
"""

from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np

from gpuserve.datatypes import FIXED_SIZE_DTYPES, check_input_byte_size, to_numpy_dtype, wire_raw
from gpuserve.errors import InferenceError, InvalidInput
from gpuserve.remote_grpc import (CONTENTS_FIELD, fill_contents, params_from_proto, params_to_proto, tensor_to_raw,
                                  tensors_from_proto, wire_shape)
from gpuserve.shared_memory import REGION, is_shared_memory_output
from gpuserve.types import InferInput, InferRequest, InferResponse, RequestedOutput
from gpuserve.server.grpc import inference_pb2 as pb
from gpuserve.server.grpc.large import RawAnswer

def request_from_proto(message: pb.ModelInferRequest) -> InferRequest:
    if not message.model_name:
        raise InvalidInput("'model_name' is required")
    inputs = _inputs_from_proto(message)
    requested = None
    if len(message.outputs):
        requested = []
        for index, wanted in enumerate(message.outputs):
            if not wanted.name:
                raise InvalidInput(f"requested output {index}: 'name' is required")
            requested.append(RequestedOutput(wanted.name, params_from_proto(wanted.parameters)))
    return InferRequest(message.model_name, inputs, request_id=message.id or None,
                        parameters=params_from_proto(message.parameters), request_outputs=requested,
                        model_version=message.model_version or None, from_grpc=True)


def _inputs_from_proto(message: pb.ModelInferRequest) -> list:
    """Inputs with their data; those in shared memory come without (the data plane reads them).
    As in Triton and tritonclient, raw_input_contents holds entries for the other inputs only."""
    plain = _plain_inputs(message)
    if plain is not None:
        return plain
    messages = message.inputs
    if message.raw_input_contents:  # Triton's check and words, before counting the raw entries
        for tensor in messages:
            if tensor.HasField("contents"):
                raise InvalidInput(f"contents field must not be specified when using raw_input_contents for "
                                   f"'{tensor.name}' for model '{message.model_name}'")
    raw = message.raw_input_contents
    with_raw = [tensor for tensor in messages if REGION not in tensor.parameters]
    if raw and len(raw) == len(with_raw):  # Triton's check and words for raw data that does not fit the shape
        for tensor, data in zip(with_raw, raw):
            check_input_byte_size(tensor.name, tensor.datatype, list(tensor.shape), len(data), message.model_name,
                                  message.id)
    if not any(REGION in tensor.parameters for tensor in messages):
        return tensors_from_proto(InferInput, messages, message.raw_input_contents, "input")
    in_shm = [REGION in tensor.parameters for tensor in messages]
    others = [tensor for tensor, shm in zip(messages, in_shm) if not shm]
    decoded = iter(tensors_from_proto(InferInput, others, message.raw_input_contents, "input"))
    inputs = []
    for index, (tensor, shm) in enumerate(zip(messages, in_shm)):
        if not shm:
            inputs.append(next(decoded))
            continue
        where = f"input '{tensor.name}'" if tensor.name else f"input {index}"
        if not tensor.name:
            raise InvalidInput(f"{where}: 'name' is required")
        try:
            to_numpy_dtype(tensor.datatype)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        shape = [int(d) for d in tensor.shape]
        if any(d < 0 for d in shape):
            raise InvalidInput(f"{where}: 'shape' must hold non-negative integers, got {shape}")
        if tensor.HasField("contents"):
            raise InvalidInput(f"{where}: data is in both 'contents' and shared memory; use one")
        inputs.append(InferInput(tensor.name, shape, tensor.datatype, None, params_from_proto(tensor.parameters)))
    return inputs


def _plain_inputs(message: pb.ModelInferRequest):
    """The inputs of the common request, decoded without the general path's checks (half of the ~8 us a
    one-input request took to become an InferRequest): each input raw, of a fixed-size datatype, without
    parameters or typed contents, its bytes exactly its shape's. None for anything else: the general path
    then decodes it, or refuses it in Triton's words."""
    messages, raw = message.inputs, message.raw_input_contents
    if len(raw) != len(messages):
        return None
    inputs = []
    for tensor, data in zip(messages, raw):
        dtype = FIXED_SIZE_DTYPES.get(tensor.datatype)
        if dtype is None or not tensor.name or tensor.parameters or tensor.HasField("contents"):
            return None
        shape = list(tensor.shape)
        if math.prod(shape) * dtype.itemsize != len(data) or any(d < 0 for d in shape):
            return None
        decoded = InferInput(tensor.name, shape, tensor.datatype, np.frombuffer(data, dtype).reshape(shape), {})
        decoded._data = None  # as tensors_from_proto leaves it: `data` reads as a list
        inputs.append(decoded)
    return inputs


def typed_request(message: pb.ModelInferRequest) -> bool:
    """Whether a request sent its data in typed `contents` (no raw entries): its answer comes back typed
    too, as MLServer answers (clients built from the proto read `outputs[i].contents`); tritonclient
    sends raw and gets raw, as from Triton."""
    return not message.raw_input_contents and any(t.HasField("contents") for t in message.inputs)


def triton_model(model: Any) -> bool:
    """A model from a config.pbtxt: it answers raw whatever the request sent, as Triton does (Triton's
    grpc_explicit_*_content_client examples send typed `contents` and read `raw_output_contents`)."""
    extra = getattr(getattr(model, "settings", None), "model_extra", None) or {}
    return "triton_max_batch_size" in extra  # set for every config.pbtxt model (triton_config.py)


def response_to_proto(response: Any, request: InferRequest, typed: bool = False, views: bool = False):
    """The answer message; with `views` (the native transport's unary call) an answer with a large output is
    a RawAnswer, whose raw_output_contents are views of the output arrays (server/grpc/large.py)."""
    if isinstance(response, dict) and isinstance(response.get("outputs"), list):
        response = InferResponse.from_rest(request.model_name, response)
    if not isinstance(response, InferResponse):
        if hasattr(response, "__aiter__"):
            raise InferenceError(f"model '{request.model_name}' returned an async iterator (a stream); gRPC "
                                 "ModelInfer is unary and cannot stream it: use REST (streamed) or ModelStreamInfer")
        raise InferenceError(f"model '{request.model_name}' returned {type(response).__name__}; "
                             "the V2 protocol needs an InferResponse")
    message = pb.ModelInferResponse(model_name=response.model_name or request.model_name,
                                    model_version=str(response.model_version or request.model_version or ""),
                                    id=response.id or "")
    params_to_proto(response.parameters, message.parameters)
    if typed:
        return _typed_outputs(message, response)
    raws, viewed = [], False
    for output in response.outputs:
        if is_shared_memory_output(output):  # data is in the client's region: an empty raw entry keeps
            shape, raw = list(output.shape), b""  # raw_output_contents aligned with outputs (as Triton)
        elif views:
            array = output.as_numpy()
            shape, raw = wire_shape(output, array), wire_raw(array, output.datatype)
            viewed = viewed or type(raw) is memoryview
        else:
            shape, raw = tensor_to_raw(output)
        tensor = message.outputs.add(name=output.name, datatype=output.datatype, shape=shape)
        params_to_proto(output.parameters, tensor.parameters, skip={"binary_data_size", "binary_data"})
        raws.append(raw)
    if viewed:
        return RawAnswer(message, raws)
    message.raw_output_contents.extend(raws)
    return message


def _typed_outputs(message: pb.ModelInferResponse, response: InferResponse) -> pb.ModelInferResponse:
    for output in response.outputs:
        if is_shared_memory_output(output):
            tensor = message.outputs.add(name=output.name, datatype=output.datatype, shape=list(output.shape))
            continue
        array = output.as_numpy()
        tensor = message.outputs.add(name=output.name, datatype=output.datatype, shape=wire_shape(output, array))
        params_to_proto(output.parameters, tensor.parameters, skip={"binary_data_size", "binary_data"})
        if output.datatype not in CONTENTS_FIELD:
            raise InferenceError(f"output '{output.name}' has datatype {output.datatype}, which gRPC cannot carry")
        fill_contents(tensor.contents, array, output.datatype)
    return message


def metadata_to_proto(meta: Dict[str, Any]) -> pb.ModelMetadataResponse:
    message = pb.ModelMetadataResponse(name=meta.get("name", ""), platform=meta.get("platform") or "",
                                       versions=[str(v) for v in meta.get("versions") or []])
    for key, tensors in (("inputs", message.inputs), ("outputs", message.outputs)):
        for tensor in meta.get(key) or []:
            tensors.add(name=tensor["name"], datatype=tensor["datatype"], shape=[int(d) for d in tensor["shape"]])
    return message


def config_to_proto(config: Dict[str, Any]) -> pb.ModelConfig:
    """Triton's config JSON (gpuserve.model_config) -> the ModelConfig message."""
    from google.protobuf import json_format

    try:
        return json_format.ParseDict(_bools_as_bools(config, pb.ModelConfig.DESCRIPTOR), pb.ModelConfig(),
                                     ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise InferenceError(f"model configuration is not in the Triton form: {exc}") from None


def _bools_as_bools(value: Any, descriptor) -> Any:
    """`value` with every bool field written as 0/1 turned into false/true. Protobuf's text format (what
    config.pbtxt is, and what Triton parses it with) takes 0 and 1 for a bool, and Triton's own qa models
    write `bool_false_true: [ 0, 1 ]`; the JSON parser refuses them, which failed every gRPC config call
    for such a model (tritonclient's sequence tests read the config first)."""
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        field = descriptor.fields_by_name.get(key) or descriptor.fields_by_camelcase_name.get(key)
        if field is None:
            out[key] = item
        elif field.type == field.TYPE_BOOL:
            out[key] = [_as_bool(x) for x in item] if isinstance(item, list) else _as_bool(item)
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            out[key] = {k: _bools_as_bools(v, entry.message_type) for k, v in item.items()} \
                if entry.message_type is not None and isinstance(item, dict) else item
        elif field.message_type is not None:
            out[key] = [_bools_as_bools(x, field.message_type) for x in item] if isinstance(item, list) \
                else _bools_as_bools(item, field.message_type)
        else:
            out[key] = item
    return out


def _as_bool(item: Any) -> Any:
    return bool(item) if isinstance(item, int) and not isinstance(item, bool) and item in (0, 1) else item


def statistics_to_proto(data: Dict[str, Any]) -> pb.ModelStatisticsResponse:
    """Triton's statistics JSON (`{"model_stats": [...]}`) -> the response message."""
    from google.protobuf import json_format

    try:
        return json_format.ParseDict(data, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise InferenceError(f"statistics are not in the Triton form: {exc}") from None
