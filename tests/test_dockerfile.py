"""The image cannot be built here (no Docker engine); check what can be: the entry command the image
runs works on this machine, and the file keeps its contract (ports, healthcheck, non-root, GPU ORT)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from test_cli import free_port, stop, wait_ready

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile.cuda"


def test_dockerfile_contract():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM .*AS build$", text, re.M) and text.count("FROM ") == 2  # multi-stage
    assert "onnx-gpu" in text and '"onnx,' not in text and "[onnx]" not in text  # never CPU onnxruntime
    assert re.search(r"^USER gpuserve$", text, re.M)
    assert "EXPOSE 8080 8081 8082" in text and "/v2/health/ready" in text
    assert 'ENTRYPOINT ["gpuserve", "start", "/models"]' in text


def test_entry_command_runs_here(tmp_path):
    text = DOCKERFILE.read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert entry[:2] == ["gpuserve", "start"]
    ports = {flag: str(free_port()) for flag in ("--http-port", "--grpc-port", "--metrics-port")}
    cmd = [ports.get(flag, value) for flag, value in zip([None] + cmd, cmd)]  # free ports, same flags
    args = [sys.executable, "-m", "gpuserve.cli", "start", str(tmp_path), *cmd]  # tmp_path stands for /models
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GPUSERVE_HOST": "127.0.0.1"})
    try:
        wait_ready(int(ports["--http-port"]), proc)
        assert httpx.get(f"http://127.0.0.1:{ports['--http-port']}/v2/health/ready").status_code == 200
    finally:
        assert stop(proc) == 0
