"""MLServer's response cache: settings.json `cache_enabled` / `cache_size` and a model's own
`cache_enabled` (off by default, as in MLServer) reach gpuserve's response cache."""

from __future__ import annotations

import json
import textwrap

import httpx

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.settings import ServerSettings

RUNTIME = """
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceResponse

CALLS = {}


class Counting(MLModel):
    async def load(self):
        return True

    async def predict(self, payload):
        CALLS[self.name] = CALLS.get(self.name, 0) + 1
        x = NumpyCodec.decode_input(payload.inputs[0])
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("calls", x * 0 + CALLS[self.name])])
"""


def folder(root, cache_size):
    (root / "settings.json").write_text(json.dumps({"cache_enabled": True, "cache_size": cache_size}))
    for name, cached in (("cached", True), ("plain", None)):
        (root / name).mkdir()
        (root / name / "counting.py").write_text(textwrap.dedent(RUNTIME))
        settings = {"name": name, "implementation": "counting.Counting"}
        if cached:
            settings["cache_enabled"] = True
        (root / name / "model-settings.json").write_text(json.dumps(settings))
    return root


def infer(url, name, value):
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [value]}]}
    answer = httpx.post(f"{url}/v2/models/{name}/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["outputs"][0]["data"][0]


def test_settings_cache_enabled_caches_the_models_that_enable_it(tmp_path):
    root = folder(tmp_path, cache_size=2)
    settings = ServerSettings.load(root)
    assert settings.mlserver_cache is True and settings.response_cache_entries == 2
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry, mlserver_cache=True, response_cache_entries=2) as server:
        url = f"http://127.0.0.1:{server.ports['http']}"
        assert [infer(url, "cached", 5) for _ in range(3)] == [1, 1, 1]  # answered once, then from the cache
        assert [infer(url, "plain", 5) for _ in range(3)] == [1, 2, 3]  # cache_enabled is off by default
        infer(url, "cached", 6)
        infer(url, "cached", 7)  # cache_size 2: the entry for 5 goes first
        assert infer(url, "cached", 5) == 4


def test_an_environment_tarball_is_said_not_to_be_used(tmp_path, caplog):
    import logging

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "counting.py").write_text(textwrap.dedent(RUNTIME))
    (tmp_path / "m" / "model-settings.json").write_text(json.dumps(
        {"name": "m", "implementation": "counting.Counting", "parameters": {"environment_tarball": "./env.tar.gz"}}))
    with caplog.at_level(logging.WARNING):  # parallel workers off: as in MLServer, the tarball is not used
        registry = DiskRepository(tmp_path, parallel_workers=0).populate(ModelRepository())
    assert registry.get_model("m") is not None
    assert any("environment_tarball" in r.getMessage() and "is not used: parallel workers are off" in r.getMessage()
               for r in caplog.records)
