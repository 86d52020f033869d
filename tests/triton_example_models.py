"""The models tritonclient's Python examples ask for (`simple`, `simple_string`, `simple_sequence`,
`repeat_int32`, `densenet_onnx`, ...), built with the names, datatypes, shapes and sequence/decoupled
settings of Triton's example repository, so the examples' checks run without anything downloaded."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

CONTROL = {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END", "READY": "CONTROL_SEQUENCE_READY"}
LABELS = 1000


def onnx_file(path: Path, nodes, inputs, outputs, initializers=()):
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node(op, ins, outs, **(attrs[0] if attrs else {})) for op, ins, outs, *attrs in nodes],
        path.parent.parent.name, [helper.make_tensor_value_info(*spec) for spec in inputs],
        [helper.make_tensor_value_info(*spec) for spec in outputs], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def config(root: Path, name: str, head: str, inputs, outputs, tail: str = ""):
    def tensor(spec):
        tname, dtype, dims, *extra = spec
        return f'{{ name: "{tname}" data_type: {dtype} dims: [ {", ".join(map(str, dims))} ] {" ".join(extra)} }}'

    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "config.pbtxt").write_text(
        f'name: "{name}"\n{head}\ninput [ {", ".join(map(tensor, inputs))} ]\n'
        f'output [ {", ".join(map(tensor, outputs))} ]\n{tail}')


def python_model(root: Path, name: str, source: str):
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    (root / name / "1" / "model.py").write_text(textwrap.dedent(source))


def add_sub(root: Path, name: str, dtype: str, onnx_type: int):
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, computed in INT32 as Triton's models do."""
    from onnx import TensorProto

    config(root, name, 'platform: "onnxruntime_onnx"\nmax_batch_size: 8',
           [(f"INPUT{i}", dtype, [16]) for i in range(2)], [(f"OUTPUT{i}", dtype, [16]) for i in range(2)])
    to_int = ("Cast", {"to": TensorProto.INT32}) if onnx_type != TensorProto.INT32 else ("Identity", {})
    back = ("Cast", {"to": onnx_type}) if onnx_type != TensorProto.INT32 else ("Identity", {})
    onnx_file(root / name / "1" / "model.onnx",
              [(to_int[0], ["INPUT0"], ["a"], to_int[1]), (to_int[0], ["INPUT1"], ["b"], to_int[1]),
               ("Add", ["a", "b"], ["sum"]), ("Sub", ["a", "b"], ["diff"]),
               (back[0], ["sum"], ["OUTPUT0"], back[1]), (back[0], ["diff"], ["OUTPUT1"], back[1])],
              [(f"INPUT{i}", onnx_type, ["batch", 16]) for i in range(2)],
              [(f"OUTPUT{i}", onnx_type, ["batch", 16]) for i in range(2)])


def sequence_batching(controls, corrid=None, idle_us=None):
    entries = [f'{{ name: "{c}" control [ {{ kind: {CONTROL[c]} int32_false_true: [ 0, 1 ] }} ] }}' for c in controls]
    if corrid:
        entries.append(f'{{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: {corrid} }} ] }}')
    idle = f"max_sequence_idle_microseconds: {idle_us}\n" if idle_us else ""
    return f"sequence_batching {{\n{idle}control_input [ {', '.join(entries)} ]\n}}\n"


def sequences(root: Path):
    """simple_sequence: READY * (INPUT + START); simple_dyna_sequence adds END * CORRID (Triton's example
    models, stateless); simple_string_dyna_sequence sums each sequence's inputs, keyed on a string CORRID."""
    from onnx import TensorProto

    io = ([("INPUT", "TYPE_INT32", [1])], [("OUTPUT", "TYPE_INT32", [1])])
    int32 = TensorProto.INT32
    config(root, "simple_sequence", 'platform: "onnxruntime_onnx"\nmax_batch_size: 8', *io,
           sequence_batching(["START", "READY"]) + "instance_group [ { kind: KIND_CPU } ]\n")
    onnx_file(root / "simple_sequence" / "1" / "model.onnx",
              [("Add", ["INPUT", "START"], ["sum"]), ("Mul", ["READY", "sum"], ["OUTPUT"])],
              [(n, int32, ["batch", 1]) for n in ("INPUT", "START", "READY")], [("OUTPUT", int32, ["batch", 1])])
    dyna = sequence_batching(["START", "END", "READY"], "TYPE_UINT64", 10_000_000)
    config(root, "simple_dyna_sequence", 'platform: "onnxruntime_onnx"\nmax_batch_size: 8', *io,
           dyna + "instance_group [ { count: 2 kind: KIND_CPU } ]\n")
    onnx_file(root / "simple_dyna_sequence" / "1" / "model.onnx",
              [("Cast", ["CORRID"], ["id"], {"to": int32}), ("Mul", ["END", "id"], ["tail"]),
               ("Add", ["INPUT", "START"], ["sum"]), ("Add", ["sum", "tail"], ["all"]),
               ("Mul", ["READY", "all"], ["OUTPUT"])],
              [(n, int32, ["batch", 1]) for n in ("INPUT", "START", "END", "READY")]
              + [("CORRID", TensorProto.UINT64, ["batch", 1])], [("OUTPUT", int32, ["batch", 1])])
    config(root, "simple_string_dyna_sequence", 'backend: "python"\nmax_batch_size: 8', *io,
           dyna.replace("TYPE_UINT64", "TYPE_STRING") + "instance_group [ { count: 2 kind: KIND_CPU } ]\n")
    python_model(root, "simple_string_dyna_sequence", """
        import numpy as np
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def initialize(self, args):
                self.totals = {}

            def execute(self, requests):
                responses = []
                for request in requests:
                    get = lambda name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                    value, corrid = int(get("INPUT").ravel()[0]), get("CORRID").ravel()[0]
                    total = value + (0 if get("START").ravel()[0] else self.totals.get(corrid, 0))
                    self.totals[corrid] = total
                    if get("END").ravel()[0]:
                        del self.totals[corrid]
                        total += int(corrid)
                    out = np.full(get("INPUT").shape, total * int(get("READY").ravel()[0]), np.int32)
                    responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", out)]))
                return responses
        """)


IDENTITY = """
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            return [pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
                for r in requests]
    """

REPEAT = """
    import time

    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        '''Triton's repeat backend: one response per IN element after its DELAY (ms), the final flag after WAIT.'''

        def execute(self, requests):
            for request in requests:
                get = lambda name: pb_utils.get_input_tensor_by_name(request, name).as_numpy().ravel()
                sender = request.get_response_sender()
                delays = get("DELAY")
                for index, value in enumerate(get("IN")):
                    time.sleep(float(delays[index]) / 1000 if index < len(delays) else 0)
                    sender.send(pb_utils.InferenceResponse([
                        pb_utils.Tensor("OUT", np.array([value], np.int32)),
                        pb_utils.Tensor("IDX", np.array([index], np.uint32))]))
                time.sleep(float(get("WAIT")[0]) / 1000)
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
    """


def classifier(root: Path):
    """densenet_onnx as image_client expects it: CHW FP32 in (reshaped to NCHW), 1000 scores out with labels;
    each class scores the image's mean colour against a fixed random direction."""
    from onnx import TensorProto, numpy_helper

    config(root, "densenet_onnx", 'platform: "onnxruntime_onnx"\nmax_batch_size: 0',
           [("data_0", "TYPE_FP32", [3, 224, 224], "format: FORMAT_NCHW reshape { shape: [ 1, 3, 224, 224 ] }")],
           [("fc6_1", "TYPE_FP32", [LABELS], 'reshape { shape: [ 1, 1000, 1, 1 ] } '
             'label_filename: "densenet_labels.txt"')])
    (root / "densenet_onnx" / "densenet_labels.txt").write_text("".join(f"CLASS_{i}\n" for i in range(LABELS)))
    weight = np.random.default_rng(0).normal(size=(LABELS, 3, 1, 1)).astype(np.float32)
    onnx_file(root / "densenet_onnx" / "1" / "model.onnx",
              [("ReduceMean", ["data_0"], ["mean"], {"axes": [2, 3], "keepdims": 1}),
               ("Conv", ["mean", "W"], ["fc6_1"])],
              [("data_0", TensorProto.FLOAT, [1, 3, 224, 224])], [("fc6_1", TensorProto.FLOAT, [1, LABELS, 1, 1])],
              [numpy_helper.from_array(weight, "W")])


PREPROCESS = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        '''Stands in for the DALI image decoder: each file's bytes, cycled to 3x16x16, scaled as INCEPTION.'''

        def execute(self, requests):
            out = []
            for request in requests:
                files = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
                images = [np.resize(np.frombuffer(f[0], np.uint8), (3, 16, 16)) / 127.5 - 1 for f in files]
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("IMAGE", np.stack(images).astype(np.float32))]))
            return out
    """


def ensemble_classifier(root: Path):
    """preprocess_inception_ensemble as ensemble_image_client expects it: encoded files in, classes out."""
    from onnx import TensorProto, numpy_helper

    batched = "max_batch_size: 8"
    config(root, "image_preprocess", f'backend: "python"\n{batched}', [("INPUT", "TYPE_STRING", [1])],
           [("IMAGE", "TYPE_FP32", [3, 16, 16])])
    python_model(root, "image_preprocess", PREPROCESS)
    config(root, "inception_onnx", f'platform: "onnxruntime_onnx"\n{batched}', [("data", "TYPE_FP32", [3, 16, 16])],
           [("scores", "TYPE_FP32", [LABELS])])
    weight = np.random.default_rng(0).normal(size=(LABELS, 3, 1, 1)).astype(np.float32)
    onnx_file(root / "inception_onnx" / "1" / "model.onnx",
              [("ReduceMean", ["data"], ["mean"], {"axes": [2, 3], "keepdims": 1}), ("Conv", ["mean", "W"], ["c"]),
               ("Flatten", ["c"], ["scores"])],
              [("data", TensorProto.FLOAT, ["batch", 3, 16, 16])], [("scores", TensorProto.FLOAT, ["batch", LABELS])],
              [numpy_helper.from_array(weight, "W")])
    steps = ('step [ { model_name: "image_preprocess" model_version: -1 input_map { key: "INPUT" value: "INPUT" } '
             'output_map { key: "IMAGE" value: "image" } }, { model_name: "inception_onnx" model_version: -1 '
             'input_map { key: "data" value: "image" } output_map { key: "scores" value: "OUTPUT" } } ]')
    name = "preprocess_inception_ensemble"
    config(root, name, f'platform: "ensemble"\n{batched}', [("INPUT", "TYPE_STRING", [1])],
           [("OUTPUT", "TYPE_FP32", [LABELS], 'label_filename: "labels.txt"')], f"ensemble_scheduling {{ {steps} }}\n")
    (root / name / "1").mkdir()
    (root / name / "labels.txt").write_text("".join(f"CLASS_{i}\n" for i in range(LABELS)))


def build_repository(root: Path) -> Path:
    from onnx import TensorProto

    add_sub(root, "simple", "TYPE_INT32", TensorProto.INT32)
    add_sub(root, "simple_int8", "TYPE_INT8", TensorProto.INT8)
    add_sub(root, "simple_string", "TYPE_STRING", TensorProto.STRING)
    sequences(root)
    config(root, "simple_identity", 'backend: "python"\nmax_batch_size: 8',
           [("INPUT0", "TYPE_STRING", [-1])], [("OUTPUT0", "TYPE_STRING", [-1])])
    python_model(root, "simple_identity", IDENTITY)
    config(root, "custom_identity_int32", 'backend: "python"\nmax_batch_size: 1024',
           [("INPUT0", "TYPE_INT32", [-1])], [("OUTPUT0", "TYPE_INT32", [-1])])
    python_model(root, "custom_identity_int32", IDENTITY)
    config(root, "repeat_int32", 'backend: "python"\nmax_batch_size: 0',
           [("IN", "TYPE_INT32", [-1]), ("DELAY", "TYPE_UINT32", [-1]), ("WAIT", "TYPE_UINT32", [1])],
           [("OUT", "TYPE_INT32", [1]), ("IDX", "TYPE_UINT32", [1])],
           "model_transaction_policy { decoupled: true }\n")
    python_model(root, "repeat_int32", REPEAT)
    classifier(root)
    ensemble_classifier(root)
    return root
