"""The `torchserve` command (gpuserve/torchserve_cli.py): TorchServe's launch line, as KServe's TorchServe runtime and
TorchServe's docs write it, starts gpuserve on the model store and config.properties, on the config's addresses;
`--start` returns with the server running on, `--stop` stops it, and TorchServe's refusals keep its words."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

from conftest import free_ports  # noqa: E402
from test_torchserve import CLASS_HANDLER, make_mar, reference  # noqa: E402

COMMAND = [sys.executable, "-m", "gpuserve.torchserve_cli"]
ROWS = [[1.0, 2.0, 3.0, 4.0]]


def _run(args, tmp_path, timeout=60):
    """The command with its pid file in this test's own temp folder (TorchServe's: TMPDIR/.model_server.pid)."""
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env={**_env(tmp_path)})


def _env(tmp_path):
    import os

    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp_path / "tmp")}


def _store(tmp_path):
    store = tmp_path / "model-store"
    model = make_mar(store / "lin.mar", "lin", CLASS_HANDLER, seed=1)
    http, grpc, metrics = free_ports(3)
    config = tmp_path / "config.properties"
    config.write_text(f"inference_address=http://127.0.0.1:{http}\nmanagement_address=http://127.0.0.1:8081\n"
                      f"metrics_address=http://127.0.0.1:{metrics}\ngrpc_inference_port={grpc}\n"
                      "model_store=/mnt/models/model-store\n")  # KServe's line: --model-store stands over it
    return store, config, http, model


def _serving(http, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http}/v2/models/lin/ready", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def test_start_returns_the_server_serves_and_stop_stops_it(tmp_path):
    store, config, http, model = _store(tmp_path)
    started = _run(["--start", "--ncs", f"--model-store={store}", f"--ts-config={config}", "--models", "lin=lin.mar",
                    "--disable-token-auth"], tmp_path)
    assert started.returncode == 0, started.stderr
    assert "its log: " in started.stdout  # the server's output goes to TorchServe's log folder, not this pipe
    try:
        assert _serving(http)
        answer = httpx.post(f"http://127.0.0.1:{http}/predictions/lin", json=ROWS[0], timeout=30)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(np.array(answer.json()), reference(model, ROWS)[0], rtol=1e-5)
        again = _run(["--start", f"--model-store={store}"], tmp_path)
        assert again.returncode == 1
        assert "TorchServe is already running, please use torchserve --stop to stop TorchServe." in again.stdout
    finally:
        stopped = _run(["--stop"], tmp_path)
    assert stopped.stdout.strip() == "TorchServe has stopped."
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{http}/ping", timeout=2)
    assert not list((tmp_path / "tmp").glob("gpuserve-torchserve-*"))  # its layout went with it
    assert "gpuserve stopped" in (tmp_path / "logs" / "gpuserve.log").read_text()
    assert _run(["--stop"], tmp_path).stdout.strip() == "TorchServe is not currently running."


def test_foreground_waits_for_the_server(tmp_path):
    store, config, http, _ = _store(tmp_path)
    proc = subprocess.Popen([*COMMAND, "--foreground", f"--model-store={store}", f"--ts-config={config}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    try:
        assert _serving(http)
        assert proc.poll() is None
        described = httpx.get(f"http://127.0.0.1:{http}/models", timeout=30).json()
        assert [m["modelName"] for m in described["models"]] == ["lin"]  # load_models defaults to all
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    assert not (tmp_path / "tmp" / ".model_server.pid").exists()


@pytest.mark.parametrize("args, words", [
    ([], "Missing mandatory parameter --model-store"),
    (["--model-store=/no/such/store"], "--model-store directory not found: /no/such/store"),
    (["--model-store=.", "--ts-config=/no/such.properties"], "--ts-config file not found: /no/such.properties"),
])
def test_torchserves_refusals(tmp_path, args, words):
    done = _run(args, tmp_path)
    assert done.returncode == 1 and words in done.stdout
    assert not list((tmp_path / "tmp").glob("gpuserve-torchserve-*"))


def test_the_pyproject_installs_the_command():
    import tomllib

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["torchserve"] == "gpuserve.torchserve_cli:main"
    assert json.dumps(scripts)  # (the file parses)
