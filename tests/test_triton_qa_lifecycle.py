"""What Triton's qa/L0_lifecycle checks of the model repository, answered as Triton 2.51 answers it (words and
statuses read off a real tritonserver 2.51): several repository folders, a model two folders hold, a model whose
versions load as one, the words for a model or version that is known but not loaded, version folders Triton
ignores, the index entry of a model never loaded, an ensemble's steps loading and unloading with it, and the
launch-line rules (--exit-on-error, --load-model, --strict-readiness, ports in use)."""

import asyncio
import logging
import shutil
import subprocess
import sys

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import free_ports, make_onnx_model, running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.repository_poll import RepositoryPoller

DUPLICATED = "model appears in two or more repositories"


def triton_model(root, name, versions=(1,), policy="", broken=()):
    """An ONNX model in Triton's layout; a version in `broken` has an empty folder (it fails to load)."""
    folder = root / name
    for version in versions:
        (folder / str(version)).mkdir(parents=True)
        if version not in broken:
            make_onnx_model(folder / str(version) / "model.onnx")
    (folder / "config.pbtxt").write_text(
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n{policy}\n'
        'input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "output" data_type: TYPE_FP32 dims: [ 3 ] } ]\n')
    return folder


def ensemble(root, name, step):
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(
        f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: 8\n'
        'input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 3 ] } ]\n'
        f'ensemble_scheduling {{ step [ {{ model_name: "{step}" model_version: -1 '
        'input_map { key: "input" value: "IN" } output_map { key: "output" value: "OUT" } } ] }\n')


def infer(client, name, version="", grpc=False):
    module = grpcclient if grpc else httpclient
    tensor = module.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    return client.infer(name, [tensor], model_version=version)


def error_of(call):
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status(), caught.value.message()


@pytest.fixture
def clients():
    opened = []

    def make(server):
        pair = (httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}"),
                grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}"))
        opened.extend(pair)
        return pair

    yield make
    for client in opened:
        client.close()


def serve(roots, only=None, **settings):
    registry = DiskRepository(roots[0], more_roots=roots[1:]).populate(ModelRepository(), only)
    return running_server(repository=registry, **settings)


def test_two_folders_serve_their_models_and_a_name_both_hold_from_neither(tmp_path, clients):
    a, b = tmp_path / "a", tmp_path / "b"
    triton_model(a, "first"), triton_model(b, "second"), triton_model(a, "twice"), triton_model(b, "twice")
    with serve([a, b]) as server:
        http, grpc = clients(server)
        assert http.is_model_ready("first") and grpc.is_model_ready("second")
        assert not http.is_model_ready("twice")
        index = {entry["name"]: entry for entry in http.get_model_repository_index()}
        assert index["twice"] == {"name": "twice", "state": "UNAVAILABLE", "reason": DUPLICATED}
        assert {m.name: m.reason for m in grpc.get_model_repository_index().models}["twice"] == DUPLICATED
        assert "failed to load 'twice'" in error_of(lambda: http.load_model("twice"))[1]
        assert error_of(lambda: infer(http, "twice")) == ("404", "Request for unknown model: 'twice' is not found")


def test_the_poll_unloads_a_model_a_second_folder_now_holds_and_loads_it_once_one_does(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    triton_model(a, "m"), b.mkdir()
    registry = DiskRepository(a, more_roots=[b]).populate(ModelRepository())
    poller = RepositoryPoller(registry, 1)

    async def run():
        assert await registry.load_async("m")
        await poller.poll()  # the state the server started from
        shutil.copytree(a / "m", b / "m")
        await poller.poll()
        assert not registry.versions("m")  # Triton's poll unloads it (a load request would keep it)
        shutil.rmtree(a / "m")
        await poller.poll()
        assert registry.get_model("m").ready
        await registry.unload_async("m")

    asyncio.run(run())


def test_a_version_that_fails_takes_the_others_down_and_requests_get_tritons_words(tmp_path, clients):
    triton_model(tmp_path, "m", versions=(1, 3), policy="version_policy: { all {} }", broken=(3,))
    with serve([tmp_path], strict_readiness=True) as server:
        http, grpc = clients(server)
        assert not http.is_model_ready("m", "1") and not http.is_server_ready()
        entries = {e["version"]: e for e in http.get_model_repository_index()}
        assert entries["1"]["reason"] == "unloaded" and entries["3"]["state"] == "UNAVAILABLE"
        for client, not_found, not_ready in ((http, "404", "503"), (grpc, "StatusCode.NOT_FOUND",
                                                                     "StatusCode.UNAVAILABLE")):
            grpc_call = client is grpc
            assert error_of(lambda: infer(client, "m", grpc=grpc_call)) == (
                not_found, "Request for unknown model: 'm' has no available versions")
            assert error_of(lambda: infer(client, "m", "1", grpc=grpc_call)) == (
                not_ready, "Request for unknown model: 'm' version 1 is not at ready state")
            assert error_of(lambda: infer(client, "m", "9", grpc=grpc_call)) == (
                not_found, "Request for unknown model: 'm' version 9 is not found")
        status, message = error_of(lambda: http.load_model("m"))
        assert status == "400" and message.startswith("load failed for model 'm': version 3 is at UNAVAILABLE state: ")
        assert error_of(lambda: http.get_model_metadata("m"))[1] == \
            "Request for unknown model: 'm' has no available versions"


def test_an_unloaded_model_stays_known_and_an_unknown_one_is_not_found_whatever_the_version(tmp_path, clients,
                                                                                            caplog):
    triton_model(tmp_path, "m")
    with caplog.at_level(logging.INFO, logger="gpuserve"), serve([tmp_path]) as server:
        http, grpc = clients(server)
        assert infer(http, "m").as_numpy("output").shape == (1, 3)
        http.unload_model("m")
        assert caplog.text.count("successfully unloaded 'm' version 1") == 1  # Triton's log line
        assert error_of(lambda: infer(http, "m"))[1] == "Request for unknown model: 'm' has no available versions"
        assert error_of(lambda: infer(grpc, "m", "1", grpc=True)) == (
            "StatusCode.UNAVAILABLE", "Request for unknown model: 'm' version 1 is not at ready state")
        assert error_of(lambda: infer(http, "nowhere", "1"))[1] == "Request for unknown model: 'nowhere' is not found"
        http.unload_model("nowhere")  # as Triton: nothing to unload is success
        grpc.unload_model("nowhere")


def test_version_folders_with_leading_zeros_or_no_number_are_no_versions(tmp_path, clients, caplog):
    folder = triton_model(tmp_path, "m", policy="version_policy: { all {} }")
    shutil.copytree(folder / "1", folder / "003")
    shutil.copytree(folder / "1", folder / "abc")
    with caplog.at_level(logging.WARNING, logger="gpuserve"), serve([tmp_path]) as server:
        http, _ = clients(server)
        assert http.is_model_ready("m", "1") and not http.is_model_ready("m", "3")
        assert [e.get("version") for e in http.get_model_repository_index()] == ["1"]
    assert "ignore version directory '003' which contains leading zeros in its directory name" in caplog.text
    assert "ignore version directory 'abc' which fails to convert to integral number" in caplog.text


def test_an_ensemble_brings_its_steps_and_takes_them_away_with_unload_dependents(tmp_path, clients):
    triton_model(tmp_path, "step"), ensemble(tmp_path, "pipe", "step"), triton_model(tmp_path, "other")
    with serve([tmp_path], only=[]) as server:
        http, grpc = clients(server)
        assert {e["name"]: e for e in http.get_model_repository_index()}["other"] == {"name": "other"}
        http.load_model("pipe")
        assert http.is_model_ready("step") and http.is_model_ready("pipe")
        http.unload_model("pipe")
        assert http.is_model_ready("step")  # the default keeps the steps
        grpc.load_model("pipe")
        grpc.unload_model("pipe", unload_dependents=True)
        assert not grpc.is_model_ready("pipe") and not grpc.is_model_ready("step")
        http.load_model("pipe")
        http.unload_model("pipe", unload_dependents=True)
        assert not http.is_model_ready("step")
        assert "model_repository(unload_dependents)" in http.get_server_metadata()["extensions"]
    with serve([tmp_path], only=["pipe"]) as server:  # --load-model of an ensemble loads its steps too
        http, _ = clients(server)
        assert http.is_model_ready("pipe") and http.is_model_ready("step") and not http.is_model_ready("other")


# the launch line ---------------------------------------------------------------------------------------
def launch(*argv):
    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", "--host", "127.0.0.1",
                             f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, http, grpc


def wait_up(proc, http, path="/v2"):
    for _ in range(600):
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read()}")
        try:
            return httpx.get(f"http://127.0.0.1:{http}{path}", timeout=2)
        except httpx.TransportError:
            asyncio.run(asyncio.sleep(0.1))
    raise AssertionError("no answer in 60 s")


def ended(proc, signal_first=True):
    if signal_first and proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, proc.stderr.read()


def test_a_missing_repository_with_exit_on_error_false_serves_not_live(tmp_path):
    proc, http, grpc = launch(f"--model-repository={tmp_path / 'nowhere'}", "--exit-on-error=false")
    try:
        assert wait_up(proc, http).json()["extensions"]  # metadata still answers
        assert httpx.get(f"http://127.0.0.1:{http}/v2/health/live").status_code != 200
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}") as client:
            assert not client.is_server_live() and not client.is_server_ready()
    finally:
        ended(proc)
    code, log = ended(launch(f"--model-repository={tmp_path / 'nowhere'}")[0], signal_first=False)
    assert code == 2 and "does not exist" in log


def test_startup_model_rules_and_triton_default_strict_readiness(tmp_path):
    triton_model(tmp_path, "good"), triton_model(tmp_path, "bad", broken=(1,))
    code, log = ended(launch(f"--model-repository={tmp_path}", "--model-control-mode=explicit",
                             "--load-model=missing")[0], signal_first=False)
    assert code == 2 and "model not found in any model repository" in log
    code, log = ended(launch(f"--model-repository={tmp_path}", "--model-control-mode=explicit", "--load-model=*",
                             "--load-model=good")[0], signal_first=False)
    assert code == 2 and "Wildcard model name '*' must be the ONLY startup model" in log
    # as tritonserver (--exit-on-error defaults true): a model that fails at start-up stops the server
    code, log = ended(launch(f"--model-repository={tmp_path}")[0], signal_first=False)
    assert code == 2 and "failed to load all models" in log
    # --exit-on-error=false: Triton's default --strict-readiness=true (a model failed: not ready)
    proc, http, _ = launch(f"--model-repository={tmp_path}", "--exit-on-error=false")
    try:
        wait_up(proc, http)
        for _ in range(600):
            if httpx.get(f"http://127.0.0.1:{http}/v2/models/good/ready").status_code == 200:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert httpx.get(f"http://127.0.0.1:{http}/v2/health/ready").status_code != 200
    finally:
        ended(proc)


def test_a_port_in_use_is_said_in_tritons_words(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for flag, service in (("--grpc-port", "GRPC"), ("--http-port", "HTTP"), ("--metrics-port", "Metrics")):
            proc = launch(str(tmp_path), f"{flag}={port}")[0]
            code, log = ended(proc, signal_first=False)
            assert code == 2 and f"failed to start {service} service: Unavailable - Socket '127.0.0.1:{port}' " \
                "already in use" in log, log


# Triton's identity backend and load-time overrides ------------------------------------------------------
IDENTITY = ('name: "{name}"\nbackend: "identity"\nmax_batch_size: 0\n'
            'input [ {{ name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] }} ]\n'
            'output [ {{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] }} ]\n'
            'instance_group [ {{ kind: {kind} }} ]\n'
            'parameters [ {{ key: "execute_delay_ms" value: {{ string_value: "1" }} }} ]\n')


def test_the_identity_backend_echoes_and_refuses_gpu_instances(tmp_path, clients, caplog):
    for name, kind in (("echo", "KIND_CPU"), ("on_gpu", "KIND_GPU")):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(IDENTITY.format(name=name, kind=kind))
    with caplog.at_level(logging.ERROR, logger="gpuserve"), serve([tmp_path], only=["echo"]) as server:
        http, grpc = clients(server)
        tensor = grpcclient.InferInput("INPUT0", [3], "INT32")
        tensor.set_data_from_numpy(np.array([1, 2, 3], np.int32))
        assert grpc.infer("echo", [tensor]).as_numpy("OUTPUT0").tolist() == [1, 2, 3]
        assert http.get_model_config("echo")["backend"] == "identity"
        assert http.get_model_config("echo")["default_model_filename"] == ""  # a C++ backend in Triton: none
        status, message = error_of(lambda: http.load_model("on_gpu"))
        assert message == ("load failed for model 'on_gpu': version 1 is at UNAVAILABLE state: "
                           "Internal: GPU instances not supported;\n")
    assert "failed to load 'on_gpu' version 1: Internal: GPU instances not supported" in caplog.text


def test_a_config_given_at_load_stays_for_plain_reloads_until_unload(tmp_path, clients):
    folder = triton_model(tmp_path, "m", versions=(1, 2, 3), policy="version_policy: { specific { versions: [1, 3] } }",
                          broken=(1, 3))
    with serve([tmp_path], only=[]) as server:
        http, grpc = clients(server)
        assert "load failed for model 'm'" in error_of(lambda: http.load_model("m"))[1]
        http.load_model("m", config='{"backend": "onnxruntime", "version_policy": {"specific": {"versions": [2]}}}')
        http.load_model("m")  # the override's versions, not the folder's config
        assert http.is_model_ready("m", "2") and not http.is_model_ready("m", "1")
        http.unload_model("m")
        assert "load failed for model 'm'" in error_of(lambda: grpc.load_model("m"))[1]  # forgotten at unload
        data = (folder / "2" / "model.onnx").read_bytes()
        assert error_of(lambda: grpc.load_model("m", files={"file:1/model.onnx": data}))[1].startswith(
            "failed to load 'm', failed to poll from model repository")  # Triton's words: files need a config
        assert error_of(lambda: http.load_model("x", config='{"backend": "identity"}',
                                                files={"file:../escape.txt": b"no"}))[1].startswith("failed to load")
        assert not (tmp_path / "escape.txt").exists()


def test_an_unload_sent_during_a_load_waits_for_it_and_then_unloads(tmp_path):
    (tmp_path / "slow" / "1").mkdir(parents=True)
    (tmp_path / "slow" / "config.pbtxt").write_text(
        IDENTITY.format(name="slow", kind="KIND_CPU").replace('"execute_delay_ms" value: { string_value: "1"',
                                                               '"creation_delay_sec" value: { string_value: "1"'))
    registry = DiskRepository(tmp_path).populate(ModelRepository(), [])

    async def run():
        load = asyncio.ensure_future(registry.load_async("slow"))
        await asyncio.sleep(0.3)
        assert await registry.unload_async("slow") and await load  # qa test_concurrent_model_load_unload
        assert registry.get_model("slow") is None

    asyncio.run(run())


def test_unloading_a_step_unloads_its_ensembles_and_a_newer_config_pbtxt_beats_a_load_time_config(tmp_path, clients):
    import os
    import time

    triton_model(tmp_path, "step"), ensemble(tmp_path, "pipe", "step")
    with serve([tmp_path], strict_readiness=True) as server:
        http, _ = clients(server)
        http.unload_model("step")  # qa test_model_control: the ensemble is unloaded, not failed
        assert not http.is_model_ready("pipe") and http.is_server_ready()
        http.load_model("step")
        assert not http.is_model_ready("pipe")
        http.load_model("step", config='{"backend": "onnxruntime", "max_batch_size": 2}')
        http.load_model("step")
        assert http.get_model_config("step")["max_batch_size"] == 2  # the load-time config stays
        later = time.time() + 5
        os.utime(tmp_path / "step" / "config.pbtxt", (later, later))  # qa test_model_config_overwrite
        http.load_model("step")
        assert http.get_model_config("step")["max_batch_size"] == 8


def test_a_config_with_no_version_folder_has_no_available_versions(tmp_path, clients):
    folder = triton_model(tmp_path, "empty")
    shutil.rmtree(folder / "1")  # qa test_parse_error_model_no_version: the config alone
    with serve([tmp_path]) as server:
        http, _ = clients(server)
        assert error_of(lambda: infer(http, "empty")) == (
            "404", "Request for unknown model: 'empty' has no available versions")


# --- shutdown, reloads by version, instances in parallel (qa L0_lifecycle test_shutdown_*, test_load_new_model_version,
# test_concurrent_model_instance_load_speedup, test_load_gpu_limit's flag checks) -----------------------------------
SLOW_MODEL = '''
import json, os, time
import triton_python_backend_utils as pb_utils


def started(what):
    folder = os.environ.get("LIFECYCLE_TEST_MARKS")  # the test waits for these files, not a fixed time
    if folder:
        open(os.path.join(folder, what), "a").close()


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay = float(params.get("delay_s", {}).get("string_value", "0"))
        self.name = args["model_name"]
        started("initialize " + self.name)
        time.sleep(float(params.get("init_s", {}).get("string_value", "0")))

    def execute(self, requests):
        started("execute " + self.name)
        time.sleep(self.delay)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN")
                                                            .as_numpy())]) for r in requests]
'''


def python_model(root, name, extra="", delay_s=0.0, init_s=0.0, versions=(1,), code=SLOW_MODEL):
    folder = root / name
    for version in versions:
        (folder / str(version)).mkdir(parents=True, exist_ok=True)
        (folder / str(version) / "model.py").write_text(code)
    (folder / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 8\n{extra}\n'
        'input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        f'parameters [ {{ key: "delay_s" value: {{ string_value: "{delay_s}" }} }}, '
        f'{{ key: "init_s" value: {{ string_value: "{init_s}" }} }} ]\n')
    return folder


def launch_mine(*argv, env=None):
    """`launch` with the log to stderr and `env` added to the server's environment."""
    import os

    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", "--host", "127.0.0.1",
                             f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    return proc, http, grpc


def one(client_module, value=1.0):
    tensor = client_module.InferInput("IN", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.full((1, 1), value, np.float32))
    return [tensor]


def marks_env(tmp_path_factory):
    """Where SLOW_MODEL says that its execute or initialize started (outside the model repository, which
    the server scans), and the server's environment naming it."""
    folder = tmp_path_factory.mktemp("marks")
    return folder, {"LIFECYCLE_TEST_MARKS": str(folder)}


def started(folder, what):
    """Waits for SLOW_MODEL's mark: a request or load sent on a loaded machine may start well after a fixed
    0.5 s sleep, and a stop sent before it tests nothing of what is under way."""
    import time

    deadline = time.monotonic() + 30
    while not (folder / what).exists():
        assert time.monotonic() < deadline, f"never started: {what}"
        time.sleep(0.02)


def log_until(proc, text, seconds=30):
    """The server's stderr up to the first line holding `text` (what came, should it not come within
    `seconds` or the server end first): a stop's stages are waited for by what the server says, not by a
    fixed sleep after the signal. Read on a thread, so a server that never says it fails the test, not hangs it."""
    import threading

    lines, done = [], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if text in line:
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    done.wait(seconds)
    return "".join(lines)


def ready(proc, http, name):
    wait_up(proc, http)
    for _ in range(600):
        if httpx.get(f"http://127.0.0.1:{http}/v2/models/{name}/ready").status_code == 200:
            return
        asyncio.run(asyncio.sleep(0.1))
    raise AssertionError(f"{name} not ready in 60 s")


@pytest.mark.parametrize("transports", [{}, {"GPUSERVE_HTTP_SERVER": "uvicorn", "GPUSERVE_GRPC_TRANSPORT": "grpcio"}],
                         ids=["gpuserve-native", "uvicorn-grpcio"])
def test_sigterm_finishes_what_runs_refuses_what_is_new_and_serves_open_connections_as_tritonserver(
        tmp_path, tmp_path_factory, transports):
    import signal
    import time

    python_model(tmp_path, "slow", "dynamic_batching {}", delay_s=1.5)
    python_model(tmp_path, "seq", "sequence_batching { max_sequence_idle_microseconds: 2000000 }")
    marks, env = marks_env(tmp_path_factory)
    proc, http, grpc = launch_mine(f"--model-repository={tmp_path}", "--exit-timeout-secs=10",
                                   env={**transports, **env})
    results, said = [], ""
    try:
        ready(proc, http, "slow"), ready(proc, http, "seq")
        kept = httpx.Client(base_url=f"http://127.0.0.1:{http}")  # a keep-alive connection, open at the stop
        assert kept.get("/v2/health/ready").status_code == 200
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        client.infer("seq", one(grpcclient), sequence_id=7, sequence_start=True)  # a sequence left open
        client.async_infer("slow", one(grpcclient, 3.0), lambda result, error: results.append(error or result))
        started(marks, "execute slow")
        proc.send_signal(signal.SIGTERM)
        said = log_until(proc, "HTTP service connections")  # both endpoints refuse new connections by now
        assert "HTTP service connections" in said, said[-2000:]
        with pytest.raises(InferenceServerException):  # a new call reconnects and is refused
            client.infer("slow", one(grpcclient))
        with pytest.raises(httpx.ConnectError):  # so is a new HTTP connection
            httpx.get(f"http://127.0.0.1:{http}/v2/health/live")
        answer = kept.post("/v2/models/seq/infer", json={"inputs": [
            {"name": "IN", "shape": [1, 1], "datatype": "FP32", "data": [2.0]}],
            "parameters": {"sequence_id": 8, "sequence_start": True, "sequence_end": True}})
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [2.0]  # the open one is served
        kept.close()
        deadline = time.monotonic() + 30
        while not results and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not isinstance(results[0], Exception) and results[0].as_numpy("OUT").tolist() == [[3.0]]
        client.close()
    finally:
        code, log = ended(proc, signal_first=False)
        log = said + log
    assert code == 0
    assert "Timeout 10: Found 1 HTTP service connections" in log
    assert "gRPC service connections and inference handlers" in log or "Timeout 9: Found" in log
    assert "Waiting for in-flight requests to complete." in log
    assert "Model 'seq' (version 1) has 1 in-flight inferences" in log  # the open sequence, until it idles out
    assert "All models are stopped, unloading models" in log
    assert log.count("Timeout 10: ") == 1  # one countdown through every stage, never restarted


def test_the_exit_timeout_cuts_off_what_still_runs_and_exits_1(tmp_path, tmp_path_factory):
    import signal
    import time

    python_model(tmp_path, "slow", delay_s=30)
    marks, env = marks_env(tmp_path_factory)
    proc, http, grpc = launch_mine(f"--model-repository={tmp_path}", "--exit-timeout-secs=1", env=env)
    try:
        ready(proc, http, "slow")
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        client.async_infer("slow", one(grpcclient), lambda result, error: None)
        started(marks, "execute slow")
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code, log = ended(proc, signal_first=False)
        assert time.monotonic() - began < 20  # not the 30 s the request still runs
        client.close()
    finally:
        ended(proc)
    assert code == 1 and "Exit timeout expired. Exiting immediately." in log


def test_a_load_under_way_at_the_stop_finishes_and_then_unloads(tmp_path, tmp_path_factory):
    import signal
    import threading

    python_model(tmp_path, "late", init_s=2)
    marks, env = marks_env(tmp_path_factory)
    proc, http, _ = launch_mine(f"--model-repository={tmp_path}", "--model-control-mode=explicit", "--log-verbose=1",
                                env=env)
    try:
        wait_up(proc, http)
        threading.Thread(target=lambda: httpx.post(f"http://127.0.0.1:{http}/v2/repository/models/late/load",
                                                   timeout=30), daemon=True).start()
        started(marks, "initialize late")
        proc.send_signal(signal.SIGTERM)
    finally:
        code, log = ended(proc, signal_first=False)
    assert code == 0
    assert "OnLoadFinal() 'late'" in log and "AsyncUnload() 'late'" in log
    assert log.index("OnLoadFinal() 'late'") < log.index("AsyncUnload() 'late'")


def test_bad_model_load_gpu_limits_stop_the_start_in_tritons_words(tmp_path):
    code, log = ended(launch_mine(f"--model-repository={tmp_path}", "--model-load-gpu-limit", "-1:0.6")[0],
                      signal_first=False)
    assert code == 2 and "expects device ID >= 0, got -1" in log
    code, log = ended(launch_mine(f"--model-repository={tmp_path}", "--model-load-gpu-limit", "0:-0.4")[0],
                      signal_first=False)
    assert code == 2 and "expects limit fraction to be in range [0.0, 1.0], got -0.4" in log


COUNTING_MODEL = '''
import os
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.folder = args["model_repository"]
        with open(os.path.join(self.folder, "loads.txt"), "a") as f:  # beside its versions
            f.write(args["model_version"] + "\\n")
        open(os.path.join(self.folder, args["model_version"], "marker"), "w").close()  # in its version folder

    def execute(self, requests):
        with open(os.path.join(self.folder, "served.log"), "a") as f:  # written as it serves
            f.write("served\\n")
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN")
                                                            .as_numpy())]) for r in requests]
'''


def test_a_reload_loads_again_only_the_versions_whose_files_changed(tmp_path, clients):
    import os
    import time

    root = tmp_path / "models"
    folder = python_model(root, "m", "version_policy: { specific: { versions: [1, 2] } }", versions=(1, 2, 3),
                          code=COUNTING_MODEL)
    loads = lambda: sorted((folder / "loads.txt").read_text().split())  # noqa: E731
    with serve([root], model_control_enabled=True) as server:
        http, grpc = clients(server)
        assert loads() == ["1", "2"]
        assert infer_one(http, "m", "2") == [[1.0]]
        http.load_model("m")  # nothing changed: what the model itself wrote into its folders is no change
        assert loads() == ["1", "2"]
        later = time.time() + 5
        os.utime(folder / "2" / "model.py", (later, later))  # a touch: Triton goes by modification times
        config = (folder / "config.pbtxt").read_text().replace("versions: [1, 2]", "versions: [1, 2, 3]")
        (folder / "config.pbtxt").write_text(config)
        grpc.load_model("m")
        assert loads() == ["1", "2", "2", "3"]  # 1 untouched and only its version_policy changed: kept
        assert all(http.is_model_ready("m", v) for v in ("1", "2", "3"))
        (folder / "helper.py").write_text("X = 1\n")  # a file beside the versions: every version loads again
        http.load_model("m")
        assert loads() == ["1", "1", "2", "2", "2", "3", "3"]
        assert infer_one(http, "m", "1") == [[1.0]]


def infer_one(client, name, version=""):
    return client.infer(name, one(httpclient), model_version=version).as_numpy("OUT").tolist()


def test_instances_of_a_model_initialize_in_parallel(tmp_path, clients):
    import time

    python_model(tmp_path, "m", "instance_group [ { kind: KIND_CPU count: 3 } ]", init_s=1.5)
    with serve([tmp_path], only=[], model_control_enabled=True) as server:
        http, _ = clients(server)
        began = time.monotonic()
        http.load_model("m")
        took = time.monotonic() - began
        assert 1.5 <= took < 3.5, took  # one initialize's time, not three
        assert infer_one(http, "m") == [[1.0]]
