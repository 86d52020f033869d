"""Codecs one by one, the registry, the dispatch helpers and NaN through JSON."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pytest

from gpuserve.codecs import (
    Base64Codec,
    DatetimeCodec,
    InputCodec,
    NumpyCodec,
    NumpyRequestCodec,
    PandasCodec,
    RequestCodec,
    StringCodec,
    StringRequestCodec,
    decode_input,
    decode_output,
    decode_request,
    decode_response,
    encode_input,
    encode_output,
    encode_request,
    encode_response,
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
from gpuserve.errors import InvalidInput
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse


def json_request(body: dict) -> InferRequest:
    """Through real JSON bytes, as the REST transport sees them."""
    return InferRequest.from_rest("m", orjson.loads(orjson.dumps(body)))


def json_response(response: InferResponse) -> InferResponse:
    raw = orjson.dumps(response.wire_dict(), option=orjson.OPT_SERIALIZE_NUMPY)
    return InferResponse.from_rest(orjson.loads(raw))


# --- registry -------------------------------------------------------------------------------------


def test_builtin_content_types_are_registered():
    assert input_codecs() == {"np": NumpyCodec, "str": StringCodec, "base64": Base64Codec,
                              "datetime": DatetimeCodec}
    assert request_codecs() == {"np": NumpyRequestCodec, "str": StringRequestCodec, "pd": PandasCodec}
    assert NumpyRequestCodec.InputCodec is NumpyCodec and StringRequestCodec.InputCodec is StringCodec


def test_listing_is_a_copy():
    listing = input_codecs()
    listing["np"] = None
    assert find_input_codec("np") is NumpyCodec


def test_register_as_decorator_and_as_call_and_unregister():
    try:
        @register_input_codec
        class Upper(InputCodec):
            ContentType = "test-upper"

        assert Upper.__name__ == "Upper"  # the decorator returns the class itself
        assert find_input_codec("test-upper") is Upper

        class Rows(RequestCodec):
            ContentType = "test-rows"

        assert register_request_codec(Rows) is Rows
        assert find_request_codec("test-rows") is Rows
        assert register_request_codec(Rows) is Rows  # the same codec again is a no-op
    finally:
        unregister_input_codec("test-upper")
        unregister_request_codec("test-rows")
    assert find_input_codec("test-upper") is None
    assert find_request_codec("test-rows") is None


def test_registering_a_different_codec_under_a_taken_content_type_raises():
    class OtherNumpy(InputCodec):
        ContentType = "np"

    with pytest.raises(ValueError, match="'np' already has input codec .*NumpyCodec"):
        register_input_codec(OtherNumpy)
    assert find_input_codec("np") is NumpyCodec

    class OtherFrames(RequestCodec):
        ContentType = "pd"

    with pytest.raises(ValueError, match="already has request codec"):
        register_request_codec(OtherFrames)
    assert find_request_codec("pd") is PandasCodec


def test_register_rejects_non_codecs_and_missing_content_type():
    class NoType(InputCodec):
        pass

    with pytest.raises(ValueError, match="no ContentType"):
        register_input_codec(NoType)
    with pytest.raises(TypeError):
        register_input_codec(object)
    with pytest.raises(TypeError):
        register_request_codec(NumpyCodec)  # an input codec is not a request codec


def test_codec_instances_register_too():
    class Echo(InputCodec):
        ContentType = "test-echo"

        def __init__(self, tag):
            self.tag = tag

    codec = Echo("x")
    try:
        assert register_input_codec(codec) is codec
        assert find_input_codec("test-echo") is codec
    finally:
        unregister_input_codec("test-echo")


def test_find_by_payload():
    assert find_input_codec_by_payload(np.zeros(3)) is NumpyCodec
    assert find_input_codec_by_payload(["a", "b"]) is StringCodec
    assert find_input_codec_by_payload([]) is StringCodec
    assert find_input_codec_by_payload([b"a"]) is Base64Codec
    assert find_input_codec_by_payload([datetime(2024, 1, 1)]) is DatetimeCodec
    assert find_input_codec_by_payload([1, 2]) is None
    assert find_input_codec_by_payload(["a", b"b"]) is None
    assert find_input_codec_by_payload(np.zeros(2, dtype=np.complex64)) is None
    assert find_request_codec_by_payload(np.zeros(3)) is NumpyRequestCodec
    assert find_request_codec_by_payload(["a"]) is StringRequestCodec
    assert find_request_codec_by_payload({"a": 1}) is None
    # content type wins over payload; neither gives None
    assert find_input_codec(content_type="str", payload=np.zeros(1)) is StringCodec
    assert find_input_codec(payload=[b"x"]) is Base64Codec
    assert find_input_codec() is None
    assert find_input_codec("nope") is None
    assert find_request_codec(payload=np.zeros(1)) is NumpyRequestCodec


def test_import_does_not_load_pandas():
    code = "import sys, gpuserve.codecs; assert 'pandas' not in sys.modules, 'pandas was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- np -------------------------------------------------------------------------------------------


def test_numpy_codec_keeps_dtype_shape_and_marks_content_type():
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    tensor = NumpyCodec.encode_input("x", array)
    assert isinstance(tensor, InferInput)
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", "INT16", [2, 3])
    assert tensor.parameters == {"content_type": "np"}
    decoded = NumpyCodec.decode_input(tensor)
    assert decoded.dtype == np.int16 and np.array_equal(decoded, array)

    output = NumpyCodec.encode_output("y", np.array([1.5, 2.5]))
    assert isinstance(output, InferOutput) and output.datatype == "FP64" and output.shape == [2]
    assert NumpyCodec.decode_output(output).tolist() == [1.5, 2.5]


def test_numpy_codec_decodes_bytes_as_mlserver_does():
    tensor = NumpyCodec.encode_input("s", np.array(["héllo", "w"]))
    assert tensor.datatype == "BYTES"
    assert tensor.as_numpy().tolist() == ["héllo".encode(), b"w"]
    # JSON text gives a unicode array, as MLServer's NumpyCodec: a model fit on strings gets strings
    request = json_request({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2, 1],
                                        "data": ["héllo", "w"], "parameters": {"content_type": "np"}}]})
    decoded = decode_input(request.inputs[0])
    assert decoded.dtype == np.dtype("<U5") and decoded.tolist() == [["héllo"], ["w"]]
    # bytes (binary data, gRPC contents) give a fixed-width bytes array, as MLServer; lengths may differ here
    decoded = NumpyCodec.decode_input(tensor)
    assert decoded.dtype == np.dtype("S6") and decoded.tolist() == ["héllo".encode(), b"w"]
    empty = NumpyCodec.decode_input(InferInput("e", [0, 2], "BYTES", np.empty((0, 2), dtype=object)))
    assert empty.shape == (0, 2) and empty.dtype.kind == "U"


def test_numpy_codec_datatype_override():
    values = np.array([1.0, 2.5, -3.0], dtype=np.float32)
    bf16 = NumpyCodec.encode_input("b", values, datatype="BF16")
    assert bf16.datatype == "BF16" and bf16.as_numpy().dtype == np.float32
    assert NumpyCodec.encode_input("f", values.astype(np.float64), datatype="FP32").as_numpy().dtype == np.float32
    with pytest.raises(InvalidInput, match="cannot be sent as INT32"):
        NumpyCodec.encode_input("f", values, datatype="INT32")
    with pytest.raises(InvalidInput, match="cannot be sent as BYTES"):
        NumpyCodec.encode_input("f", values, datatype="BYTES")
    with pytest.raises(InvalidInput, match="unknown datatype"):
        NumpyCodec.encode_input("f", values, datatype="FP8")


@pytest.mark.parametrize("payload", [[1, 2], "abc", None, np.float32(1.0)])
def test_numpy_codec_rejects_non_arrays(payload):
    with pytest.raises(InvalidInput, match="numpy.ndarray"):
        NumpyCodec.encode_output("x", payload)


def test_numpy_codec_rejects_unsupported_dtypes_and_elements():
    with pytest.raises(InvalidInput, match="complex"):
        NumpyCodec.encode_input("x", np.zeros(2, dtype=np.complex128))
    with pytest.raises(InvalidInput, match="element 1: BYTES elements must be bytes or str, got int"):
        NumpyCodec.encode_input("x", np.array([b"a", 3], dtype=object))


def test_numpy_request_codec_single_input():
    array = np.array([[1, 2], [3, 4]], dtype=np.int32)
    request = NumpyRequestCodec.encode_request(array, model_name="m", request_id="r1")
    assert request.parameters == {"content_type": "np"} and request.id == "r1" and request.model_name == "m"
    assert [t.name for t in request.inputs] == ["input-0"]
    assert np.array_equal(NumpyRequestCodec.decode_request(request), array)
    response = NumpyRequestCodec.encode_response("m", array, model_version="2")
    assert response.model_version == "2" and [t.name for t in response.outputs] == ["output-0"]
    assert np.array_equal(NumpyRequestCodec.decode_response(json_response(response)), array)


def test_single_input_request_codecs_refuse_several_inputs():
    request = InferRequest.from_numpy("m", {"a": np.zeros(1), "b": np.zeros(1)})
    with pytest.raises(InvalidInput, match="exactly one input, got 2 \\('a', 'b'\\)"):
        NumpyRequestCodec.decode_request(request)
    with pytest.raises(InvalidInput, match="exactly one output"):
        StringRequestCodec.decode_response(InferResponse("r", "m", []))


# --- str ------------------------------------------------------------------------------------------


def test_string_codec_is_a_bytes_column_of_rows():
    tensor = StringCodec.encode_input("t", ["hello", "wörld"])
    assert (tensor.datatype, tensor.shape, tensor.parameters) == ("BYTES", [2, 1], {"content_type": "str"})
    assert tensor.as_numpy().tolist() == [[b"hello"], ["wörld".encode()]]
    assert StringCodec.decode_input(tensor) == ["hello", "wörld"]
    kept = StringCodec.encode_output("t", ["a"], use_bytes=False)
    assert kept.as_numpy().tolist() == [["a"]] and StringCodec.decode_output(kept) == ["a"]
    empty = StringCodec.encode_input("e", [])
    assert empty.shape == [0, 1] and StringCodec.decode_input(empty) == []


def test_string_codec_decodes_mlserver_style_json():
    request = json_request({"parameters": {"content_type": "str"}, "inputs": [
        {"name": "docs", "datatype": "BYTES", "shape": [2], "data": ["bar", "bar2"]}]})
    assert decode_request(request) == ["bar", "bar2"]
    single = json_request({"inputs": [{"name": "one", "datatype": "BYTES", "shape": [1], "data": "hello world ",
                                       "parameters": {"content_type": "str"}}]})
    assert decode_input(single.inputs[0]) == ["hello world "]


def test_string_codec_errors():
    with pytest.raises(InvalidInput, match="list of str, got str"):
        StringCodec.encode_input("t", "not a list")
    with pytest.raises(InvalidInput, match="element 1: content type 'str' encodes str, got int"):
        StringCodec.encode_input("t", ["a", 1])
    with pytest.raises(InvalidInput, match="not valid UTF-8"):
        StringCodec.encode_input("t", [b"\xff"])
    with pytest.raises(InvalidInput, match="needs a BYTES tensor, but 't' is FP32"):
        StringCodec.decode_input(InferInput.from_numpy("t", np.zeros(2, dtype=np.float32)))
    bad = InferInput("t", [1], "BYTES", np.array([b"\xff\xfe"], dtype=object))
    with pytest.raises(InvalidInput, match="element 0 is not UTF-8 text"):
        StringCodec.decode_input(bad)
    numbers = json_request({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [2], "data": [1, 2]}]})
    with pytest.raises(InvalidInput, match="element 0: content type 'str' needs UTF-8 text, got int"):
        StringCodec.decode_input(numbers.inputs[0])


def test_string_request_codec():
    request = StringRequestCodec.encode_request(["a", "b"], use_bytes=False)
    assert request.parameters == {"content_type": "str"}
    assert request.inputs[0].parameters == {"content_type": "str"}
    assert StringRequestCodec.decode_request(json_request(request.to_rest()[0])) == ["a", "b"]
    response = StringRequestCodec.encode_response("m", ["x"])
    assert StringRequestCodec.decode_response(json_response(response)) == ["x"]


# --- base64 ---------------------------------------------------------------------------------------


def test_base64_codec_both_ways():
    blobs = [b"Python is fun", b"\x00\xff\x10"]
    tensor = Base64Codec.encode_input("img", blobs)
    assert (tensor.datatype, tensor.shape, tensor.parameters) == ("BYTES", [2, 1], {"content_type": "base64"})
    assert tensor.as_numpy().ravel().tolist() == [base64.b64encode(b) for b in blobs]
    assert Base64Codec.decode_input(tensor) == blobs
    as_text = Base64Codec.encode_output("img", [bytearray(b"ab")], use_bytes=False)
    assert as_text.as_numpy().ravel().tolist() == ["YWI="]
    assert Base64Codec.decode_output(json_response(InferResponse("r", "m", [as_text])).outputs[0]) == [b"ab"]


def test_base64_codec_errors():
    with pytest.raises(InvalidInput, match="element 0: content type 'base64' encodes bytes, got str"):
        Base64Codec.encode_input("b", ["text"])
    with pytest.raises(InvalidInput, match="list of bytes, got bytes"):
        Base64Codec.encode_input("b", b"abc")
    with pytest.raises(InvalidInput, match="element 0: content type 'base64' needs"):
        Base64Codec.decode_input(InferInput("b", [1], "BYTES", np.array([3], dtype=object)))


def test_base64_decoding_passes_invalid_base64_through_as_raw_bytes():
    # MLServer (1.5 and 1.7.1): what is not valid base64 is taken as the raw bytes themselves.
    request = json_request({"inputs": [{"name": "b", "datatype": "BYTES", "shape": [3], "data": ["YWI=", "not base64!", "a"],
                                        "parameters": {"content_type": "base64"}}]})
    assert decode_input(request.inputs[0]) == [b"ab", b"not base64!", b"a"]
    raw = InferInput("b", [2], "BYTES", np.array([b"\x89PNG\r\n", "ü"], dtype=object))
    assert Base64Codec.decode_input(raw) == [b"\x89PNG\r\n", "ü".encode()]
    from gpuserve.mlserver.codecs import Base64Codec as MLBase64Codec
    from gpuserve.mlserver.types import RequestInput

    assert MLBase64Codec.decode_input(RequestInput(name="s", datatype="BYTES", shape=[2], data=["a", "b"])) == [b"a", b"b"]


# --- datetime -------------------------------------------------------------------------------------


def test_datetime_codec_both_ways():
    naive = datetime(2022, 1, 11, 11, 0, 0)
    aware = datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    tensor = DatetimeCodec.encode_input("when", [naive, aware, "2023-06-01T12:00:00Z"])
    assert (tensor.datatype, tensor.shape, tensor.parameters) == ("BYTES", [3, 1], {"content_type": "datetime"})
    assert tensor.as_numpy().ravel().tolist() == [b"2022-01-11T11:00:00", b"2024-02-29T23:59:59.123456-05:30",
                                                   b"2023-06-01T12:00:00Z"]
    decoded = DatetimeCodec.decode_input(tensor)
    assert decoded[:2] == [naive, aware] and decoded[1].utcoffset() == aware.utcoffset()
    assert decoded[2] == datetime(2023, 6, 1, 12, tzinfo=timezone.utc)
    output = DatetimeCodec.encode_output("when", [naive], use_bytes=False)
    assert DatetimeCodec.decode_output(json_response(InferResponse("r", "m", [output])).outputs[0]) == [naive]


def test_datetime_codec_errors():
    with pytest.raises(InvalidInput, match="element 0 is not an ISO-8601 datetime: '31/12/2024'"):
        DatetimeCodec.encode_input("d", ["31/12/2024"])
    with pytest.raises(InvalidInput, match="got int"):
        DatetimeCodec.encode_input("d", [1700000000])
    request = json_request({"inputs": [{"name": "d", "datatype": "BYTES", "shape": [1], "data": ["2024-13-01"],
                                        "parameters": {"content_type": "datetime"}}]})
    with pytest.raises(InvalidInput, match="'d' element 0 is not an ISO-8601 datetime"):
        decode_input(request.inputs[0])


# --- dispatch helpers -----------------------------------------------------------------------------


def test_decode_input_precedence():
    tensor = InferInput("t", [1], "BYTES", np.array([b"aGk="], dtype=object), {"content_type": "base64"})
    assert decode_input(tensor, default_content_type="str") == [b"hi"]  # the wire wins
    plain = InferInput("t", [1], "BYTES", np.array([b"aGk="], dtype=object))
    assert decode_input(plain, default_content_type="str") == ["aGk="]  # then the model's metadata
    raw = decode_input(plain)  # then the tensor's array, untouched
    assert isinstance(raw, np.ndarray) and raw.tolist() == [b"aGk="]
    assert decode_output(InferOutput("o", [1], "BYTES", np.array([b"x"], dtype=object)), "str") == ["x"]


def test_decode_input_unknown_or_malformed_content_type():
    tensor = InferInput("t", [1], "FP32", np.zeros(1, dtype=np.float32), {"content_type": "jpeg"})
    with pytest.raises(InvalidInput, match="input 't': unknown content type 'jpeg'; tensors know np, str"):
        decode_input(tensor)
    with pytest.raises(InvalidInput, match="unknown content type 'pd'"):
        decode_input(InferInput("t", [1], "FP32", np.zeros(1, dtype=np.float32)), default_content_type="pd")
    with pytest.raises(InvalidInput, match="'content_type' must be a string, got 3"):
        decode_input(InferInput("t", [1], "FP32", np.zeros(1, dtype=np.float32), {"content_type": 3}))


def test_decode_request_precedence_and_dict_fallback():
    body = {"inputs": [
        {"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4], "parameters": {"content_type": "np"}},
        {"name": "s", "datatype": "BYTES", "shape": [1], "data": ["hi"], "parameters": {"content_type": "str"}},
        {"name": "raw", "datatype": "FP32", "shape": [1], "data": [0.5]},
    ]}
    decoded = decode_request(json_request(body))
    assert list(decoded) == ["x", "s", "raw"]
    assert decoded["x"].tolist() == [[1, 2], [3, 4]] and decoded["x"].dtype == np.int32
    assert decoded["s"] == ["hi"] and decoded["raw"].tolist() == [0.5]
    single = json_request({"inputs": [body["inputs"][0]]})
    assert np.array_equal(decode_request(single, default_content_type="np"), [[1, 2], [3, 4]])
    with pytest.raises(InvalidInput, match="request: unknown content type 'nope'; requests know np, str, pd"):
        decode_request(json_request({"parameters": {"content_type": "nope"}, "inputs": body["inputs"]}))
    with pytest.raises(InvalidInput, match="unknown content type 'base64'"):
        decode_request(single, default_content_type="base64")  # an input-only content type


def test_encode_output_by_payload_and_content_type():
    assert encode_output("o", np.ones(2)).parameters == {"content_type": "np"}
    assert encode_output("o", ["a"]).parameters == {"content_type": "str"}
    assert encode_output("o", [b"a"]).parameters == {"content_type": "base64"}
    assert encode_output("o", [datetime(2020, 1, 1)]).parameters == {"content_type": "datetime"}
    assert encode_output("o", [b"a"], content_type="str").as_numpy().tolist() == [[b"a"]]
    ready = InferOutput.from_numpy("o", np.zeros(1))
    assert encode_output("o", ready) is ready
    assert encode_input("i", np.zeros(1)).datatype == "FP64"
    with pytest.raises(InvalidInput, match="output 'o': no content type encodes a set"):
        encode_output("o", {1, 2})
    with pytest.raises(InvalidInput, match="output 'o': unknown content type 'pd'"):
        encode_output("o", np.zeros(1), content_type="pd")
    with pytest.raises(InvalidInput, match="numpy.ndarray, got list"):
        encode_output("o", [1.0, 2.0], content_type="np")


def test_encode_response_by_payload_content_type_and_dict():
    response = encode_response("m", np.arange(3), model_version="1")
    assert response.parameters == {"content_type": "np"} and response.model_version == "1"
    assert [o.name for o in response.outputs] == ["output-0"]
    strings = encode_response("m", ["a", "b"])
    assert decode_response(json_response(strings)) == ["a", "b"]
    mixed = encode_response("m", {"scores": np.array([0.5], dtype=np.float32), "labels": ["cat"]})
    assert mixed.parameters == {}
    assert [(o.name, o.datatype) for o in mixed.outputs] == [("scores", "FP32"), ("labels", "BYTES")]
    back = decode_response(json_response(mixed))
    assert back["scores"].tolist() == [0.5] and back["labels"] == ["cat"]
    ready = InferResponse("r", "m", [])
    assert encode_response("m", ready) is ready
    with pytest.raises(InvalidInput, match="model 'm': unknown content type 'jpeg'"):
        encode_response("m", np.zeros(1), content_type="jpeg")
    with pytest.raises(InvalidInput, match="content type 'pd' encodes a pandas.DataFrame, got ndarray"):
        encode_response("m", np.zeros(1), content_type="pd")
    with pytest.raises(InvalidInput, match="no content type encodes a int as a response"):
        encode_response("m", 3)


def test_encode_request_client_side():
    request = encode_request({"a": np.zeros(2, dtype=np.float32), "b": ["x"]}, model_name="m")
    assert request.model_name == "m" and [i.name for i in request.inputs] == ["a", "b"]
    assert decode_request(json_request(request.to_rest()[0]))["b"] == ["x"]
    assert encode_request(["x"]).parameters == {"content_type": "str"}
    with pytest.raises(InvalidInput, match="no content type encodes a float as a request"):
        encode_request(1.5)


# --- NaN as JSON null -----------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "BF16"])
def test_json_null_decodes_as_nan(datatype):
    request = InferRequest.from_rest("m", {"inputs": [
        {"name": "x", "datatype": datatype, "shape": [2, 2], "data": [1.5, None, None, 4.5],
         "parameters": {"content_type": "np"}}]})
    decoded = decode_input(request.inputs[0])
    assert decoded.shape == (2, 2)
    assert np.isnan(decoded).tolist() == [[False, True], [True, False]]
    assert decoded[0, 0] == 1.5 and decoded[1, 1] == 4.5


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nan_is_written_as_null_and_read_back(dtype):
    values = np.array([[1.25, np.nan], [np.nan, -2.0]], dtype=dtype)
    response = encode_response("m", values)
    raw = orjson.dumps(response.wire_dict(), option=orjson.OPT_SERIALIZE_NUMPY)
    assert b"[1.25,null,null,-2.0]" in raw
    back = NumpyRequestCodec.decode_response(InferResponse.from_rest(orjson.loads(raw)))
    assert back.dtype == dtype and np.array_equal(back, values, equal_nan=True)
    # the list form (KServe's `data` after set_data_from_numpy(binary_data=False)) gives the same JSON
    listed = InferOutput("y", list(values.shape), response.outputs[0].datatype)
    listed.set_data_from_numpy(values, binary_data=False)
    assert orjson.dumps(listed.data) == orjson.dumps(response.wire_dict()["outputs"][0]["data"],
                                                     option=orjson.OPT_SERIALIZE_NUMPY)
