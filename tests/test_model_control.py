"""Triton's model control modes (`--model-control-mode none|explicit|poll`, `--load-model`,
`--repository-poll-secs`) and its reload guarantee: a reload that fails leaves the loaded model serving,
one that succeeds replaces it with no request refused meanwhile."""

import argparse
import asyncio
import shutil
import textwrap
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve.cli import _parser, log_level_of, model_control
from gpuserve.errors import GpuserveError, InvalidSettings
from gpuserve.model_repository import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.repository_poll import RepositoryPoller
from gpuserve.settings import ServerSettings

CONFIG = """backend: "python"
max_batch_size: 8
input [{ name: "x", data_type: TYPE_FP32, dims: [2] }]
output [{ name: "y", data_type: TYPE_FP32, dims: [2] }]
"""


def model_py(factor, load_seconds=0.0, broken=False):
    return textwrap.dedent(f"""
        import time
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def initialize(self, args):
                time.sleep({load_seconds})
                if {broken}:
                    raise RuntimeError("this version cannot load")

            def execute(self, requests):
                return [pb_utils.InferenceResponse([pb_utils.Tensor(
                    "y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy() * {factor})]) for r in requests]
        """)


def write_model(root, name, factor=2, **options):
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(CONFIG)
    (folder / "1" / "model.py").write_text(model_py(factor, **options))
    return folder


def repository(root, only=None):
    return DiskRepository(root).populate(ModelRepository(), only)


def infer(port, name):
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    response = httpx.post(f"http://127.0.0.1:{port}/v2/models/{name}/infer", json=body, timeout=10)
    return response.status_code, response.json()


def index(port):
    response = httpx.post(f"http://127.0.0.1:{port}/v2/repository/index", json={}, timeout=10)
    return {(e["name"], e.get("state")) for e in response.json()}


def flags(*argv):
    return model_control(_parser().parse_args(["start", "FOLDER", *argv]))


# the flags ----------------------------------------------------------------------------------------
def test_flags_map_to_settings():
    assert flags() == {}
    assert flags("--model-control-mode", "none") == {"model_control_enabled": False}
    assert flags("--model-control-mode=explicit", "--load-model", "a", "--load-model=b") == {
        "model_control_enabled": True, "load_models_at_startup": False, "startup_models": ["a", "b"]}
    assert flags("--model-control-mode", "poll") == {"model_control_enabled": False, "repository_poll_seconds": 15.0}
    assert flags("--model-control-mode", "poll", "--repository-poll-secs", "0.5")["repository_poll_seconds"] == 0.5
    assert flags("--load-model", "a") == {}  # as Triton: only with explicit (a warning says so)
    # as Triton (qa L0_lifecycle): 0 reads the repository at start-up only; below 0 is refused
    assert flags("--model-control-mode", "poll", "--repository-poll-secs", "0")["repository_poll_seconds"] == 0
    with pytest.raises(GpuserveError, match="0 or more"):
        flags("--model-control-mode", "poll", "--repository-poll-secs", "-1")
    with pytest.raises(SystemExit):
        _parser().parse_args(["start", "--model-control-mode", "sometimes"])


def test_startup_selection_settings():
    assert ServerSettings.load(None).startup_selection() is None
    assert ServerSettings.load(None, load_models_at_startup=False).startup_selection() == []
    assert ServerSettings.load(None, load_models_at_startup=False, startup_models=["a"]).startup_selection() == ["a"]
    assert ServerSettings.load(None, load_models_at_startup=False, startup_models=["*"]).startup_selection() is None
    with pytest.raises(InvalidSettings, match="only model"):
        ServerSettings.load(None, startup_models=["*", "a"])
    with pytest.raises(InvalidSettings, match="repository_poll_seconds"):
        ServerSettings.load(None, repository_poll_seconds=-1)


def test_env_selects_startup_models(monkeypatch):
    monkeypatch.setenv("GPUSERVE_LOAD_MODELS_AT_STARTUP", "false")
    monkeypatch.setenv("GPUSERVE_STARTUP_MODELS", '["b"]')
    assert ServerSettings.load(None).startup_selection() == ["b"]


# explicit and none ------------------------------------------------------------------------------
def test_explicit_mode_loads_only_the_named_models(tmp_path):
    for name in ("a", "b"):
        write_model(tmp_path, name)
    with running_server(repository=repository(tmp_path, ["b", "missing"])) as server:
        port = server.ports["http"]
        assert index(port) == {("a", None), ("b", "READY")}  # as Triton: never loaded, listed by name alone
        assert infer(port, "a")[0] == 404
        assert infer(port, "b") == (200, infer(port, "b")[1])
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        client.load_model("a")
        assert client.is_model_ready("a")
        client.unload_model("a")
        client.unload_model("a")  # on disk, not loaded: already as asked (Triton answers success too)
        assert not client.is_model_ready("a")
        client.unload_model("nowhere")  # Triton 2.51 answers success for a name it never heard of


def test_none_mode_refuses_load_and_unload_over_both_transports(tmp_path):
    write_model(tmp_path, "a")
    with running_server(repository=repository(tmp_path), model_control_enabled=False) as server:
        http = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        # Triton's own sentence (it says "polling" in mode none too); tritonclient users and Triton's
        # qa aio tests match on it
        triton_words = "explicit model load / unload is not allowed if polling is enabled"
        for call in (http.load_model, http.unload_model):
            with pytest.raises(InferenceServerException, match=triton_words) as err:
                call("a")
            assert err.value.status() == "503"
        for call in (grpc.load_model, grpc.unload_model):
            with pytest.raises(InferenceServerException, match=triton_words) as err:
                call("a")
            assert err.value.status() == "StatusCode.UNAVAILABLE"
        assert http.is_model_ready("a") and infer(server.ports["http"], "a")[0] == 200



def test_load_refuses_empty_and_path_like_names_in_tritons_words(tmp_path):
    write_model(tmp_path, "a")
    with running_server(repository=repository(tmp_path)) as server:
        http = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        empty = "Model name cannot be empty. Please enter a valid name to deploy."
        path_like = "model name must not contain path traversal characters"
        cases = [("", empty, False), (" \t\n", empty, True), ("../a", path_like, False), ("a/b", path_like, False),
                 ("..", path_like, False), (" .. ", path_like, True)]
        for name, words, over_http in cases:
            for client, bad in ((grpc, "StatusCode.INVALID_ARGUMENT"), (http, "400")):
                if client is http and not over_http:
                    continue  # a slash or an empty segment never reaches the load route over HTTP
                with pytest.raises(InferenceServerException, match=words) as err:
                    client.load_model(name)
                assert err.value.status() == bad, name
        for name in ("...", "..a", "a..1", "a\\b"):  # dots inside a name, a backslash: a name, not refused
            with pytest.raises(InferenceServerException, match="failed to poll from model repository"):
                grpc.load_model(name)
        grpc.unload_model("a")  # unload is not checked, and real names still load
        grpc.load_model("a")
        assert http.is_model_ready("a")


# the reload guarantee ---------------------------------------------------------------------------
def test_a_failed_reload_leaves_the_loaded_model_serving(tmp_path):
    folder = write_model(tmp_path, "a", factor=2)
    with running_server(repository=repository(tmp_path)) as server:
        port = server.ports["http"]
        assert infer(port, "a")[1]["outputs"][0]["data"] == [2.0, 4.0]
        (folder / "1" / "model.py").write_text(model_py(3, broken=True))
        response = httpx.post(f"http://127.0.0.1:{port}/v2/repository/models/a/load", json={}, timeout=30)
        assert response.status_code >= 400 and "this version cannot load" in response.json()["error"]
        assert infer(port, "a")[1]["outputs"][0]["data"] == [2.0, 4.0]  # the old one still answers
        assert ("a", "READY") in index(port)
        (folder / "1" / "model.py").write_text(model_py(3))
        assert httpx.post(f"http://127.0.0.1:{port}/v2/repository/models/a/load", json={}, timeout=30).status_code == 200
        assert infer(port, "a")[1]["outputs"][0]["data"] == [3.0, 6.0]


def test_a_reload_refuses_no_request_while_the_new_version_loads(tmp_path):
    folder = write_model(tmp_path, "a", factor=2)
    with running_server(repository=repository(tmp_path)) as server:
        port = server.ports["http"]
        (folder / "1" / "model.py").write_text(model_py(3, load_seconds=1.0))
        answers, done = [], threading.Event()

        def keep_asking():
            while not done.is_set():
                status, body = infer(port, "a")
                answers.append(body["outputs"][0]["data"] if status == 200 else status)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            assert httpx.post(f"http://127.0.0.1:{port}/v2/repository/models/a/load", json={},
                              timeout=30).status_code == 200
            time.sleep(0.2)
        finally:
            done.set()
            asker.join(30)
        assert answers and all(isinstance(a, list) for a in answers), [a for a in answers if not isinstance(a, list)]
        assert answers[0] == [2.0, 4.0] and answers[-1] == [3.0, 6.0]


# poll -------------------------------------------------------------------------------------------
def test_poll_mode_follows_added_changed_and_removed_models(tmp_path):
    write_model(tmp_path, "a", factor=2)
    write_model(tmp_path, "b")
    with running_server(repository=repository(tmp_path), model_control_enabled=False,
                        repository_poll_seconds=0.1) as server:
        port = server.ports["http"]
        time.sleep(0.3)  # a few polls of the unchanged folder first (the start is scanned before loading)
        write_model(tmp_path, "c", factor=5)
        (tmp_path / "a" / "1" / "model.py").write_text(model_py(3))
        shutil.rmtree(tmp_path / "b")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and index(port) != {("a", "READY"), ("c", "READY")}:
            time.sleep(0.1)
        assert index(port) == {("a", "READY"), ("c", "READY")}
        assert infer(port, "c")[1]["outputs"][0]["data"] == [5.0, 10.0]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and infer(port, "a")[1]["outputs"][0]["data"] != [3.0, 6.0]:
            time.sleep(0.1)
        assert infer(port, "a")[1]["outputs"][0]["data"] == [3.0, 6.0]
        assert infer(port, "b")[0] == 404


def test_poll_mode_sees_a_change_made_as_the_models_became_ready(tmp_path, monkeypatch):
    # The start to compare with is scanned before the models load: a change made once they are loaded, before
    # the poller's first scan, is followed (a CI run moved a model folder just after readiness; that first
    # scan took the moved state as the start and the move went unseen for good)
    from gpuserve.server.model_server import ModelServer

    write_model(tmp_path, "a", factor=2)
    load_all = ModelServer._load_all

    async def then_change(self):
        await load_all(self)
        (tmp_path / "a" / "1" / "model.py").write_text(model_py(3))
        write_model(tmp_path, "c", factor=5)
    monkeypatch.setattr(ModelServer, "_load_all", then_change)
    with running_server(repository=repository(tmp_path), model_control_enabled=False,
                        repository_poll_seconds=0.1) as server:
        port = server.ports["http"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (index(port) != {("a", "READY"), ("c", "READY")}
                                               or infer(port, "a")[1]["outputs"][0]["data"] != [3.0, 6.0]):
            time.sleep(0.1)
        assert index(port) == {("a", "READY"), ("c", "READY")}
        assert infer(port, "a")[1]["outputs"][0]["data"] == [3.0, 6.0]


def test_poller_leaves_unchanged_models_alone_and_survives_a_failing_scan(tmp_path):
    write_model(tmp_path, "a")
    registry = repository(tmp_path)
    loads = []
    real = registry.load_async

    async def counting(name):
        loads.append(name)
        return await real(name)

    registry.load_async = counting
    calls = {"n": 0}
    scan = registry.fingerprints

    def flaky():
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("folder being replaced")
        return scan()

    registry.fingerprints = flaky
    poller = RepositoryPoller(registry, 0.01)

    async def scenario():
        await poller.poll()  # the start state
        with pytest.raises(OSError):
            await poller.poll()
        await poller.poll()
        assert loads == []
        (tmp_path / "a" / "1" / "model.py").write_text(model_py(7))
        await poller.poll()
        assert loads == ["a"]
        task = asyncio.ensure_future(poller.run())  # run() logs a failed scan and goes on
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _, _, model in registry.all_versions():
            model.stop()

    asyncio.run(scenario())


def test_fingerprints_see_a_new_version_folder(tmp_path):
    folder = write_model(tmp_path, "a")
    disk = DiskRepository(tmp_path)
    before = disk.fingerprints()
    assert before == disk.fingerprints()
    (folder / "2").mkdir()
    (folder / "2" / "model.py").write_text(model_py(4))
    assert disk.fingerprints()["a"] != before["a"]


def test_cli_launch_with_explicit_mode(tmp_path):
    import subprocess
    import sys

    from conftest import free_ports
    from test_cli import stop, wait_ready

    for name in ("a", "b"):
        write_model(tmp_path, name)
    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", str(tmp_path), "--http-port", str(http),
                             "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                             "--model-control-mode=explicit", "--load-model=a"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(http, proc)
        assert index(http) == {("a", "READY"), ("b", None)}
    finally:
        stop(proc)


def test_flags_parse_as_triton_spells_them():
    args = _parser().parse_args(["start", "--model-repository=/m", "--model-control-mode=explicit",
                                 "--load-model=*"])
    assert isinstance(args, argparse.Namespace) and flags("--model-control-mode=explicit", "--load-model=*")[
        "startup_models"] == ["*"]
    assert np.isclose(flags("--model-control-mode=poll", "--repository-poll-secs=2.5")["repository_poll_seconds"], 2.5)


def test_a_tritonserver_launch_line_starts(tmp_path):
    # flags a Triton user's launch line carries: mapped where gpuserve has the setting, else taken and noted
    import subprocess
    import sys

    from conftest import free_ports
    from test_cli import stop, wait_ready

    write_model(tmp_path, "a")
    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={tmp_path}",
                             f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
                             "--strict-model-config=false", "--log-verbose=1", "--exit-on-error=false",
                             "--strict-readiness=true", "--backend-config=python,shm-default-byte-size=1048576"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(http, proc)
        assert infer(http, "a")[0] == 200
    finally:
        stop(proc)
    log = proc.stderr.read()
    assert "Warning: '--strict-model-config' has been deprecated! Please use '--disable-auto-complete-config'" in log
    parsed = _parser().parse_args(["start", "--strict-readiness", "no", "--log-verbose", "1"])
    assert parsed.strict_readiness is False and log_level_of(parsed) == "DEBUG"
    assert log_level_of(_parser().parse_args(["start", "--log-verbose=0"])) is None
    with pytest.raises(SystemExit):
        _parser().parse_args(["start", "--strict-readiness", "maybe"])
    with pytest.raises(SystemExit):  # a typo is still an error, not silently taken
        _parser().parse_args(["start", "--model-contorl-mode", "poll"])


def test_loads_and_the_index_read_the_disk_off_the_event_loop(tmp_path, monkeypatch):
    """Reading the repository parses every folder's config (~0.3 ms a model): a load or an index must not
    hold every other request on the loop for it. The models themselves are still made on the loop."""
    from gpuserve.dataplane import DataPlane

    for name in ("a", "b"):
        write_model(tmp_path, name)
    scans, builds = [], []
    real_scan, real_build_one = DiskRepository.scan, DiskRepository._build_one
    monkeypatch.setattr(DiskRepository, "scan", lambda self: scans.append(threading.get_ident()) or real_scan(self))
    monkeypatch.setattr(DiskRepository, "_build_one",
                        lambda self, s: builds.append(threading.get_ident()) or real_build_one(self, s))
    plane = DataPlane(repository(tmp_path, []))
    plane.started = True

    async def main():
        loop_thread = threading.get_ident()
        scans.clear()
        await plane.load_model("a")
        assert scans and loop_thread not in scans
        assert builds and set(builds) == {loop_thread}
        scans.clear()
        index = await plane.repository_index_async()
        assert scans and loop_thread not in scans
        assert {(e["name"], e.get("state")) for e in index} == {("a", "READY"), ("b", None)}
        await plane.unload_model("a")

    asyncio.run(main())
