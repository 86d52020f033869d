"""Protobuf messages <-> gpuserve values, so the servicer only decodes, calls the data plane, encodes.

Inputs arrive as `raw_input_contents` (what tritonclient sends; decoded zero-copy) or as typed
`contents`; outputs always leave as `raw_output_contents`, as Triton answers. The tensor and
parameter helpers are shared with the gRPC client in `gpuserve.remote_grpc`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from gpuserve.errors import InferenceError, InvalidInput
from gpuserve.remote_grpc import params_from_proto, params_to_proto, tensor_to_raw, tensors_from_proto
from gpuserve.types import InferInput, InferRequest, InferResponse, RequestedOutput
from gpuserve.server.grpc import inference_pb2 as pb

# V2 datatype <-> model configuration DataType enum.
CONFIG_TYPES = {"BOOL": pb.TYPE_BOOL, "UINT8": pb.TYPE_UINT8, "UINT16": pb.TYPE_UINT16, "UINT32": pb.TYPE_UINT32,
                "UINT64": pb.TYPE_UINT64, "INT8": pb.TYPE_INT8, "INT16": pb.TYPE_INT16, "INT32": pb.TYPE_INT32,
                "INT64": pb.TYPE_INT64, "FP16": pb.TYPE_FP16, "FP32": pb.TYPE_FP32, "FP64": pb.TYPE_FP64,
                "BYTES": pb.TYPE_STRING, "BF16": pb.TYPE_BF16}
_INSTANCE_KINDS = {"auto": pb.ModelInstanceGroup.KIND_AUTO, "gpu": pb.ModelInstanceGroup.KIND_GPU,
                   "cpu": pb.ModelInstanceGroup.KIND_CPU}


def request_from_proto(message: pb.ModelInferRequest) -> InferRequest:
    if not message.model_name:
        raise InvalidInput("'model_name' is required")
    if not len(message.inputs):
        raise InvalidInput("request must have at least one input")
    inputs = tensors_from_proto(InferInput, message.inputs, message.raw_input_contents, "input")
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


def response_to_proto(response: Any, request: InferRequest) -> pb.ModelInferResponse:
    if isinstance(response, dict) and isinstance(response.get("outputs"), list):
        response = InferResponse.from_rest(request.model_name, response)
    if not isinstance(response, InferResponse):
        raise InferenceError(f"model '{request.model_name}' returned {type(response).__name__}; "
                             "the V2 protocol needs an InferResponse")
    message = pb.ModelInferResponse(model_name=response.model_name or request.model_name,
                                    model_version=str(response.model_version or request.model_version or ""),
                                    id=response.id or "")
    params_to_proto(response.parameters, message.parameters)
    for output in response.outputs:
        shape, raw = tensor_to_raw(output)
        tensor = message.outputs.add(name=output.name, datatype=output.datatype, shape=shape)
        params_to_proto(output.parameters, tensor.parameters, skip={"binary_data_size", "binary_data"})
        message.raw_output_contents.append(raw)
    return message


def metadata_to_proto(meta: Dict[str, Any]) -> pb.ModelMetadataResponse:
    message = pb.ModelMetadataResponse(name=meta.get("name", ""), platform=meta.get("platform") or "",
                                       versions=[str(v) for v in meta.get("versions") or []])
    for key, tensors in (("inputs", message.inputs), ("outputs", message.outputs)):
        for tensor in meta.get(key) or []:
            tensors.add(name=tensor["name"], datatype=tensor["datatype"], shape=[int(d) for d in tensor["shape"]])
    return message


def config_from_metadata(meta: Dict[str, Any], settings: Optional[Any] = None) -> pb.ModelConfig:
    """A Triton-style ModelConfig from V2 metadata, plus batching and instances from model settings.

    With `max_batch_size > 0` Triton's dims leave out the batch dimension; that is only said when
    every tensor's first dimension is the variable (-1) batch dimension, else max_batch_size is 0.
    """
    tensors = [*(meta.get("inputs") or []), *(meta.get("outputs") or [])]
    max_batch = getattr(settings, "max_batch_size", 0)
    max_batch = max_batch if isinstance(max_batch, int) and max_batch > 0 else 0
    if max_batch and not all(t["shape"] and int(t["shape"][0]) == -1 for t in tensors):
        max_batch = 0
    skip = 1 if max_batch else 0
    config = pb.ModelConfig(name=meta.get("name", ""), platform=meta.get("platform") or "", max_batch_size=max_batch)
    for tensor in meta.get("inputs") or []:
        config.input.add(name=tensor["name"], data_type=CONFIG_TYPES.get(tensor["datatype"], pb.TYPE_INVALID),
                         dims=[int(d) for d in tensor["shape"]][skip:])
    for tensor in meta.get("outputs") or []:
        config.output.add(name=tensor["name"], data_type=CONFIG_TYPES.get(tensor["datatype"], pb.TYPE_INVALID),
                          dims=[int(d) for d in tensor["shape"]][skip:])
    versions = [int(v) for v in meta.get("versions") or [] if str(v).isdigit()]
    if versions:
        config.version_policy.specific.versions.extend(sorted(versions))
    delay = getattr(settings, "max_batch_time", 0)
    if max_batch and isinstance(delay, (int, float)):
        config.dynamic_batching.max_queue_delay_microseconds = int(delay * 1_000_000)
    for group in getattr(settings, "instance_groups", None) or []:
        kind = _INSTANCE_KINDS.get(getattr(group, "kind", "auto"), pb.ModelInstanceGroup.KIND_AUTO)
        config.instance_group.add(count=int(getattr(group, "count", 1)), gpus=list(getattr(group, "gpus", []) or []),
                                  kind=kind)
    return config


def statistics_to_proto(data: Dict[str, Any]) -> pb.ModelStatisticsResponse:
    """Triton's statistics JSON (`{"model_stats": [...]}`) -> the response message."""
    from google.protobuf import json_format

    try:
        return json_format.ParseDict(data, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise InferenceError(f"statistics are not in the Triton form: {exc}") from None
