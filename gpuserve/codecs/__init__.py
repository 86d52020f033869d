"""Content types and codecs: how V2 tensors become the Python objects models take, and back.

MLServer users keep their `content_type` parameters and codec names (`np`, `str`, `base64`,
`datetime`, `pd`). Importing this package registers the built-in codecs in the order lookup by
payload asks them; pandas is imported only when a DataFrame is first encoded or decoded.
"""

from gpuserve.codecs.base import (
    CONTENT_TYPE,
    InputCodec,
    RequestCodec,
    SingleInputRequestCodec,
    find_input_codec,
    find_input_codec_by_payload,
    find_request_codec,
    find_request_codec_by_payload,
    input_codecs,
    register_input_codec,
    register_request_codec,
    request_codecs,
    unregister_input_codec,
    unregister_request_codec,
)
from gpuserve.codecs.numpy_codec import NumpyCodec, NumpyRequestCodec
from gpuserve.codecs.string_codec import StringCodec, StringRequestCodec
from gpuserve.codecs.base64_codec import Base64Codec
from gpuserve.codecs.datetime_codec import DatetimeCodec
from gpuserve.codecs.pandas_codec import PandasCodec
from gpuserve.codecs.dispatch import (
    content_type_of,
    decode_input,
    decode_output,
    decode_request,
    decode_response,
    encode_input,
    encode_output,
    encode_request,
    encode_response,
)

__all__ = [
    "CONTENT_TYPE", "InputCodec", "RequestCodec", "SingleInputRequestCodec",
    "register_input_codec", "register_request_codec", "unregister_input_codec", "unregister_request_codec",
    "input_codecs", "request_codecs",
    "find_input_codec", "find_input_codec_by_payload", "find_request_codec", "find_request_codec_by_payload",
    "NumpyCodec", "NumpyRequestCodec", "StringCodec", "StringRequestCodec", "Base64Codec", "DatetimeCodec",
    "PandasCodec",
    "content_type_of", "decode_input", "decode_output", "decode_request", "decode_response",
    "encode_input", "encode_output", "encode_request", "encode_response",
]
