"""Choosing codecs from content types (request, input, model metadata) and remembering what was decoded.

A decoded value is kept on the tensor or request it came from (`parameters._decoded_payload`, an
attribute that is never serialised), so a request codec that stacks input codecs (a DataFrame whose
columns have their own content types) and a runtime calling `decode` twice decode each tensor once.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Type, Union

from gpuserve.mlserver.codecs.base import (
    InputCodec,
    RequestCodec,
    find_input_codec,
    find_input_codec_by_payload,
    find_request_codec,
    find_request_codec_by_payload,
)
from gpuserve.mlserver.codecs.errors import CodecError
from gpuserve.mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    Parameters,
    RequestInput,
    RequestOutput,
    ResponseOutput,
    construct,
    from_native_request,
    from_native_response,
)
from gpuserve.types import InferRequest, InferResponse

DefaultOutputPrefix = "output-"
DefaultInputPrefix = "input-"
DecodedParameterName = "_decoded_payload"

InputOrOutput = Union[RequestInput, ResponseOutput]
Parametrised = Union[InferenceRequest, RequestInput, RequestOutput, ResponseOutput, InferenceResponse]
Codec = Union[Type[InputCodec], InputCodec, Type[RequestCodec], RequestCodec]


def is_list_of(payload: Any, instance_type: Any) -> bool:
    return isinstance(payload, list) and all(isinstance(item, instance_type) for item in payload)


def inject_batch_dimension(shape: List[int]) -> List[int]:
    """MLServer's rule: a 1-D shape [N] is N rows of one value, [N, 1]; a scalar is [1]."""
    return list(shape) if len(shape) > 1 else list(shape) + [1]


def _content_type(obj: Any, metadata: Any = None) -> Optional[str]:
    parameters = getattr(obj, "parameters", None)
    content_type = getattr(parameters, "content_type", None) if parameters is not None else None
    if content_type:
        return content_type
    if metadata is not None:
        parameters = getattr(metadata, "parameters", None)
        if isinstance(parameters, dict):
            return parameters.get("content_type") or None
        content_type = getattr(parameters, "content_type", None) if parameters is not None else None
        if content_type:
            return content_type
    return None


def _save_decoded(obj: Any, decoded: Any) -> None:
    if obj.parameters is None:
        obj.parameters = Parameters()
    object.__setattr__(obj.parameters, DecodedParameterName, decoded)


def has_decoded(obj: Any) -> bool:
    parameters = getattr(obj, "parameters", None)
    return parameters is not None and DecodedParameterName in getattr(parameters, "__dict__", {})


def get_decoded(obj: Any) -> Any:
    if has_decoded(obj):
        return obj.parameters.__dict__[DecodedParameterName]
    return None


def get_decoded_or_raw(obj: Any) -> Any:
    if has_decoded(obj):
        return get_decoded(obj)
    if isinstance(obj, (RequestInput, ResponseOutput)):
        return obj.data
    return obj


def decode_request_input(request_input: RequestInput,
                         metadata_inputs: Optional[Dict[str, MetadataTensor]] = None) -> Optional[Any]:
    """Decode by the input's content type, else its metadata's; None (and nothing saved) without one."""
    metadata = (metadata_inputs or {}).get(request_input.name)
    content_type = _content_type(request_input, metadata)
    if content_type is None:
        return None
    codec = find_input_codec(content_type)
    if codec is None:
        return None
    decoded = codec.decode_input(request_input)
    _save_decoded(request_input, decoded)
    return decoded


def _with_metadata_content_types(request: InferenceRequest,
                                 metadata_inputs: Dict[str, MetadataTensor]) -> InferenceRequest:
    """The request with each input's metadata content type written where the client named none,
    so a request codec that decodes columns by their own content types honours the metadata too."""
    if not metadata_inputs:
        return request
    changed = []
    for request_input in request.inputs:
        content_type = None if _content_type(request_input) else _content_type(request_input,
                                                                                metadata_inputs.get(request_input.name))
        if content_type is None:
            changed.append(request_input)
            continue
        parameters = request_input.parameters.model_copy() if request_input.parameters else Parameters()
        parameters.content_type = content_type
        changed.append(request_input.model_copy(update={"parameters": parameters}))
    return request.model_copy(update={"inputs": changed})


def decode_inference_request(request: InferenceRequest, model_settings: Any = None,
                             metadata_inputs: Optional[Dict[str, MetadataTensor]] = None) -> Optional[Any]:
    """Decode every input that has a content type, then the request by its own (or the model's);
    returns the decoded request, or the request itself when no request codec applies."""
    metadata_inputs = metadata_inputs or {}
    for request_input in request.inputs:
        decode_request_input(request_input, metadata_inputs)
    content_type = _content_type(request, model_settings)
    if content_type is not None:
        codec = find_request_codec(content_type)
        if codec is not None:
            decoded = codec.decode_request(_with_metadata_content_types(request, metadata_inputs))
            _save_decoded(request, decoded)
            return decoded
    return request


def encode_response_output(payload: Any, request_output: RequestOutput,
                           metadata_outputs: Optional[Dict[str, MetadataTensor]] = None) -> Optional[ResponseOutput]:
    metadata = (metadata_outputs or {}).get(request_output.name)
    content_type = _content_type(request_output, metadata)
    codec = find_input_codec(content_type) if content_type else find_input_codec_by_payload(payload)
    if codec is None:
        return None
    return codec.encode_output(name=request_output.name, payload=payload)


def encode_inference_response(payload: Any, model_settings: Any) -> Optional[InferenceResponse]:
    """By the model's default content type when its codec takes the payload, else by the payload."""
    codec = None
    content_type = _content_type(model_settings) if model_settings is not None else None
    if content_type:
        codec = find_request_codec(content_type)
        if codec is not None and not codec.can_encode(payload):
            codec = None
    if codec is None:
        codec = find_request_codec_by_payload(payload)
    if codec is None:
        return None
    parameters = getattr(model_settings, "parameters", None)
    version = getattr(parameters, "version", None) if parameters is not None else None
    return codec.encode_response(model_settings.name, payload, version)


class SingleInputRequestCodec(RequestCodec):
    """A request codec that is one input codec applied to a request's only input (or output)."""

    InputCodec: Optional[Type[InputCodec]] = None

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return cls.InputCodec is not None and cls.InputCodec.can_encode(payload)

    @classmethod
    def _input_codec(cls) -> Type[InputCodec]:
        if cls.InputCodec is None:
            raise NotImplementedError(f"request codec {cls.__name__} names no InputCodec")
        return cls.InputCodec

    @classmethod
    def encode_response(cls, model_name: str, payload: Any, model_version: Optional[str] = None,
                        **kwargs) -> InferenceResponse:
        output = cls._input_codec().encode_output(f"{DefaultOutputPrefix}1", payload, **kwargs)
        if isinstance(model_name, str) and isinstance(model_version, (str, type(None))) and \
                isinstance(output, ResponseOutput):  # what validation would pass as it is: built directly
            return construct(InferenceResponse, model_name=model_name, model_version=model_version,
                             parameters=construct(Parameters, content_type=cls.ContentType), outputs=[output])
        return InferenceResponse(model_name=model_name, model_version=model_version,
                                 parameters=Parameters(content_type=cls.ContentType), outputs=[output])

    @classmethod
    def _decode_single(cls, tensors, kind: str, decode) -> Any:
        """The one tensor these codecs carry, decoded once and cached on it."""
        if len(tensors) != 1:
            raise CodecError(f"The '{cls.ContentType}' codec only supports a single {kind} tensor "
                             f"({len(tensors)} were received)")
        first = tensors[0]
        if not has_decoded(first):
            _save_decoded(first, decode(first))
        return get_decoded(first)

    @classmethod
    def decode_response(cls, response: InferenceResponse) -> Any:
        if isinstance(response, InferResponse):
            response = from_native_response(response)
        elif isinstance(response, dict):
            response = InferenceResponse.model_validate(response)
        return cls._decode_single(response.outputs, "output", cls._input_codec().decode_output)

    @classmethod
    def encode_request(cls, payload: Any, **kwargs) -> InferenceRequest:
        request_input = cls._input_codec().encode_input(f"{DefaultInputPrefix}1", payload, **kwargs)
        return InferenceRequest(inputs=[request_input], parameters=Parameters(content_type=cls.ContentType))

    @classmethod
    def decode_request(cls, request: InferenceRequest) -> Any:
        if isinstance(request, InferRequest):
            request = from_native_request(request)
        elif isinstance(request, dict):
            request = InferenceRequest.model_validate(request)
        return cls._decode_single(request.inputs, "input", cls._input_codec().decode_input)


__all__ = [
    "DefaultOutputPrefix", "DefaultInputPrefix", "DecodedParameterName", "InputOrOutput", "Codec",
    "is_list_of", "inject_batch_dimension", "has_decoded", "get_decoded", "get_decoded_or_raw",
    "decode_request_input", "decode_inference_request", "encode_response_output", "encode_inference_response",
    "SingleInputRequestCodec",
]
