"""Raw tensor data passed as views: where large HTTP binary inputs sit in memory.

A binary input is a view of the request body at whatever offset the JSON header leaves it; misaligned,
NumPy took its unaligned loops and ONNX Runtime summed floats differently from an aligned copy. A large
body (gpuserve.datatypes.VIEW_BYTES on) is now read into a buffer placed so that the binary data starts
on a 64-byte boundary, whatever the header's length, by our HTTP server and under uvicorn alike."""

from __future__ import annotations

import gzip

import httpx
import numpy as np
import orjson
import pytest
from conftest import running_server

from gpuserve import InferOutput, InferResponse, Model
from gpuserve.datatypes import VIEW_BYTES
from gpuserve.server.binary import ALIGNMENT, aligned_body


class Probe(Model):
    """Echoes its inputs and says where each one lay (its address modulo ALIGNMENT)."""

    def __init__(self, name):
        super().__init__(name)
        self.seen = []

    def load(self):
        self.ready = True

    async def predict(self, payload, headers=None):
        arrays = [tensor.as_numpy() for tensor in payload.inputs]
        self.seen.append([array.ctypes.data % ALIGNMENT for array in arrays])
        outputs = [InferOutput.from_numpy(f"OUT{i}", np.array(array)) for i, array in enumerate(arrays)]
        return InferResponse(payload.id, self.name, outputs)


def _binary_request(arrays, pad: int):
    """(body, JSON header length) of a binary request; `pad` lengthens the header by that many bytes."""
    names = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(np.uint8): "UINT8"}
    header = {"id": "x" * pad, "parameters": {"binary_data_output": True},
              "inputs": [{"name": f"IN{i}", "datatype": names[a.dtype], "shape": list(a.shape),
                          "parameters": {"binary_data_size": a.nbytes}} for i, a in enumerate(arrays)]}
    head = orjson.dumps(header)
    return head + b"".join(a.tobytes() for a in arrays), len(head)


def _outputs(answer: httpx.Response, count: int):
    length = int(answer.headers["inference-header-content-length"])
    header = orjson.loads(answer.content[:length])
    out, offset = [], length
    for entry in header["outputs"][:count]:
        size = entry["parameters"]["binary_data_size"]
        dtype = {"FP32": np.float32, "INT64": np.int64, "UINT8": np.uint8}[entry["datatype"]]
        out.append(np.frombuffer(answer.content[offset:offset + size], dtype).reshape(entry["shape"]))
        offset += size
    return out


@pytest.fixture(scope="module", params=["gpuserve", "uvicorn"])
def probe(request):
    model = Probe("probe")
    with running_server([model], http_server=request.param) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=30) as client:
            yield model, client


def _post(client, body, length, **headers):
    return client.post("/v2/models/probe/infer", content=body,
                       headers={"Inference-Header-Content-Length": str(length), **headers})


def test_large_binary_inputs_start_aligned_whatever_the_header_length(probe):
    model, client = probe
    rng = np.random.default_rng(0)
    first = rng.normal(size=(4, 5000)).astype(np.float32)  # 80000 bytes: a multiple of 64
    second = rng.integers(-1000, 1000, size=(3, 1000), dtype=np.int64)
    for pad in range(5):  # header lengths odd and even
        body, length = _binary_request([first, second], pad)
        assert len(body) >= VIEW_BYTES
        model.seen.clear()
        answer = _post(client, body, length)
        assert answer.status_code == 200, answer.text
        assert model.seen == [[0, 0]], (pad, length)
        got = _outputs(answer, 2)
        np.testing.assert_array_equal(got[0], first)
        np.testing.assert_array_equal(got[1], second)


def test_an_input_after_an_odd_sized_one_still_arrives_whole(probe):
    model, client = probe
    odd = np.arange(VIEW_BYTES + 3, dtype=np.uint8)
    after = np.linspace(0, 1, 1000, dtype=np.float32)
    body, length = _binary_request([odd, after], 1)
    answer = _post(client, body, length)
    assert answer.status_code == 200, answer.text
    assert model.seen[-1][0] == 0
    got = _outputs(answer, 2)
    np.testing.assert_array_equal(got[0], odd)
    np.testing.assert_array_equal(got[1], after)


def test_small_and_compressed_binary_bodies_answer_as_before(probe):
    model, client = probe
    small = np.arange(100, dtype=np.float32)
    body, length = _binary_request([small], 3)
    answer = _post(client, body, length)
    assert answer.status_code == 200, answer.text
    np.testing.assert_array_equal(_outputs(answer, 1)[0], small)
    large = np.arange(40000, dtype=np.float32)
    body, length = _binary_request([large], 3)
    answer = _post(client, gzip.compress(body), length, **{"Content-Encoding": "gzip"})
    assert answer.status_code == 200, answer.text
    np.testing.assert_array_equal(_outputs(answer, 1)[0], large)


@pytest.mark.parametrize("length", ["abc", "-1", "99999999"])
def test_a_large_body_with_a_bad_header_length_is_refused_clearly(probe, length):
    _, client = probe
    body, _ = _binary_request([np.zeros(40000, np.float32)], 0)
    answer = _post(client, body, length)
    assert answer.status_code == 400
    assert "Inference-Header-Content-Length" in answer.json()["error"]


def test_aligned_body_places_the_data_after_the_header_on_the_boundary():
    for header in range(0, 200, 7):
        view = aligned_body(VIEW_BYTES, str(header))
        assert len(view) == VIEW_BYTES and not view.readonly
        assert np.frombuffer(view, np.uint8)[header:].ctypes.data % ALIGNMENT == 0
    assert aligned_body(100, "101") is None and aligned_body(100, "x") is None and aligned_body(100, "-1") is None


def test_onnx_sums_of_aligned_inputs_equal_an_aligned_copys(tmp_path):
    """The model's sum of a large binary FP32 input is the sum ONNX Runtime gives an aligned copy of it."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    folder = tmp_path / "summer" / "1"
    folder.mkdir(parents=True)
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["INPUT0"], ["OUTPUT0"], keepdims=0)], "summer",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [1, 30001])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    (tmp_path / "summer" / "config.pbtxt").write_text(
        'name: "summer"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        'input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [1, 30001] }]\n'
        'output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [] }]\n')
    data = np.random.default_rng(3).normal(size=(1, 30001)).astype(np.float32)
    expected = ort.InferenceSession(str(folder / "model.onnx")).run(None, {"INPUT0": data.copy()})[0]
    from gpuserve import ModelRepository
    from gpuserve.repository import DiskRepository

    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        url = f"http://127.0.0.1:{server.ports['http']}/v2/models/summer/infer"
        for pad in range(3):
            header = orjson.dumps({"id": "y" * pad, "inputs": [{
                "name": "INPUT0", "datatype": "FP32", "shape": [1, 30001],
                "parameters": {"binary_data_size": data.nbytes}}]})
            answer = httpx.post(url, content=header + data.tobytes(), timeout=30,
                                headers={"Inference-Header-Content-Length": str(len(header))})
            assert answer.status_code == 200, answer.text
            assert np.float32(answer.json()["outputs"][0]["data"][0]) == expected
