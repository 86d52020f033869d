"""Writes configs/demo/iris-mlp/model.onnx: a 4-16-3 MLP with softmax, trained on the iris data that
ships with scikit-learn (fixed seed), so the README's setosa sample comes back as class 0.

Run once; the file is committed (about 1 KB) so the demo serves with no network and no onnx package.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def trained_weights():
    from sklearn.datasets import load_iris
    from sklearn.neural_network import MLPClassifier

    x, y = load_iris(return_X_y=True)
    net = MLPClassifier(hidden_layer_sizes=(16,), activation="relu", solver="lbfgs", max_iter=2000,
                        random_state=7).fit(x, y)
    print(f"training accuracy {net.score(x, y):.3f}")
    w1, w2 = (w.astype(np.float32) for w in net.coefs_)
    b1, b2 = (b.astype(np.float32) for b in net.intercepts_)
    return w1, b1, w2, b2


def build(path: Path) -> None:
    w1, b1, w2, b2 = trained_weights()
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "iris_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "configs/demo/iris-mlp/model.onnx"))
