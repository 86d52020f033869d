"""BYTES (TYPE_STRING) tensors of 1k-100k elements through an identity Python model, over HTTP binary, HTTP
JSON and gRPC: every element comes back exactly (empty ones, embedded NULs, bytes that are not UTF-8, one
far longer than the rest). The length-prefixed codec (gpuserve.datatypes) splits and joins them with
C-level maps and slices rather than a Python loop body per element; these tests hold it to the bytes."""

from __future__ import annotations

import numpy as np
import pytest

from gpuserve import datatypes
from gpuserve.datatypes import deserialize_bytes_tensor, serialize_bytes_tensor
from gpuserve.errors import InvalidInput
from gpuserve.types import array_to_json

from test_large_payload import CONFIG as FP32_CONFIG
from test_large_payload import IDENTITY

CONFIG = FP32_CONFIG.replace("TYPE_FP32", "TYPE_STRING")  # the same identity model, for BYTES


def _elements(count: int, text: bool = False) -> np.ndarray:
    rng = np.random.default_rng(count)
    items = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            items.append(b"")
        elif kind == 1:
            items.append(b"\0" * (i % 3 + 1) + b"x\0")
        elif kind == 2 and not text:
            items.append(bytes(rng.integers(128, 256, i % 17 + 1, dtype=np.uint8)))  # not UTF-8
        else:
            items.append(f"element {i} \u00e9\u4e2d".encode())
    if count:
        items[count // 2] = (b"long\0" if text else b"\xff\0") * 20000
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def _same(got: np.ndarray, sent: np.ndarray) -> None:
    assert got.shape == sent.shape
    assert got.tolist() == sent.tolist()


@pytest.mark.parametrize("count", [0, 1, 1000, 100000])
def test_codec_round_trips_every_element(count):
    sent = _elements(count)
    raw = serialize_bytes_tensor(sent)
    assert len(raw) == 4 * count + sum(map(len, sent))
    _same(deserialize_bytes_tensor(raw), sent)
    _same(deserialize_bytes_tensor(memoryview(bytearray(raw)).toreadonly()), sent)


def test_codec_cuts_huge_buffers_from_views(monkeypatch):
    monkeypatch.setattr(datatypes, "SPLIT_COPY_BYTES", 16)
    sent = _elements(1000)
    got = deserialize_bytes_tensor(memoryview(serialize_bytes_tensor(sent)))
    _same(got, sent)
    assert all(type(item) is bytes for item in got)


def test_codec_takes_text_and_other_elements_and_refuses_truncation():
    mixed = np.array(["caf\u00e9", b"\0", np.bytes_(b"ab"), 7, bytearray(b"z")], dtype=object)
    assert deserialize_bytes_tensor(serialize_bytes_tensor(mixed)).tolist() == [b"caf\xc3\xa9", b"\0", b"ab", b"7", b"z"]
    assert serialize_bytes_tensor(np.array([b"ab", b"c"], dtype="S2")) == b"\2\0\0\0ab\1\0\0\0c"
    with pytest.raises(InvalidInput, match="missing 4-byte length prefix"):
        deserialize_bytes_tensor(b"\0\0\0\0\1\0")
    with pytest.raises(InvalidInput, match="runs past the data"):
        deserialize_bytes_tensor(b"\5\0\0\0abc")


def test_json_text_of_bytes_outputs():
    assert array_to_json(np.array([b"", b"a\0", "\u00e9", np.int64(3)], dtype=object), "BYTES") == ["", "a\0", "\u00e9", 3]
    with pytest.raises(InvalidInput, match="not valid UTF-8"):
        array_to_json(np.array([b"ok", b"\xff"], dtype=object), "BYTES")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from test_output_ownership import _start, _stop

    root = tmp_path_factory.mktemp("bytes")
    proc, ports = _start(root, IDENTITY, CONFIG, "identity")
    yield ports
    _stop(proc)


@pytest.mark.parametrize("count", [1000, 100000])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_binary_round_trip(server, protocol, count):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    sent = _elements(count)
    if protocol == "grpc":
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server[1]}")
        tensor = grpcclient.InferInput("INPUT0", [count], "BYTES")
        tensor.set_data_from_numpy(sent)
        outputs = [grpcclient.InferRequestedOutput("OUTPUT0")]
    else:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server[0]}", network_timeout=120)
        tensor = httpclient.InferInput("INPUT0", [count], "BYTES")
        tensor.set_data_from_numpy(sent, binary_data=True)
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)]
    try:
        _same(client.infer("identity", [tensor], outputs=outputs).as_numpy("OUTPUT0"), sent)
    finally:
        client.close()


@pytest.mark.parametrize("count", [1000, 100000])
def test_json_round_trip(server, count):
    import tritonclient.http as httpclient

    sent = _elements(count, text=True)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server[0]}", network_timeout=120)
    try:
        tensor = httpclient.InferInput("INPUT0", [count], "BYTES")
        tensor.set_data_from_numpy(sent, binary_data=False)
        answer = client.infer("identity", [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)])
        got = answer.as_numpy("OUTPUT0")  # JSON data: tritonclient gives the elements as text, as from Triton
        _same(np.array([item.encode() for item in got.tolist()] + [None])[:-1], sent)
        not_text = _elements(count)
        tensor.set_data_from_numpy(not_text, binary_data=True)
        with pytest.raises(Exception, match="not valid UTF-8"):
            client.infer("identity", [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)])
    finally:
        client.close()


def test_object_map_keeps_shape_order_and_elements():
    from gpuserve.datatypes import object_map

    grid = np.arange(12).reshape(3, 4).T  # not C-contiguous: elements in C order of the view
    got = object_map(str, grid)
    assert got.dtype == object and got.shape == (4, 3)
    assert got.tolist() == [[str(v) for v in row] for row in grid.tolist()]
    assert object_map(str, np.zeros((0, 5))).shape == (0, 5)
    scalar = object_map(bytes.decode, np.array(b"x", dtype=object))
    assert scalar.shape == () and scalar.item() == "x"
    same = object_map(lambda v: b"ab", np.array([1, 2]))  # bytes stay elements, never spread
    assert same.tolist() == [b"ab", b"ab"]


def test_onnx_string_inputs_decode_as_before():
    """OnnxModel.prepare: UTF-8 bytes become text, other elements their str(), as np.vectorize made them; bytes
    that are not UTF-8 stay the client's error."""
    from gpuserve.runtimes import OnnxModel

    prepare = OnnxModel.prepare.__get__(object.__new__(OnnxModel))
    sent = _elements(1000, text=True).reshape(10, 100)
    got = prepare("text", sent)
    assert got.shape == (10, 100) and got.dtype == object
    assert got.tolist() == [[item.decode() for item in row] for row in sent.tolist()]
    mixed = np.array([[b"caf\xc3\xa9", "already text", 7, bytearray(b"b")]], dtype=object)
    assert prepare("text", mixed).tolist() == [["caf\u00e9", "already text", "7", "bytearray(b'b')"]]
    for bad in (np.array([b"ok", b"\xff\xfe"], dtype=object), np.array([b"\xff", "text"], dtype=object)):
        with pytest.raises(InvalidInput, match="input 'text': ONNX string tensors hold UTF-8 text"):
            prepare("text", bad)
    numbers = np.arange(3.0)
    assert prepare("x", numbers) is numbers


def test_python_model_text_tensors_become_bytes_elements():
    from gpuserve import triton_pb_utils as pb

    tensor = pb.Tensor("t", np.array([["h\u00e9", ""], ["\u4e2d", "x"]]))
    assert tensor.as_numpy().dtype == object
    assert tensor.as_numpy().tolist() == [["h\u00e9".encode(), b""], ["\u4e2d".encode(), b"x"]]
    assert pb.Tensor("t", np.zeros((0, 3), dtype="U2")).as_numpy().shape == (0, 3)
    assert pb.Tensor("t", np.array("zz")).as_numpy().item() == b"zz"
