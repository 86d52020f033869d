"""The launch line as users script it: `gpuserve start FOLDER --http-port P --grpc-port G --metrics-port M`,
clear start-up errors, SIGTERM draining in-flight work and exiting 0, SIGUSR1 printing the stacks, and a KServe
script run as is."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import free_ports

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo"
GPUSERVE = [sys.executable, "-m", "gpuserve.cli"]


def wait_ready(port, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server not ready in time")


def start(args, env=None):
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()


def run(args, env=None):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def test_version_and_help():
    out = run([*GPUSERVE, "--version"])
    assert out.returncode == 0 and "gpuserve" in out.stdout
    out = run([*GPUSERVE, "start", "--help"])
    assert out.returncode == 0 and "--http-port" in out.stdout and "--metrics-port" in out.stdout


def test_missing_folder_is_a_clear_error(tmp_path):
    out = run([*GPUSERVE, "start", str(tmp_path / "nope")])
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_bad_settings_file_is_a_clear_error(tmp_path):
    (tmp_path / "settings.json").write_text("{broken")
    out = run([*GPUSERVE, "start", str(tmp_path)])
    assert out.returncode == 2 and "settings.json" in out.stderr and "Traceback" not in out.stderr


def test_triton_model_repository_flag_names_the_folder(tmp_path, monkeypatch):
    from gpuserve.cli import _parser, repository_folders
    from gpuserve.errors import GpuserveError

    parse = _parser().parse_args
    monkeypatch.delenv("GPUSERVE_MODEL_REPOSITORY_ROOT", raising=False)
    assert repository_folders(parse(["start", "--model-repository", str(tmp_path)])) == [str(tmp_path)]
    assert repository_folders(parse(["start", "--model-store", str(tmp_path)])) == [str(tmp_path)]
    assert repository_folders(parse(["start", str(tmp_path), "--model-repository", str(tmp_path)])) == [str(tmp_path)]
    assert repository_folders(parse(["start"])) == ["."]
    with pytest.raises(GpuserveError, match="two model repositories"):
        repository_folders(parse(["start", str(tmp_path), "--model-repository", str(tmp_path / "other")]))
    out = run([*GPUSERVE, "start", "--model-repository", str(tmp_path / "nope")])
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_bad_cache_config_is_a_clear_error(tmp_path):
    out = run([*GPUSERVE, "start", str(tmp_path), "--cache-config", "redis,host=x"])
    assert out.returncode == 2 and "--cache-config" in out.stderr and "Traceback" not in out.stderr


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        grpc, metrics = free_ports(2)
        out = run([*GPUSERVE, "start", str(tmp_path), "--host", "127.0.0.1", "--http-port", str(port),
                   "--grpc-port", str(grpc), "--metrics-port", str(metrics)])
    assert out.returncode == 2 and f"127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


def test_demo_launch_line_serves_and_sigterm_exits_zero():
    http, grpc, metrics = free_ports(3)
    proc = start([*GPUSERVE, "start", str(DEMO), "--http-port", str(http), "--grpc-port", str(grpc),
                  "--metrics-port", str(metrics)])
    try:
        wait_ready(http, proc)
        base = f"http://127.0.0.1:{http}"
        rows = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]]  # setosa, versicolor, virginica
        out = httpx.post(f"{base}/v2/models/iris-mlp/infer", json={
            "inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": sum(rows, [])}]}).json()
        probabilities = np.array(out["outputs"][0]["data"]).reshape(out["outputs"][0]["shape"])
        assert probabilities.shape == (3, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
        assert probabilities.argmax(axis=1).tolist() == [0, 1, 2]  # the demo model is trained on iris
        species = httpx.post(f"{base}/v2/models/iris-species/infer", json={"inputs": [
            {"name": "measurements", "shape": [3, 4], "datatype": "FP32", "data": sum(rows, [])}]}).json()
        assert species["outputs"][0]["data"] == ["setosa", "versicolor", "virginica"]  # Python backend + BLS
        assert httpx.post(f"{base}/v1/models/text-stats:predict", json={"instances": ["a b"]}).json() == \
            {"predictions": [{"words": 2, "chars": 3}]}
        refused = httpx.post(f"{base}/v1/models/text-stats:predict", json={"instances": [["a"]]})
        assert refused.status_code == 400 and "instances" in refused.json()["error"]  # the demo checks its input
        assert httpx.get(f"http://127.0.0.1:{metrics}/metrics").status_code == 200
        assert httpx.get(f"{base}/v2").json()["name"] == "gpuserve-demo"
        proc.send_signal(signal.SIGUSR1)  # every thread's stack to stderr; the server serves on
        time.sleep(0.5)
        assert httpx.get(f"{base}/v2/health/ready").status_code == 200
    finally:
        code = stop(proc)
    assert code == 0
    stacks = proc.stderr.read()
    assert "Current thread" in stacks or "Thread 0x" in stacks, stacks[-2000:]


def test_env_ports_and_sigterm_drains_in_flight(tmp_path):
    marker = tmp_path / "entered"
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "model-settings.json").write_text(json.dumps({"implementation": "slow_model.Slow"}))
    (tmp_path / "slow" / "slow_model.py").write_text(textwrap.dedent(f"""
        import time
        from pathlib import Path
        from gpuserve import Model

        class Slow(Model):
            def load(self):
                self.ready = True

            def predict(self, payload, headers=None):
                Path({str(marker)!r}).write_text("in")
                time.sleep(1.0)
                return {{"predictions": payload["instances"]}}
        """))
    http, grpc, metrics = free_ports(3)
    proc = start([*GPUSERVE, "start", str(tmp_path)],
                 env={"GPUSERVE_HTTP_PORT": str(http), "GPUSERVE_GRPC_PORT": str(grpc),
                      "GPUSERVE_METRICS_PORT": str(metrics), "GPUSERVE_HOST": "127.0.0.1"})
    try:
        wait_ready(http, proc)
        result = {}
        worker = threading.Thread(target=lambda: result.setdefault("r", httpx.post(
            f"http://127.0.0.1:{http}/v1/models/slow:predict", json={"instances": [7]}, timeout=30)))
        worker.start()
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists()
        proc.send_signal(signal.SIGTERM)
        worker.join(30)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result["r"].status_code == 200 and result["r"].json() == {"predictions": [7]}


def test_kserve_script_runs_with_only_the_import_changed(tmp_path):
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent("""
        from gpuserve import Model, ModelServer   # was: from kserve import Model, ModelServer

        class MyModel(Model):
            def __init__(self, name: str):
                super().__init__(name)
                self.load()

            def load(self):
                self.ready = True

            async def predict(self, payload, headers=None):
                return {"predictions": [x * 3 for x in payload["instances"]]}

        if __name__ == "__main__":
            ModelServer().start([MyModel("custom-model")])
        """))
    # Two such scripts side by side, as KServe runs them: /metrics is on each HTTP port, and no separate
    # metrics port (8082 by default for `gpuserve start`) is taken unless asked for.
    *ports, grpc_a, grpc_b = free_ports(4)
    procs = [start([sys.executable, str(script), "--http_port", str(http), "--grpc_port", str(grpc)])
             for http, grpc in zip(ports, (grpc_a, grpc_b))]
    try:
        for http, proc in zip(ports, procs):
            wait_ready(http, proc)
            reply = httpx.post(f"http://127.0.0.1:{http}/v1/models/custom-model:predict", json={"instances": [1, 2]})
            assert reply.json() == {"predictions": [3, 6]}
            assert "nv_inference_count" in httpx.get(f"http://127.0.0.1:{http}/metrics").text
    finally:
        codes = [stop(proc) for proc in procs]
    assert codes == [0, 0]


def test_two_workers_share_the_ports_and_stop_cleanly(tmp_path):
    (tmp_path / "pid").mkdir()
    (tmp_path / "pid" / "model-settings.json").write_text(json.dumps({"implementation": "pid_model.Pid"}))
    (tmp_path / "pid" / "pid_model.py").write_text(textwrap.dedent("""
        import os
        from gpuserve import Model

        class Pid(Model):
            def load(self):
                self.ready = True

            def predict(self, payload, headers=None):
                return {"predictions": [os.getpid()]}
        """))
    http, grpc, metrics = free_ports(3)
    proc = start([*GPUSERVE, "start", str(tmp_path), "--host", "127.0.0.1", "--http-port", str(http),
                  "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--workers", "2"])
    try:
        wait_ready(http, proc)
        pids = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            try:  # a new connection each time, so the kernel may pick either worker
                with httpx.Client(timeout=10) as client:
                    reply = client.post(f"http://127.0.0.1:{http}/v1/models/pid:predict", json={"instances": [1]})
                if reply.status_code == 200:
                    pids.add(reply.json()["predictions"][0])
            except httpx.HTTPError:
                pass  # the second worker may still be starting
        assert len(pids) == 2 and proc.pid not in pids
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}") as client:
            assert client.is_model_ready("pid")
        assert httpx.get(f"http://127.0.0.1:{metrics}/metrics").status_code == 200
    finally:
        code = stop(proc)
    assert code == 0


def test_json_logs_and_access_log_switch(tmp_path):
    http, grpc, metrics = free_ports(3)
    env = {"GPUSERVE_LOGGING_FORMAT": "json", "GPUSERVE_ACCESS_LOG": "true", "GPUSERVE_HOST": "127.0.0.1"}
    proc = start([*GPUSERVE, "start", str(DEMO), "--http-port", str(http), "--grpc-port", str(grpc),
                  "--metrics-port", str(metrics)], env=env)
    try:
        wait_ready(http, proc)
        httpx.get(f"http://127.0.0.1:{http}/v2/models/iris-mlp")
    finally:
        assert stop(proc) == 0
    lines = [line for line in proc.stderr.read().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any("/v2/models/iris-mlp" in r["message"] for r in records if r["logger"] == "uvicorn.access")
    assert any("listening" in r["message"] for r in records)
