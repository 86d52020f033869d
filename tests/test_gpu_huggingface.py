"""MLServer's HuggingFace runtime on a GPU: without MLServer's `device` extra a model goes where gpuserve's
`device: auto` puts it (cuda:0 where CUDA is usable), said in its metadata, and MLServer's `device: 0` extra means
cuda:0 too; the answers are the CPU pipeline's (scores to 1e-4). Skipped without CUDA or transformers; run by
benchmarks/gpu/verify_all.sh (its wheels: benchmarks/gpu/fetch_wheels.sh)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

pytestmark = pytest.mark.gpu
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import running_server  # noqa: E402
from hf_models import TASKS, build_models, write_settings  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402


def test_pipelines_run_on_cuda_and_answer_as_on_the_cpu(tmp_path, http):
    built = build_models(tmp_path / "built", ("cls", "gen"))
    repo = tmp_path / "repo"
    shutil.copytree(built["cls"], repo / "auto")
    write_settings(repo / "auto", "auto", TASKS["cls"])  # gpuserve's device: auto
    shutil.copytree(built["gen"], repo / "ordinal")
    write_settings(repo / "ordinal", "ordinal", TASKS["gen"], extra={"device": 0})  # MLServer's device extra
    cpu = {name: transformers.pipeline(TASKS[name], model=str(built[name]), device="cpu") for name in built}
    text = "this is a good movie"
    registry = DiskRepository(repo).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        for model in ("auto", "ordinal"):
            assert client.get(f"/v2/models/{model}").json()["parameters"]["device"] == "cuda:0"
        body = {"inputs": [{"name": "array_inputs", "shape": [2], "datatype": "BYTES", "data": [text, "bad movie"]}]}
        answer = client.post("/v2/models/auto/infer", json=body).json()["outputs"][0]
        got = [json.loads(d) for d in answer["data"]]
        for mine, reference in zip(got, cpu["cls"]([text, "bad movie"])):
            assert mine["label"] == reference["label"] and abs(mine["score"] - reference["score"]) < 1e-4
        generated = client.post("/v2/models/ordinal/infer", json={"inputs": [
            {"name": "args", "shape": [1], "datatype": "BYTES", "data": ["this is a test"]}]}).json()["outputs"][0]
        assert [json.loads(d) for d in generated["data"]] == cpu["gen"]("this is a test")
