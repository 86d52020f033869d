"""Model repositories on disk (MLServer folders, bare artefacts, versions) and the KServe registry API."""

import asyncio
import textwrap

import numpy as np
import pytest

from conftest import make_onnx_model, onnx_reference, running_server
from gpuserve import Model, ModelRepository
from gpuserve.errors import InvalidSettings, ModelNotFound, ModelNotReady
from gpuserve.repository import DiskRepository


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def repo(tmp_path):
    # MLServer form with a custom class importable from its own folder
    write(tmp_path / "custom" / "model-settings.json", '{"name": "adder", "implementation": "adder_impl.Adder",'
          ' "parameters": {"extra": {"offset": 5}}}')
    write(tmp_path / "custom" / "adder_impl.py", """
        from gpuserve import Model

        class Adder(Model):
            def __init__(self, name, settings):
                super().__init__(name)
                self.offset = settings.parameters.extra["offset"]

            def load(self):
                self.ready = True

            def predict(self, payload, headers=None):
                return {"predictions": [x + self.offset for x in payload["instances"]]}
        """)
    # MLServer form, runtime inferred from the uri
    weights = {"by-uri": make_onnx_model((tmp_path / "by-uri").mkdir() or tmp_path / "by-uri" / "weights.onnx", seed=1)}
    write(tmp_path / "by-uri" / "model-settings.json", '{"parameters": {"uri": "weights.onnx"}}')
    # bare artefact
    (tmp_path / "bare").mkdir()
    weights["bare"] = make_onnx_model(tmp_path / "bare" / "model.onnx", seed=2)
    # numbered versions
    for v in (1, 2):
        (tmp_path / "versioned" / str(v)).mkdir(parents=True)
        weights[f"versioned/{v}"] = make_onnx_model(tmp_path / "versioned" / str(v) / "model.onnx", seed=10 + v)
    # failures that must not stop the others
    write(tmp_path / "bad-json" / "model-settings.json", "{oops")
    write(tmp_path / "bad-class" / "model-settings.json", '{"implementation": "nowhere.Nothing"}')
    write(tmp_path / "missing-file" / "model-settings.json", '{"implementation": "onnx", "parameters": {"uri": "x.onnx"}}')
    write(tmp_path / "no-runtime" / "model-settings.json", '{"parameters": {"uri": "model.bin"}}')
    (tmp_path / "not-a-model").mkdir()
    return tmp_path, weights


def test_discovery_and_failures_with_reasons(repo, http):
    root, weights = repo
    registry = DiskRepository(root).populate(ModelRepository())
    assert sorted(registry.get_models()) == ["adder", "bad-class", "bad-json", "bare", "by-uri", "missing-file",
                                             "no-runtime", "versioned"]
    with running_server(repository=registry) as server:
        client = http(server)
        assert client.post("/v1/models/adder:predict", json={"instances": [1, 2]}).json() == {"predictions": [6, 7]}
        x = np.ones((1, 4), np.float32)
        for name in ("by-uri", "bare"):
            out = client.post(f"/v2/models/{name}/infer", json={
                "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}).json()
            assert np.allclose(out["outputs"][0]["data"], onnx_reference(x, *weights[name]).ravel(), rtol=1e-5)
        # as Triton's completed config (no config.pbtxt): version_policy latest 1, so only version 2 serves
        assert client.get("/v2/models/versioned").json()["versions"] == ["2"]
        assert client.get("/v2/models/versioned/config").json()["version_policy"] == {"latest": {"num_versions": 1}}
        assert client.post("/v2/models/versioned/versions/1/infer", json={
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}).status_code == 404
        for version in ("2",):
            out = client.post(f"/v2/models/versioned/versions/{version}/infer", json={
                "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}).json()
            assert out["model_version"] == version
            assert np.allclose(out["outputs"][0]["data"],
                               onnx_reference(x, *weights[f"versioned/{version}"]).ravel(), rtol=1e-5)
        latest = client.post("/v2/models/versioned/infer", json={
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}).json()
        assert latest["model_version"] == "2"
        reasons = {name: client.get(f"/v2/models/{name}/ready").json()["error"]
                   for name in ("bad-json", "bad-class", "missing-file", "no-runtime")}
        assert "cannot read" in reasons["bad-json"]
        assert "nowhere" in reasons["bad-class"]
        assert "x.onnx does not exist" in reasons["missing-file"]
        assert "no runtime serves 'model.bin'" in reasons["no-runtime"]
        assert client.get("/v2/health/ready").status_code == 200


def test_reload_by_name_picks_up_changes(repo):
    root, _ = repo
    registry = DiskRepository(root).populate(ModelRepository())

    async def scenario():
        assert await registry.load_async("adder")
        assert await registry.is_model_ready("adder")
        write(root / "custom" / "model-settings.json", '{"name": "adder", "implementation": "adder_impl.Adder",'
              ' "parameters": {"extra": {"offset": 100}}}')
        assert await registry.load_async("adder")
        result, _ = await registry.get_model("adder")({"instances": [1]})
        assert result == {"predictions": [101]}
        with pytest.raises(ModelNotFound):
            await registry.load_async("ghost")
        assert await registry.unload_async("adder")
        assert registry.get_model("adder") is None

    asyncio.run(scenario())


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidSettings, match="does not exist"):
        DiskRepository(tmp_path / "nope")


def test_relative_repository_path_serves_bare_artefacts(tmp_path, monkeypatch):
    """`gpuserve start repo` from the folder above it: the artefact path must not be joined twice."""
    from gpuserve.model_repository import run_load

    for folder in (tmp_path / "repo" / "plain", tmp_path / "repo" / "versioned" / "3"):
        folder.mkdir(parents=True)
        make_onnx_model(folder / "model.onnx")
    monkeypatch.chdir(tmp_path)
    registry = DiskRepository("repo").populate(ModelRepository())

    async def load_all():
        for _, _, model in registry.all_versions():
            await run_load(model)
        return [(name, model.ready, model.reason) for name, _, model in registry.all_versions()]

    states = asyncio.run(load_all())
    assert states and all(ready for _, ready, _ in states), states


def test_kserve_registry_api():
    registry = ModelRepository()
    a, b = Model("a"), Model("b")
    a.ready = True
    registry.update(a)
    registry.update(b)
    assert registry.get_model("a") is a and registry.get_model("zz") is None
    assert set(registry.get_models()) == {"a", "b"}
    ready = lambda name: asyncio.run(registry.is_model_ready(name))  # noqa: E731 (awaited, as in KServe)
    assert ready("a") and not ready("b") and not ready("zz")
    with pytest.raises(ModelNotReady):
        registry.resolve("b")
    with pytest.raises(ModelNotFound):
        registry.resolve("zz")
    assert registry.unload("a") and registry.get_model("a") is None
    with pytest.raises(KeyError):
        registry.unload("a")


def test_versions_in_registry():
    registry = ModelRepository()
    for version in ("1", "10", "2"):
        model = Model("m")
        model.version = version
        registry.update(model)
    assert registry.get_model("m").version == "10"
    assert registry.get_model("m", "2").version == "2"
    assert registry.get_model("m", "3") is None


def test_index_says_loading_while_start_up_loads_run():
    from gpuserve.dataplane import DataPlane

    registry = ModelRepository()
    registry.update(Model("slow-to-load"))  # registered, load() not run yet
    plane = DataPlane(registry)
    assert plane.repository_index() == [{"name": "slow-to-load", "version": "", "state": "LOADING", "reason": ""}]
    plane.started = True  # start-up done and still not ready: that is a failure to report
    assert plane.repository_index()[0]["state"] == "UNAVAILABLE"
