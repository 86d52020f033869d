"""The V2 JSON request's common form (each input exactly name, datatype, shape and a data list) is made by a
short path (gpuserve/types.py `_plain_json_inputs`), and flat float data of the shape's count is read at once
(`json_to_array`); both must give exactly what the general path gives, keep the data a list until the model
reads it, and leave every other form to the general path, which refuses it in its words."""

from __future__ import annotations

import numpy as np
import pytest

from gpuserve import types
from gpuserve.errors import InvalidInput
from gpuserve.types import InferInput, InferRequest


def _general(inputs: list) -> list:
    return [types._tensor_from_json(InferInput, item, i, "input") for i, item in enumerate(inputs)]


def _same(a, b) -> None:
    assert (a.name, a.shape, a.datatype, a.parameters, a.data) == (b.name, b.shape, b.datatype, b.parameters, b.data)
    assert a.data is b.data  # the client's list itself, as before: a model may read or change it first
    x, y = a.as_numpy(), b.as_numpy()
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tolist() == y.tolist() if x.dtype == object else np.array_equal(x, y)


CASES = {
    "fp32 flat": ("FP32", [1, 4], [5.1, 3.5, 1.4, 0.2]),
    "fp64 ints": ("FP64", [2, 2], [1, 2, 3, 4]),
    "fp16": ("FP16", [3], [0.5, -2.0, 65504.0]),
    "bf16": ("BF16", [2], [1.5, -0.25]),
    "fp32 nested": ("FP32", [2, 2], [[1.0, 2.0], [3.0, 4.0]]),
    "fp32 bools": ("FP32", [2], [True, False]),
    "fp32 text numbers": ("FP32", [2], ["1.5", "2"]),
    "int64": ("INT64", [3], [1, -2, 3]),
    "uint8": ("UINT8", [2, 1], [[1], [255]]),
    "bool": ("BOOL", [2], [True, False]),
    "bytes": ("BYTES", [2], ["a", "bc"]),
    "empty": ("FP32", [0, 4], []),
    "scalar": ("FP32", [], [2.5]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_short_path_gives_what_the_general_path_gives(case):
    datatype, shape, data = CASES[case]
    inputs = [{"name": "A", "datatype": datatype, "shape": shape, "data": data},
              {"shape": [2], "name": "B", "data": [1, 2], "datatype": "INT32"}]
    plain = types._plain_json_inputs(inputs)
    assert plain is not None
    for a, b in zip(plain, _general(inputs)):
        _same(a, b)
    request = InferRequest.from_rest("m", {"inputs": inputs, "id": "7", "parameters": {"p": 1}})
    assert request.id == "7" and request.parameters == {"p": 1}
    for a, b in zip(request.inputs, _general(inputs)):
        _same(a, b)


def test_a_model_that_changes_the_list_first_reads_its_change():
    request = InferRequest.from_rest("m", {"inputs": [{"name": "A", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}]})
    request.inputs[0].data[0] = 9.0  # a KServe preprocess may edit the data it was sent
    assert request.inputs[0].as_numpy().tolist() == [9.0, 2.0]


OTHER_FORMS = {
    "parameters": {"name": "A", "datatype": "FP32", "shape": [1], "data": [1.0], "parameters": {"x": 1}},
    "binary": {"name": "A", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
    "no data": {"name": "A", "datatype": "FP32", "shape": [1], "extra": 1},
    "data not a list": {"name": "A", "datatype": "FP32", "shape": [1], "data": 1.0},
    "lower-case datatype": {"name": "A", "datatype": "fp32", "shape": [1], "data": [1.0]},
    "unknown datatype": {"name": "A", "datatype": "FP8", "shape": [1], "data": [1.0]},
    "list datatype": {"name": "A", "datatype": ["FP32"], "shape": [1], "data": [1.0]},
    "no name": {"name": "", "datatype": "FP32", "shape": [1], "data": [1.0]},
    "negative dim": {"name": "A", "datatype": "FP32", "shape": [-1], "data": [1.0]},
    "bool dim": {"name": "A", "datatype": "FP32", "shape": [True], "data": [1.0]},
    "float dim": {"name": "A", "datatype": "FP32", "shape": [1.0], "data": [1.0]},
    "shape not a list": {"name": "A", "datatype": "FP32", "shape": 1, "data": [1.0]},
}


@pytest.mark.parametrize("form", sorted(OTHER_FORMS))
def test_every_other_form_goes_the_general_way(form):
    assert types._plain_json_inputs([OTHER_FORMS[form]]) is None
    assert types._plain_json_inputs([["A"]]) is None


@pytest.mark.parametrize("data, words", [
    ([1.0, None], None),  # null is NaN in a float tensor
    ([1.0, 2.0, 3.0], "shape \\[2\\] needs 2 elements but data has 3"),
    ([1.0, [2.0]], "data does not fit datatype FP32"),
    (["x", 1.0], "data does not fit datatype FP32"),
])
def test_float_data_the_quick_read_leaves_is_read_or_refused_as_before(data, words):
    request = InferRequest.from_rest("m", {"inputs": [{"name": "A", "datatype": "FP32", "shape": [2], "data": data}]})
    if words is None:
        values = request.inputs[0].as_numpy()
        assert values[0] == 1.0 and np.isnan(values[1])
        return
    with pytest.raises(InvalidInput, match=words):
        request.inputs[0].as_numpy()
