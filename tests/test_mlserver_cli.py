"""The `mlserver` command MLServer users script: `mlserver start FOLDER` serves the folder, `mlserver infer`
answers a file of V2 requests line by line as MLServer 1.7.1's command does (its output for the same file and
server was compared: the same lines, field for field, but for the UUIDs and the line MLServer drops),
`dockerfile` / `build` make an image serving the folder on gpuserve's image, and `init` says it is not gpuserve's."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid

import httpx
import pytest
from test_cli import run, wait_ready

from conftest import free_ports, running_server
from gpuserve import ModelRepository
from gpuserve.mlserver.cli import main as mlserver
from gpuserve.repository import DiskRepository

MLSERVER = [sys.executable, "-m", "gpuserve.mlserver.cli"]
RUNTIME = textwrap.dedent('''
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceResponse


    class Doubler(MLModel):
        async def load(self):
            return True

        async def predict(self, payload):
            x = NumpyCodec.decode_input(payload.inputs[0])
            return InferenceResponse(model_name=self.name, id=payload.id,
                                     outputs=[NumpyCodec.encode_output("y", x * 2)])
''')
LINES = [
    {"id": "a", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]},
    {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [3, 4]}]},
    "not json",
    {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [5, 6, 7, 8]}], "parameters": {"p": 1}},
    {"outputs": []},
    {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [9, 10]}]},
]
DOUBLED = {0: [2.0, 4.0], 1: [6.0, 8.0], 3: [10.0, 12.0, 14.0, 16.0], 5: [18, 20]}


def _repository(tmp_path):
    (tmp_path / "repo" / "doubler").mkdir(parents=True)
    (tmp_path / "repo" / "doubler" / "model.py").write_text(RUNTIME)
    (tmp_path / "repo" / "doubler" / "model-settings.json").write_text(
        json.dumps({"name": "doubler", "implementation": "model.Doubler"}))
    (tmp_path / "in.txt").write_text("\n".join(line if isinstance(line, str) else json.dumps(line)
                                               for line in LINES) + "\n")
    return tmp_path / "repo"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = _repository(tmp_path_factory.mktemp("cli"))
    with running_server(repository=DiskRepository(folder).populate(ModelRepository())) as running:
        running.folder = folder.parent
        yield running


@pytest.mark.parametrize("options", [["-s", "1"], ["-s", "2", "-w", "2"], ["-s", "3", "-b"],
                                     ["-s", "2", "-t", "grpc"]])
def test_infer_answers_every_line(server, options, tmp_path):
    port = server.ports["grpc" if "grpc" in options else "http"]
    out = tmp_path / "out.txt"
    assert mlserver(["infer", "-u", f"127.0.0.1:{port}", "-m", "doubler", "-i", str(server.folder / "in.txt"),
                     "-o", str(out), *options]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    by_index = {line["parameters"]["batch_index"]: line for line in lines}
    assert sorted(by_index) == list(range(len(LINES)))  # one line each, the one that is not JSON included
    merged_size = int(options[1])
    for index, data in DOUBLED.items():
        answer = by_index[index]
        assert answer["model_name"] == "doubler" and answer["outputs"][0]["data"] == data
        assert answer["outputs"][0]["parameters"] == {"content_type": "np"}
        if index == 0:
            assert answer["id"] == "a"  # the line's own id; others get a UUID
        else:
            uuid.UUID(answer["id"])
        if merged_size == 1:  # alone, the request's id names the inference
            assert answer["parameters"]["inference_id"] == answer["id"]
    if merged_size == 2:  # lines 0 and 1 went as one merged request with an id of its own
        assert by_index[0]["parameters"]["inference_id"] == by_index[1]["parameters"]["inference_id"] != "a"
    assert by_index[2]["error"]["status"] == "preprocessing error"
    assert by_index[4]["error"]["msg"][0]["loc"] == ["inputs"]


def test_two_lines_with_one_id_are_both_answered(server, tmp_path):
    same = {"id": "dup", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    other = {**same, "inputs": [{**same["inputs"][0], "data": [5, 6]}]}
    (tmp_path / "in.txt").write_text(json.dumps(same) + "\n" + json.dumps(other) + "\n")
    out = tmp_path / "out.txt"
    assert mlserver(["infer", "-u", f"127.0.0.1:{server.ports['http']}", "-m", "doubler", "-s", "2",
                     "-i", str(tmp_path / "in.txt"), "-o", str(out)]) == 0
    lines = sorted((json.loads(line) for line in out.read_text().splitlines()),
                   key=lambda line: line["parameters"]["batch_index"])
    assert [(line["id"], line["outputs"][0]["data"]) for line in lines] == [("dup", [2, 4]), ("dup", [10, 12])]


def test_infer_failures_become_error_lines(server, tmp_path):
    out = tmp_path / "out.txt"
    assert mlserver(["infer", "-u", f"127.0.0.1:{server.ports['http']}", "-m", "nope", "-r", "1",
                     "-i", str(server.folder / "in.txt"), "-o", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(LINES) and all(line["error"]["status"] == "preprocessing error" for line in lines)
    assert any("nope" in str(line["error"]["msg"]) for line in lines)
    assert mlserver(["infer", "-m", "doubler", "-i", str(tmp_path / "missing.txt"), "-o", str(out)]) == 2
    assert mlserver(["infer", "-m", "doubler"]) == 2


def test_start_serves_the_folder_and_other_commands_say_no(tmp_path):
    folder = _repository(tmp_path)
    http, grpc, metrics = free_ports(3)
    (folder / "settings.json").write_text(json.dumps({"host": "127.0.0.1", "http_port": http, "grpc_port": grpc,
                                                     "metrics_port": metrics}))
    proc = subprocess.Popen([*MLSERVER, "start", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_ready(http, proc)
        answer = httpx.post(f"http://127.0.0.1:{http}/v2/models/doubler/infer", json=LINES[0])
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [2, 4]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    out = run([*MLSERVER, "init"])
    assert out.returncode == 2 and "gpuserve does not" in out.stderr


def test_dockerfile_and_build_make_an_image_on_gpuserves(tmp_path, monkeypatch):
    """No Docker engine runs here: the Dockerfile's text and the docker build line are what is checked (a
    stand-in `docker` on PATH records its arguments and the Dockerfile it was given)."""
    folder = _repository(tmp_path)
    (folder / "requirements.txt").write_text("numpy\n")
    assert mlserver(["dockerfile", str(folder), "-i"]) == 0
    text = (folder / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=gpuserve:cuda" in text and "COPY --chown=10001 . /models" in text
    assert "pip install --no-cache-dir -r /models/requirements.txt" in text
    assert "__pycache__/" in (folder / "Dockerfile.dockerignore").read_text()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text("#!/bin/sh\n" f"echo \"$@\" > {tmp_path}/docker-args\n"
                                 f"cat \"$5\" > {tmp_path}/docker-file\n")  # $5: the -f path
    (fake / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    assert mlserver(["build", str(folder), "-t", "my-model:1", "--base-image", "registry/gpuserve:cuda"]) == 0
    args = (tmp_path / "docker-args").read_text().split()
    assert args[:4] == ["build", "--rm", str(folder), "-f"] and args[-2:] == ["-t", "my-model:1"]
    assert "ARG BASE_IMAGE=registry/gpuserve:cuda" in (tmp_path / "docker-file").read_text()
    (fake / "docker").write_text("#!/bin/sh\nexit 3\n")
    assert mlserver(["build", str(folder), "-t", "x"]) == 3  # docker's own failure, said
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert mlserver(["build", str(folder), "-t", "x"]) == 2  # no docker at all
