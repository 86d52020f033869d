"""What the session-17 sweep over Triton's qa suites (docs/triton_qa.md) found gpuserve answering differently.

- L0_http test.sh starts the server with --http-max-input-size=0 and =-1024 and expects the start to stop
  with "Error: --http-max-input-size must be greater than 0." in the log once: gpuserve started, and a
  limit of 0 or less would then refuse every request body.
"""

import subprocess
import sys

import pytest

from conftest import free_ports
from gpuserve import triton_flags
from gpuserve.cli import _parser
from gpuserve.errors import GpuserveError

WORDS = "Error: --http-max-input-size must be greater than 0."


@pytest.mark.parametrize("size", ["0", "-1024"])
def test_a_non_positive_http_max_input_size_stops_the_start(tmp_path, size):
    http, grpc, metrics = free_ports(3)  # never bound (the start stops), but never someone else's either
    run = subprocess.run([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={tmp_path}",
                          "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                          f"--http-max-input-size={size}"], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert (run.stdout + run.stderr).count(WORDS) == 1


def test_a_positive_http_max_input_size_is_the_request_limit():
    args = _parser().parse_args(["start", "repo", f"--http-max-input-size={2 ** 27}"])
    assert triton_flags.settings_from(args) == {"max_request_bytes": 2 ** 27}
    with pytest.raises(GpuserveError, match="must be greater than 0"):
        triton_flags.settings_from(_parser().parse_args(["start", "repo", "--http-max-input-size=0"]))


# - L0_model_namespacing ModelNamespacePoll.test_dynamic_resolution: in poll mode, when one folder's copy of a
#   name two folders held goes away, the ensembles calling it load again and call the copy left (Triton's poll
#   follows its dependency graph). gpuserve unloaded them with the copy and left them unloaded ("'simple_subadd'
#   has no available versions") since unloading a step unloads its ensembles.

def _wait_ready(port, names, seconds=60):
    import time

    import httpx

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if all(httpx.get(f"http://127.0.0.1:{port}/v2/models/{n}/ready").status_code == 200 for n in names):
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return False


def test_a_poll_relinks_ensembles_when_a_namespaced_step_leaves_one_folder(tmp_path):
    import shutil
    import time

    import numpy as np
    import tritonclient.http as httpclient

    from test_triton_qa_backends import _namespaced_repos

    addsub, subadd = _namespaced_repos(tmp_path)
    port, grpc, metrics = free_ports(3)
    server = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", "--model-namespacing=true",
                               f"--model-repository={addsub}", f"--model-repository={subadd}",
                               "--model-control-mode=poll", "--repository-poll-secs=0.5", "--http-port", str(port),
                               "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                              stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT)
    try:
        assert _wait_ready(port, ["simple_addsub", "simple_subadd"])
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        x = np.arange(16, dtype=np.int32)
        inputs = [httpclient.InferInput(n, [16], "INT32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(x)
        shutil.move(str(addsub / "composing_model"), str(tmp_path / "composing_model"))
        time.sleep(2)  # a few polls
        assert _wait_ready(port, ["simple_addsub", "simple_subadd", "composing_model"], seconds=30)
        for name in ("simple_addsub", "simple_subadd", "composing_model"):  # all subtract now
            np.testing.assert_array_equal(client.infer(name, inputs).as_numpy("OUTPUT0"), x - x)
        client.close()  # as tritonserver, a stop waits for open HTTP connections
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            pytest.fail("the server did not stop: " + (tmp_path / "server.log").read_text()[-3000:])
