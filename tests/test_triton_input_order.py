"""Triton walks a request's inputs in the order of a libstdc++ unordered_map, not the order sent: its refusals
name the first bad input in that walk and list the inputs in it, and the Python backend hands a model
`request.inputs()` in the order of a second map filled from the first. gpuserve/triton_input_order.py
rebuilds that order; the expected orders and texts here are what Triton 2.51 answered (tritonclient.http,
config.pbtxt models of the Python backend), and gpuserve must answer them for Python and ONNX models alike."""

import json
import random
import shutil
import string
import subprocess
import textwrap

import httpx
import numpy as np
import pytest

from conftest import one_op_onnx, running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.triton_input_order import backend_order, checked_order, map_order

# request order -> the order a Python model's request.inputs() listed them in on Triton 2.51
BACKEND_ORDERS = [
    ("A B", "A B"), ("B A", "B A"), ("A B C", "A C B"), ("A B C D", "A C D B"), ("D B C A", "D C A B"),
    ("A B C D E", "A C D B E"), ("attention_mask input_ids F E D C B A", "attention_mask input_ids F E D C A B"),
    ("attention_mask E input_ids D", "attention_mask input_ids E D"),
    ("input_ids F B attention_mask E", "input_ids attention_mask F B E"),
    ("F attention_mask A C B E D", "F attention_mask A C D B E"),
    ("B D F input_ids A attention_mask E C", "B D A C F input_ids attention_mask E"),
    (" ".join(f"in{i}" for i in range(16)), "in12 in15 in11 in14 in5 in1 in13 in2 in3 in8 in0 in6 in7 in4 in10 in9"),
    ("in8 in11 in5 in12 in14 in10 in15 in0 in7 in6 in1 in9 in13 in4 in3 in2",
     "in9 in1 in3 in8 in11 in13 in2 in5 in14 in12 in15 in4 in10 in0 in7 in6"),
]


@pytest.mark.parametrize("sent, seen", BACKEND_ORDERS)
def test_backend_order_is_tritons(sent, seen):
    assert backend_order(tuple(sent.split())) == tuple(seen.split())


def test_checked_order_is_the_map_walk():
    # Triton 2.51 named B first of four wrong inputs A..D, sent in either order; two inputs reverse
    assert checked_order(["A", "B", "C", "D"]) == ("B", "D", "C", "A")
    assert checked_order(["D", "B", "C", "A"])[0] == "B"
    assert checked_order(["A", "B"]) == ("B", "A")


def test_map_order_matches_libstdcxx(tmp_path):
    """The rebuilt map against a real std::unordered_map, across bucket growth (13, 29, 59, ... buckets)."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ here to build the libstdc++ reference")
    source = tmp_path / "walk.cc"
    source.write_text(textwrap.dedent("""\
        #include <iostream>
        #include <sstream>
        #include <string>
        #include <unordered_map>
        int main() {
          std::string line;
          while (std::getline(std::cin, line)) {
            std::unordered_map<std::string, int> map;
            std::istringstream words(line);
            for (std::string word; words >> word;) map.emplace(word, 0);
            const char* gap = "";
            for (const auto& entry : map) { std::cout << gap << entry.first; gap = " "; }
            std::cout << "\\n";
          }
        }
        """))
    subprocess.run([compiler, "-O1", "-o", str(tmp_path / "walk"), str(source)], check=True)
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "_.:-"
    cases = []
    for _ in range(400):
        names = set()
        count = rng.choice([3, 4, 7, 12, 13, 14, 20, 28, 29, 30, 60, 130])
        while len(names) < count:
            names.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))))
        cases.append(rng.sample(sorted(names), count))
    cases.append(["ü", "ñame", "x" * 64, "INPUT0", "INPUT1", "INPUT2"])
    walked = subprocess.run([str(tmp_path / "walk")], input="".join(" ".join(c) + "\n" for c in cases),
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(walked) == len(cases)
    for names, line in zip(cases, walked):
        assert map_order(tuple(names)) == tuple(line.split()), names


ORDER_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array(
            [",".join(t.name() for t in r.inputs()).encode()], dtype=object))]) for r in requests]
"""

FIRST_INPUT_MODEL = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", r.inputs()[0].as_numpy())]) for r in requests]
"""


OUTPUTS_MODEL = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        answers = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            names = ["M", "out_logits", "Z", "B", "A"]
            answers.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, x + i) for i, n in enumerate(names)]))
        return answers
"""

BLS_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        answers = []
        for r in requests:
            call = pb_utils.InferenceRequest(model_name="outs", requested_output_names=["A", "A", "B"],
                                             inputs=[pb_utils.get_input_tensor_by_name(r, "IN")])
            names = call.requested_output_names()
            got = call.exec()
            text = f"{type(names).__name__}:{len(names)}:" + ",".join(t.name() for t in got.output_tensors())
            out = pb_utils.Tensor("OUT", np.array([text.encode()], dtype=object))
            answers.append(pb_utils.InferenceResponse([out]))
        return answers
"""

ENSEMBLE = """name: "ens"
platform: "ensemble"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "EZ" data_type: TYPE_FP32 dims: [ 1 ] }, { name: "EA" data_type: TYPE_FP32 dims: [ 1 ] },
         { name: "EM" data_type: TYPE_FP32 dims: [ 1 ] }, { name: "EB" data_type: TYPE_FP32 dims: [ 1 ] } ]
ensemble_scheduling { step [ { model_name: "outs" model_version: -1 input_map { key: "IN" value: "IN" }
  output_map [ { key: "Z" value: "EZ" }, { key: "A" value: "EA" }, { key: "M" value: "EM" }, { key: "B" value: "EB" } ]
} ] }
"""


def _inputs(names, datatype="TYPE_FP32", dims="[ 4 ]", optional=False):
    flag = " optional: true" if optional else ""
    return ", ".join(f'{{ name: "{n}" data_type: {datatype} dims: {dims}{flag} }}' for n in names)


def _config(name, first_line, max_batch_size, inputs, out_type="TYPE_FP32", out_dims="[ 4 ]"):
    return (f'name: "{name}"\n{first_line}\nmax_batch_size: {max_batch_size}\ninput [ {inputs} ]\n'
            f'output [ {{ name: "OUT" data_type: {out_type} dims: {out_dims} }} ]\n')


def _two_outputs_onnx(path):
    """IN -> `probs` (IN) and `label` (-IN), in that order in the model."""
    import onnx
    from onnx import TensorProto, helper

    tensor = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 1])  # noqa: E731
    nodes = [helper.make_node("Identity", ["IN"], ["probs"]), helper.make_node("Neg", ["IN"], ["label"])]
    graph = helper.make_graph(nodes, "two", [tensor("IN")], [tensor("probs"), tensor("label")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("order")
    abcd = ["A", "B", "C", "D"]
    models = {
        "order": (_config("order", 'backend: "python"', 0,
                          _inputs(["A", "B", "C", "D", "E", "F", "input_ids", "attention_mask"], dims="[ 1 ]",
                                  optional=True), "TYPE_STRING", "[ 1 ]"), ORDER_MODEL),
        "four": (_config("four", 'backend: "python"', 8, _inputs(abcd)), FIRST_INPUT_MODEL),
        "four0": (_config("four0", 'backend: "python"', 0, _inputs(abcd)), FIRST_INPUT_MODEL),
        "ox4": (_config("ox4", 'platform: "onnxruntime_onnx"', 8, _inputs(abcd)), None),
        "ox40": (_config("ox40", 'platform: "onnxruntime_onnx"', 0, _inputs(abcd, dims="[ -1, 4 ]"),
                         out_dims="[ -1, 4 ]"), None),
        "cfgorder": (_config("cfgorder", 'backend: "python"', 8, _inputs(["Z", "A", "M", "Q"])), FIRST_INPUT_MODEL),
        "outs": (_config("outs", 'backend: "python"', 0, _inputs(["IN"], dims="[ 1 ]"), out_dims="[ 1 ]").replace(
            'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]',
            "output [ " + _inputs(["Z", "A", "M", "B", "out_logits"], dims="[ 1 ]") + " ]"), OUTPUTS_MODEL),
        "ens": (ENSEMBLE, ""),
        "ox2": ('name: "ox2"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n', "two outputs"),
        "blsdup": (_config("blsdup", 'backend: "python"', 0, _inputs(["IN"], dims="[ 1 ]"), "TYPE_STRING", "[ 1 ]"),
                   BLS_MODEL),
        "strb": (_config("strb", 'backend: "python"', 8, _inputs(["S", "T"], "TYPE_STRING", "[ 2 ]"),
                         "TYPE_STRING", "[ 2 ]"), FIRST_INPUT_MODEL),
    }
    for name, (config, source) in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
        if source is None:
            one_op_onnx(root / name / "1" / "model.onnx", "Sum", abcd, "OUT")
        elif source == "two outputs":
            _two_outputs_onnx(root / name / "1" / "model.onnx")
        elif source:
            (root / name / "1" / "model.py").write_text(source)
    with running_server(repository=DiskRepository(root).populate(ModelRepository())) as running:
        yield running


def _post(server, model, tensors, request_id="rq7"):
    body = {"id": request_id, "inputs": [
        {"name": name, "shape": list(np.shape(data)), "datatype": datatype,
         "data": np.asarray(data).reshape(-1).tolist()} for name, data, datatype in tensors]}
    return httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/{model}/infer", content=json.dumps(body))


@pytest.mark.parametrize("sent, seen", [(s, v) for s, v in BACKEND_ORDERS if not s.startswith("in")])
def test_a_python_model_sees_tritons_input_order(server, sent, seen):
    answer = _post(server, "order", [(name, [0.0], "FP32") for name in sent.split()])
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [",".join(seen.split())]


def _rows(n, width=4):
    return np.zeros((n, width), np.float32)


P = "[request id: rq7] "
# (model kinds, request as (name, array) in the order sent, Triton 2.51's words, <model> for the model)
REFUSALS = [
    (("four", "ox4"), [("A", _rows(2)), ("B", _rows(3)), ("C", _rows(2)), ("D", _rows(2))],
     P + "input 'D' batch size does not match other inputs for '<model>'"),
    (("four", "ox4"), [("A", _rows(3)), ("B", _rows(2)), ("C", _rows(2)), ("D", _rows(2))],
     P + "input 'A' batch size does not match other inputs for '<model>'"),
    (("four", "ox4"), [("A", _rows(2)), ("B", _rows(0)), ("C", _rows(2)), ("D", _rows(2))],  # B first: no size
     P + "input byte size mismatch for input 'B' for model '<model>'. Expected 32, got 0"),
    (("four", "ox4"), [("A", _rows(0)), ("B", _rows(0)), ("C", _rows(0)), ("D", _rows(0))],
     P + "input byte size mismatch for input 'B' for model '<model>'. Expected 16, got 0"),
    (("four", "ox4"), [("A", _rows(2)), ("B", _rows(2)), ("C", _rows(2)), ("D", _rows(0))],
     P + "input 'D' batch size does not match other inputs for '<model>'"),
    (("four", "ox4"), [("A", np.float32(1)), ("B", np.float32(1)), ("C", np.float32(1)), ("D", np.float32(1))],
     P + "input 'B' has no shape but model requires batch dimension for '<model>'"),
    (("four", "ox4"), [("A", _rows(9).astype(np.float64)), ("B", _rows(9)), ("C", _rows(9)), ("D", _rows(9))],
     P + "inference request batch-size must be <= 8 for '<model>'"),
    (("four", "ox4"), [("A", _rows(2)), ("B", _rows(2))],
     P + "expected 4 inputs but got 2 inputs for model '<model>'. Got input(s) ['B','A'], but missing required "
     "input(s) ['C','D']. Please provide all required input(s)."),
    (("four", "ox4"), [("D", _rows(2)), ("C", _rows(2)), ("A", _rows(2))],
     P + "expected 4 inputs but got 3 inputs for model '<model>'. Got input(s) ['A','C','D'], but missing required "
     "input(s) ['B']. Please provide all required input(s)."),
    (("four", "ox4"), [("A", _rows(2)), ("B", _rows(2)), ("C", _rows(2)), ("D", _rows(2)), ("X", _rows(2))],
     P + "expected 4 inputs but got 5 inputs for model '<model>'. Got input(s) ['X','B','D','C','A'], but missing "
     "required input(s) ]. Please provide all required input(s)."),
    (("four", "ox4"), [("X", _rows(2)), ("Y", _rows(2)), ("A", _rows(2)), ("B", _rows(2))],
     "unexpected inference input 'Y' for model '<model>'"),
    (("four0",), [("A", np.zeros(3, np.float32)), ("B", np.zeros(4, np.float32)), ("C", np.zeros(5, np.float32)),
                  ("D", np.zeros(4, np.float32))],
     P + "unexpected shape for input 'C' for model '<model>'. Expected [4], got [5]. "),
    (("ox40",), [("A", _rows(1, 3)), ("B", _rows(1)), ("C", _rows(1, 5)), ("D", _rows(1))],
     P + "unexpected shape for input 'C' for model '<model>'. Expected [-1,4], got [1,5]. "),
    (("cfgorder",), [("A", _rows(2))],
     P + "expected 4 inputs but got 1 inputs for model '<model>'. Got input(s) ['A'], but missing required input(s) "
     "['Z','M','Q']. Please provide all required input(s)."),
]


@pytest.mark.parametrize("kinds, tensors, words", REFUSALS)
def test_refusals_follow_tritons_walk(server, kinds, tensors, words):
    for model in kinds:
        datatype = lambda a: "FP64" if np.asarray(a).dtype == np.float64 else "FP32"  # noqa: E731
        answer = _post(server, model, [(name, array, datatype(array)) for name, array in tensors])
        assert answer.status_code == 400, (model, answer.text)
        assert answer.json()["error"] == words.replace("<model>", model), model


def test_strings_of_zero_rows_are_counted_as_triton_counts_them(server):
    empty = np.zeros((0, 2), object)
    answer = _post(server, "strb", [("S", empty, "BYTES"), ("T", empty, "BYTES")])
    assert answer.status_code == 400
    assert answer.json()["error"] == P + "expected 2 string elements for inference input 'T' for model 'strb', got 0"


def test_a_good_request_of_many_inputs_is_answered(server):
    value = {"A": 1, "B": 2, "C": 3, "D": 4}
    tensors = [(name, np.full((2, 4), value[name], np.float32), "FP32") for name in "DBCA"]
    for model, expected in (("four", 4), ("ox4", 10)):  # Python: its first input (Triton: D C A B); ONNX: the sum
        answer = _post(server, model, tensors)
        assert answer.status_code == 200, answer.text
        assert (np.array(answer.json()["outputs"][0]["data"]).reshape(2, 4) == expected).all()


# (model, outputs asked for, the order Triton 2.51 answered them in, HTTP and gRPC alike)
OUTPUT_ORDERS = [
    ("outs", None, "M out_logits Z B A"), ("outs", "B Z A", "Z B A"),
    ("outs", "A B M Z out_logits", "M out_logits Z B A"), ("outs", "out_logits M", "M out_logits"),
    ("ens", None, "EB EM EA EZ"), ("ens", "EB EZ EA", "EB EA EZ"), ("ens", "EA EB EM EZ", "EB EM EA EZ"),
    # read off Triton's ONNX Runtime backend (not run here: the Triton 2.51 of this machine has only the
    # Python backend): it walks a model's outputs in a std::map, so by name
    ("ox2", None, "label probs"), ("ox2", "probs label", "label probs"), ("ox2", "probs", "probs"),
]


@pytest.mark.parametrize("model, asked, answered", OUTPUT_ORDERS)
def test_outputs_come_in_tritons_order(server, model, asked, answered):
    """A Python model's outputs as execute returned them, an ensemble's in its output map's walk, an ONNX
    model's by name; not in the order the client asked for them (clients reading outputs[0] get Triton's
    first)."""
    body = {"inputs": [{"name": "IN", "shape": [1, 1] if model == "ox2" else [1], "datatype": "FP32", "data": [0]}]}
    if asked:
        body["outputs"] = [{"name": name} for name in asked.split()]
    answer = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/{model}/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert [o["name"] for o in answer.json()["outputs"]] == answered.split()


def test_requested_output_names_is_a_set_as_in_triton(server):
    """Triton's stub hands `requested_output_names()` as a Python set: a BLS request naming an output twice
    asks for it once, and gets its outputs in the called model's order (Triton 2.51: `set:2:B,A`)."""
    body = {"inputs": [{"name": "IN", "shape": [1], "datatype": "FP32", "data": [0]}]}
    answer = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/blsdup/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == ["set:2:B,A"]


def test_a_torchscript_model_answers_its_outputs_by_name(tmp_path):
    """Triton's PyTorch backend walks a model's outputs in a std::map too (read from its source)."""
    torch = pytest.importorskip("torch")

    class Two(torch.nn.Module):
        def forward(self, x):
            return x, -x

    (tmp_path / "pt2out" / "1").mkdir(parents=True)
    torch.jit.script(Two()).save(str(tmp_path / "pt2out" / "1" / "model.pt"))
    (tmp_path / "pt2out" / "config.pbtxt").write_text(
        'platform: "pytorch_libtorch"\nmax_batch_size: 0\n'
        'input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]\n'
        'output [ { name: "probs" data_type: TYPE_FP32 dims: [ 2 ] },\n'
        '         { name: "label" data_type: TYPE_FP32 dims: [ 2 ] } ]\n')
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        body = {"inputs": [{"name": "INPUT__0", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}
        for asked in (None, ["probs", "label"]):
            sent = dict(body, outputs=[{"name": n} for n in asked]) if asked else body
            answer = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/pt2out/infer", json=sent)
            assert answer.status_code == 200, answer.text
            outputs = answer.json()["outputs"]
            assert [(o["name"], o["data"]) for o in outputs] == [("label", [-1.0, -2.0]), ("probs", [1.0, 2.0])]


def test_a_sequence_models_controls_join_its_inputs_in_tritons_order(tmp_path):
    """The sequence batcher's controls are added to the backend's map after the inputs: Triton 2.51 listed
    this model's request.inputs() as below for inputs sent A B C and C A B."""
    (tmp_path / "seqord" / "1").mkdir(parents=True)
    controls = "".join(f'{{ name: "{name}" control [ {{ kind: CONTROL_SEQUENCE_{name} '
                       'int32_false_true: [ 0, 1 ] } ] },' for name in ("START", "END", "READY"))
    (tmp_path / "seqord" / "config.pbtxt").write_text(
        'name: "seqord"\nbackend: "python"\nmax_batch_size: 4\nsequence_batching { control_input [ ' + controls +
        '{ name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] } ] }\n'
        f'input [ {_inputs(["A", "B", "C"], "TYPE_INT32", "[ 1 ]")} ]\n'
        'output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]\n')
    (tmp_path / "seqord" / "1" / "model.py").write_text(ORDER_MODEL)
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        for sent, seen in (("A B C", "CORRID,END,START,READY,A,C,B"), ("C A B", "CORRID,END,START,READY,C,A,B")):
            body = {"parameters": {"sequence_id": 5, "sequence_start": True},
                    "inputs": [{"name": n, "shape": [1, 1], "datatype": "INT32", "data": [1]} for n in sent.split()]}
            answer = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/seqord/infer", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["data"] == [seen]
