"""The classification extension over both tritonclients: top-k `value:index:label` strings."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import make_onnx_model, onnx_reference, running_server
from gpuserve import ModelRepository
from gpuserve.kernels.topk import topk_reference
from gpuserve.repository import DiskRepository


def test_topk_reference_orders_and_breaks_ties_by_index():
    values, index = topk_reference(np.array([[0.1, 0.5, 0.5, 0.2], [3, 2, 1, 0]], np.float32), 3)
    assert index.tolist() == [[1, 2, 3], [0, 1, 2]] and values[1].tolist() == [3, 2, 1]
    assert topk_reference(np.arange(3), 10)[1].tolist() == [2, 1, 0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    (root / "clf").mkdir()
    weights = make_onnx_model(root / "clf" / "model.onnx", in_features=4, out_features=5)
    (root / "clf" / "labels.txt").write_text("ant\nbee\ncat\ndog\neel\n")
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as srv:
        srv.weights = weights
        yield srv


def expected(x, weights, k):
    labels = ["ant", "bee", "cat", "dog", "eel"]
    y = onnx_reference(x, *weights)
    values, index = topk_reference(y, k)
    return [[f"{values[r, c]:f}:{index[r, c]}:{labels[index[r, c]]}".encode() for c in range(k)]
            for r in range(len(y))]


def test_classification_over_http_and_grpc(server):
    x = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    want = expected(x, server.weights, 2)
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        tensor = httpclient.InferInput("input", [3, 4], "FP32")
        tensor.set_data_from_numpy(x)
        for binary in (True, False):
            out = client.infer("clf", [tensor], outputs=[httpclient.InferRequestedOutput(
                "output", binary_data=binary, class_count=2)]).as_numpy("output")
            got = [[v if isinstance(v, bytes) else v.encode() for v in row] for row in out]
            assert got == want
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
        tensor = grpcclient.InferInput("input", [3, 4], "FP32")
        tensor.set_data_from_numpy(x)
        out = client.infer("clf", [tensor], outputs=[grpcclient.InferRequestedOutput("output", class_count=2)])
        assert out.as_numpy("output").tolist() == want


def test_bad_class_count_is_400(server):
    import httpx

    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
            "outputs": [{"name": "output", "parameters": {"classification": -1}}]}
    reply = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/clf/infer", json=body)
    assert reply.status_code == 400 and "classification" in reply.json()["error"]
