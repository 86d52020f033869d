"""What session 18's runs of Triton's qa suites counted only as scratch before (docs/triton_qa.md) found.

- L0_logging log_format_test starts tritonserver with --log-format=default|ISO8601 --log-file=F and reads F
  back: every record must be Triton's line (`I1205 16:26:59.141234 PID file:LINE] msg` or
  `2026-12-05T16:26:59Z I PID file:LINE] msg`), its message JSON-quoted unless
  TRITON_SERVER_ESCAPE_LOG_MESSAGES=0, so a tensor name holding a newline and a forged record cannot add a
  record of its own. gpuserve took --log-format and ignored it (its own lines, messages as sent), and
  /v2/logging answered log_format "default" and log_file "" whatever the launch line said.
"""

import json
import logging
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import free_ports
from gpuserve.cli import _parser

DEFAULT_LINE = re.compile(r"^[EWI]\d{4} \d{2}:\d{2}:\d{2}\.\d{6} \d+ [\w.]+:\d+\] (?P<message>.*)$")
ISO8601_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z [EWI] \d+ .+:\d+\] (?P<message>.*)$")
FORGED = 'I0205 18:34:18.707423 1 file.cc:123] "THIS ENTRY WAS INJECTED"'


def _simple(repo):
    import onnx
    from onnx import TensorProto, helper

    folder = repo / "simple"
    (folder / "1").mkdir(parents=True)
    graph = helper.make_graph([helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], "simple",
                              [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["b", 3])],
                              [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["b", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(folder / "1" / "model.onnx"))
    (folder / "config.pbtxt").write_text('name: "simple"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
                                          'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 3 ] } ]\n'
                                          'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 3 ] } ]\n')


def _serve(tmp_path, layout, escape):
    """(the server, its log file, its HTTP port)."""
    import httpx

    repo = tmp_path / "models"
    _simple(repo)
    log = tmp_path / "server.log"
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_SERVER_ESCAPE_LOG_MESSAGES"}
    if escape is not None:
        env["TRITON_SERVER_ESCAPE_LOG_MESSAGES"] = escape
    port, grpc, metrics = free_ports(3)
    server = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={repo}",
                               "--http-port", str(port), "--grpc-port", str(grpc), "--metrics-port",
                               str(metrics), "--log-verbose=1", f"--log-format={layout}", f"--log-file={log}"],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr.log", "w"), env=env)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/models/simple/ready").status_code == 200:
                return server, log, port
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    server.kill()
    pytest.fail("the server did not get ready: " + (tmp_path / "stderr.log").read_text()[-2000:])


def _forge(port):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    tensor = httpclient.InferInput(f"\n{FORGED}\n{FORGED}", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("simple", [tensor])
    return client


def _stop(server):
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def test_triton_log_lines_quote_each_message_so_a_client_cannot_forge_a_record(tmp_path):
    server, log, port = _serve(tmp_path, "default", None)
    try:
        _forge(port)
    finally:
        _stop(server)
    lines = log.read_text().splitlines()
    assert len(lines) > 5
    for line in lines:
        found = DEFAULT_LINE.match(line)
        assert found, line
        assert isinstance(json.loads(found["message"]), str), line
    assert FORGED not in lines
    assert any("THIS ENTRY WAS INJECTED" in line for line in lines)  # said, inside a quoted message


def test_iso8601_lines_unescaped_on_request_and_the_layout_follows_v2_logging(tmp_path):
    import httpx

    server, log, port = _serve(tmp_path, "ISO8601", "0")
    try:
        base = f"http://127.0.0.1:{port}/v2/logging"
        settings = httpx.get(base).json()
        assert (settings["log_format"], settings["log_file"]) == ("ISO8601", str(log))
        _forge(port)
        before = len(log.read_text().splitlines())
        assert httpx.post(base, json={"log_format": "default"}).json()["log_format"] == "default"
        _forge(port)
    finally:
        _stop(server)
    lines = log.read_text().splitlines()
    assert ISO8601_LINE.match(lines[0])
    assert all(line.startswith(FORGED) for line in lines[:before] if DEFAULT_LINE.match(line))
    assert FORGED in lines  # messages as sent: Triton's choice with the variable at 0
    assert any(DEFAULT_LINE.match(line) and "THIS ENTRY" not in line for line in lines[before:])


# - L0_logging test.sh starts tritonserver with --log-info=false (and --log-warning=false, --log-error=false) and
#   expects /v2/logging to say so and that level's lines to be left out, verbose lines still shown: gpuserve took
#   the flags and ignored them.

def test_log_info_false_leaves_info_lines_out_until_v2_logging_turns_them_on(tmp_path):
    import httpx

    repo = tmp_path / "models"
    _simple(repo)
    log = tmp_path / "server.log"
    port, grpc, metrics = free_ports(3)
    server = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={repo}",
                               "--http-port", str(port), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                               "--log-verbose=1", "--log-info=false", "--log-warning=false", "--log-format=default",
                               f"--log-file={log}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    http = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"{http}/v2/models/simple/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        settings = httpx.get(f"{http}/v2/logging").json()
        assert (settings["log_info"], settings["log_warning"], settings["log_error"]) == (False, False, True)
        assert settings["log_verbose_level"] == 1
        assert httpx.post(f"{http}/v2/repository/models/simple/unload").status_code == 200
        quiet = log.read_text()
        assert httpx.post(f"{http}/v2/logging", json={"log_info": True}).json()["log_info"] is True
        assert httpx.post(f"{http}/v2/repository/models/simple/load").status_code == 200
        loud = log.read_text()[len(quiet):]
    finally:
        _stop(server)
    assert "successfully loaded 'simple'" not in quiet and "successfully unloaded" not in quiet  # INFO lines
    assert "successfully loaded 'simple'" in loud


def test_each_level_switches_off_alone_and_verbose_lines_stay():
    from gpuserve.logging_setup import LevelSwitch

    def passes(switch, level):
        return switch.filter(logging.LogRecord("gpuserve", level, __file__, 1, "m", None, None))

    quiet_info = LevelSwitch(info=False)
    assert not passes(quiet_info, logging.INFO) and passes(quiet_info, logging.DEBUG)
    assert passes(quiet_info, logging.WARNING) and passes(quiet_info, logging.ERROR)
    quiet_warning = LevelSwitch(warning=False)
    assert passes(quiet_warning, logging.INFO) and not passes(quiet_warning, logging.WARNING)
    assert not passes(LevelSwitch(error=False), logging.CRITICAL)


def test_an_unknown_log_format_stops_the_start(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["start", "repo", "--log-format=iso8601"])
    assert "invalid argument for --log-format" in capsys.readouterr().err


# - L0_grpc python_grpc_aio_test.test_register_system_shared_memory registers a key no region has and expects
#   "[StatusCode.INTERNAL] Unable to open shared memory region: '/test_shm'", as Triton 2.51 answers it (500
#   over HTTP); gpuserve answered INVALID_ARGUMENT / 400. In process, on OS-chosen ports.

def test_a_key_no_region_has_is_refused_as_internal_on_both_transports():
    import asyncio
    import uuid

    import tritonclient.grpc.aio as grpc_aio
    import tritonclient.http.aio as http_aio
    from tritonclient.utils import InferenceServerException

    from conftest import running_server

    key = f"/gpuserve_missing_{uuid.uuid4().hex}"

    async def refusal(module, url):
        client = module.InferenceServerClient(url)
        try:
            with pytest.raises(InferenceServerException) as excinfo:
                await client.register_system_shared_memory("test_shm", key, 64)
            await client.is_server_live()  # still serving
            return str(excinfo.value.status()), excinfo.value.message()
        finally:
            await client.close()

    with running_server([]) as server:
        http = asyncio.run(refusal(http_aio, f"127.0.0.1:{server.ports['http']}"))
        grpc = asyncio.run(refusal(grpc_aio, f"127.0.0.1:{server.ports['grpc']}"))
    assert http[0] == "500" and grpc[0] == "StatusCode.INTERNAL"
    for _, message in (http, grpc):
        assert message.startswith(f"Unable to open shared memory region: '{key}'")
