"""PyTorch models built by the test (TorchScript and torch.export), served through the engine and
checked against torch's own call for random inputs and several batch sizes."""

import json
from typing import Dict

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import running_server  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def forward(self, x):
        return self.fc(x)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch-repo")
    net = Net().eval()
    (root / "scripted").mkdir()
    torch.jit.script(net).save(str(root / "scripted" / "model.pt"))
    (root / "scripted" / "model-settings.json").write_text(json.dumps({
        "implementation": "torch",
        "parameters": {"uri": "model.pt"},
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 6]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]}))
    (root / "exported").mkdir()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(net, (torch.zeros(2, 6),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(root / "exported" / "model.pt2"))
    return root, net


@pytest.mark.parametrize("name, out", [("scripted", "y"), ("exported", "output__0")])
def test_served_outputs_equal_torch(repo, http, name, out):
    root, net = repo
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        meta = client.get(f"/v2/models/{name}").json()
        assert meta["inputs"][0]["datatype"] == "FP32" and meta["inputs"][0]["shape"] == [-1, 6]
        assert meta["platform"] == "pytorch_libtorch"
        rng = np.random.default_rng(1)
        for rows in (1, 3, 8):
            x = rng.normal(size=(rows, 6)).astype(np.float32)
            reply = client.post(f"/v2/models/{name}/infer", json={
                "inputs": [{"name": "x", "shape": [rows, 6], "datatype": "FP32", "data": x.ravel().tolist()}]})
            assert reply.status_code == 200, reply.text
            output = reply.json()["outputs"][0]
            assert output["name"] == out and output["shape"] == [rows, 3]
            with torch.inference_mode():
                want = net(torch.from_numpy(x)).numpy()
            assert np.allclose(np.array(output["data"]).reshape(rows, 3), want, rtol=1e-5, atol=1e-6)
        bad = client.post(f"/v2/models/{name}/infer", json={
            "inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]})
        assert bad.status_code == 400


def test_broken_model_file_is_not_ready_with_reason(tmp_path, http):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.pt").write_bytes(b"not a torchscript archive")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        reply = http(server).get("/v2/models/broken/ready")
        assert reply.status_code == 503 and "broken" in reply.json()["error"].lower()


def test_several_exported_models_load_together(tmp_path, http):
    """The server loads models in parallel; torch.export.load is not thread-safe on its own (a module-level
    deserializer), so without the backend's lock one of these came up not ready."""
    nets = {}
    for index in range(4):
        torch.manual_seed(index)
        net = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).eval()
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.export.export(net, (torch.zeros(2, 6),), dynamic_shapes={"input": {0: batch}})
        (tmp_path / f"e{index}").mkdir()
        torch.export.save(program, str(tmp_path / f"e{index}" / "model.pt2"))
        nets[f"e{index}"] = net
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    x = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
    with running_server(repository=registry) as server:
        client = http(server)
        for name, net in nets.items():
            assert client.get(f"/v2/models/{name}/ready").status_code == 200, client.get(f"/v2/models/{name}").text
            reply = client.post(f"/v2/models/{name}/infer", json={
                "inputs": [{"name": "input", "shape": [2, 6], "datatype": "FP32", "data": x.reshape(-1).tolist()}]})
            assert reply.status_code == 200, reply.text
            with torch.inference_mode():
                want = net(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(np.array(reply.json()["outputs"][0]["data"]).reshape(2, 3), want, rtol=1e-5,
                                       atol=1e-6)


@pytest.mark.parametrize("precision, compile_", [("bf16", False), ("fp16", False), (None, True)])
def test_precision_and_compile_from_settings(repo, tmp_path, precision, compile_):
    """`parameters.extra.precision` runs the model in half precision (inputs cast in, outputs back to
    FP32) and `compile` through torch.compile: answers as torch's own call made the same way."""
    import asyncio
    import copy
    import shutil

    root, net = repo
    folder = tmp_path / "half"
    folder.mkdir()
    shutil.copy(root / "exported" / "model.pt2", folder / "model.pt2")
    extra = {"compile": True} if compile_ else {"precision": precision}
    (folder / "model-settings.json").write_text(json.dumps({
        "implementation": "torch", "parameters": {"uri": "model.pt2", "extra": extra}}))
    model = DiskRepository(tmp_path).build("half")[0]
    assert model.load() is True
    assert model.metadata()["outputs"][0]["datatype"] == "FP32"
    x = np.random.default_rng(2).normal(size=(5, 6)).astype(np.float32)

    async def served():
        return await model.scheduler.submit({"x": x})

    got = asyncio.run(served())["output__0"]
    assert got.dtype == np.float32 and got.shape == (5, 3)
    with torch.inference_mode():
        exact = net(torch.from_numpy(x)).numpy()
        if precision:
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
            same_way = copy.deepcopy(net).to(dtype)(torch.from_numpy(x).to(dtype)).float().numpy()
            np.testing.assert_allclose(got, same_way, rtol=1e-2, atol=1e-2)
            np.testing.assert_allclose(got, exact, rtol=5e-2, atol=5e-2)
            assert not np.array_equal(got, exact)  # it did run in half precision
        else:
            np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-6)
    model.stop()


class TwoInOut(torch.nn.Module):
    """An FP32 and an INT64 input, a tuple of two outputs: what a bare TorchScript file cannot describe."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc, self.emb = torch.nn.Linear(4, 3), torch.nn.Embedding(10, 3)

    def forward(self, x, ids):
        return self.fc(x) + self.emb(ids).sum(1), ids * 2


class DictOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x) -> Dict[str, torch.Tensor]:
        y = self.fc(x)
        return {"logits": y, "probs": torch.softmax(y, -1)}


def v2_body(**tensors):
    return {"inputs": [{"name": name, "shape": list(a.shape), "datatype": "INT64" if a.dtype == np.int64 else "FP32",
                        "data": a.ravel().tolist()} for name, a in tensors.items()]}


def test_bare_torchscript_takes_the_dtypes_requests_bring_and_dict_outputs_by_key(tmp_path, http):
    two, named = TwoInOut().eval(), DictOut().eval()
    (tmp_path / "bare").mkdir()
    torch.jit.script(two).save(str(tmp_path / "bare" / "model.pt"))
    (tmp_path / "scripted_dict").mkdir()
    torch.jit.script(named).save(str(tmp_path / "scripted_dict" / "model.pt"))
    (tmp_path / "exported_dict").mkdir()
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(torch.export.export(named, (torch.zeros(2, 4),), dynamic_shapes={"x": {0: batch}}),
                      str(tmp_path / "exported_dict" / "model.pt2"))
    x = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    ids = np.array([[1, 2, 3], [4, 5, 6]], np.int64)
    with torch.inference_mode():
        want_y, want_ids = two(torch.from_numpy(x), torch.from_numpy(ids))
        want = {k: v.numpy() for k, v in named(torch.from_numpy(x)).items()}
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        assert [o["name"] for o in client.get("/v2/models/bare").json()["outputs"]] == ["output__0", "output__1"]
        reply = client.post("/v2/models/bare/infer", json=v2_body(x=x, ids=ids))
        assert reply.status_code == 200, reply.text
        outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in reply.json()["outputs"]}
        np.testing.assert_allclose(outputs["output__0"], want_y.numpy(), rtol=1e-5, atol=1e-6)
        assert outputs["output__1"].tolist() == want_ids.tolist()
        # torch.export says a dict's keys: metadata and requested outputs use them
        meta = client.get("/v2/models/exported_dict").json()
        assert [o["name"] for o in meta["outputs"]] == ["logits", "probs"]
        for model in ("exported_dict", "scripted_dict"):
            reply = client.post(f"/v2/models/{model}/infer", json={**v2_body(x=x), "outputs": [{"name": "probs"}]})
            assert reply.status_code == 200, reply.text
            [only] = reply.json()["outputs"]
            assert only["name"] == "probs"
            np.testing.assert_allclose(np.array(only["data"]).reshape(2, 3), want["probs"], rtol=1e-5, atol=1e-6)
            wrong = client.post(f"/v2/models/{model}/infer", json={**v2_body(x=x), "outputs": [{"name": "nope"}]})
            assert wrong.status_code == 400 and "nope" in wrong.json()["error"]
