"""The image cannot be built here (no Docker engine); check what can be: the entry point the image runs
(scripts/docker-entrypoint.sh) works on this machine with the image's CMD and with a tritonserver command, and
the file keeps its contract (ports, healthcheck, non-root, GPU ORT)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from conftest import free_ports
from test_cli import stop, wait_ready

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile.cuda"
ENTRYPOINT = DOCKERFILE.parent / "scripts" / "docker-entrypoint.sh"


def test_dockerfile_contract():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM .*AS build$", text, re.M) and text.count("FROM ") == 2  # multi-stage
    assert "onnx-gpu" in text and '"onnx,' not in text and "[onnx]" not in text  # never CPU onnxruntime
    assert re.search(r"^USER gpuserve$", text, re.M)
    assert "EXPOSE 8080 8081 8082" in text and "/v2/health/ready" in text
    assert 'ENTRYPOINT ["gpuserve-entrypoint"]' in text
    assert "COPY scripts/docker-entrypoint.sh /opt/gpuserve/bin/gpuserve-entrypoint" in text


def _entry(tmp_path, *args):
    """The image's entry point run here: /models is tmp_path, `gpuserve`/`tritonserver` those of this venv."""
    env = {**os.environ, "GPUSERVE_HOST": "127.0.0.1", "GPUSERVE_MODELS": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.Popen(["sh", str(ENTRYPOINT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_entry_command_runs_here(tmp_path):
    text = DOCKERFILE.read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    flags = ("--http-port", "--grpc-port", "--metrics-port")
    ports = {flag: str(port) for flag, port in zip(flags, free_ports(3))}
    cmd = [ports.get(flag, value) for flag, value in zip([None] + cmd, cmd)]  # free ports, same flags
    proc = _entry(tmp_path, *cmd)
    try:
        wait_ready(int(ports["--http-port"]), proc)
        assert httpx.get(f"http://127.0.0.1:{ports['--http-port']}/v2/health/ready").status_code == 200
    finally:
        assert stop(proc) == 0


def test_a_tritonserver_command_runs_as_written(tmp_path):
    """A Triton manifest's `tritonserver --model-repository=/models ...` keeps working in the image."""
    ports = free_ports(3)
    proc = _entry(tmp_path, "tritonserver", f"--model-repository={tmp_path}", f"--http-port={ports[0]}",
                  f"--grpc-port={ports[1]}", f"--metrics-port={ports[2]}")
    try:
        wait_ready(ports[0], proc)
        assert httpx.get(f"http://127.0.0.1:{ports[0]}/v2/health/ready").status_code == 200
    finally:
        assert stop(proc) == 0
