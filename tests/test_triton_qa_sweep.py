"""What the session-17 sweep over Triton's qa suites (docs/triton_qa.md) found gpuserve answering differently.

- L0_http test.sh starts the server with --http-max-input-size=0 and =-1024 and expects the start to stop
  with "Error: --http-max-input-size must be greater than 0." in the log once: gpuserve started, and a
  limit of 0 or less would then refuse every request body. Ports 9290-9292 (never bound: the start stops).
"""

import subprocess
import sys

import pytest

from gpuserve import triton_flags
from gpuserve.cli import _parser
from gpuserve.errors import GpuserveError

WORDS = "Error: --http-max-input-size must be greater than 0."


@pytest.mark.parametrize("size", ["0", "-1024"])
def test_a_non_positive_http_max_input_size_stops_the_start(tmp_path, size):
    run = subprocess.run([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={tmp_path}",
                          "--http-port", "9290", "--grpc-port", "9291", "--metrics-port", "9292",
                          f"--http-max-input-size={size}"], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert (run.stdout + run.stderr).count(WORDS) == 1


def test_a_positive_http_max_input_size_is_the_request_limit():
    args = _parser().parse_args(["start", "repo", f"--http-max-input-size={2 ** 27}"])
    assert triton_flags.settings_from(args) == {"max_request_bytes": 2 ** 27}
    with pytest.raises(GpuserveError, match="must be greater than 0"):
        triton_flags.settings_from(_parser().parse_args(["start", "repo", "--http-max-input-size=0"]))
