"""`mlserver.codecs` over gpuserve: content types for runtimes written against MLServer's types.

`from gpuserve.mlserver.codecs import NumpyCodec, StringCodec, PandasCodec, decode_args, ...` gives
codecs that take and return MLServer's pydantic tensors and requests; underneath, gpuserve's own
codecs (`gpuserve.codecs`) do the decoding, so both APIs read a tensor the same way. MLServer's
submodule paths (`codecs.string`, `codecs.numpy`, `codecs.utils`, ...) import as they do there.
"""

from gpuserve.mlserver.codecs.base import (
    InputCodec,
    InputCodecLike,
    RequestCodec,
    RequestCodecLike,
    find_input_codec,
    find_input_codec_by_payload,
    find_input_codec_by_type_hint,
    find_request_codec,
    find_request_codec_by_payload,
    find_request_codec_by_type_hint,
    input_codecs,
    register_input_codec,
    register_request_codec,
    request_codecs,
    unregister_input_codec,
    unregister_request_codec,
)
from gpuserve.mlserver.codecs.content_types import (
    Codec,
    DecodedParameterName,
    InputOrOutput,
    SingleInputRequestCodec,
    decode_inference_request,
    decode_request_input,
    encode_inference_response,
    encode_response_output,
    get_decoded,
    get_decoded_or_raw,
    has_decoded,
)
from gpuserve.mlserver.codecs.numpy import NumpyCodec, NumpyRequestCodec
from gpuserve.mlserver.codecs.string import StringCodec, StringRequestCodec
from gpuserve.mlserver.codecs.base64 import Base64Codec
from gpuserve.mlserver.codecs.datetime import DatetimeCodec
from gpuserve.mlserver.codecs.pandas import PandasCodec
from gpuserve.mlserver.codecs.decorator import decode_args
from gpuserve.mlserver.codecs.errors import CodecError, CodecNotFound, InputsNotFound, OutputNotFound

__all__ = [
    "InputCodec", "RequestCodec", "InputCodecLike", "RequestCodecLike", "Codec", "SingleInputRequestCodec",
    "NumpyCodec", "NumpyRequestCodec", "StringCodec", "StringRequestCodec", "Base64Codec", "DatetimeCodec",
    "PandasCodec", "decode_args",
    "register_input_codec", "register_request_codec", "unregister_input_codec", "unregister_request_codec",
    "find_input_codec", "find_input_codec_by_payload", "find_input_codec_by_type_hint", "find_request_codec",
    "find_request_codec_by_payload", "find_request_codec_by_type_hint", "input_codecs", "request_codecs",
    "DecodedParameterName", "InputOrOutput", "has_decoded", "get_decoded", "get_decoded_or_raw",
    "decode_request_input", "decode_inference_request", "encode_response_output", "encode_inference_response",
    "CodecError", "CodecNotFound", "InputsNotFound", "OutputNotFound",
]
