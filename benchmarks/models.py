"""Benchmark models, built on the spot with the onnx helper API (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def dense_onnx(path: Path, sizes: Sequence[int], seed: int = 0) -> Path:
    """An MLP with layer sizes `sizes` (input first); ReLU between layers, none after the last.
    Input "input" [batch, sizes[0]] FP32, output "output" [batch, sizes[-1]] FP32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "input"
    layers = len(sizes) - 1
    for i in range(layers):
        fan_in, fan_out = sizes[i], sizes[i + 1]
        w = (rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = np.zeros(fan_out, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == layers - 1
        added = "output" if last else f"a{i}"
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [added])]
        if not last:
            nodes.append(helper.make_node("Relu", [added], [f"h{i}"]))
            prev = f"h{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", sizes[0]])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", sizes[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def mlp_onnx(path: Path, width: int = 1024, layers: int = 3, in_features: int = 1024, seed: int = 0) -> Path:
    """The compute-heavy model: `layers` dense layers `width` wide (issue 5 and 8 benchmarks)."""
    return dense_onnx(path, [in_features] + [width] * layers, seed)


def small_mlp_onnx(path: Path) -> Path:
    """The small model of issue 8's REST goal: 64 -> 256 -> 10. Request overhead, not math, dominates."""
    return dense_onnx(path, [64, 256, 10])


def torch_mlp(width: int = 1024, layers: int = 3, seed: int = 0):
    """The issue-5 MLP as a torch module: `layers` Linear(width, width), ReLU between them, eval mode."""
    import torch

    torch.manual_seed(seed)
    modules = []
    for i in range(layers):
        modules.append(torch.nn.Linear(width, width))
        if i < layers - 1:
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules).eval()


def export_torch(net, features: int, path: Path) -> Path:
    """`net` as a torch.export program (model.pt2) whose input "input" has a dynamic batch dimension."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(net.eval(), (torch.zeros(2, features),), dynamic_shapes={"input": {0: batch}})
    torch.export.save(program, str(path))
    return path
