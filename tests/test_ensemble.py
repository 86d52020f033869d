"""Triton ensembles: a Python step and an ONNX step chained by input_map/output_map, batched by the
steps' own batchers, with graph checks at load and step errors reaching the client."""

import textwrap

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import make_onnx_model, onnx_reference, running_server
from gpuserve import ModelRepository
from gpuserve.ensemble import plan_steps
from gpuserve.errors import InvalidSettings
from gpuserve.repository import DiskRepository

DOUBLE = textwrap.dedent("""
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor(
                "OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy() * 2)]) for r in requests]
    """)
DOUBLE_CONFIG = """
backend: "python"
max_batch_size: 8
dynamic_batching { }
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""
LINEAR_CONFIG = """
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""
PIPELINE = """
platform: "ensemble"
max_batch_size: 8
input [ { name: "RAW" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "SCORES" data_type: TYPE_FP32 dims: [ 3 ] }, { name: "DOUBLED" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling {
  step [
    { model_name: "double" model_version: -1 input_map { key: "IN" value: "RAW" } output_map { key: "OUT" value: "DOUBLED" } },
    { model_name: "linear" model_version: 1 input_map { key: "input" value: "DOUBLED" }
      output_map { key: "output" value: "SCORES" } }
  ]
}
"""


def _repo(root):
    for name, config in (("double", DOUBLE_CONFIG), ("linear", LINEAR_CONFIG), ("pipeline", PIPELINE)):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
    (root / "double" / "1" / "model.py").write_text(DOUBLE)
    weights = make_onnx_model(root / "linear" / "1" / "model.onnx")
    (root / "cycle" / "1").mkdir(parents=True)
    (root / "cycle" / "config.pbtxt").write_text(PIPELINE.replace('value: "RAW"', 'value: "SCORES"'))
    (root / "broken_step" / "1").mkdir(parents=True)
    (root / "broken_step" / "config.pbtxt").write_text(PIPELINE.replace('model_name: "linear"', 'model_name: "gone"')
                                                       .replace("model_version: 1", "model_version: -1"))
    return weights


def _raw(x, module=httpclient):
    tensor = module.InferInput("RAW", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def test_pipeline_chains_python_and_onnx_steps_over_both_protocols(tmp_path):
    weights = _repo(tmp_path)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            result = client.infer("pipeline", [_raw(x)])
            assert np.allclose(result.as_numpy("SCORES"), onnx_reference(2 * x, *weights), rtol=1e-5, atol=1e-6)
            assert np.array_equal(result.as_numpy("DOUBLED"), 2 * x)
            only = client.infer("pipeline", [_raw(x)], outputs=[httpclient.InferRequestedOutput("SCORES")])
            assert only.as_numpy("DOUBLED") is None and only.as_numpy("SCORES").shape == (3, 3)
            meta = client.get_model_metadata("pipeline")
            assert meta["platform"] == "ensemble" and meta["inputs"][0]["shape"] == [-1, 4]
            config = client.get_model_config("pipeline")
            assert config["platform"] == "ensemble"
            assert [s["model_name"] for s in config["ensemble_scheduling"]["step"]] == ["double", "linear"]
            assert client.is_model_ready("pipeline")
            with pytest.raises(InferenceServerException, match="batch-size must be <= 8") as caught:
                client.infer("pipeline", [_raw(np.zeros((9, 4), np.float32))])
            assert caught.value.status() == "400"
            stats = {s["name"]: s for s in client.get_inference_statistics()["model_stats"]}
            assert stats["double"]["inference_count"] == 2 * 3 and stats["pipeline"]["inference_count"] == 2 * 3
            assert stats["pipeline"]["execution_count"] == 2 and stats["pipeline"]["inference_stats"]["queue"]["count"] == 2
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            steps = client.get_model_config("pipeline").config.ensemble_scheduling.step
            assert [(s.model_name, s.model_version, dict(s.input_map)) for s in steps] == \
                [("double", -1, {"IN": "RAW"}), ("linear", 1, {"input": "DOUBLED"})]
            result = client.infer("pipeline", [_raw(x, grpcclient)])
            assert np.allclose(result.as_numpy("SCORES"), onnx_reference(2 * x, *weights), rtol=1e-5, atol=1e-6)


def test_broken_graphs_are_not_ready_with_a_reason_and_missing_steps_fail_cleanly(tmp_path):
    _repo(tmp_path)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            index = {m["name"]: m for m in client.get_model_repository_index()}
            assert index["cycle"]["state"] == "UNAVAILABLE" and "cycle" in index["cycle"]["reason"]
            assert not client.is_model_ready("broken_step")  # its step 'gone' is not served
            assert ("ensemble broken_step contains models that are not available or ambiguous: gone"
                    in index["broken_step"]["reason"])  # Triton's words
            with pytest.raises(InferenceServerException) as caught:  # Triton's words and status for it
                client.infer("broken_step", [_raw(np.zeros((1, 4), np.float32))])
            assert caught.value.status() == "404"
            assert caught.value.message() == "Request for unknown model: 'broken_step' has no available versions"
            client.unload_model("double")  # as Triton: a step goes away, and the pipeline is unloaded with it
            assert not client.is_model_ready("pipeline")
            client.load_model("double")
            assert not client.is_model_ready("pipeline")  # it stays unloaded until it is loaded again
            client.load_model("pipeline")
            assert client.is_model_ready("pipeline")
            assert client.infer("pipeline", [_raw(np.ones((1, 4), np.float32))]).as_numpy("DOUBLED").tolist() == \
                [[2.0] * 4]


def test_plan_checks_inputs_outputs_and_cycles():
    base = {"input": [{"name": "A"}], "output": [{"name": "C"}]}

    def config(*steps):
        return {**base, "ensemble_scheduling": {"step": list(steps)}}

    good = plan_steps("e", config({"model_name": "m", "input_map": {"x": "A"}, "output_map": {"y": "B"}},
                                  {"model_name": "n", "input_map": {"x": "B"}, "output_map": {"y": "C"}}))
    assert [s.model for s in good] == ["m", "n"] and good[0].version is None
    with pytest.raises(InvalidSettings, match="neither"):
        plan_steps("e", config({"model_name": "m", "input_map": {"x": "Z"}, "output_map": {"y": "C"}}))
    with pytest.raises(InvalidSettings, match="no step produces"):
        plan_steps("e", config({"model_name": "m", "input_map": {"x": "A"}, "output_map": {"y": "B"}}))
    with pytest.raises(InvalidSettings, match="cycle"):
        plan_steps("e", config({"model_name": "m", "input_map": {"x": "B"}, "output_map": {"y": "C"}},
                               {"model_name": "n", "input_map": {"x": "C"}, "output_map": {"y": "B"}}))
    with pytest.raises(InvalidSettings, match="no ensemble_scheduling"):
        plan_steps("e", base)


@pytest.mark.parametrize("step, words", [
    ("x", "step 0 of ensemble 'e' must be an object, not str"),
    ({"model_name": 5, "input_map": {"x": "A"}, "output_map": {"y": "C"}},
     "'model_name' in step 0 .* must be a string"),
    ({"model_name": "m", "input_map": "x", "output_map": {"y": "C"}}, "'input_map' in step 0 .* must map"),
])
def test_an_ensemble_config_of_the_wrong_json_types_is_refused_in_words(step, words):
    """A config given as JSON at load time can hold anything: its check says what is wrong, where Python's
    AttributeError or TypeError was the answer (found by fuzzing the repository API, session 25)."""
    from gpuserve.triton_validate import check_ensemble_graph

    config = {"name": "e", "platform": "ensemble", "input": [{"name": "A"}], "output": [{"name": "C"}],
              "ensemble_scheduling": {"step": [step]}}
    with pytest.raises(InvalidSettings, match=words):
        check_ensemble_graph(config)
