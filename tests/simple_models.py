"""Two small ONNX models in a Triton repository, max_batch_size 8 with dynamic batching: `simple` (INPUT0 FP32
[-1, 4] -> OUTPUT0 = 2 * INPUT0, OUTPUT1 = INPUT0 + 1) and `strings` (TEXT BYTES [-1, 1], COUNT INT32 [-1, 1] ->
TEXT_OUT = TEXT, COUNT_OUT = COUNT + 1). benchmarks/peers/conformance.py serves them beside Triton's stand-ins
of the same names, and tests/test_perf_analyzer.py profiles them: one definition for both."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from triton_example_models import onnx_file

MAX_BATCH = 8

SIMPLE_CONFIG = """name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: %d
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { }
""" % MAX_BATCH

STRINGS_CONFIG = """name: "strings"
platform: "onnxruntime_onnx"
max_batch_size: %d
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }, { name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "TEXT_OUT" data_type: TYPE_STRING dims: [ 1 ] },
         { name: "COUNT_OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
dynamic_batching { }
""" % MAX_BATCH


def build_simple_models(root: Path) -> None:
    from onnx import TensorProto, numpy_helper

    fp, text, count = TensorProto.FLOAT, TensorProto.STRING, TensorProto.INT32
    onnx_file(root / "simple" / "1" / "model.onnx",
              [("Mul", ["INPUT0", "two"], ["OUTPUT0"]), ("Add", ["INPUT0", "one"], ["OUTPUT1"])],
              [("INPUT0", fp, ["batch", 4])], [("OUTPUT0", fp, ["batch", 4]), ("OUTPUT1", fp, ["batch", 4])],
              [numpy_helper.from_array(np.array(2, np.float32), "two"),
               numpy_helper.from_array(np.array(1, np.float32), "one")])
    (root / "simple" / "config.pbtxt").write_text(SIMPLE_CONFIG)
    onnx_file(root / "strings" / "1" / "model.onnx",
              [("Identity", ["TEXT"], ["TEXT_OUT"]), ("Add", ["COUNT", "one"], ["COUNT_OUT"])],
              [("TEXT", text, ["batch", 1]), ("COUNT", count, ["batch", 1])],
              [("TEXT_OUT", text, ["batch", 1]), ("COUNT_OUT", count, ["batch", 1])],
              [numpy_helper.from_array(np.array(1, np.int32), "one")])
    (root / "strings" / "config.pbtxt").write_text(STRINGS_CONFIG)
