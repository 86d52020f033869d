"""BF16 graphs on the CPU: ONNX Runtime has no CPU kernels for most BF16 operators (Add, MatMul, ...), so a
model computing in BF16 fails to load there ("Could not find an implementation for Add(14)"), while Triton
serves it on a GPU. As a fallback the graph is widened: every BF16 tensor type, initializer, constant and
cast becomes FLOAT, the session computes in float32, and the backend rounds the BF16 outputs back to BF16
(round to nearest even). One operator's result is then what a GPU's BF16 kernel gives (they compute in
float32 and round); a chain of operators keeps more precision between them than BF16 would.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

_BF16 = 16  # TensorProto.BFLOAT16
_FLOAT = 1  # TensorProto.FLOAT


def holds_bf16(model) -> bool:
    return any(_bf16_type(v.type) for v in _value_infos(model.graph))


def _bf16_type(type_proto) -> bool:
    return type_proto.HasField("tensor_type") and type_proto.tensor_type.elem_type == _BF16


def _value_infos(graph):
    yield from graph.input
    yield from graph.output
    yield from graph.value_info


def _widen_tensor(tensor) -> None:
    """A BF16 TensorProto (initializer or constant) in place as FLOAT with the same values."""
    from onnx import numpy_helper

    if tensor.data_type != _BF16:
        return
    if tensor.HasField("raw_data") or tensor.raw_data:
        bits = np.frombuffer(tensor.raw_data, dtype=np.uint16)
    else:  # int32_data holds each value's 16 bits
        bits = np.asarray(tensor.int32_data, dtype=np.uint32).astype(np.uint16)
    values = (bits.astype(np.uint32) << 16).view(np.float32).reshape(tuple(tensor.dims))
    widened = numpy_helper.from_array(values, tensor.name)
    tensor.CopyFrom(widened)


def _widen_graph(graph) -> None:
    for value in _value_infos(graph):
        if _bf16_type(value.type):
            value.type.tensor_type.elem_type = _FLOAT
    for tensor in graph.initializer:
        _widen_tensor(tensor)
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == _BF16:
                attribute.i = _FLOAT
            if attribute.HasField("t"):
                _widen_tensor(attribute.t)
            for tensor in attribute.tensors:
                _widen_tensor(tensor)
            if attribute.HasField("g"):
                _widen_graph(attribute.g)
            for sub in attribute.graphs:
                _widen_graph(sub)


def widened(path: str) -> Tuple[bytes, set, set]:
    """The model as FLOAT where it was BF16 (serialized), with the names of its BF16 inputs and outputs."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    inputs = {v.name for v in graph.input if _bf16_type(v.type)}
    outputs = {v.name for v in graph.output if _bf16_type(v.type)}
    _widen_graph(graph)
    return model.SerializeToString(), inputs, outputs


def round_to_bf16(array: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest BF16 (ties to even; NaN stays NaN), held as float32 as gpuserve
    holds BF16."""
    values = np.ascontiguousarray(array, dtype=np.float32)
    bits = values.view(np.uint32)
    rounded = ((bits + ((bits >> 16) & 1) + np.uint32(0x7FFF)) & np.uint32(0xFFFF0000)).view(np.float32)
    return np.where(np.isnan(values), values, rounded)
