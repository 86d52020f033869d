"""The `pd` request codec: DataFrames as one tensor per column, through JSON and back."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from gpuserve.codecs import PandasCodec, decode_request, encode_response, find_request_codec_by_payload
from gpuserve.errors import InvalidInput
from gpuserve.types import InferRequest, InferResponse

pd = pytest.importorskip("pandas")


def through_json(request: InferRequest) -> InferRequest:
    return InferRequest.from_rest("m", orjson.loads(orjson.dumps(request.to_rest()[0])))


def test_encode_request_one_input_per_column():
    frame = pd.DataFrame({"First Name": ["Joanne", "Michael"], "Age": np.array([34, 22], dtype=np.int32),
                          "Score": [0.5, np.nan], "Member": [True, False]})
    request = PandasCodec.encode_request(frame, model_name="m", request_id="r")
    assert request.parameters == {"content_type": "pd"} and request.id == "r"
    described = [(t.name, t.datatype, t.shape, t.parameters) for t in request.inputs]
    assert described == [("First Name", "BYTES", [2, 1], {"content_type": "str"}),
                         ("Age", "INT32", [2, 1], {}),
                         ("Score", "FP64", [2, 1], {}),
                         ("Member", "BOOL", [2, 1], {})]
    scores = request.to_rest()[0]["inputs"][2]["data"]
    assert scores[0] == 0.5 and np.isnan(scores[1])
    back = decode_request(through_json(request))
    pd.testing.assert_frame_equal(back, frame)


def test_decode_mlserver_documented_payload():
    body = {"parameters": {"content_type": "pd"}, "inputs": [
        {"name": "First Name", "datatype": "BYTES", "parameters": {"content_type": "str"}, "shape": [2],
         "data": ["Joanne", "Michael"]},
        {"name": "Age", "datatype": "INT32", "shape": [2], "data": [34, 22]}]}
    frame = decode_request(InferRequest.from_rest("m", body))
    assert list(frame.columns) == ["First Name", "Age"]
    assert frame["First Name"].tolist() == ["Joanne", "Michael"]
    assert frame["Age"].dtype == np.int32 and frame["Age"].tolist() == [34, 22]


def test_bytes_column_without_content_type_is_kept_as_delivered():
    body = {"parameters": {"content_type": "pd"}, "inputs": [
        {"name": "A", "datatype": "BYTES", "shape": [2], "data": ["a1", "a2"]}]}
    assert decode_request(InferRequest.from_rest("m", body))["A"].tolist() == ["a1", "a2"]
    frame = pd.DataFrame({"blob": [b"\x00\x01", b"\xff"]})
    request = PandasCodec.encode_request(frame)
    assert request.inputs[0].datatype == "BYTES" and request.inputs[0].parameters == {}
    pd.testing.assert_frame_equal(PandasCodec.decode_request(request), frame)


def test_multi_column_tensor_becomes_row_arrays_and_back():
    frame = pd.DataFrame({"emb": [np.array([1.0, 2.0], dtype=np.float32), np.array([3.0, 4.0], dtype=np.float32)],
                          "id": [1, 2]})
    request = PandasCodec.encode_request(frame)
    assert (request.inputs[0].datatype, request.inputs[0].shape) == ("FP32", [2, 2])
    back = decode_request(through_json(request))
    assert [row.tolist() for row in back["emb"]] == [[1.0, 2.0], [3.0, 4.0]]
    assert back["id"].tolist() == [1, 2]


def test_nullable_and_object_numeric_columns():
    frame = pd.DataFrame({"f": pd.array([1.5, None], dtype="Float64"), "i": pd.array([1, 2], dtype="Int64"),
                          "o": pd.Series([1, 2], dtype=object)})
    request = PandasCodec.encode_request(frame)
    assert [t.datatype for t in request.inputs] == ["FP64", "INT64", "INT64"]
    back = PandasCodec.decode_request(through_json(request))
    assert back["f"].iloc[0] == 1.5 and np.isnan(back["f"].iloc[1])


def test_response_round_trip_through_orjson_numpy():
    frame = pd.DataFrame({"label": ["cat", "dog", "ü"], "p": np.array([0.9, np.nan, 0.1], dtype=np.float32),
                          "n": np.array([1, 2, 3], dtype=np.uint8)})
    response = encode_response("m", frame, model_version="3")
    assert response.parameters == {"content_type": "pd"} and response.model_version == "3"
    raw = orjson.dumps(response.wire_dict(), option=orjson.OPT_SERIALIZE_NUMPY)
    assert b"null" in raw
    back = PandasCodec.decode_response(InferResponse.from_rest(orjson.loads(raw)))
    pd.testing.assert_frame_equal(back, frame)


def test_can_encode_and_lookup():
    frame = pd.DataFrame({"a": [1]})
    assert PandasCodec.can_encode(frame) and not PandasCodec.can_encode({"a": [1]})
    assert find_request_codec_by_payload(frame) is PandasCodec


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"s": ["x", None]}), "column 's' .* has missing values"),
    (pd.DataFrame({"i": pd.array([1, None], dtype="Int64")}), "column 'i' .* has missing values"),
    (pd.DataFrame({"t": pd.to_datetime(["2024-01-01"])}), "column 't' .* cannot be encoded"),
    (pd.DataFrame({"o": [object()]}), "column 'o' .* cannot be encoded"),
    (pd.DataFrame([[1, 2]], columns=["a", "a"]), "column names must be unique"),
])
def test_unencodable_frames(frame, message):
    with pytest.raises(InvalidInput, match=message):
        PandasCodec.encode_request(frame)


def test_columns_of_objects_travel_as_json_text_marked_pd_json():
    """MLServer's `pd_json`: rows that are dicts, ragged lists or mixed values, one JSON text each."""
    frame = pd.DataFrame({"d": [{"a": 1}, {"b": [1, 2]}], "r": [[1, 2], [3]], "m": [1, "a"], "n": [1.5, 2.5]})
    request = PandasCodec.encode_request(frame)
    tensors = {t.name: t for t in request.inputs}
    for name, texts in (("d", ['{"a":1}', '{"b":[1,2]}']), ("r", ["[1,2]", "[3]"]), ("m", ['1', '"a"'])):
        assert tensors[name].datatype == "BYTES" and tensors[name].shape == [2, 1]
        assert tensors[name].parameters["content_type"] == "pd_json"
        assert list(tensors[name].as_numpy().ravel()) == texts
    body, _ = request.to_rest()
    back = PandasCodec.decode_request(InferRequest.from_rest("m", body))  # as a client would send it
    assert back["d"].tolist() == [{"a": 1}, {"b": [1, 2]}] and back["r"].tolist() == [[1, 2], [3]]
    assert back["m"].tolist() == [1, "a"] and back["n"].tolist() == [1.5, 2.5]
    broken = InferRequest.from_rest("m", {"inputs": [{"name": "d", "datatype": "BYTES", "shape": [1, 1], "data": [
        "{not json"], "parameters": {"content_type": "pd_json"}}]})
    with pytest.raises(InvalidInput, match="'d' element 0 is not JSON text"):
        PandasCodec.decode_request(broken)


def test_wrong_payload_and_bad_requests():
    with pytest.raises(InvalidInput, match="encodes a pandas.DataFrame, got list"):
        PandasCodec.encode_response("m", [1, 2])
    uneven = InferRequest.from_rest("m", {"inputs": [
        {"name": "a", "datatype": "INT32", "shape": [2], "data": [1, 2]},
        {"name": "b", "datatype": "INT32", "shape": [3], "data": [1, 2, 3]}]})
    with pytest.raises(InvalidInput, match="'b' has 3 rows but 'a' has 2"):
        PandasCodec.decode_request(uneven)
    unknown = InferRequest.from_rest("m", {"inputs": [
        {"name": "a", "datatype": "INT32", "shape": [1], "data": [1], "parameters": {"content_type": "jpeg"}}]})
    with pytest.raises(InvalidInput, match="'a' names unknown content type 'jpeg'"):
        PandasCodec.decode_request(unknown)
    scalar = InferRequest.from_rest("m", {"inputs": [{"name": "a", "datatype": "INT32", "shape": [], "data": [1]}]})
    with pytest.raises(InvalidInput, match="needs a row dimension"):
        PandasCodec.decode_request(scalar)
