"""Benchmark models, built on the spot with the onnx helper API (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def mlp_onnx(path: Path, width: int = 1024, layers: int = 3, in_features: int = 1024, seed: int = 0) -> Path:
    """A `layers`-deep, `width`-wide ReLU MLP: heavy enough per row that batching matters."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev, fan_in = [], [], "input", in_features
    for i in range(layers):
        w = (rng.normal(size=(fan_in, width)) / np.sqrt(fan_in)).astype(np.float32)
        b = np.zeros(width, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "output" if i == layers - 1 else f"h{i}"
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        nodes.append(helper.make_node("Relu", [f"a{i}"], [out]))
        prev, fan_in = out, width
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", in_features])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def small_mlp_onnx(path: Path) -> Path:
    """A small MLP (16 -> 64 -> 64 -> 8): request overhead, not math, dominates."""
    return mlp_onnx(path, width=64, layers=3, in_features=16)
