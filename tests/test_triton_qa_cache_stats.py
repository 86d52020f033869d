"""Triton's qa L0_response_cache against gpuserve: an ensemble's own answers kept in the response cache, a
miss counted even when the answer is too large to keep, decoupled pipelines refused, and the cache flags
refused in Triton's words."""

import logging
import subprocess
import sys
import textwrap
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import free_ports, running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

COUNTING_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.calls = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            self.calls += 1
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", x + 1), pb_utils.Tensor("CALLS", np.array([self.calls], np.int64))]))
        return responses
"""
DECOUPLED_PY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            sender = request.get_response_sender()
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x + 1), pb_utils.Tensor("CALLS", x)]),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""
TENSORS = """
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "CALLS" data_type: TYPE_INT64 dims: [ 1 ] } ]
"""
ENSEMBLE = """
platform: "ensemble"
ensemble_scheduling { step [ { model_name: "STEP" model_version: -1 input_map { key: "IN" value: "IN" }
  output_map { key: "OUT" value: "OUT" } output_map { key: "CALLS" value: "CALLS" } } ] }
"""


def _repository(root, step_cache=False, ensemble_cache=True, decoupled=False):
    step = root / "step" / "1"
    step.mkdir(parents=True)
    (step / "model.py").write_text(DECOUPLED_PY if decoupled else COUNTING_PY)
    extra = ("model_transaction_policy { decoupled: true }\n" if decoupled else "") + \
        ("response_cache { enable: true }\n" if step_cache else "")
    (root / "step" / "config.pbtxt").write_text('name: "step"\nbackend: "python"\n' + TENSORS + extra)
    (root / "pipeline" / "1").mkdir(parents=True)
    (root / "pipeline" / "config.pbtxt").write_text(
        'name: "pipeline"\n' + textwrap.dedent(ENSEMBLE).replace("STEP", "step") + TENSORS
        + ("response_cache { enable: true }\n" if ensemble_cache else ""))
    return DiskRepository(root).populate(ModelRepository())


def _infer(client, model="pipeline"):
    tensor = grpcclient.InferInput("IN", [16], "FP32")
    tensor.set_data_from_numpy(np.ones(16, np.float32))
    result = client.infer(model, [tensor])
    return result.as_numpy("OUT"), int(result.as_numpy("CALLS")[0])


def _counts(client, model):
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]["inference_stats"]
    return {key: int(stats[key].get("count", 0)) for key in ("success", "cache_hit", "cache_miss")}


def test_an_ensembles_own_answer_is_kept_and_its_steps_not_run_again(tmp_path):
    with running_server(repository=_repository(tmp_path, step_cache=True)) as server, \
            grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
        first, calls = _infer(client)
        assert _counts(client, "pipeline") == {"success": 1, "cache_hit": 0, "cache_miss": 1}
        again, calls_again = _infer(client)
        np.testing.assert_array_equal(first, again)
        assert calls_again == calls == 1  # the step ran once: the ensemble's answer came from the cache
        assert _counts(client, "pipeline") == {"success": 2, "cache_hit": 1, "cache_miss": 1}
        # as Triton: the step's own cache saw one request and never a hit
        assert _counts(client, "step") == {"success": 1, "cache_hit": 0, "cache_miss": 1}
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics']}/metrics").read().decode()
    gauges = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("nv_cache_") and "{" not in line}
    # Triton's local cache gauges: three lookups (the ensemble's two, its step's one), one hit
    assert (gauges["nv_cache_num_lookups"], gauges["nv_cache_num_hits"], gauges["nv_cache_num_misses"]) == (3, 1, 2)
    assert gauges["nv_cache_num_entries"] == 2 and "nv_cache_lookup_duration" in gauges
    assert gauges["nv_cache_insertion_duration"] >= 0
    assert 'nv_cache_num_hits_per_model{model="pipeline",version="1"} 1' in text  # as Triton 2.51 shows it


def test_an_answer_too_large_to_keep_is_a_miss_and_logged_in_tritons_words(tmp_path, caplog):
    with caplog.at_level(logging.ERROR), running_server(repository=_repository(tmp_path),
                                                        response_cache_bytes=200) as server, \
            grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
        assert [_infer(client)[1] for _ in range(2)] == [1, 2]  # not kept: the step runs again
        assert _counts(client, "pipeline") == {"success": 2, "cache_hit": 0, "cache_miss": 2}
    logged = [r.getMessage() for r in caplog.records if "Failed to insert key" in r.getMessage()]
    assert len(logged) == 2 and "into response cache: Requested byte_size:" in logged[0]
    assert "is greater than total cache size: 200" in logged[0]


def test_an_ensemble_with_a_decoupled_step_may_not_enable_the_cache(tmp_path):
    with running_server(repository=_repository(tmp_path, decoupled=True)) as server, \
            grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
        assert client.is_model_ready("step") and not client.is_model_ready("pipeline")
        index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
        assert index["pipeline"]["reason"] == (
            "Response Cache does not currently support model pipeline with 'decoupled' transaction policy. "
            "Please disable the response cache.")


def test_a_decoupled_onnx_step_shows_its_policy_and_counts_for_the_ensemble(tmp_path):
    from onnx import TensorProto
    from triton_example_models import add_sub

    add_sub(tmp_path, "add_sub", "TYPE_FP32", TensorProto.FLOAT)
    with open(tmp_path / "add_sub" / "config.pbtxt", "a") as config:
        config.write("model_transaction_policy { decoupled: true }\n")
    (tmp_path / "pipeline" / "1").mkdir(parents=True)
    (tmp_path / "pipeline" / "config.pbtxt").write_text(textwrap.dedent("""
        platform: "ensemble"
        max_batch_size: 8
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] },
                { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
        ensemble_scheduling { step [ { model_name: "add_sub" model_version: -1
          input_map { key: "INPUT0" value: "INPUT0" } input_map { key: "INPUT1" value: "INPUT1" }
          output_map { key: "OUTPUT0" value: "OUTPUT0" } } ] }
        response_cache { enable: true }
        """))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server, \
            grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
        config = client.get_model_config("add_sub", as_json=True)["config"]
        assert config["model_transaction_policy"] == {"decoupled": True}
        assert not client.is_model_ready("pipeline")


@pytest.mark.parametrize("flags, words", [
    (["--response-cache-byte-size=12345", "--cache-config=local,size=67890"],
     "Incompatible flags --response-cache-byte-size and --cache-config both provided"),
    (["--cache-config=local,size=8192", "--cache-config=redis,key=value"],
     "found multiple cache configurations, but only a single cache is currently supported"),
])
def test_cache_flags_refused_in_tritons_words(tmp_path, flags, words):
    http, grpc, metrics = free_ports(3)  # never bound (the start stops at the flags), but never someone's either
    out = subprocess.run([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={tmp_path}",
                          "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), *flags],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and words in out.stderr and "Traceback" not in out.stderr


# qa L0_response_statistics: Triton's square backend and the per-response statistics it reports ---------------

SQUARE = """
backend: "square"
max_batch_size: 0
model_transaction_policy { decoupled: True }
input [{ name: "IN" data_type: TYPE_INT32 dims: [ 1 ] }]
output [{ name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }]
parameters [{ key: "CUSTOM_INFER_DELAY_NS" value: { string_value: "20000000" } }]
parameters [{ key: "CUSTOM_OUTPUT_DELAY_NS" value: { string_value: "10000000" } }]
parameters [{ key: "CUSTOM_FAIL_COUNT" value: { string_value: "1" } }]
parameters [{ key: "CUSTOM_EMPTY_COUNT" value: { string_value: "1" } }]
"""


def _stream(client, model, count):
    got = []
    client.start_stream(lambda result, error: got.append((result, error)))
    tensor = grpcclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([count], np.int32))
    client.async_stream_infer(model, [tensor], enable_empty_final_response=True)
    client.stop_stream()  # waits for the stream's end: the final flag came
    return got


def test_square_backend_answers_and_reports_each_responses_statistics(tmp_path):
    (tmp_path / "square_int32" / "1").mkdir(parents=True)
    (tmp_path / "square_int32" / "config.pbtxt").write_text(SQUARE)
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server, \
            grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
        got = _stream(client, "square_int32", 4)
        # 4 responses: two answers, one failure, one empty (none sent), then the final flag alone
        assert [int(r.as_numpy("OUT")[0]) for r, e in got[:2] if e is None] == [4, 4]
        assert got[2][1] is not None and "simulated failure" in str(got[2][1])
        assert len(got) == 4 and got[3][0].get_response().parameters["triton_final_response"].bool_param
        _stream(client, "square_int32", 3)  # adds up: one answer, one failure, one empty
        grpc_stats = client.get_inference_statistics("square_int32", as_json=True)["model_stats"][0]["response_stats"]
    expected = {"0": {"success": 2, "compute_infer": 2, "compute_output": 2},
                "1": {"success": 1, "fail": 1, "compute_infer": 2, "compute_output": 2},
                "2": {"fail": 1, "empty_response": 1, "compute_infer": 2, "compute_output": 1},
                "3": {"empty_response": 1, "compute_infer": 1}}
    assert sorted(grpc_stats) == ["0", "1", "2", "3"]
    for index, counts in expected.items():
        for key in ("compute_infer", "compute_output", "success", "fail", "empty_response", "cancel"):
            stat = grpc_stats[index][key]
            assert int(stat.get("count", 0)) == counts.get(key, 0), (index, key)
            floor = {"compute_infer": 20e6, "compute_output": 10e6, "success": 30e6, "fail": 30e6,
                     "empty_response": 20e6}.get(key, 0) * counts.get(key, 0)
            assert int(stat.get("ns", 0)) >= floor, (index, key)


def test_response_statistics_follow_tritons_rules_per_outcome():
    from gpuserve.engine.stats import ModelStats

    stats = ModelStats("m", "1")
    stats.record_response(0, 100, 150, 175)  # an answer: compute to 150, output from there
    stats.record_response(1, 100, 0, 130)  # no outputs: an empty response
    stats.record_response(1, 100, 0, 140, "fail")  # failed before any output: compute only
    stats.record_response(2, 100, 0, 120, "cancel")  # the clean-up alone
    got = stats.as_dict()["response_stats"]
    assert got["0"]["compute_infer"] == {"count": 1, "ns": 50} and got["0"]["compute_output"] == {"count": 1, "ns": 25}
    assert got["0"]["success"] == {"count": 1, "ns": 75}
    assert got["1"]["compute_infer"] == {"count": 2, "ns": 70} and got["1"]["compute_output"]["count"] == 0
    assert got["1"]["empty_response"] == {"count": 1, "ns": 30} and got["1"]["fail"] == {"count": 1, "ns": 40}
    assert got["2"]["cancel"] == {"count": 1, "ns": 20} and got["2"]["compute_infer"]["count"] == 0
    with pytest.raises(ValueError):
        stats.record_response(3, 200, 100, 300)
    assert "response_stats" not in ModelStats("plain").as_dict()  # none reported: the extension shows {}


def test_an_ensembles_kept_answers_are_not_given_once_a_step_is_loaded_again(tmp_path):
    registry = _repository(tmp_path)
    with running_server(repository=registry, model_control_enabled=True) as server, \
            grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
        assert [_infer(client)[1] for _ in range(2)] == [1, 1]  # the second from the cache
        model_py = tmp_path / "step" / "1" / "model.py"
        model_py.write_text(model_py.read_text().replace("x + 1", "x + 2"))
        client.load_model("step")  # a new step model: the ensemble's kept answer is stale
        out, calls = _infer(client)
        assert calls == 1 and out[0] == 3
        assert _counts(client, "pipeline") == {"success": 3, "cache_hit": 1, "cache_miss": 2}
