"""The gRPC request's common form (every input raw, fixed-size, no parameters) is decoded by a short path
(server/grpc/convert.py `_plain_inputs`); it must give exactly what the general path gives, and leave every
other form to the general path, which checks it and refuses it in Triton's words."""

from __future__ import annotations

import numpy as np
import pytest

from gpuserve.datatypes import bf16_to_bytes
from gpuserve.errors import InvalidInput
from gpuserve.remote_grpc import tensors_from_proto
from gpuserve.server.grpc import convert
from gpuserve.server.grpc import inference_pb2 as pb
from gpuserve.types import InferInput

Tensor = pb.ModelInferRequest.InferInputTensor


def _request(*tensors):
    """tensors: (name, datatype, shape, raw bytes or None)."""
    message = pb.ModelInferRequest(model_name="m")
    for name, datatype, shape, raw in tensors:
        message.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw is not None:
            message.raw_input_contents.append(raw)
    return message


def _same(a, b) -> None:
    assert (a.name, a.shape, a.datatype, a.parameters, a.data) == (b.name, b.shape, b.datatype, b.parameters, b.data)
    assert a.as_numpy().dtype == b.as_numpy().dtype and np.array_equal(a.as_numpy(), b.as_numpy())


@pytest.mark.parametrize("datatype, dtype", [("FP32", np.float32), ("FP16", np.float16), ("FP64", np.float64),
                                             ("INT8", np.int8), ("INT64", np.int64), ("UINT16", np.uint16),
                                             ("BOOL", np.bool_)])
@pytest.mark.parametrize("shape", [[1, 16], [3, 2, 2], [4], [0, 3]])
def test_the_short_path_gives_what_the_general_path_gives(datatype, dtype, shape):
    values = (np.random.default_rng(0).normal(size=shape) * 50).astype(dtype)
    message = _request(("A", datatype, shape, values.tobytes()), ("B", "INT32", [2], np.arange(2, dtype=np.int32).tobytes()))
    plain = convert._plain_inputs(message)
    general = tensors_from_proto(InferInput, message.inputs, message.raw_input_contents, "input")
    assert plain is not None and len(plain) == len(general) == 2
    for a, b in zip(plain, general):
        _same(a, b)
    assert np.array_equal(plain[0].as_numpy(), values)


OTHER_FORMS = {
    "BYTES": _request(("A", "BYTES", [1], b"\x03\x00\x00\x00abc")),
    "BF16": _request(("A", "BF16", [2], bf16_to_bytes(np.ones(2, np.float32)))),
    "too few bytes": _request(("A", "FP32", [1, 16], b"\x00" * 60)),
    "a negative dim": _request(("A", "FP32", [-1, -4], b"\x00" * 16)),
    "no name": _request(("", "FP32", [1], b"\x00" * 4)),
    "unknown datatype": _request(("A", "FP128", [1], b"\x00" * 16)),
    "lower-case datatype": _request(("A", "fp32", [1], b"\x00" * 4)),
    "no raw entry": _request(("A", "FP32", [1], None)),
    "raw entries for fewer inputs": _request(("A", "FP32", [1], b"\x00" * 4), ("B", "FP32", [1], None)),
}


@pytest.mark.parametrize("form", sorted(OTHER_FORMS))
def test_every_other_form_goes_the_general_way(form):
    assert convert._plain_inputs(OTHER_FORMS[form]) is None


def test_parameters_typed_contents_and_shared_memory_go_the_general_way():
    message = _request(("A", "FP32", [1], b"\x00" * 4))
    message.inputs[0].parameters["foo"].string_param = "bar"
    assert convert._plain_inputs(message) is None
    assert convert.request_from_proto(message).inputs[0].parameters == {"foo": "bar"}
    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="A", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1.0, 2.0])
    assert convert._plain_inputs(typed) is None
    assert convert.request_from_proto(typed).inputs[0].as_numpy().tolist() == [1.0, 2.0]


def test_a_size_mismatch_is_still_refused_in_tritons_words():
    with pytest.raises(InvalidInput, match="input byte size mismatch for input 'A' for model 'm'. Expected 64, got 60"):
        convert.request_from_proto(OTHER_FORMS["too few bytes"])
