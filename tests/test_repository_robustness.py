"""Broken model configurations, found by fuzzing the repository (2026-12-06): each spoils only its own model,
with words naming what is wrong, and never hangs or stops the server (Triton 2.51 answers each such load
with a refusal and keeps serving the others)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_onnx_model, onnx_reference, running_server
from gpuserve import ModelRepository
from gpuserve.errors import InvalidSettings
from gpuserve.repository import DiskRepository
from gpuserve.triton_config import parse_pbtxt
from gpuserve.triton_schema_check import check_config

ONNX = 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'


@pytest.mark.parametrize("text", ["input [", "dims: [ 4", "input [ 1, 2", ONNX + "instance_group [ { count: 1 }",
                                  ONNX + "input", "a: }", "a { b: 1"])
def test_a_config_cut_off_is_refused_at_once(text):
    """A list left open at the end of the file made the parser append None for ever (the load never
    answered, the server stopped answering anything and its memory grew by GBs)."""
    started = time.monotonic()
    with pytest.raises(InvalidSettings, match="config.pbtxt"):
        parse_pbtxt(text)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("text, words", [
    ("input: 5", "'input[0]' must be a message"),
    ("instance_group: 3", "'instance_group[0]' must be a message"),
    ('max_batch_size: "x"', "'max_batch_size' must be an integer"),
    ("max_batch_size: 99999999999999999999", "out of range (int32"),
    ("foo_bar: 12", "unknown field 'foo_bar'"),
    ("instance_group [ { kind: KIND_TPU } ]", "must be one of KIND_AUTO"),
    ('input [ { name: "a" data_type: TYPE_FP32 dims: [ 4.5 ] } ]', "'input[0].dims[0]' must be an integer"),
    ("parameters: [1, 2]", "'parameters' must be a map"),
    ('dynamic_batching: "yes"', "'dynamic_batching' must be a message"),
    ('optimization { execution_accelerators { cpu_execution_accelerator: "x" } }',
     "'optimization.execution_accelerators.cpu_execution_accelerator[0]' must be a message"),
])
def test_model_config_field_types_are_checked(text, words):
    with pytest.raises(InvalidSettings, match=words.replace("[", r"\[").replace("(", r"\(")):
        check_config(parse_pbtxt(text))


def test_configs_triton_takes_pass():
    check_config(parse_pbtxt(ONNX + """
        input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]
        instance_group [ { count: 2 kind: KIND_CPU } ]
        dynamic_batching { max_queue_delay_microseconds: 100 preferred_batch_size: [ 2, 4 ]
                           priority_queue_policy { key: 1 value: { timeout_action: DELAY } } }
        parameters { key: "x" value: { string_value: "y" } }
        version_policy: { latest: { num_versions: 2 } }
        model_warmup [ { name: "w" batch_size: 1
                         inputs { key: "input" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]
        optimization { cuda { graphs: true graph_spec [ { batch_size: 4 } ] } }"""))
    check_config({"name": "m", "max_batch_size": "8", "dynamic_batching": {"max_queue_delay_microseconds": "100"}})


def _repository(tmp_path: Path) -> Path:
    (tmp_path / "good" / "1").mkdir(parents=True)
    weight, bias = make_onnx_model(tmp_path / "good" / "1" / "model.onnx")
    (tmp_path / "good" / "config.pbtxt").write_text(ONNX)
    (tmp_path / "bad" / "1").mkdir(parents=True)
    make_onnx_model(tmp_path / "bad" / "1" / "model.onnx")
    (tmp_path / "bad" / "config.pbtxt").write_text(ONNX + "input: 5\n")
    (tmp_path / "negative" / "1").mkdir(parents=True)
    make_onnx_model(tmp_path / "negative" / "1" / "model.onnx")
    (tmp_path / "negative" / "config.pbtxt").write_text(ONNX + "instance_group [ { count: -1 } ]\n")
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "model-settings.json").write_text('{"name": "deep", "parameters": ' + "[" * 5000 + "]" * 5000
                                                           + "}")
    return weight, bias


def _infer(client, name, x):
    return client.post(f"/v2/models/{name}/infer", json={"inputs": [
        {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]})


def test_a_broken_folder_spoils_only_its_own_model(tmp_path, http):
    """Before: `input: 5` made the repository's scan raise, so the server did not start, and while running
    every index, load and reload of any model answered 500 "'int' object has no attribute 'get'"."""
    weight, bias = _repository(tmp_path)
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        client = http(server)
        answer = _infer(client, "good", x)
        assert answer.status_code == 200
        assert np.allclose(answer.json()["outputs"][0]["data"], onnx_reference(x, weight, bias).ravel(), atol=1e-5)
        index = {m["name"]: m for m in client.post("/v2/repository/index").json()}
        assert index["good"]["state"] == "READY"
        assert "'input[0]' must be a message" in index["bad"]["reason"]
        assert "count -1; a count is 0 or more" in index["negative"]["reason"]
        assert "nests too deeply" in index["deep"]["reason"]
        for name in ("bad", "negative"):  # 500, as Triton 2.51 answers the load of a folder it cannot read
            refused = client.post(f"/v2/repository/models/{name}/load")
            assert refused.status_code == 500 and index[name]["reason"] in refused.json()["error"]
        assert client.post("/v2/repository/models/good/load").status_code == 200  # a reload still works
        assert _infer(client, "good", x).status_code == 200


@pytest.mark.parametrize("override, words", [
    ({"instance_group": 3}, "'instance_group[0]' must be a message"),
    ({"dynamic_batching": "yes"}, "'dynamic_batching' must be a message"),
    ({"max_batch_size": "x"}, "'max_batch_size' must be an integer"),
    ({"version_policy": "latest"}, "'version_policy' must be a message"),
    ({"foo_bar": 1}, "unknown field 'foo_bar'"),
])
def test_a_load_with_a_config_of_the_wrong_types_is_refused_in_words_and_leaves_nothing(tmp_path, http, override,
                                                                                        words):
    weight, bias = _repository(tmp_path)
    scratch = Path(tempfile.gettempdir())
    before = set(scratch.glob("gpuserve-load-good-*"))
    x = np.ones((1, 4), np.float32)
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        client = http(server)
        config = json.dumps({"platform": "onnxruntime_onnx", "max_batch_size": 8, **override})
        refused = client.post("/v2/repository/models/good/load", json={"parameters": {"config": config}})
        # 500 as Triton 2.51 answers these ("failed to poll from model repository"), with the field named
        assert refused.status_code == 500 and words in refused.json()["error"], refused.text
        assert _infer(client, "good", x).status_code == 200  # the loaded version keeps serving, as in Triton
        assert set(scratch.glob("gpuserve-load-good-*")) == before


@pytest.mark.parametrize("name, words", [("x" * 300, "File name too long"), ("a\x00b", "embedded null byte")])
def test_a_load_time_model_name_no_folder_can_hold_is_refused_in_words(name, words):
    from gpuserve.errors import ModelLoadError
    from gpuserve.load_override import scratch_folder

    scratch = Path(tempfile.gettempdir())
    before = set(scratch.glob("gpuserve-load-*"))
    with pytest.raises(ModelLoadError, match=f"failed to poll from model repository: {words}"):
        scratch_folder(name, None, json.dumps({"backend": "python"}), {"file:1/model.py": b""})
    assert set(scratch.glob("gpuserve-load-*")) == before


def test_a_folder_removed_while_the_repository_is_read_is_skipped(tmp_path, monkeypatch):
    """Another process adding and removing model folders: one that went between the listing and its reading
    made every index, load and unload of any model answer 500 "[Errno 2] No such file or directory"."""
    import gpuserve.repository as repository

    (tmp_path / "kept" / "1").mkdir(parents=True)
    make_onnx_model(tmp_path / "kept" / "1" / "model.onnx")
    (tmp_path / "going" / "1").mkdir(parents=True)
    real = repository._python_without_config

    def vanishing(folder):
        if folder.name == "going":
            raise FileNotFoundError(2, "No such file or directory", str(folder))
        return real(folder)

    monkeypatch.setattr(repository, "_python_without_config", vanishing)
    disk = DiskRepository(tmp_path)
    assert set(disk.scan()) == {"kept"}
    walks = []
    real_rglob = Path.rglob

    def rglob_once_gone(self, pattern):  # a subfolder removed while the walk for model-settings.json ran
        walks.append(pattern)
        if len(walks) == 1:
            raise FileNotFoundError(2, "No such file or directory", str(self / "gone"))
        return real_rglob(self, pattern)

    monkeypatch.setattr(Path, "rglob", rglob_once_gone)
    assert set(disk.scan()) == {"kept"} and len(walks) == 2
