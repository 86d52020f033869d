"""The `tensorflow_model_server` command (gpuserve/tfserving_cli.py): TensorFlow Serving's launch lines, as KServe's
TensorFlow runtime and tensorflow/serving's image write them, start gpuserve serving the same models on the same
ports; a version folder dropped in is served and one removed is unloaded, as TFServing's file-system poll does;
a --model_config_file's relative base paths resolve from its own folder. Skipped without tensorflow-serving-api."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving.apis")
httpx = pytest.importorskip("httpx")

import grpc  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

import tf_models  # noqa: E402
from conftest import free_ports  # noqa: E402
from gpuserve.tfserving_cli import FlagError, parse  # noqa: E402
from test_cli import start, stop, wait_ready  # noqa: E402

COMMAND = [sys.executable, "-c", "import sys; from gpuserve.tfserving_cli import main; sys.exit(main())"]
X = [[1.0, 2.0, 3.0, 4.0]]


def test_flags_are_read_as_absl_reads_them():
    used, noted = parse(["--port=9000", "--rest_api_port", "8080", "--model_name=m", "--enable_batching",
                         "--noflush_filesystem_caches", "--rest_api_timeout_in_ms=60000"])
    assert (used["port"], used["rest_api_port"], used["model_name"]) == ("9000", "8080", "m")
    assert used["file_system_poll_wait_seconds"] == "1"  # TFServing's default
    assert used["enable_batching"] == "true"
    assert noted == {"flush_filesystem_caches": "false", "rest_api_timeout_in_ms": "60000"}
    for argv, words in ((["--bogus=1"], "Unknown command line flag 'bogus'"), (["--port"], "Missing the value"),
                        (["serve"], "unexpected argument 'serve'")):
        with pytest.raises(FlagError, match=words):
            parse(argv)


def test_the_pyproject_installs_the_command():
    import tomllib

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tensorflow_model_server"] == "gpuserve.tfserving_cli:main"


def _rest_predict(port, name):
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/models/{name}:predict", json={"instances": X}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"][0][0]


def _grpc_predict(port, name):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        ask = predict_pb2.PredictRequest()
        ask.model_spec.name = name
        ask.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(X, np.float32)))
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(ask, timeout=60)
        return float(tf.make_ndarray(answer.outputs["y"])[0, 0]), answer.model_spec.version.value


def _eventually(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except AssertionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("not within the time allowed")
        time.sleep(0.2)


def test_kserves_launch_line_serves_the_model_and_follows_its_versions(tmp_path):
    base = tmp_path / "models" / "census"
    tf_models.scaled_savedmodel(base / "1", 2.0)
    rest, grpc_port, metrics = free_ports(3)
    proc = start([*COMMAND, "--model_name=census", f"--port={grpc_port}", f"--rest_api_port={rest}",
                  f"--model_base_path={base}", "--rest_api_timeout_in_ms=60000"],
                 env={"GPUSERVE_METRICS_PORT": str(metrics), "GPUSERVE_HOST": "127.0.0.1"})
    try:
        wait_ready(rest, proc)
        assert _rest_predict(rest, "census") == 2.0
        assert _grpc_predict(grpc_port, "census") == (2.0, 1)
        tf_models.scaled_savedmodel(tmp_path / "staged", 3.0)  # a new version, moved in whole
        (tmp_path / "staged").rename(base / "2")
        _eventually(lambda: _grpc_predict(grpc_port, "census") == (3.0, 2))
        status = httpx.get(f"http://127.0.0.1:{rest}/v1/models/census", timeout=30).json()
        assert [s["version"] for s in status["model_version_status"]] == ["2"]  # latest 1, as TFServing
        import shutil

        shutil.rmtree(base / "2")  # removed: the one before serves again
        _eventually(lambda: _grpc_predict(grpc_port, "census") == (2.0, 1))
    finally:
        assert stop(proc) == 0
    assert "--rest_api_timeout_in_ms=60000 taken" in proc.stderr.read()


def test_a_model_config_file_named_otherwise_with_relative_base_paths(tmp_path):
    config = tmp_path / "conf" / "serving.conf"
    config.parent.mkdir()
    tf_models.scaled_savedmodel(tmp_path / "conf" / "store" / "a" / "1", 5.0)
    config.write_text('model_config_list { config { name: "a" base_path: "store/a" model_platform: "tensorflow" } }')
    monitoring = tmp_path / "monitoring.config"  # TFServing's MonitoringConfig: Prometheus metrics on the REST port
    monitoring.write_text('prometheus_config {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n')
    batching = tmp_path / "batching.config"  # TFServing's BatchingParameters
    batching.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 1000 }\n")
    rest, grpc_port, metrics = free_ports(3)
    proc = start([*COMMAND, f"--model_config_file={config}", f"--port={grpc_port}", f"--rest_api_port={rest}",
                  "--file_system_poll_wait_seconds=0", f"--monitoring_config_file={monitoring}",
                  "--enable_batching", f"--batching_parameters_file={batching}"],
                 env={"GPUSERVE_METRICS_PORT": str(metrics), "GPUSERVE_HOST": "127.0.0.1"})
    try:
        wait_ready(rest, proc)
        assert _rest_predict(rest, "a") == 5.0
        scraped = httpx.get(f"http://127.0.0.1:{rest}/monitoring/prometheus/metrics", timeout=30)
        assert scraped.status_code == 200 and 'model="a"' in scraped.text
        assert httpx.get(f"http://127.0.0.1:{rest}/v2/models/a/config", timeout=30).json()["max_batch_size"] == 16
    finally:
        assert stop(proc) == 0


def test_a_line_without_models_is_refused_in_tfservings_words():
    import subprocess

    done = subprocess.run([*COMMAND, "--port=0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Both server_options.model_base_path and server_options.model_config_file are empty!" in done.stderr
