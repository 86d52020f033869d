"""A request refused before any backend runs it, in Triton core's words, for config.pbtxt models of every
kind (ONNX Runtime and Python here): the request's id first, lists without spaces, a shape refusal's note
for batching models. The expected texts are what Triton 2.51 answered these requests (HTTP and gRPC)."""

import json
import textwrap

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import one_op_onnx, running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.triton_refusals import SHAPE_NOTE

PYTHON_MODEL = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]) for r in requests]
"""


def _config(name, first_line, max_batch_size=8):
    return textwrap.dedent(f"""\
        name: "{name}"
        {first_line}
        max_batch_size: {max_batch_size}
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        """)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("refusals")
    for name, first_line, batch in (("ox", 'platform: "onnxruntime_onnx"', 8), ("py", 'backend: "python"', 8),
                                    ("py0", 'backend: "python"', 0)):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(_config(name, first_line, batch))
        if name == "ox":
            one_op_onnx(root / name / "1" / "model.onnx", "Identity", ["INPUT0"], "OUTPUT0")
        else:
            (root / name / "1" / "model.py").write_text(PYTHON_MODEL)
    with running_server(repository=DiskRepository(root).populate(ModelRepository())) as running:
        yield running


def _tensor(name="INPUT0", shape=(1, 4), datatype="FP32"):
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": [1] * int(np.prod(shape))}


CASES = [  # (body, Triton 2.51's words with M for the model's name)
    ({"inputs": [_tensor(shape=(2, 3))]},
     "[request id: <id_unknown>] unexpected shape for input 'INPUT0' for model 'M'. Expected [-1,4], got [2,3]. "
     + SHAPE_NOTE),
    ({"id": "req-7", "inputs": [_tensor(shape=(8,))]},
     "[request id: req-7] unexpected shape for input 'INPUT0' for model 'M'. Expected [-1,4], got [8]. " + SHAPE_NOTE),
    ({"id": "abc", "inputs": [_tensor(datatype="FP64")]},
     "[request id: abc] inference input 'INPUT0' data-type is 'FP64', but model 'M' expects 'FP32'"),
    ({"inputs": [_tensor(), _tensor("EXTRA")]},
     "[request id: <id_unknown>] expected 1 inputs but got 2 inputs for model 'M'. Got input(s) ['EXTRA','INPUT0'], "
     "but missing required input(s) ]. Please provide all required input(s)."),
    ({"id": "z", "inputs": []},
     "[request id: z] expected 1 inputs but got 0 inputs for model 'M'. Got input(s) [], but missing required "
     "input(s) ['INPUT0']. Please provide all required input(s)."),
    ({"inputs": [_tensor("OTHER")]}, "unexpected inference input 'OTHER' for model 'M'"),
    ({"inputs": [_tensor(), _tensor()]}, "[request id: <id_unknown>] input 'INPUT0' already exists in request"),
    ({"id": "x1", "inputs": [_tensor(shape=(9, 4))]},
     "[request id: x1] inference request batch-size must be <= 8 for 'M'"),
    ({"id": "o1", "inputs": [_tensor()], "outputs": [{"name": "NOPE"}]},
     "unexpected inference output 'NOPE' for model 'M'"),
]


@pytest.mark.parametrize("model", ["ox", "py"])
@pytest.mark.parametrize("body, words", CASES)
def test_http_refusals_are_tritons_words(server, model, body, words):
    reply = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/{model}/infer", json=body, timeout=30)
    assert (reply.status_code, reply.json()["error"]) == (400, words.replace("'M'", f"'{model}'"))


def test_a_model_without_batching_gets_no_note(server):
    reply = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/py0/infer",
                       json={"id": "", "inputs": [_tensor(shape=(2, 3))]}, timeout=30)
    assert reply.json()["error"] == ("[request id: <id_unknown>] unexpected shape for input 'INPUT0' for model "
                                     "'py0'. Expected [4], got [2,3]. ")


@pytest.mark.parametrize("model", ["ox", "py"])
def test_grpc_refusals_carry_the_request_id_too(server, model):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    tensor = grpcclient.InferInput("INPUT0", [2, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((2, 3), np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [tensor], request_id="g-1")
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert caught.value.message() == (f"[request id: g-1] unexpected shape for input 'INPUT0' for model '{model}'. "
                                      f"Expected [-1,4], got [2,3]. {SHAPE_NOTE}")


def test_binary_data_that_does_not_fit_the_shape_names_the_request(server):
    header = json.dumps({"id": "b7", "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32",
                                                 "parameters": {"binary_data_size": 8}}]}).encode()
    reply = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/ox/infer", content=header + bytes(8),
                       headers={"Inference-Header-Content-Length": str(len(header))}, timeout=30)
    assert (reply.status_code, reply.json()["error"]) == (
        400, "[request id: b7] input byte size mismatch for input 'INPUT0' for model 'ox'. Expected 16, got 8")
