"""V2 tensors through JSON: every datatype round-trips, flat and nested data, and bad tensors are 400s."""

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpuserve import InferInput, InferOutput, InferRequest, InferResponse
from gpuserve.datatypes import (DATATYPES, bf16_from_bytes, bf16_to_bytes, deserialize_bytes_tensor, numpy_to_raw,
                                raw_to_numpy, serialize_bytes_tensor, to_numpy_dtype)
from gpuserve.errors import InferenceError, InvalidInput
from gpuserve.server.rest.common import loads

NUMERIC = [d for d in DATATYPES if d not in ("BYTES", "BF16")]


def through_json(array, datatype):
    """Encode as a server response would, decode as a server request would."""
    response = InferResponse("1", "m", [InferOutput("t", list(array.shape), datatype, array)])
    body = loads(orjson.dumps(response.wire_dict(), option=orjson.OPT_SERIALIZE_NUMPY))  # as the server reads
    out = body["outputs"][0]
    request = InferRequest.from_rest("m", {"inputs": [{**out, "name": "t"}]})
    return request.inputs[0].as_numpy()


def elements(datatype):
    dtype = to_numpy_dtype(datatype)
    if dtype.kind == "f":
        return st.floats(width=dtype.itemsize * 8, allow_nan=True, allow_infinity=False)
    return None


@pytest.mark.parametrize("datatype", NUMERIC)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_numeric_datatype_round_trips_through_json(datatype, data):
    dtype = to_numpy_dtype(datatype)
    array = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
                                 elements=elements(datatype)))
    back = through_json(array, datatype)
    assert back.dtype == dtype and back.shape == array.shape
    assert np.array_equal(back, array, equal_nan=dtype.kind == "f")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=1, max_size=6))
def test_bytes_round_trip_through_json_and_raw(texts):
    array = np.array(texts, dtype=object)
    assert list(through_json(array, "BYTES")) == texts
    raw = serialize_bytes_tensor(array)
    assert [b.decode() for b in deserialize_bytes_tensor(raw)] == texts


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.uint16, hnp.array_shapes(max_dims=2, max_side=5)))
def test_bf16_raw_round_trip_is_exact(bits):
    bits = bits.copy()
    bits[(bits & 0x7F80) == 0x7F80] = 0  # NaN/inf payloads aside
    values = bf16_from_bytes(bits.tobytes()).reshape(bits.shape)
    assert np.array_equal(np.frombuffer(bf16_to_bytes(values), np.uint16).reshape(bits.shape), bits)
    assert np.array_equal(raw_to_numpy(numpy_to_raw(values, "BF16"), "BF16", bits.shape), values)


def test_bf16_rounds_to_nearest_even():
    values = np.array([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, np.nan], dtype=np.float32)
    back = bf16_from_bytes(bf16_to_bytes(values))
    assert back[0] == 1.0 and back[1] == 1.0 + 2 ** -6 and np.isnan(back[2])


def test_nested_and_flat_data_give_the_same_array():
    flat = InferInput("x", [2, 3], "INT32", [1, 2, 3, 4, 5, 6]).as_numpy()
    nested = InferInput("x", [2, 3], "INT32", [[1, 2, 3], [4, 5, 6]]).as_numpy()
    assert flat.dtype == np.int32 and np.array_equal(flat, nested)


def test_json_null_is_nan_for_floats():
    """null reads as NaN and NaN is written as null (MLServer, KServe); for Triton's models NaN and the
    infinities are written as Triton writes them (qa/L0_nan_inf)."""
    array = InferInput("x", [3], "FP32", [1.0, None, 3.0]).as_numpy()
    assert array.dtype == np.float32 and np.isnan(array[1]) and array[2] == 3.0
    body = orjson.dumps(InferOutput.from_numpy("y", array).wire_dict(), option=orjson.OPT_SERIALIZE_NUMPY)
    assert orjson.loads(body)["data"] == [1.0, None, 3.0]
    body = orjson.dumps(InferOutput.from_numpy("y", array).wire_dict(nan_literals=True),
                        option=orjson.OPT_SERIALIZE_NUMPY)
    assert b'"data":[1.0,NaN,3.0]' in body
    body = orjson.dumps(InferOutput.from_numpy("y", np.array([np.inf, -np.inf])).wire_dict(nan_literals=True),
                        option=orjson.OPT_SERIALIZE_NUMPY)
    assert b'"data":[Infinity,-Infinity]' in body


def test_fp16_is_cast_after_parsing():
    array = InferInput("x", [2], "FP16", [0.5, 65504]).as_numpy()
    assert array.dtype == np.float16 and array[1] == np.float16(65504)


@pytest.mark.parametrize("tensor, message", [
    ({"name": "x", "shape": [2], "datatype": "FP99", "data": [1, 2]}, "unknown datatype"),
    ({"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}, "needs 3 elements"),
    ({"name": "x", "shape": [2], "datatype": "INT32", "data": ["a", "b"]}, "does not fit"),
    ({"name": "x", "shape": "2", "datatype": "INT32", "data": [1, 2]}, "shape"),
    ({"name": "x", "shape": [-1], "datatype": "INT32", "data": [1]}, "non-negative"),
    ({"shape": [1], "datatype": "INT32", "data": [1]}, "'name' is required"),
    ({"name": "x", "shape": [1], "datatype": "INT32"}, "'data' is required"),
])
def test_bad_tensors_are_invalid_input(tensor, message):
    with pytest.raises(InvalidInput, match=message):
        InferRequest.from_rest("m", {"inputs": [tensor]}).inputs[0].as_numpy()


@pytest.mark.parametrize("body", [[], {}, {"inputs": {}}, {"inputs": [1]}, {"inputs": [{}], "outputs": 1}])
def test_malformed_requests_are_invalid_input(body):
    with pytest.raises(InvalidInput):
        InferRequest.from_rest("m", body)


def test_kserve_methods_on_inputs_and_requests():
    tensor = InferInput("x", [2, 2], "FP32")
    tensor.set_data_from_numpy(np.ones((2, 2), np.float32), binary_data=False)
    assert tensor.data == [1.0, 1.0, 1.0, 1.0]
    with pytest.raises(InferenceError):  # KServe's error for a wrong array
        tensor.set_data_from_numpy(np.ones((3,), np.float32))
    text = InferInput("t", [2], "BYTES", ["a", "bc"])
    assert text.as_string() == ["a", "bc"]
    request = InferRequest("m", [tensor, text], request_id="r1", parameters={"p": 1})
    assert request.get_input_by_name("t") is text and request.get_input_by_name("z") is None
    again = InferRequest.from_rest("m", orjson.loads(orjson.dumps(request.to_rest()[0])))
    assert again == request
    frame = request.as_dataframe()  # one row per element, as KServe's
    assert list(frame.columns) == ["x", "t"] and frame["t"].dropna().tolist() == ["a", "bc"] and len(frame) == 4


def test_response_from_rest_and_back():
    body = {"model_name": "m", "id": "9", "outputs": [{"name": "y", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}
    response = InferResponse.from_rest(body)
    assert response.id == "9" and response.get_output_by_name("y").as_numpy().tolist() == [1, 2]
    assert orjson.loads(orjson.dumps(response.wire_dict(), option=orjson.OPT_SERIALIZE_NUMPY)) == body
    assert response.to_rest() == ({**body, "model_version": None}, None)
