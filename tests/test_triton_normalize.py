"""Triton completes every model's config the same way whatever its backend (core's NormalizeModelConfig,
NormalizeInstanceGroup); gpuserve's two config builders (model files; Python-backend models) share one
completion, so the same written config shows the same completed fields for both."""

import pytest
import tritonclient.http as httpclient

from conftest import make_onnx_model, running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.triton_normalize import normalize

WRITTEN = """
name: "{name}"
{platform}
max_batch_size: 8
input [ {{ name: "input", data_type: TYPE_FP32, dims: [ 4 ] }} ]
output [ {{ name: "output", data_type: TYPE_FP32, dims: [ 3 ] }} ]
instance_group [ {{ count: 2 }}, {{ name: "named" kind: KIND_CPU host_policy: "policy0" }} ]
optimization {{ eager_batching: true }}
{batching}
"""

PYTHON_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "input").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("output", x[:, :3].copy())]))
        return out
"""

ORDINARY = "dynamic_batching { max_queue_delay_microseconds: 100 }"
SEQUENCES = "sequence_batching { oldest { max_candidate_sequences: 4 } }"


def _repository(root, batching):
    onnx_folder = root / "onnx_model" / "1"
    onnx_folder.mkdir(parents=True)
    make_onnx_model(onnx_folder / "model.onnx")
    (root / "onnx_model" / "config.pbtxt").write_text(WRITTEN.format(
        name="onnx_model", platform='platform: "onnxruntime_onnx"', batching=batching))
    python_folder = root / "python_model" / "1"
    python_folder.mkdir(parents=True)
    (python_folder / "model.py").write_text(PYTHON_MODEL)
    (root / "python_model" / "config.pbtxt").write_text(WRITTEN.format(
        name="python_model", platform='backend: "python"', batching=batching))
    return DiskRepository(root).populate(ModelRepository())


@pytest.mark.parametrize("batching", [ORDINARY, SEQUENCES], ids=["dynamic", "oldest"])
def test_one_written_config_completes_alike_for_model_files_and_python_models(tmp_path, batching):
    registry = _repository(tmp_path, batching)
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            shown = {name: client.get_model_config(name) for name in ("onnx_model", "python_model")}
    for name, config in shown.items():
        groups = config["instance_group"]
        assert [g["name"] for g in groups] == [f"{name}_0", "named"], name  # unnamed: MODEL_INDEX
        assert [g["kind"] for g in groups] == ["KIND_CPU", "KIND_CPU"], name  # KIND_AUTO settled (no GPU)
        # (a profile is refused outside TensorRT, as Triton refuses it; host_policy shows as written)
        assert [g["count"] for g in groups] == [2, 1] and groups[1]["host_policy"] == "policy0", name
        assert config["optimization"]["eager_batching"] is True, name
        assert config["optimization"]["input_pinned_memory"] == {"enable": True}, name  # added to a written one
        assert config["optimization"]["output_pinned_memory"] == {"enable": True}, name
        if batching == ORDINARY:
            assert config["dynamic_batching"]["preferred_batch_size"] == [8], name
        else:
            assert config["sequence_batching"]["oldest"]["preferred_batch_size"] == [8], name
            assert config["sequence_batching"]["max_sequence_idle_microseconds"] == 1_000_000, name
    for field in ("instance_group", "optimization", "dynamic_batching", "sequence_batching"):
        assert (shown["onnx_model"].get(field) is None) == (shown["python_model"].get(field) is None), field
        if field != "instance_group" and shown["onnx_model"].get(field) is not None:
            assert shown["onnx_model"][field] == shown["python_model"][field], field


def test_normalize_follows_tritons_rules():
    done = normalize({"name": "m", "max_batch_size": 4, "dynamic_batching": {},
                      "instance_group": [{"kind": "KIND_GPU"}, {"kind": "KIND_AUTO", "gpus": [1]}]}, "cuda:1")
    assert done["version_policy"] == {"latest": {"num_versions": 1}}
    assert done["dynamic_batching"]["preferred_batch_size"] == [4]
    assert [(g["name"], g["kind"], g["gpus"]) for g in done["instance_group"]] == [
        ("m_0", "KIND_GPU", [1]), ("m_1", "KIND_GPU", [1])]  # a GPU group without ids: the model's GPU
    lone = normalize({"name": "m", "max_batch_size": 0, "dynamic_batching": {}}, "cpu")
    assert "preferred_batch_size" not in lone["dynamic_batching"]  # nothing to prefer without batching
    assert [(g["name"], g["kind"], g["count"]) for g in lone["instance_group"]] == [("m", "KIND_CPU", 1)]
    fallback = normalize({"name": "m", "instance_group": [{"kind": "KIND_GPU", "gpus": [0]}]}, "cpu")
    assert fallback["instance_group"][0]["kind"] == "KIND_CPU" and fallback["instance_group"][0]["gpus"] == []
    ensemble = normalize({"name": "e", "platform": "ensemble", "ensemble_scheduling": {"step": []}}, "cpu")
    assert "optimization" not in ensemble and "instance_group" not in ensemble
    kept = normalize({"name": "m", "max_batch_size": 4, "optimization": {"input_pinned_memory": {"enable": False}},
                      "sequence_batching": {"max_sequence_idle_microseconds": 5, "oldest": {"preferred_batch_size": [2]}}})
    assert kept["optimization"]["input_pinned_memory"] == {"enable": False}  # a written switch stays
    assert kept["sequence_batching"]["max_sequence_idle_microseconds"] == 5
    assert kept["sequence_batching"]["oldest"]["preferred_batch_size"] == [2]
