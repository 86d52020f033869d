"""Triton's request traces written to files (qa/L0_trace, qa/L0_cmdline_trace): what tritonserver 2.51
writes is what Triton's trace_summary.py and users' jq scripts read, so the objects, the names of the
points in time, the sampling by rate and count, the indexed files of log_frequency, the child traces of
ensemble steps and BLS requests, and the per-model settings must match it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper

from conftest import free_ports, running_server
from gpuserve import ModelRepository
from gpuserve.engine.job import TRACING
from gpuserve.repository import DiskRepository
from gpuserve.runtime_settings import RuntimeSettings

CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [{{ name: "INPUT0" data_type: TYPE_INT32 dims: [16] }}, {{ name: "INPUT1" data_type: TYPE_INT32 dims: [16] }}]
output [{{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [16] }}, {{ name: "OUTPUT1" data_type: TYPE_INT32 dims: [16] }}]
"""
ENSEMBLE = """name: "{name}"
platform: "ensemble"
max_batch_size: 8
input [{{ name: "INPUT0" data_type: TYPE_INT32 dims: [16] }}, {{ name: "INPUT1" data_type: TYPE_INT32 dims: [16] }}]
output [{{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [16] }}, {{ name: "OUTPUT1" data_type: TYPE_INT32 dims: [16] }}]
ensemble_scheduling {{ step [{{ model_name: "{step}" model_version: -1
  input_map {{ key: "INPUT0" value: "INPUT0" }} input_map {{ key: "INPUT1" value: "INPUT1" }}
  output_map {{ key: "OUTPUT0" value: "OUTPUT0" }} output_map {{ key: "OUTPUT1" value: "OUTPUT1" }} }}] }}
"""
BLS = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            if request.trace().get_context() is not None:
                raise pb_utils.TritonModelException("a Triton-mode trace has no OpenTelemetry context")
            inputs = [pb_utils.get_input_tensor_by_name(request, n) for n in ("INPUT0", "INPUT1")]
            child = pb_utils.InferenceRequest(model_name="ens", requested_output_names=["OUTPUT0", "OUTPUT1"],
                                              inputs=inputs, trace=request.trace())
            responses.append(pb_utils.InferenceResponse(child.exec().output_tensors()))
        return responses
"""
BLS_CONFIG = """name: "bls"
backend: "python"
input [{ name: "INPUT0" data_type: TYPE_INT32 dims: [1, 16] }, { name: "INPUT1" data_type: TYPE_INT32 dims: [1, 16] }]
output [{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [1, 16] }, { name: "OUTPUT1" data_type: TYPE_INT32 dims: [1, 16] }]
"""


def add_sub(folder, name):
    """qa's onnx_int32_int32_int32 as an ONNX stand-in: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    tensor = lambda n: helper.make_tensor_value_info(n, TensorProto.INT32, ["b", 16])  # noqa: E731
    graph = helper.make_graph([helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
                               helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])], name,
                              [tensor("INPUT0"), tensor("INPUT1")], [tensor("OUTPUT0"), tensor("OUTPUT1")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (folder / name / "1").mkdir(parents=True)
    onnx.save(model, str(folder / name / "1" / "model.onnx"))
    (folder / name / "config.pbtxt").write_text(CONFIG.format(name=name))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("trace_repo")
    add_sub(root, "simple")
    add_sub(root, "other")
    (root / "ens" / "1").mkdir(parents=True)
    (root / "ens" / "config.pbtxt").write_text(ENSEMBLE.format(name="ens", step="simple"))
    (root / "bls" / "1").mkdir(parents=True)
    (root / "bls" / "1" / "model.py").write_text(BLS)
    (root / "bls" / "config.pbtxt").write_text(BLS_CONFIG)
    return root


def serve(repo, trace_file, *configs):
    config = [f"triton,file={trace_file}", *configs]
    return running_server(repository=DiskRepository(repo).populate(ModelRepository()), trace_config=config)


def infer(module, port, model="simple", request_id="1"):
    client = module.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(np.arange(16, dtype=np.int32).reshape(1, 16))
    inputs[1].set_data_from_numpy(np.ones((1, 16), dtype=np.int32))
    try:
        result = client.infer(model, inputs, request_id=request_id)
        assert result.as_numpy("OUTPUT0").tolist() == [list(range(1, 17))]
    finally:
        client.close()


def both(server, times, model="simple"):
    for _ in range(times):
        infer(grpcclient, server.ports["grpc"], model)
        infer(httpclient, server.ports["http"], model)


def traces(path):
    """{id: {"head": header object, "times": {name: ns}, "tensors": [activity objects]}} of a trace file."""
    found = {}
    for item in json.loads(path.read_text()):
        entry = found.setdefault(item["id"], {"head": None, "times": {}, "tensors": []})
        if "model_name" in item:
            entry["head"] = item
        elif "timestamps" in item:
            for stamp in item["timestamps"]:
                entry["times"][stamp["name"]] = stamp["ns"]
        else:
            entry["tensors"].append(item)
    return found


def test_every_request_traced_with_triton_objects_and_points_in_time(repo, tmp_path):
    path = tmp_path / "trace.json"
    with serve(repo, path, "level=TIMESTAMPS", "rate=1") as server:
        both(server, 2)
        assert not path.exists()  # as tritonserver: written at shutdown when log_frequency is 0
    found = traces(path)
    assert len(found) == 4
    order = ["REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START",
             "COMPUTE_END", "REQUEST_END"]
    for entry in found.values():
        assert entry["head"] == {"id": entry["head"]["id"], "model_name": "simple", "model_version": 1,
                                 "request_id": "1"}
        times = entry["times"]
        assert [times[n] for n in order] == sorted(times[n] for n in order)
        front = "HTTP" if "HTTP_RECV_START" in times else "GRPC"
        if front == "HTTP":
            assert times["HTTP_RECV_START"] <= times["HTTP_RECV_END"] <= times["REQUEST_START"]
            assert times["REQUEST_END"] <= times["HTTP_SEND_START"] <= times["HTTP_SEND_END"]
        else:
            assert times["GRPC_WAITREAD_END"] <= times["REQUEST_START"]
            assert times["REQUEST_END"] <= times["GRPC_SEND_START"] <= times["GRPC_SEND_END"]
        assert abs(times["REQUEST_START"] - time.monotonic_ns()) < 600e9  # Triton's clock: CLOCK_MONOTONIC
    assert sorted("HTTP_RECV_START" in e["times"] for e in found.values()) == [False, False, True, True]


def test_level_off_writes_no_file(repo, tmp_path):
    path = tmp_path / "off.json"
    with serve(repo, path, "level=OFF", "rate=1") as server:
        both(server, 2)
        assert server.dataplane.runtime_settings.tracer.on is False
    assert not path.exists()


def test_rate_samples_every_nth_and_log_frequency_writes_indexed_files(repo, tmp_path):
    path = tmp_path / "freq.json"
    with serve(repo, path, "level=TIMESTAMPS", "rate=6", "log-frequency=2") as server:
        both(server, 10)  # 20 requests: the 6th, 12th and 18th are traced
        assert len(traces(tmp_path / "freq.json.0")) == 2  # written once 2 were collected
    assert len(traces(tmp_path / "freq.json.1")) == 1  # the rest, at shutdown
    assert not path.exists()


def test_trace_count_read_back_and_used_up_writes_index_file(repo, tmp_path):
    path = tmp_path / "count.json"
    with serve(repo, path, "level=TIMESTAMPS", "rate=1") as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        both(server, 2)
        assert client.update_trace_settings(settings={"trace_count": "3"})["trace_count"] == "3"
        both(server, 3)
        assert client.get_trace_settings(model_name="simple")["trace_count"] == "0"
        assert client.get_trace_settings()["trace_count"] == "0"
        assert len(traces(tmp_path / "count.json.0")) == 3  # as Triton: written when the count is used up
        client.close()
    assert len(traces(path)) == 4  # the traces of the settings before, at shutdown


def test_model_settings_override_global_ones(repo, tmp_path):
    path = tmp_path / "model.json"
    with serve(repo, path, "level=TIMESTAMPS", "rate=1") as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        client.update_trace_settings(model_name="simple", settings={"trace_level": ["OFF"]})
        both(server, 2, "simple")
        both(server, 1, "other")
        client.update_trace_settings(model_name="simple", settings={"trace_level": None, "trace_rate": "2"})
        both(server, 2, "simple")
        client.close()
    names = sorted(e["head"]["model_name"] for e in traces(path).values())
    assert names == ["other", "other", "simple", "simple"]


def test_tensors_level_adds_tensor_activities(repo, tmp_path):
    path = tmp_path / "tensors.json"
    with serve(repo, path, "level=TIMESTAMPS", "level=TENSORS", "rate=1") as server:
        infer(httpclient, server.ports["http"])
    (entry,) = traces(path).values()
    tensors = {(t["activity"], t["tensor"]["name"]): t["tensor"] for t in entry["tensors"]}
    assert tensors[("TENSOR_QUEUE_INPUT", "INPUT0")] == {
        "name": "INPUT0", "data": ",".join(str(i) for i in range(16)), "shape": "1,16", "dtype": "INT32"}
    assert tensors[("TENSOR_BACKEND_OUTPUT", "OUTPUT1")]["data"] == ",".join(str(i - 1) for i in range(16))
    assert set(tensors) == {("TENSOR_QUEUE_INPUT", "INPUT0"), ("TENSOR_QUEUE_INPUT", "INPUT1"),
                            ("TENSOR_BACKEND_OUTPUT", "OUTPUT0"), ("TENSOR_BACKEND_OUTPUT", "OUTPUT1")}


def test_tensors_alone_write_only_activities_in_tritons_number_and_string_forms(repo, tmp_path):
    """tritonserver 2.51 at the TENSORS level alone: no header, no points in time; floats as C++ streams
    write them (6 significant digits), booleans as 1/0, strings each in double quotes."""
    from gpuserve.tracing import tensor_text

    path = tmp_path / "only.json"
    with serve(repo, path, "level=TENSORS", "rate=1") as server:
        infer(httpclient, server.ports["http"])
    items = json.loads(path.read_text())
    assert len(items) == 4 and all(set(item) == {"id", "activity", "tensor"} for item in items)
    floats = json.loads("{" + tensor_text(np.array([5.1, 1e-7, 123456789], np.float32)) + "}")
    assert floats == {"data": "5.1,1e-07,1.23457e+08", "shape": "3", "dtype": "FP32"}
    assert json.loads("{" + tensor_text(np.array([True, False])) + "}")["data"] == "1,0"
    strings = json.loads("{" + tensor_text(np.array([b"a,b", b"c"], dtype=object), "BYTES") + "}")
    assert strings == {"data": '"a,b","c"', "shape": "2", "dtype": "BYTES"}


def test_ensemble_steps_and_bls_requests_are_child_traces(repo, tmp_path):
    path = tmp_path / "children.json"
    with serve(repo, path, "level=TIMESTAMPS", "rate=1") as server:
        infer(httpclient, server.ports["http"], "ens", request_id="7")
        infer(httpclient, server.ports["http"], "bls", request_id="")
    found = traces(path)
    assert "QUEUE_START" in found[1]["times"] and "COMPUTE_START" not in found[1]["times"]  # the ensemble's own
    heads = sorted((e["head"] for e in found.values()), key=lambda h: h["id"])
    assert heads == [
        {"id": 1, "model_name": "ens", "model_version": 1, "request_id": "7"},
        {"id": 2, "model_name": "simple", "model_version": 1, "request_id": "7", "parent_id": 1},
        {"id": 3, "model_name": "bls", "model_version": 1},
        {"id": 4, "model_name": "ens", "model_version": 1, "parent_id": 3},
        {"id": 5, "model_name": "simple", "model_version": 1, "parent_id": 4}]


def test_tracing_off_leaves_requests_untouched():
    settings = RuntimeSettings()
    assert settings.tracer.on is False and settings.tracer.sample("m") is None
    settings.update_trace({"trace_level": ["TIMESTAMPS"]})  # no trace file: nothing to write, nothing sampled
    assert settings.tracer.on is False and settings.tracer.sample("m") is None
    if not TRACING.on:  # process-wide once any server traced; the job's one test is then on this flag
        assert TRACING.current.get() is None


def _wait_ready(proc, port):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("gpuserve did not become ready")


def test_deprecated_flags_and_sigterm_write_the_file(repo, tmp_path):
    """tritonserver's --trace-level=MIN (TIMESTAMPS) and a stop by signal still finish the file."""
    path = tmp_path / "min.json"
    ports = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={repo}",
                             f"--http-port={ports[0]}", f"--grpc-port={ports[1]}", f"--metrics-port={ports[2]}",
                             f"--trace-file={path}", "--trace-level=MIN", "--trace-rate=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_ready(proc, ports[0])
        infer(httpclient, ports[0])
        infer(grpcclient, ports[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert "Warning: '--trace-level' has been deprecated" in output
    assert len(traces(path)) == 2


def test_opentelemetry_mode_shows_its_settings_and_writes_no_file(repo, tmp_path, monkeypatch):
    """As tritonserver 2.51 answers with --trace-config mode=opentelemetry: its url, resource and batch span
    processor settings in place of trace_file and log_frequency (qa/L0_trace checks them)."""
    monkeypatch.delenv("OTEL_BSP_MAX_QUEUE_SIZE", raising=False)
    config = [f"triton,file={tmp_path / 'otel.json'}", "mode=opentelemetry", "level=TIMESTAMPS", "rate=5",
              "opentelemetry,url=localhost:10000/v1/traces"]
    with running_server(repository=DiskRepository(repo).populate(ModelRepository()), trace_config=config) as server:
        expected = {"trace_level": ["TIMESTAMPS"], "trace_rate": "5", "trace_count": "-1",
                    "trace_mode": "opentelemetry", "url": "localhost:10000/v1/traces",
                    "bsp_max_export_batch_size": "512", "bsp_schedule_delay": "5000", "bsp_max_queue_size": "2048"}
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        assert client.get_trace_settings(model_name="simple") == expected
        assert client.update_trace_settings(settings={"trace_rate": "3"}) == {**expected, "trace_rate": "3"}
        client.close()
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        answer = client.get_trace_settings(as_json=True)["settings"]
        assert {k: v["value"] for k, v in answer.items()} == {
            k: (v if isinstance(v, list) else [v]) for k, v in {**expected, "trace_rate": "3"}.items()}
        client.close()
        both(server, 1)
    assert not (tmp_path / "otel.json").exists()


DECOUPLED = """import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            for i in range(3):
                time.sleep(0.01)
                sender.send(pb_utils.InferenceResponse(
                    [pb_utils.Tensor("text_output", np.array([b"r%d" % i], dtype=object))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""
ECHO = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "text_output", pb_utils.get_input_tensor_by_name(r, "text_input").as_numpy())]) for r in requests]
"""
TEXT_CONFIG = """name: "{name}"
backend: "python"
{policy}
input [{{ name: "text_input" data_type: TYPE_STRING dims: [1] }}]
output [{{ name: "text_output" data_type: TYPE_STRING dims: [1] }}]
"""


@pytest.fixture(scope="module")
def stream_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("trace_stream_repo")
    for name, code, policy in (("dec", DECOUPLED, "model_transaction_policy { decoupled: true }"),
                               ("gen", ECHO, "")):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.py").write_text(code)
        (root / name / "config.pbtxt").write_text(TEXT_CONFIG.format(name=name, policy=policy))
    add_sub(root, "cached")
    with open(root / "cached" / "config.pbtxt", "a") as config:
        config.write("response_cache { enable: true }\n")
    return root


def stamps(path):
    """{id: [names of its points in time, in the order written]} of a trace file."""
    found = {}
    for item in json.loads(path.read_text()):
        for stamp in item.get("timestamps", ()):
            found.setdefault(item["id"], []).append(stamp["name"])
    return found


def test_decoupled_request_on_a_stream_is_traced_until_its_last_response(stream_repo, tmp_path):
    """As tritonserver 2.51: one INFER_RESPONSE_COMPLETE, GRPC_SEND_START/END around each response sent
    (the empty final one included), and REQUEST_END after the last (the trace ended at the first)."""
    import queue

    path = tmp_path / "dec.json"
    with serve(stream_repo, path, "level=TIMESTAMPS", "rate=1") as server:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        answers = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        text = grpcclient.InferInput("text_input", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"x"], dtype=object))
        client.async_stream_infer("dec", [text], request_id="d1", enable_empty_final_response=True)
        for _ in range(4):
            result, error = answers.get(timeout=30)
            assert error is None
        client.stop_stream()
        client.close()
    (names,) = stamps(path).values()
    assert names.count("INFER_RESPONSE_COMPLETE") == 1
    assert names.count("GRPC_SEND_START") == names.count("GRPC_SEND_END") == 4
    assert {"QUEUE_START", "COMPUTE_START", "COMPUTE_END"} <= set(names)
    times = {}
    for item in json.loads(path.read_text()):
        for stamp in item.get("timestamps", ()):
            times.setdefault(stamp["name"], []).append(stamp["ns"])
    assert times["REQUEST_END"][0] >= max(times["GRPC_SEND_END"])


def test_generate_routes_are_traced_as_triton_traces_them(stream_repo, tmp_path):
    """/generate and /generate_stream: HTTP_RECV_START/END, the core's points in time, and per response
    INFER_RESPONSE_COMPLETE with HTTP_SEND_START/END at ns 0 (as 2.51 writes them); the final flag
    has its own INFER_RESPONSE_COMPLETE."""
    path = tmp_path / "gen.json"
    with serve(stream_repo, path, "level=TIMESTAMPS", "rate=1") as server:
        for model, route in (("gen", "generate"), ("dec", "generate_stream")):
            request = urllib.request.Request(
                f"http://127.0.0.1:{server.ports['http']}/v2/models/{model}/{route}",
                data=json.dumps({"text_input": "hi", "id": model}).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                answer.read()
    found = json.loads(path.read_text())
    heads = {item["request_id"]: item["id"] for item in found if "model_name" in item}
    names = stamps(path)
    zeros = [stamp["name"] for item in found for stamp in item.get("timestamps", ()) if stamp["ns"] == 0]
    assert set(zeros) == {"HTTP_SEND_START", "HTTP_SEND_END"} and len(zeros) == 8
    one, streamed = names[heads["gen"]], names[heads["dec"]]
    assert one.count("INFER_RESPONSE_COMPLETE") == 1 and one.count("HTTP_SEND_START") == 1
    assert {"HTTP_RECV_START", "HTTP_RECV_END", "REQUEST_START", "QUEUE_START", "COMPUTE_START",
            "REQUEST_END"} <= set(one)
    assert streamed.count("INFER_RESPONSE_COMPLETE") == 4 and streamed.count("HTTP_SEND_START") == 3
    assert "REQUEST_END" in streamed and "HTTP_RECV_START" in streamed


def test_response_cache_hits_are_traced_on_both_transports(stream_repo, tmp_path):
    """The same request bytes again are answered from the cache's byte layer unless traced: a traced hit
    is written as Triton writes one (QUEUE_START, no COMPUTE points)."""
    path = tmp_path / "cache.json"
    with serve(stream_repo, path, "level=TIMESTAMPS", "rate=1") as server:
        for _ in range(3):
            infer(httpclient, server.ports["http"], "cached", "same")
        for _ in range(2):
            infer(grpcclient, server.ports["grpc"], "cached", "same")
    names = list(stamps(path).values())
    assert len(names) == 5
    assert "COMPUTE_START" in names[0]
    for hit in names[1:]:
        assert "QUEUE_START" in hit and "INFER_RESPONSE_COMPLETE" in hit and "COMPUTE_START" not in hit


def test_http_send_points_are_the_write_not_the_encoding(repo, tmp_path, monkeypatch):
    """Triton's HTTP_SEND_START/END bracket its HTTP library's reply write; the response's encoding comes
    before them (they bracketed gpuserve's encoding)."""
    from gpuserve.server.rest import fast_path

    encoded = fast_path._encoded

    def slow(*args):
        time.sleep(0.05)
        return encoded(*args)

    monkeypatch.setattr(fast_path, "_encoded", slow)
    path = tmp_path / "send.json"
    with serve(repo, path, "level=TIMESTAMPS", "rate=1") as server:
        infer(httpclient, server.ports["http"])
    (found,) = traces(path).values()
    times = found["times"]
    assert times["HTTP_SEND_START"] - times["INFER_RESPONSE_COMPLETE"] >= 50_000_000
    assert 0 <= times["HTTP_SEND_END"] - times["HTTP_SEND_START"] < 50_000_000


def test_shutdown_writes_the_traces_held_even_when_one_never_ended(tmp_path):
    """A trace whose request never finished (its client gone before its stream was read) must not keep
    the others out of the file at shutdown (none was written)."""
    from gpuserve.tracing import Tracer

    path = tmp_path / "held.json"
    tracer = Tracer()
    tracer.configure({"trace_level": ["TIMESTAMPS"], "trace_rate": "1", "trace_count": "-1",
                      "log_frequency": "0", "trace_file": str(path)}, {})
    done, lost = tracer.sample("m"), tracer.sample("m")
    assert done is not None and lost is not None
    done.begin("m", 1, "r")
    done.end()
    tracer.close()
    assert [item["request_id"] for item in json.loads(path.read_text()) if "model_name" in item] == ["r"]


LINGERING = """import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("text_output", np.array([b"r"], dtype=object))]),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        time.sleep(0.5)  # the final response is out well before execute returns
        return None
"""


def test_a_decoupled_trace_keeps_its_compute_span_when_the_final_response_precedes_the_execute_end(tmp_path):
    """A decoupled model whose final response goes out before its execute returns: the trace was written at
    the final response, before the execute's COMPUTE_START / COMPUTE_END were stamped (they are stamped once
    it returns), so the file lacked both (a loaded CI-like run of the stream test above saw it). As Triton's,
    the trace is written once the request is done with on both sides."""
    import queue

    (tmp_path / "repo" / "late" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "late" / "1" / "model.py").write_text(LINGERING)
    (tmp_path / "repo" / "late" / "config.pbtxt").write_text(
        TEXT_CONFIG.format(name="late", policy="model_transaction_policy { decoupled: true }"))
    path = tmp_path / "late.json"
    with serve(tmp_path / "repo", path, "level=TIMESTAMPS", "rate=1") as server:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        answers = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        text = grpcclient.InferInput("text_input", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"x"], dtype=object))
        client.async_stream_infer("late", [text], request_id="l1")
        result, error = answers.get(timeout=30)
        assert error is None
        client.stop_stream()
        client.close()
    (names,) = stamps(path).values()
    assert {"REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_END", "REQUEST_END"} <= set(names), names
