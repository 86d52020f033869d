"""Ray Serve: two replicas, one gpuserve engine each, on a local CPU-only Ray; answers and both replicas seen.

Needs the `ray` extra (`pip install 'gpuserve[ray]'`); skipped where Ray is not installed (CI).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")
ort = pytest.importorskip("onnxruntime")

from conftest import free_ports, make_onnx_model  # noqa: E402

from gpuserve.ray_serve import REPLICA_HEADER, _v2_route, deployment  # noqa: E402


def test_v2_route_parsing():
    assert _v2_route("/v2/models/m/infer") == ("m", None, "infer")
    assert _v2_route("/v2/models/m/versions/3/infer") == ("m", "3", "infer")
    assert _v2_route("/v2/models/m/ready") == ("m", None, "ready")
    assert _v2_route("/v2/models/m") == ("m", None, "")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def test_two_replicas_answer_like_onnxruntime(tmp_path, local_ray):
    deadline = time.monotonic() + 110
    (tmp_path / "tiny").mkdir()
    make_onnx_model(tmp_path / "tiny" / "model.onnx", seed=3)
    session = ort.InferenceSession(str(tmp_path / "tiny" / "model.onnx"), providers=["CPUExecutionProvider"])

    (port,) = free_ports(1)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(deployment(str(tmp_path), num_replicas=2, num_cpus=0.5, max_ongoing_requests=32),
              name="gpuserve", route_prefix="/")
    base = f"http://127.0.0.1:{port}"

    while True:  # serve.run returns once replicas are up; models load on the replicas' loops
        reply = httpx.get(f"{base}/v2/models/tiny/ready", timeout=10)
        if reply.status_code == 200:
            break
        assert time.monotonic() < deadline, f"model never became ready: {reply.status_code} {reply.text}"
        time.sleep(0.2)

    rng = np.random.default_rng(0)
    replicas = set()
    for i in range(40):
        rows = 1 + i % 3
        x = rng.normal(size=(rows, 4)).astype(np.float32)
        body = {"id": f"r{i}", "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                           "data": x.ravel().tolist()}]}
        reply = httpx.post(f"{base}/v2/models/tiny/infer", json=body, timeout=30)  # a new connection each
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert answer["model_name"] == "tiny" and answer["id"] == f"r{i}"
        (output,) = answer["outputs"]
        assert output["name"] == "output" and output["shape"] == [rows, 3]
        expected = session.run(None, {"input": x})[0]
        np.testing.assert_allclose(np.asarray(output["data"], np.float32).reshape(rows, 3), expected,
                                   rtol=1e-5, atol=1e-6)
        replicas.add(reply.headers[REPLICA_HEADER])
        assert time.monotonic() < deadline

    x = rng.normal(size=(2, 4)).astype(np.float32)  # V1 predict goes through the same replica code
    reply = httpx.post(f"{base}/v1/models/tiny:predict", json={"instances": x.tolist()}, timeout=30)
    assert reply.status_code == 200, reply.text
    np.testing.assert_allclose(np.asarray(reply.json()["predictions"], np.float32),
                               session.run(None, {"input": x})[0], rtol=1e-5, atol=1e-6)
    replicas.add(reply.headers[REPLICA_HEADER])

    missing = httpx.post(f"{base}/v2/models/nope/infer", json=body, timeout=30)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]

    assert len(replicas) == 2, f"expected both replicas to serve, saw pids {replicas}"
