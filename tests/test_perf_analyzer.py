"""Triton's perf_analyzer (the real C++ binary, 2.48, from tritonclient's wheel: scripts/install_perf_analyzer.sh)
profiling gpuserve in the modes Triton users run it in: HTTP and gRPC, sync, async and streaming, batches,
system shared memory, strings, sequences, a decoupled model, request rates and the metrics endpoint. Each run
must end 0 with its server-side section, as against Triton: perf_analyzer reads the model's metadata, config
and statistics and checks every answer, so a field it cannot parse or a count that does not add up fails it.
Skipped where the binary is not installed."""

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import running_server
from simple_models import build_simple_models
from test_sequence_state import ACCUMULATOR, accumulator_onnx

from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

BESIDE = Path(sys.executable).parent / "perf_analyzer"  # where the install script puts it
PERF_ANALYZER = shutil.which("perf_analyzer") or (str(BESIDE) if BESIDE.exists() else None)
pytestmark = pytest.mark.skipif(PERF_ANALYZER is None, reason="perf_analyzer is not installed "
                                "(bash scripts/install_perf_analyzer.sh)")

# simple twice in a row: perf_analyzer finds the composing models in the config and prints each one's counts
CHAIN = """
platform: "ensemble"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling {
  step [
    { model_name: "simple" model_version: -1 input_map { key: "INPUT0" value: "IN" }
      output_map { key: "OUTPUT0" value: "TWICE" } },
    { model_name: "simple" model_version: -1 input_map { key: "INPUT0" value: "TWICE" }
      output_map { key: "OUTPUT0" value: "OUT" } }
  ]
}
"""
# a BLS model asking simple once a request (--bls-composing-models names it to perf_analyzer)
ASK = """
backend: "python"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""
ASK_SOURCE = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            asked = pb_utils.InferenceRequest(model_name="simple", requested_output_names=["OUTPUT0"],
                                              inputs=[pb_utils.Tensor("INPUT0", x)]).exec()
            if asked.has_error():
                raise pb_utils.TritonModelException(asked.error().message())
            y = pb_utils.get_output_tensor_by_name(asked, "OUTPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return responses
"""
REPEAT = """
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""
REPEAT_SOURCE = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            sender = request.get_response_sender()
            for step in range(3):
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", (value + step).astype(np.int32))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""


def _write(root, name, config, artefact=None, source=None):
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(textwrap.dedent(config))
    if artefact:
        artefact(root / name / "1" / "model.onnx")
    if source:
        (root / name / "1" / "model.py").write_text(source)


def _repository(root):
    build_simple_models(root)
    _write(root, "accumulate", ACCUMULATOR % 5_000_000, accumulator_onnx)
    _write(root, "repeat", REPEAT, source=REPEAT_SOURCE)
    _write(root, "chain", CHAIN)
    _write(root, "ask", ASK, source=ASK_SOURCE)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("perf-analyzer-repo")
    _repository(root)
    with running_server(repository=DiskRepository(root).populate(ModelRepository())) as running:
        yield running


def profile(server, model, *flags, grpc=False, seconds=0.3):
    """One perf_analyzer run (three windows of `seconds`, any three agree): its whole output, after checking
    it ended 0 and measured (the client's and the server's numbers both printed)."""
    port = server.ports["grpc" if grpc else "http"]
    cmd = [PERF_ANALYZER, "-m", model, "-u", f"127.0.0.1:{port}", "-i", "grpc" if grpc else "http",
           "--measurement-interval", str(int(seconds * 1000)), "--stability-percentage", "999",
           "--max-trials", "3", *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"perf_analyzer {' '.join(cmd[1:])} ended {proc.returncode}:\n{out[-2000:]}"
    assert re.search(r"Throughput: [0-9.]+ infer/sec", out) and "Server:" in out, out[-2000:]
    return out


def counts(out):
    """The last measurement's client request count and its server section's counts (the model's own, not its
    composing models', which follow them)."""
    client, server = out.rsplit("Server:", 1)
    server = server.split("Composing models:")[0]
    numbers = {"Request count": int(re.findall(r"Request count: (\d+)", client)[-1])}
    for key in ("Inference count", "Execution count", "Successful request count"):
        numbers[key] = int(re.search(rf"{key}: (\d+)", server).group(1))
    return numbers


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "grpc"])
def test_sync_requests_are_counted_alike_by_client_and_server(server, grpc):
    numbers = counts(profile(server, "simple", grpc=grpc))
    assert numbers["Request count"] > 0
    # the server's successes over the window (statistics read at its edges): the client's requests, give or
    # take the few in flight at each edge
    edges = max(5, numbers["Request count"] // 100)
    assert abs(numbers["Successful request count"] - numbers["Request count"]) <= edges
    assert numbers["Inference count"] == numbers["Successful request count"]  # one row each


def test_batches_of_four_count_four_inferences_a_request(server):
    numbers = counts(profile(server, "simple", "-b", "4"))
    assert numbers["Inference count"] == 4 * numbers["Successful request count"]
    assert numbers["Execution count"] <= numbers["Successful request count"]


@pytest.mark.parametrize("flags, grpc", [(("-a", "--concurrency-range", "4"), False),
                                         (("-a", "--concurrency-range", "4"), True),
                                         (("--streaming", "--concurrency-range", "4"), True)],
                         ids=["http-async", "grpc-async", "grpc-streaming"])
def test_concurrent_clients(server, flags, grpc):
    out = profile(server, "simple", *flags, grpc=grpc)
    assert "Concurrency: 4" in out


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "grpc"])
def test_system_shared_memory(server, grpc):
    profile(server, "simple", "--shared-memory", "system", grpc=grpc)
    # a region for each output, as large as said (a random string is 128 bytes: 132 with its length)
    profile(server, "simple", "--shared-memory", "system", "--output-shared-memory-size", "64", grpc=grpc)
    profile(server, "strings", "--shared-memory", "system", "--output-shared-memory-size", "256", grpc=grpc)


@pytest.mark.parametrize("flags, grpc", [(("--string-length", "12"), False), (("--string-data", "hello"), True)],
                         ids=["http-random", "grpc-fixed"])
def test_string_inputs(server, flags, grpc):
    profile(server, "strings", *flags, grpc=grpc)


@pytest.mark.parametrize("flags, grpc", [(("--sequence-length", "4"), False),
                                         (("--sequence-length", "4", "-a", "--concurrency-range", "3"), True),
                                         (("--sequence-length", "4", "--streaming", "--concurrency-range", "3"),
                                          True)],
                         ids=["http", "grpc-async", "grpc-streaming"])
def test_sequences(server, flags, grpc):
    profile(server, "accumulate", *flags, grpc=grpc)


def test_a_decoupled_model_streams_its_responses(server):
    out = profile(server, "repeat", "--streaming", "--shape", "IN:1", grpc=True)
    assert counts(out)["Request count"] > 0


def composing(out, model):
    """A composing model's inference count in the last measurement's server section."""
    return int(re.findall(rf"{model}, version: \d+\s+Inference count: (\d+)", out)[-1])


def test_an_ensemble_and_its_composing_model(server):
    out = profile(server, "chain", "-b", "2")
    numbers = counts(out)
    # each request of two rows runs simple twice: four rows for simple a request (give or take the edges)
    assert numbers["Inference count"] == 2 * numbers["Successful request count"]
    assert abs(composing(out, "simple") - 2 * numbers["Inference count"]) <= max(8, numbers["Inference count"] // 50)


def test_a_bls_model_and_the_model_it_asks(server):
    out = profile(server, "ask", "--bls-composing-models", "simple", grpc=True)
    asked = counts(out)["Inference count"]
    assert asked > 0 and abs(composing(out, "simple") - asked) <= max(4, asked // 50)  # one call of simple each


def test_request_rate_and_intervals(server, tmp_path):
    out = profile(server, "simple", "--request-rate-range", "200", seconds=0.5)
    rate = float(re.findall(r"Throughput: ([0-9.]+) infer/sec", out)[-1])
    assert 150 < rate < 250
    intervals = tmp_path / "intervals.txt"
    intervals.write_text("2000\n4000\n")  # microseconds between requests, repeated
    profile(server, "simple", "--request-intervals", str(intervals), grpc=True)


def test_metrics_endpoint_and_csv(server, tmp_path):
    csv = tmp_path / "profile.csv"
    profile(server, "simple", "--collect-metrics", "--metrics-url", f"127.0.0.1:{server.ports['metrics']}/metrics",
            "--metrics-interval", "100", "-f", str(csv))
    header, row = csv.read_text().splitlines()[:2]
    assert header.startswith("Concurrency,Inferences/Second") and row.startswith("1,")
    assert float(row.split(",")[1]) > 0


def test_a_missing_model_is_its_error_not_a_hang(server):
    port = server.ports["http"]
    proc = subprocess.run([PERF_ANALYZER, "-m", "nope", "-u", f"127.0.0.1:{port}"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and "nope" in proc.stdout + proc.stderr
