"""Property-based round trips: every codec, every V2 datatype, through JSON (both directions) and raw bytes.

JSON has no infinities (orjson writes them as null, which reads back as NaN), so JSON round trips
draw finite floats and NaN; the codec-only and raw round trips draw infinities too.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpuserve.codecs import (
    Base64Codec,
    DatetimeCodec,
    NumpyCodec,
    PandasCodec,
    StringCodec,
    decode_input,
    decode_request,
    decode_response,
)
from gpuserve.datatypes import numpy_to_raw
from gpuserve.types import InferInput, InferRequest, InferResponse

pd = pytest.importorskip("pandas")

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NUMERIC = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
ALL_BUT_BF16 = [*NUMERIC, "BYTES"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)


def arrays(datatype: str, finite: bool, utf8: bool):
    """Arrays of one V2 datatype; `finite` drops infinities, `utf8` gives BYTES as text (what JSON carries,
    decoded as a unicode array), else as bytes (decoded as a fixed-width bytes array). Neither kind of
    NumPy array keeps a trailing NUL, so none is drawn."""
    if datatype == "BYTES":
        element, kind, nul = (TEXT, str, "\0") if utf8 else (st.binary(max_size=12), bytes, b"\0")
        return hnp.arrays(object, SHAPES, elements=element.filter(lambda x: not x.endswith(nul))).map(
            lambda a: np.array(a.tolist(), dtype=kind).reshape(a.shape))
    dtype = np.dtype(NUMERIC[datatype])
    elements = None
    if dtype.kind == "f":
        elements = st.floats(width=8 * dtype.itemsize, allow_nan=True, allow_infinity=not finite)
    return hnp.arrays(dtype, SHAPES, elements=elements)


def bf16_values(finite: bool):
    """float32 values exactly representable in bfloat16: the upper 16 bits of a float32."""
    def build(bits):
        values = (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        return values[~np.isinf(values)] if finite else values
    return hnp.arrays(np.uint16, st.integers(0, 12)).map(build)


def same_array(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.dtype.kind == "f":
        assert np.array_equal(a, b, equal_nan=True)
    else:
        assert np.array_equal(a, b)


def via_json_request(tensors: list) -> InferRequest:
    body = {"inputs": [t.wire_dict() for t in tensors]}  # FP16 too, which KServe's to_rest() refuses as JSON
    return InferRequest.from_rest("m", orjson.loads(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)))


def via_json_response(outputs: list) -> InferResponse:
    raw = orjson.dumps(InferResponse("r", "m", outputs).wire_dict(), option=orjson.OPT_SERIALIZE_NUMPY)
    return InferResponse.from_rest(orjson.loads(raw))


def via_raw(tensor) -> InferRequest:
    empty = InferInput(tensor.name, tensor.shape, tensor.datatype, None, dict(tensor.parameters))
    return InferRequest("m", [empty], raw_inputs=[numpy_to_raw(tensor.as_numpy(), tensor.datatype)])


@pytest.mark.parametrize("datatype", ALL_BUT_BF16)
@FAST
@given(data=st.data())
def test_numpy_codec_round_trip(datatype, data):
    array = data.draw(arrays(datatype, finite=False, utf8=False))
    tensor = NumpyCodec.encode_input("x", array)
    assert tensor.datatype == datatype and tensor.shape == list(array.shape)
    if datatype == "BYTES" and not array.size:
        array = array.astype(str)  # no element says bytes: MLServer's empty list of strings
    same_array(NumpyCodec.decode_input(tensor), array)
    same_array(decode_input(via_raw(tensor).inputs[0]), array)


@pytest.mark.parametrize("datatype", ALL_BUT_BF16)
@FAST
@given(data=st.data())
def test_numpy_codec_json_round_trip(datatype, data):
    array = data.draw(arrays(datatype, finite=True, utf8=True))
    request = via_json_request([NumpyCodec.encode_input("x", array)])
    same_array(decode_input(request.inputs[0]), array)  # content type "np" travels with the tensor
    response = via_json_response([NumpyCodec.encode_output("y", array)])
    same_array(decode_response(response)["y"], array)


@FAST
@given(values=bf16_values(finite=False), finite=bf16_values(finite=True))
def test_bf16_round_trip(values, finite):
    tensor = NumpyCodec.encode_input("b", values, datatype="BF16")
    assert tensor.datatype == "BF16"
    same_array(decode_input(via_raw(tensor).inputs[0]), values)
    json_tensor = NumpyCodec.encode_output("b", finite, datatype="BF16")
    same_array(decode_input(via_json_response([json_tensor]).outputs[0]), finite)
    same_array(decode_input(via_json_request([NumpyCodec.encode_input("b", finite, datatype="BF16")]).inputs[0]),
               finite)


@FAST
@given(strings=st.lists(TEXT, max_size=6), use_bytes=st.booleans())
def test_string_round_trip(strings, use_bytes):
    tensor = StringCodec.encode_input("s", strings, use_bytes=use_bytes)
    assert StringCodec.decode_input(tensor) == strings
    assert decode_input(via_json_request([tensor]).inputs[0]) == strings
    assert decode_input(via_raw(tensor).inputs[0]) == strings
    output = StringCodec.encode_output("s", strings, use_bytes=use_bytes)
    assert decode_input(via_json_response([output]).outputs[0]) == strings


@FAST
@given(blobs=st.lists(st.binary(max_size=24), min_size=1, max_size=6), use_bytes=st.booleans())
def test_base64_round_trip(blobs, use_bytes):
    tensor = Base64Codec.encode_input("b", blobs, use_bytes=use_bytes)
    assert Base64Codec.decode_input(tensor) == blobs
    assert decode_input(via_json_request([tensor]).inputs[0]) == blobs
    assert decode_input(via_raw(tensor).inputs[0]) == blobs
    assert decode_input(via_json_response([Base64Codec.encode_output("b", blobs)]).outputs[0]) == blobs


OFFSETS = st.none() | st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=59), max_value=timedelta(hours=23, minutes=59)))


@FAST
@given(moments=st.lists(st.datetimes(timezones=OFFSETS), min_size=1, max_size=5))
def test_datetime_round_trip(moments):
    tensor = DatetimeCodec.encode_input("d", moments)
    for decoded in (DatetimeCodec.decode_input(tensor), decode_input(via_json_request([tensor]).inputs[0]),
                    decode_input(via_raw(tensor).inputs[0])):
        assert decoded == moments
        # same wall clock and same offset, not only the same instant
        assert [(d.replace(tzinfo=None), d.utcoffset()) for d in decoded] == \
            [(m.replace(tzinfo=None), m.utcoffset()) for m in moments]


COLUMN_KINDS = {
    "int64": lambda n: st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n).map(
        lambda v: np.array(v, dtype=np.int64)),
    "int32": lambda n: hnp.arrays(np.int32, n),
    "uint8": lambda n: hnp.arrays(np.uint8, n),
    "float64": lambda n: hnp.arrays(np.float64, n, elements=st.floats(allow_infinity=False)),
    "float32": lambda n: hnp.arrays(np.float32, n, elements=st.floats(width=32, allow_infinity=False)),
    "bool": lambda n: hnp.arrays(np.bool_, n),
    "str": lambda n: st.lists(TEXT, min_size=n, max_size=n),
}


@st.composite
def frames(draw):
    rows = draw(st.integers(0, 5))
    names = draw(st.lists(st.text("abcxyz_ ", min_size=1, max_size=4), min_size=1, max_size=4, unique=True))
    columns = {name: draw(COLUMN_KINDS[draw(st.sampled_from(sorted(COLUMN_KINDS)))](rows)) for name in names}
    return pd.DataFrame(columns)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames(), use_bytes=st.booleans())
def test_dataframe_round_trip(frame, use_bytes):
    request = PandasCodec.encode_request(frame, use_bytes=use_bytes)
    assert [t.shape[0] for t in request.inputs] == [len(frame)] * frame.shape[1]
    pd.testing.assert_frame_equal(PandasCodec.decode_request(request), frame)
    pd.testing.assert_frame_equal(decode_request(_json_request(request)), frame)
    response = PandasCodec.encode_response("m", frame, use_bytes=use_bytes)
    raw = orjson.dumps(response.wire_dict(), option=orjson.OPT_SERIALIZE_NUMPY)
    pd.testing.assert_frame_equal(decode_response(InferResponse.from_rest(orjson.loads(raw))), frame)


def _json_request(request: InferRequest) -> InferRequest:
    """Keeps the request-level content type, which `via_json_request` does not carry."""
    return InferRequest.from_rest("m", orjson.loads(orjson.dumps(request.to_rest()[0])))


def test_an_offset_under_one_second_keeps_its_instant():
    # CPython 3.11's fromisoformat reads "+00:00:00.000001" as UTC (hypothesis found it)
    moments = [datetime(2000, 1, 1, tzinfo=timezone(timedelta(microseconds=sign * 1))) for sign in (1, -1)] + \
        [datetime(2000, 1, 1, 1, 2, 3, 456, tzinfo=timezone(timedelta(seconds=-1, microseconds=5)))]
    tensor = DatetimeCodec.encode_input("d", moments)
    for decoded in (DatetimeCodec.decode_input(tensor), decode_input(via_json_request([tensor]).inputs[0])):
        assert decoded == moments and [d.utcoffset() for d in decoded] == [m.utcoffset() for m in moments]
