"""MLServer's types and codecs over gpuserve's: property tests of every conversion at the edge.

native -> MLServer -> native must give back the same tensors (datatype, shape, values, parameters),
directly and through MLServer's JSON form (`.json()` / `parse_raw`), and MLServer's codecs must
round-trip what they encode.
"""

from __future__ import annotations

import base64
import datetime as dt
import string

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from gpuserve.mlserver import codecs
from gpuserve.mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestInput,
    ResponseOutput,
    TensorData,
    from_native_request,
    from_native_response,
    to_native_request,
    to_native_response,
)
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

NUMERIC = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
           "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
           "FP32": np.float32, "FP64": np.float64}
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
NAMES = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(st.booleans(), st.integers(-2**31, 2**31), st.text(string.ascii_letters, max_size=8))


def parameter_dicts(names):
    """Free-form parameters; `content_type`, when present, is a string (as both protocols require)."""
    return st.dictionaries(st.sampled_from(names), SCALARS, max_size=2).flatmap(
        lambda params: st.text(string.ascii_lowercase, min_size=1, max_size=6).map(
            lambda ct: {**params, "content_type": ct}) if "content_type" in params else st.just(params))


@st.composite
def tensors(draw, cls):
    name = draw(NAMES)
    datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
    shape = draw(SHAPES)
    if datatype == "BYTES":
        items = draw(st.lists(TEXT.map(lambda s: s.encode("utf-8")), min_size=int(np.prod(shape)),
                              max_size=int(np.prod(shape))))
        array = np.empty(len(items), dtype=object)
        array[:] = items
        array = array.reshape(shape)
    else:
        dtype = np.dtype(NUMERIC[datatype])
        elements = None
        if dtype.kind == "f":  # JSON carries NaN (as null) but not infinities
            elements = st.floats(allow_infinity=False, allow_nan=True, width=dtype.itemsize * 8)
        array = draw(hnp.arrays(dtype, shape, elements=elements))
    parameters = draw(parameter_dicts(["content_type", "tag", "n"]))
    return cls(name, list(shape), datatype, array, parameters)


def unique_names(items):
    seen, out = set(), []
    for item in items:
        if item.name not in seen:
            seen.add(item.name)
            out.append(item)
    return out


@st.composite
def native_requests(draw):
    inputs = unique_names(draw(st.lists(tensors(InferInput), min_size=1, max_size=3)))
    wanted = draw(st.one_of(st.none(), st.lists(NAMES, min_size=1, max_size=2)))
    request = InferRequest("m", inputs, request_id=draw(st.one_of(st.none(), NAMES)),
                           parameters=draw(parameter_dicts(["content_type", "priority", "x"])),
                           request_outputs=[RequestedOutput(n) for n in wanted] if wanted else None)
    return request


@st.composite
def native_responses(draw):
    outputs = unique_names(draw(st.lists(tensors(InferOutput), min_size=0, max_size=3)))
    return InferResponse(draw(NAMES), "m", outputs, model_version=draw(st.one_of(st.none(), st.just("3"))),
                         parameters=draw(parameter_dicts(["content_type", "y"])))


def normalised(array: np.ndarray) -> np.ndarray:
    """BYTES come back from JSON as str: compare them as bytes."""
    if array.dtype == object:
        out = np.empty(array.size, dtype=object)
        out[:] = [x.encode("utf-8") if isinstance(x, str) else x for x in array.ravel()]
        return out.reshape(array.shape)
    return array


def assert_same_tensors(got, expected):
    assert [t.name for t in got] == [t.name for t in expected]
    for a, b in zip(got, expected):
        assert (a.datatype, list(a.shape), a.parameters) == (b.datatype, list(b.shape), b.parameters)
        x, y = normalised(a.as_numpy()), normalised(b.as_numpy())
        assert x.shape == y.shape
        if y.dtype.kind == "f":
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True)
        else:
            assert np.array_equal(x, y)


def assert_same_request(got: InferRequest, expected: InferRequest):
    assert got.id == expected.id and got.parameters == expected.parameters
    assert [(o.name, o.parameters) for o in got.request_outputs or []] == \
        [(o.name, o.parameters) for o in expected.request_outputs or []]
    assert_same_tensors(got.inputs, expected.inputs)


@settings(max_examples=60, deadline=None)
@given(native_requests())
def test_request_round_trip_native_mlserver_native(request):
    mlserver = from_native_request(request)
    assert isinstance(mlserver, InferenceRequest) and mlserver.parameters.headers is None \
        if mlserver.parameters else True
    assert_same_request(to_native_request(mlserver, "m"), request)


@settings(max_examples=60, deadline=None)
@given(native_requests())
def test_request_round_trip_through_mlserver_json(request):
    text = from_native_request(request).json()
    parsed = InferenceRequest.parse_raw(text)
    assert_same_request(to_native_request(parsed, "m"), request)


@settings(max_examples=60, deadline=None)
@given(native_responses())
def test_response_round_trip_directly_and_through_json(response):
    mlserver = from_native_response(response)
    for candidate in (mlserver, InferenceResponse.model_validate_json(mlserver.model_dump_json())):
        back = to_native_response(candidate)
        assert (back.id, back.model_name, back.model_version, back.parameters) == \
            (response.id, response.model_name, response.model_version, response.parameters)
        assert_same_tensors(back.outputs, response.outputs)


@given(native_requests())
@settings(max_examples=30, deadline=None)
def test_arrays_are_shared_not_copied(request):
    for tensor in request.inputs:
        tensor.as_numpy()
    mlserver = from_native_request(request)
    for native, converted in zip(request.inputs, mlserver.inputs):
        assert isinstance(converted.data.root, np.ndarray)
        assert np.shares_memory(converted.data.root, native.as_numpy()) or native.as_numpy().size == 0
        assert len(converted.data) == native.as_numpy().size  # flat, as MLServer's data is


def test_headers_travel_in_parameters_both_ways():
    request = InferRequest.from_numpy("m", {"x": np.arange(3)})
    mlserver = from_native_request(request, {"x-tag": "1"})
    assert mlserver.parameters.headers == {"x-tag": "1"}
    back = to_native_request(mlserver)
    assert back.headers == {"x-tag": "1"} and "headers" not in back.parameters


def test_tensor_data_forms_mlserver_runtimes_use():
    data = TensorData(np.arange(6).reshape(2, 3))
    assert data.model_dump() == [0, 1, 2, 3, 4, 5] and data.__root__ is data.root
    assert len(TensorData([1, 2])) == 2 and list(TensorData([1, 2])) == [1, 2] and TensorData([1, 2])[1] == 2
    output = ResponseOutput(name="y", shape=[2, 2], datatype="FP32", data=np.ones((2, 2), np.float32))
    assert output.dict() == {"name": "y", "shape": [2, 2], "datatype": "FP32", "parameters": None,  # as pydantic's dict()
                             "data": [1.0, 1.0, 1.0, 1.0]}
    # MLServer lets a runtime describe BYTES by byte length, and answers that shape as declared
    text = ResponseOutput(name="t", shape=[11], datatype="BYTES", data=[b"hello world"],
                          parameters=Parameters(content_type="str"))
    native = to_native_response(InferenceResponse(model_name="m", outputs=[text])).outputs[0]
    assert native.shape == [11] and native.as_numpy().tolist() == [b"hello world"]
    assert native.wire_dict() == {"name": "t", "shape": [11], "datatype": "BYTES", "data": ["hello world"],
                                "parameters": {"content_type": "str"}}
    with pytest.raises(Exception):
        RequestInput(name="x", shape=[1], datatype="FP128", data=[1])


# -- MLServer's codecs over MLServer's types ---------------------------------------------------------

@st.composite
def finite_arrays(draw):
    """JSON has no infinities (they travel as null, as in MLServer); NaN does travel."""
    dtype = np.dtype(draw(st.sampled_from([np.int32, np.int64, np.float32, np.float64, np.bool_, np.uint8])))
    return draw(hnp.arrays(dtype, SHAPES, elements=hnp.from_dtype(dtype, allow_infinity=False)))


@settings(max_examples=40, deadline=None)
@given(finite_arrays())
def test_numpy_codec_round_trip_with_mlservers_shape_rule(array):
    request_input = codecs.NumpyCodec.encode_input("x", array)
    expected_shape = list(array.shape) if array.ndim > 1 else list(array.shape) + [1]
    assert request_input.shape == expected_shape and request_input.parameters.content_type == "np"
    parsed = RequestInput.model_validate_json(request_input.json())
    for candidate in (request_input, parsed):
        decoded = codecs.NumpyCodec.decode_input(candidate)
        assert decoded.dtype == array.dtype and np.array_equal(decoded.reshape(array.shape), array, equal_nan=True)
    output = codecs.NumpyCodec.encode_output("y", array)
    assert np.array_equal(codecs.NumpyCodec.decode_output(output).reshape(array.shape), array, equal_nan=True)


@settings(max_examples=40, deadline=None)
@given(st.lists(TEXT, max_size=5), st.booleans())
def test_string_codec_round_trip(texts, use_bytes):
    request_input = codecs.StringCodec.encode_input("s", texts, use_bytes=use_bytes)
    assert request_input.shape == [len(texts), 1] and request_input.datatype == "BYTES"
    assert codecs.StringCodec.decode_input(request_input) == texts
    assert codecs.StringCodec.decode_input(RequestInput.parse_raw(request_input.json())) == texts
    request = codecs.StringRequestCodec.encode_request(texts)
    assert request.parameters.content_type == "str" and request.inputs[0].name == "input-1"
    assert codecs.StringRequestCodec.decode_request(request) == texts


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=16), min_size=1, max_size=4))
def test_base64_codec_round_trip(blobs):
    request_input = codecs.Base64Codec.encode_input("b", blobs, use_bytes=False)
    assert request_input.data.root[0] == base64.b64encode(blobs[0]).decode()
    assert codecs.Base64Codec.decode_input(RequestInput.parse_raw(request_input.json())) == blobs


@settings(max_examples=40, deadline=None)
@given(st.lists(st.datetimes(timezones=st.one_of(st.none(), st.integers(-23 * 60, 23 * 60).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))))), min_size=1, max_size=4))
def test_datetime_codec_round_trip(values):
    # fixed offsets: a zone's wall time in a DST gap never compares equal across zones (PEP 495)
    output = codecs.DatetimeCodec.encode_output("d", values)
    assert codecs.DatetimeCodec.decode_output(ResponseOutput.parse_raw(output.json())) == values


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False),
                          st.text(string.ascii_letters, max_size=6)), min_size=1, max_size=5))
def test_pandas_codec_round_trip(rows):
    frame = pd.DataFrame(rows, columns=["i", "f", "s"])
    request = codecs.PandasCodec.encode_request(frame)
    assert request.parameters.content_type == "pd" and [i.name for i in request.inputs] == ["i", "f", "s"]
    for candidate in (request, InferenceRequest.parse_raw(request.json())):
        pd.testing.assert_frame_equal(codecs.PandasCodec.decode_request(candidate), frame, check_dtype=False)
    response = codecs.PandasCodec.encode_response("m", frame, "1")
    assert response.model_version == "1"
    pd.testing.assert_frame_equal(codecs.PandasCodec.decode_response(response), frame, check_dtype=False)
    assert [o.name for o in codecs.PandasCodec.encode_outputs(frame)] == ["i", "f", "s"]


def test_codecs_accept_json_dicts_and_native_tensors():
    assert codecs.NumpyCodec.decode_input(
        {"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2]}).tolist() == [1, 2]
    assert codecs.StringCodec.decode_input(InferInput("s", [1], "BYTES", [b"a"])) == ["a"]
    assert codecs.NumpyRequestCodec.decode_request(InferRequest.from_numpy("m", {"x": np.ones(2)})).tolist() == [1, 1]


@pytest.mark.parametrize("cls, values", [
    ("Parameters", {}), ("Parameters", {"content_type": "np"}),
    ("Parameters", {"content_type": "np", "headers": {"a": "1"}, "custom": [1, 2], "n": None}),
    ("RequestOutput", {"name": "o"}), ("RequestOutput", {"name": "o", "parameters": None}),
    ("RequestInput", {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0], "ignored": 1}),
    ("ResponseOutput", {"name": "y", "shape": [1], "datatype": "BYTES", "data": ["a"]}),
    ("InferenceRequest", {"inputs": [], "id": "r"}), ("InferenceRequest", {"inputs": [], "outputs": []}),
    ("InferenceResponse", {"model_name": "m", "model_version": None, "outputs": []}),
    ("MetadataTensor", {"name": "t", "datatype": "FP32", "shape": [-1]}),
])
def test_construct_builds_what_model_construct_builds(cls, values):
    """gpuserve.mlserver.types.construct skips pydantic's walk of each field; the model it makes must be
    model_construct's to the last attribute (field order, fields set, extras) and dump the same."""
    from gpuserve.mlserver import types

    cls = getattr(types, cls)
    if "data" in values:
        values = {**values, "data": types.TensorData.model_construct(values["data"])}
    fast, slow = types.construct(cls, **values), cls.model_construct(**values)
    assert list(fast.__dict__.items()) == list(slow.__dict__.items())
    assert fast.model_fields_set == slow.model_fields_set and fast.model_extra == slow.model_extra
    assert fast.__pydantic_private__ == slow.__pydantic_private__
    assert fast.model_dump() == slow.model_dump() and fast.model_dump_json() == slow.model_dump_json()
    data = types.tensor_data([1, 2])
    assert data.__dict__ == types.TensorData.model_construct([1, 2]).__dict__ and data.model_fields_set == {"root"}
    assert data.model_dump() == [1, 2]


def test_codec_lookups_see_registrations_made_after_them():
    """MLServer's codec lookups are kept between registry changes (gpuserve/mlserver/codecs/base.py
    _merged): a codec registered on either side, or removed, is seen by the next lookup."""
    from gpuserve import codecs as native
    from gpuserve.mlserver.codecs import base

    class Late(base.RequestCodec):
        ContentType = "late-test"

    class NativeLate(native.RequestCodec):
        ContentType = "native-late-test"

    assert base.find_request_codec("late-test") is None
    base.register_request_codec(Late)
    native.register_request_codec(NativeLate)
    try:
        assert base.find_request_codec("late-test") is Late
        assert base.find_request_codec("native-late-test").Native is NativeLate
        assert "late-test" in base.request_codecs()
    finally:
        base.unregister_request_codec("late-test")
        native.unregister_request_codec("native-late-test")
    assert base.find_request_codec("late-test") is None and base.find_request_codec("native-late-test") is None
    base.request_codecs()["scratch"] = Late  # a caller's copy: the lookups' own view is not changed
    assert base.find_request_codec("scratch") is None
