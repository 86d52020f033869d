"""What a model.py written against Triton 2.51's Python backend finds here, where gpuserve once differed (each
expectation read off a real tritonserver 2.51 with the same model): inputs a model may change in place, made
tensors held contiguous, `pb_utils.get_model_dir()`, `request.set_flags()`, and BLS calls to a sequence model
that carry their correlation ID and flags."""

import json
import textwrap

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve import triton_pb_utils as pb
from gpuserve.repository import DiskRepository

FACTS = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.at_initialize = pb_utils.get_model_dir()

    def execute(self, requests):
        answers = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            x *= 2  # in place, as models written for Triton may
            made = pb_utils.Tensor("T", np.ones((4, 4), np.float32)[:, 1])
            facts = {"in_initialize": self.at_initialize, "in_execute": pb_utils.get_model_dir(),
                     "contiguous": bool(made.as_numpy().flags.c_contiguous)}
            text = np.array([json.dumps(facts).encode()], dtype=object)
            answers.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x), pb_utils.Tensor("FACTS", text)]))
        return answers
"""

SEQUENCE = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.totals = {}

    def execute(self, requests):
        answers = []
        for r in requests:
            x, start, corrid = (pb_utils.get_input_tensor_by_name(r, n).as_numpy()
                                for n in ("INPUT", "START", "CORRID"))
            key = int(corrid.ravel()[0])
            if int(start.ravel()[0]):
                self.totals[key] = 0
            self.totals[key] = self.totals.get(key, 0) + int(x.ravel()[0])
            total = np.full(x.shape, self.totals[key], np.int32)
            answers.append(pb_utils.InferenceResponse([pb_utils.Tensor("TOTAL", total),
                                                       pb_utils.Tensor("START_SEEN", start.astype(np.int32))]))
        return answers
"""

BLS_SEQUENCE = """
import numpy as np
import triton_python_backend_utils as pb_utils

START = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START

class TritonPythonModel:
    def execute(self, requests):
        answers = []
        for r in requests:
            seen = []
            for i, (corr, flags) in enumerate([(7, START), (7, 0), (9, START), (7, 0)]):
                call = pb_utils.InferenceRequest(
                    model_name="sequence", requested_output_names=["TOTAL", "START_SEEN"],
                    inputs=[pb_utils.Tensor("INPUT", np.array([[i + 1]], np.int32))], correlation_id=corr, flags=flags)
                got = call.exec()
                seen.append(got.error().message() if got.has_error() else
                            [int(t.as_numpy().ravel()[0]) for t in got.output_tensors()])
            call = pb_utils.InferenceRequest(model_name="sequence", requested_output_names=["TOTAL"],
                                             inputs=[pb_utils.Tensor("INPUT", np.array([[5]], np.int32))],
                                             correlation_id=11)
            call.set_flags(START)
            got = call.exec()
            seen.append(got.error().message() if got.has_error() else
                        int(got.output_tensors()[0].as_numpy().ravel()[0]))
            text = np.array([repr(seen).encode()], dtype=object)
            answers.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", text)]))
        return answers
"""

CONFIGS = {
    "facts": ("facts", """
        max_batch_size: 4
        input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
        output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "FACTS" data_type: TYPE_STRING dims: [ 1 ] } ]
        """, FACTS),
    "sequence": ("sequence", """
        max_batch_size: 4
        sequence_batching {
          control_input [
            { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
            { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
          ]
        }
        input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
        output [ { name: "TOTAL" data_type: TYPE_INT32 dims: [ 1 ] },
                 { name: "START_SEEN" data_type: TYPE_INT32 dims: [ 1 ] } ]
        """, SEQUENCE),
    "bls_sequence": ("bls_sequence", """
        max_batch_size: 0
        input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
        output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]
        """, BLS_SEQUENCE),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    for name, (_, config, source) in CONFIGS.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n' + textwrap.dedent(config))
        (root / name / "1" / "model.py").write_text(source)
    with running_server(repository=DiskRepository(root).populate(ModelRepository())) as running:
        running.root = root
        yield running


def _facts_over_http(server, values=(1.5, -2.0)):
    x = np.array([values], np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "X", "shape": [1, len(values)], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(x)}}],
                         "outputs": [{"name": "Y"}, {"name": "FACTS"}]}).encode()
    answer = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/facts/infer", content=header + x,
                        headers={"Inference-Header-Content-Length": str(len(header))})
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    return outputs["Y"], json.loads(outputs["FACTS"][0])


@pytest.mark.parametrize("size", [2, 40_000])  # a small body's bytes; a large one read into the server's buffer
def test_inputs_read_in_place_may_still_be_changed_in_place(server, size):
    """Binary request bytes are read without a copy; a model's `x *= 2` on them works, as in Triton."""
    values = np.linspace(-2, 2, size, dtype=np.float32)
    doubled, _ = _facts_over_http(server, values.tolist())
    assert np.array_equal(doubled, values * 2)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    tensor = grpcclient.InferInput("X", [1, size], "FP32")
    tensor.set_data_from_numpy(values[None])
    assert np.array_equal(client.infer("facts", [tensor]).as_numpy("Y")[0], values * 2)


def test_model_dir_and_contiguous_tensors(server):
    _, facts = _facts_over_http(server)
    folder = str(server.root / "facts" / "1")
    assert facts == {"in_initialize": folder, "in_execute": folder, "contiguous": True}


def test_bls_calls_to_a_sequence_model_carry_correlation_id_and_flags(server):
    """Triton 2.51 answered this model `[[1, 1], [3, 0], [3, 1], [7, 0], 5]`: each sequence's running total,
    the start flag as the callee saw it, and set_flags() on a made request."""
    body = {"inputs": [{"name": "IN", "shape": [1], "datatype": "INT32", "data": [0]}]}
    answer = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/bls_sequence/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == ["[[1, 1], [3, 0], [3, 1], [7, 0], 5]"]


def test_set_flags_is_checked_as_the_constructor_checks_flags():
    request = pb.InferenceRequest(model_name="m", requested_output_names=[], inputs=[])
    request.set_flags(pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END)
    assert request.flags() == pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END
    with pytest.raises(TypeError):
        request.set_flags(-1)


def test_get_model_dir_outside_a_model_says_so():
    with pytest.raises(pb.TritonModelException):
        pb.get_model_dir()
