"""Shared fixtures: a real gpuserve on loopback, ephemeral ports, driven by real clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import pytest

from gpuserve.huggingface.common import transformers_without_keras3
from gpuserve.settings import ServerSettings

transformers_without_keras3()  # tests that import transformers themselves, beside tensorflow (gpuserve[tensorflow])


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.gpu` tests run only where CUDA is usable; elsewhere they are skipped, said so."""
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run benchmarks/gpu/verify_all.sh on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def free_ports(count: int) -> list:
    """Ports the OS hands out now (bound to port 0, then let go), for tests that must name a port before a
    server starts; fixed numbers collide with whatever else runs on the machine."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def running_server(models=(), repository=None, **settings):
    """Start a ModelServer in a thread on ports chosen by the OS; yield it with `.ports` filled."""
    from gpuserve.server.model_server import ModelServer

    options = dict(host="127.0.0.1", http_port=0, grpc_port=0, metrics_port=0)
    options.update(settings)
    server = ModelServer(settings=ServerSettings.load(None, **options), registered_models=repository)
    failure = []

    def run():
        try:
            asyncio.run(server.serve(list(models)))
        except BaseException as exc:  # surfaced to the test below
            failure.append(exc)
            server.started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not server.started.wait(60):
        raise RuntimeError("server did not start within 60 s")
    if failure:
        raise failure[0]
    try:
        yield server
    finally:
        server.stop()
        thread.join(60)
        assert not thread.is_alive(), "server did not stop within 60 s"


@pytest.fixture
def serve():
    """`with serve(models) as server:` inside a test."""
    return running_server


def make_onnx_model(path, in_features=4, out_features=3, seed=0, name="input", out_name="output"):
    """A tiny linear+ReLU ONNX model (explicit ir_version, so onnxruntime accepts it); returns (W, b)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(in_features, out_features)).astype(np.float32)
    bias = rng.normal(size=(out_features,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", [name, "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["pre"]),
         helper.make_node("Relu", ["pre"], [out_name])],
        "tiny",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", in_features])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", out_features])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return weight, bias


def one_op_onnx(path, op_type, inputs, output, width=4):
    """An ONNX model of one node (`op_type` of `inputs` -> `output`), each tensor FP32 [batch, width]."""
    import onnx
    from onnx import TensorProto, helper

    tensor = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, width])  # noqa: E731
    graph = helper.make_graph([helper.make_node(op_type, list(inputs), [output])], op_type.lower(),
                              [tensor(n) for n in inputs], [tensor(output)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def simple_onnx_repo(tmp_path_factory):
    """A Triton repository of one batching ONNX model, `simple` (make_onnx_model's): (root, weight, bias)."""
    root = tmp_path_factory.mktemp("simple-repo")
    (root / "simple" / "1").mkdir(parents=True)
    weight, bias = make_onnx_model(root / "simple" / "1" / "model.onnx")
    (root / "simple" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 8\n')
    return root, weight, bias


def onnx_reference(x, weight, bias):
    import numpy as np

    return np.maximum(x @ weight + bias, 0).astype(np.float32)


@pytest.fixture
def http():
    """An httpx client factory bound to a server's REST port."""
    import httpx

    clients = []

    def make(server):
        client = httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def serve_sklearn(folder, estimators):
    """kind -> (fitted estimator, loaded SKLearnModel serving it from a joblib file), for each maker."""
    import joblib

    from gpuserve.runtimes_classic import SKLearnModel
    from gpuserve.settings import ModelSettings

    out = {}
    for kind, make in estimators.items():
        estimator = make()
        joblib.dump(estimator, folder / f"{kind}.joblib")
        model = SKLearnModel(kind, ModelSettings(name=kind, parameters={"uri": str(folder / f"{kind}.joblib")}))
        model.load()
        out[kind] = (estimator, model)
    return out
