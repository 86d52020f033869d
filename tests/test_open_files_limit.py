"""The server raises its soft limit on open descriptors to the hard one at start (one descriptor a client
connection; containers often start at a soft 1024), and leaves a limit already at the hard one alone."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

# The child lowers its own soft limit first: a preexec_fn runs between fork and exec, which is not safe in a
# test process with threads (clean-clone CI saw the child die of SIGABRT there once).
PROBE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from gpuserve.server.model_server import raise_open_files_limit
print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def _run(soft: int) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, str(soft)], capture_output=True, text=True, timeout=120,
                          check=True).stdout.strip()


def test_a_low_soft_limit_is_raised_to_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard limit {hard}: nothing to raise towards here")
    assert _run(256) == f"(256, {hard}) ({hard}, {hard})"


def test_a_soft_limit_at_the_hard_one_is_left_alone():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no finite hard limit here")
    assert _run(hard) == f"None ({hard}, {hard})"
