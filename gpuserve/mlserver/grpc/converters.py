"""`mlserver.grpc.converters`: `mlserver.types` payloads <-> V2 gRPC messages, for clients of MLServer's docs
(`ModelInferRequestConverter.from_types(request, model_name=...)`, `ModelInferResponseConverter.to_types(reply)`).

Requests go with typed `contents` (or `raw_input_contents` with `use_raw=True`) and the shapes as written,
so BYTES shaped by byte length travel as MLServer sends them. Answers are read from either form (gpuserve
answers typed requests typed and raw ones raw); the data comes back as flat lists, as MLServer's converters
give it.
"""

from __future__ import annotations

from typing import Any, List, Optional

from gpuserve.datatypes import numpy_to_raw
from gpuserve.mlserver.grpc import dataplane_pb2 as pb
from gpuserve.mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataTensor,
    Parameters,
    RequestInput,
    RequestOutput,
    ResponseOutput,
    TensorData,
    _parameters_dict,
    to_native_input,
    to_native_output,
)
from gpuserve.remote_grpc import fill_contents, params_from_proto, params_to_proto, tensors_from_proto
from gpuserve.types import InferInput, InferOutput


def _parameters(mapping) -> Optional[Parameters]:
    found = params_from_proto(mapping)
    return Parameters(**found) if found else None


def _datatype(tensor: Any) -> str:
    return getattr(tensor.datatype, "value", str(tensor.datatype))


def _add_tensors(entries, tensors: list, to_native, raw: Optional[Any]) -> None:
    """Tensor messages from MLServer tensors: their own shapes, data typed, or into `raw` (the message's
    raw_*_contents) when given."""
    for tensor in tensors:
        native = to_native(tensor)
        entry = entries.add(name=tensor.name, datatype=_datatype(tensor), shape=list(tensor.shape))
        params_to_proto(_parameters_dict(tensor.parameters), entry.parameters)
        array = native.as_numpy()
        if raw is not None:
            raw.append(numpy_to_raw(array, native.datatype))
        else:
            fill_contents(entry.contents, array, native.datatype)


def _as_lists(natives: list, make: type) -> list:
    out = []
    for native in natives:
        array = native._array
        data = list(native._data) if array is None else array.ravel().tolist()
        out.append(make.model_construct(name=native.name, shape=list(native.shape), datatype=native.datatype,
                                        parameters=Parameters(**native.parameters) if native.parameters else None,
                                        data=TensorData(data)))
    return out


class ModelInferRequestConverter:
    @classmethod
    def from_types(cls, type_object: InferenceRequest, model_name: str, model_version: Optional[str] = "",
                   use_raw: bool = False) -> pb.ModelInferRequest:
        message = pb.ModelInferRequest(model_name=model_name, model_version=model_version or "",
                                       id=type_object.id or "")
        params_to_proto(_parameters_dict(type_object.parameters), message.parameters)
        _add_tensors(message.inputs, type_object.inputs, to_native_input,
                     message.raw_input_contents if use_raw else None)
        for wanted in type_object.outputs or []:
            params_to_proto(_parameters_dict(wanted.parameters), message.outputs.add(name=wanted.name).parameters)
        return message

    @classmethod
    def to_types(cls, pb_object: pb.ModelInferRequest) -> InferenceRequest:
        inputs = tensors_from_proto(InferInput, pb_object.inputs, pb_object.raw_input_contents, "input")
        outputs = [RequestOutput(name=o.name, parameters=_parameters(o.parameters)) for o in pb_object.outputs]
        # the proto's id as it is ("" when not set), as MLServer's converters give it
        return InferenceRequest.model_construct(id=pb_object.id, parameters=_parameters(pb_object.parameters),
                                                inputs=_as_lists(inputs, RequestInput), outputs=outputs or None)


class ModelInferResponseConverter:
    @classmethod
    def from_types(cls, type_object: InferenceResponse, use_raw: bool = False) -> pb.ModelInferResponse:
        message = pb.ModelInferResponse(model_name=type_object.model_name, model_version=type_object.model_version or "",
                                        id=type_object.id or "")
        params_to_proto(_parameters_dict(type_object.parameters), message.parameters)
        _add_tensors(message.outputs, type_object.outputs, to_native_output,
                     message.raw_output_contents if use_raw else None)
        return message

    @classmethod
    def to_types(cls, pb_object: pb.ModelInferResponse) -> InferenceResponse:
        outputs = tensors_from_proto(InferOutput, pb_object.outputs, pb_object.raw_output_contents, "output")
        return InferenceResponse.model_construct(model_name=pb_object.model_name,
                                                 model_version=pb_object.model_version or None,
                                                 id=pb_object.id, parameters=_parameters(pb_object.parameters),
                                                 outputs=_as_lists(outputs, ResponseOutput))


class ModelMetadataResponseConverter:
    @classmethod
    def to_types(cls, pb_object: pb.ModelMetadataResponse) -> MetadataModelResponse:
        def tensors(items) -> List[MetadataTensor]:
            return [MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in items]

        return MetadataModelResponse(name=pb_object.name, platform=pb_object.platform,
                                     versions=list(pb_object.versions) or None, inputs=tensors(pb_object.inputs),
                                     outputs=tensors(pb_object.outputs))


__all__ = ["ModelInferRequestConverter", "ModelInferResponseConverter", "ModelMetadataResponseConverter"]
