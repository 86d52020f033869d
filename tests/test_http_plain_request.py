"""The HTTP binary request's common form (tritonclient's: every input binary and fixed-size, parameters only
its binary_data_size) is decoded by a short path (server/binary.py `_plain_request`); it must give exactly
what the general path gives, and leave every other form to the general path, which checks it and refuses it
in Triton's words."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from gpuserve.datatypes import bf16_to_bytes
from gpuserve.errors import InvalidInput
from gpuserve.server import binary
from gpuserve.server.binary import aligned_body, decode_request
from gpuserve.server.rest.common import loads
from gpuserve.types import InferRequest, read_binary_data


def _body(inputs, data: bytes, **extra):
    header = orjson.dumps({"inputs": inputs, **extra})
    return header + data, len(header)


def _general(body, length: int) -> InferRequest:
    """What decode_request gave before the short path: from_rest, then the binary data."""
    request = InferRequest.from_rest("m", loads(bytes(body[:length])), "2")
    assert read_binary_data(request.inputs, body, length, "input", "m") == len(body)
    return request


def _same(a: InferRequest, b: InferRequest, writable: bool = False) -> None:
    """Both decodes alike; their arrays read-only from a bytes body, writable from the server's own buffer."""
    assert (a.model_name, a.model_version, a.id, a.parameters) == (b.model_name, b.model_version, b.id, b.parameters)
    assert [(o.name, o.parameters) for o in a.request_outputs or ()] == \
        [(o.name, o.parameters) for o in b.request_outputs or ()]
    assert len(a.inputs) == len(b.inputs)
    for x, y in zip(a.inputs, b.inputs):
        assert (x.name, x.shape, x.datatype, x.parameters, x.data) == (y.name, y.shape, y.datatype, y.parameters, y.data)
        assert x.as_numpy().dtype == y.as_numpy().dtype and x.as_numpy().shape == y.as_numpy().shape
        assert np.array_equal(x.as_numpy(), y.as_numpy())
        assert x.as_numpy().flags.writeable == y.as_numpy().flags.writeable == writable


@pytest.mark.parametrize("datatype, dtype", [("FP32", np.float32), ("FP16", np.float16), ("FP64", np.float64),
                                             ("INT8", np.int8), ("INT64", np.int64), ("UINT16", np.uint16),
                                             ("BOOL", np.bool_)])
@pytest.mark.parametrize("shape", [[1, 16], [3, 2, 2], [4], [0, 3], []])
def test_the_short_path_gives_what_the_general_path_gives(datatype, dtype, shape):
    values = (np.random.default_rng(0).normal(size=shape) * 50).astype(dtype)
    second = np.arange(2, dtype=np.int32)
    body, length = _body([{"name": "A", "shape": shape, "datatype": datatype,
                           "parameters": {"binary_data_size": values.nbytes}},
                          {"name": "B", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}}],
                         values.tobytes() + second.tobytes(), id="r1",
                         outputs=[{"name": "OUT", "parameters": {"binary_data": True}}])
    plain = binary._plain_request(loads(body[:length]), body, length, "m", "2")
    assert plain is not None
    _same(plain, _general(body, length))
    assert np.array_equal(plain.inputs[0].as_numpy(), values)
    _same(decode_request(body, str(length), "m", "2"), plain)


def test_a_body_read_in_place_gives_writable_arrays_on_both_paths():
    values = np.arange(32, dtype=np.float32)
    body, length = _body([{"name": "A", "shape": [32], "datatype": "FP32", "parameters": {"binary_data_size": 128}}],
                         values.tobytes())
    buffer = aligned_body(len(body), str(length))  # what the HTTP server reads a large binary body into
    buffer[:] = body
    plain = binary._plain_request(loads(bytes(buffer[:length])), buffer, length, "m", "2")
    assert plain is not None
    _same(plain, _general(buffer, length), writable=True)  # a Python model may change them in place


SIZE = {"binary_data_size": 4}
OTHER_FORMS = {
    "BYTES": ([{"name": "A", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 7}}],
              b"\x03\x00\x00\x00abc"),
    "BF16": ([{"name": "A", "shape": [2], "datatype": "BF16", "parameters": SIZE}], bf16_to_bytes(np.ones(2, np.float32))),
    "too few bytes": ([{"name": "A", "shape": [2], "datatype": "FP32", "parameters": SIZE}], b"\x00" * 4),
    "bytes left over": ([{"name": "A", "shape": [1], "datatype": "FP32", "parameters": SIZE}], b"\x00" * 8),
    "a size past the end": ([{"name": "A", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}],
                            b"\x00" * 4),
    "a negative dim": ([{"name": "A", "shape": [-1], "datatype": "FP32", "parameters": SIZE}], b"\x00" * 4),
    "a float dim": ([{"name": "A", "shape": [1.0], "datatype": "FP32", "parameters": SIZE}], b"\x00" * 4),
    "a bool dim": ([{"name": "A", "shape": [True], "datatype": "FP32", "parameters": SIZE}], b"\x00" * 4),
    "a bool size": ([{"name": "A", "shape": [1], "datatype": "BOOL", "parameters": {"binary_data_size": True}}], b"\x01"),
    "no name": ([{"name": "", "shape": [1], "datatype": "FP32", "parameters": SIZE}], b"\x00" * 4),
    "a list datatype": ([{"name": "A", "shape": [1], "datatype": ["FP32"], "parameters": SIZE}], b"\x00" * 4),
    "a shape that is no list": ([{"name": "A", "shape": 1, "datatype": "FP32", "parameters": SIZE}], b"\x00" * 4),
    "lower-case datatype": ([{"name": "A", "shape": [1], "datatype": "fp32", "parameters": SIZE}], b"\x00" * 4),
    "JSON data": ([{"name": "A", "shape": [1], "datatype": "FP32", "data": [1.0]}], b""),
    "data beside the size": ([{"name": "A", "shape": [1], "datatype": "FP32", "parameters": SIZE, "data": [1.0]}],
                             b"\x00" * 4),
    "another parameter": ([{"name": "A", "shape": [1], "datatype": "FP32",
                            "parameters": {"binary_data_size": 4, "shared_memory_region": "r"}}], b"\x00" * 4),
    "an input that is no object": ([["A"]], b""),
}


@pytest.mark.parametrize("form", sorted(OTHER_FORMS))
def test_every_other_form_goes_the_general_way(form):
    inputs, data = OTHER_FORMS[form]
    body, length = _body(inputs, data)
    assert binary._plain_request(loads(body[:length]), body, length, "m", None) is None
    assert binary._plain_request({"inputs": {}}, body, length, "m", None) is None
    assert binary._plain_request([inputs], body, length, "m", None) is None


def test_refusals_keep_tritons_words():
    body, length = _body([{"name": "A", "shape": [2], "datatype": "FP32", "parameters": SIZE}], b"\x00" * 4)
    with pytest.raises(InvalidInput, match="input byte size mismatch for input 'A' for model 'm'. Expected 8, got 4"):
        decode_request(body, str(length), "m", None)
    body, length = _body([{"name": "A", "shape": [1], "datatype": "FP32", "parameters": SIZE}], b"\x00" * 8)
    with pytest.raises(InvalidInput, match="4 unexpected bytes after the binary tensor data"):
        decode_request(body, str(length), "m", None)
    body, length = _body([{"name": "A", "shape": [1], "datatype": "FP32", "parameters": SIZE}], b"\x00" * 4,
                         parameters={"triton_x": 1})
    with pytest.raises(InvalidInput, match="reserved for Triton usage"):  # refused on the short path too
        decode_request(body, str(length), "m", None)
    body, length = _body([{"name": "A", "shape": [1], "datatype": "FP32", "parameters": SIZE}], b"\x00" * 4,
                         outputs="OUT")
    with pytest.raises(InvalidInput, match="'outputs' must be a list"):
        decode_request(body, str(length), "m", None)
