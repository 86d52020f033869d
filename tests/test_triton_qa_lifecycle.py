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

from conftest import make_onnx_model, running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.repository_poll import RepositoryPoller

DUPLICATED = "model appears in two or more repositories"
PORTS = iter(range(9160, 9200))  # this suite's loopback ports for the servers it starts as processes


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
    http, grpc, metrics = next(PORTS), next(PORTS), next(PORTS)
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
    # a tritonserver launch line: Triton's default --strict-readiness=true (a model failed: not ready)
    proc, http, _ = launch(f"--model-repository={tmp_path}")
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
