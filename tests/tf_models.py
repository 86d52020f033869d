"""Small TensorFlow models the TensorFlow tests build on the CPU (nothing downloaded): SavedModels written with
tf.saved_model.save from tf.Modules with fixed input signatures, and a frozen GraphDef. Each builder returns
what the tests compare against: the tf.Module whose `serve` TensorFlow calls directly (a tf.function bound to
a module holds it weakly: keep the module), or the GraphDef's concrete function."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _tf():
    import tensorflow as tf

    return tf


def dense_savedmodel(path: Path, features: int = 4, hidden: int = 8, out: int = 3, seed: int = 0):
    """A 2-layer dense model (relu, then softmax), input `x` [batch, features] FP32, output `probs`
    [batch, out]; returns the SavedModel's own signature function (the reference)."""
    tf = _tf()
    rng = np.random.default_rng(seed)

    class Dense(tf.Module):
        def __init__(self):
            super().__init__()
            self.w1 = tf.Variable(rng.normal(size=(features, hidden)).astype(np.float32))
            self.b1 = tf.Variable(rng.normal(size=(hidden,)).astype(np.float32))
            self.w2 = tf.Variable(rng.normal(size=(hidden, out)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, features], tf.float32, name="x")])
        def serve(self, x):
            return {"probs": tf.nn.softmax(tf.nn.relu(x @ self.w1 + self.b1) @ self.w2)}

    module = Dense()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return module


def two_io_savedmodel(path: Path):
    """Two inputs `a` FP32 [batch, 4] and `b` INT64 [batch, 4], two outputs `sum` FP32 and `prod` INT64, and a
    second signature `double` (a -> twice_a) for TF_SIGNATURE_DEF."""
    tf = _tf()

    class TwoIO(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, 4], tf.int64)])
        def serve(self, a, b):
            return {"sum": a + tf.cast(b, tf.float32), "prod": b * 3}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def double(self, a):
            return {"twice_a": a * 2.0}

    module = TwoIO()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, "double": module.double})
    return module


def strings_savedmodel(path: Path):
    """Strings in and out: `text` BYTES [batch] -> `upper` BYTES [batch] and `length` INT32 [batch]."""
    tf = _tf()

    class Strings(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            return {"upper": tf.strings.upper(text), "length": tf.strings.length(text)}

    module = Strings()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return module


def dynamic_savedmodel(path: Path):
    """Every dimension dynamic: `x` FP32 [batch, -1] -> `row_sum` [batch] and `scaled` [batch, -1]; plus a BF16
    and a FP16 output of it."""
    tf = _tf()

    class Dynamic(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
        def serve(self, x):
            return {"row_sum": tf.reduce_sum(x, axis=1), "scaled": x * 0.5, "as_bf16": tf.cast(x, tf.bfloat16),
                    "as_fp16": tf.cast(x, tf.float16)}

    module = Dynamic()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return module


def frozen_graphdef(path: Path, features: int = 4, out: int = 3, seed: int = 1):
    """A frozen GraphDef (variables folded into constants) of relu(x @ W + b): placeholder `x` [batch, features]
    FP32, outputs `y` [batch, out] and `z` = 2x [batch, features]; returns the concrete function it came from."""
    tf = _tf()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    rng = np.random.default_rng(seed)
    weight = tf.Variable(rng.normal(size=(features, out)).astype(np.float32))
    bias = tf.Variable(rng.normal(size=(out,)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, features], tf.float32, name="x")])
    def graph(x):
        return {"y": tf.identity(tf.nn.relu(x @ weight + bias), name="y"), "z": tf.identity(x * 2.0, name="z")}

    concrete = graph.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    Path(path).write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return concrete


def outputs_of(function, **inputs) -> dict:
    """TensorFlow's own outputs of a function (a module's `serve`, a concrete function) for NumPy inputs."""
    tf = _tf()
    result = function(**{name: tf.constant(value) for name, value in inputs.items()})
    return {name: tensor.numpy() for name, tensor in result.items()}


def scaled_savedmodel(path: Path, factor: float):
    """`x` FP32 [batch, 4] -> `y` = factor * x: versions of one model that answer apart."""
    tf = _tf()

    class Scaled(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            return {"y": x * factor}

    module = Scaled()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return module
