"""GPU errors that poison the whole process, and what the server says once one happened.

After an illegal memory access, a device-side assert, an unspecified launch failure or an uncorrectable
ECC error, CUDA's context is broken for good ("sticky" errors): every later call on that device fails, and
only a new process recovers. Answering 500 to each request from then on would keep the server in a load
balancer's rotation while it can only fail (the session-8 H200 run saw such a process first lose requests,
then abort). So when a model's call reports one, the model stops being ready (its reason names the error)
and the server stops being live and ready: `/v2/health/live` and `/ready` answer 503 and gRPC's ServerLive
and ServerReady false, which take it out of rotation and make a Kubernetes liveness probe restart it.
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, Optional

from gpuserve.errors import exception_chain

logger = logging.getLogger("gpuserve")

# As CUDA words them (torch, ONNX Runtime and CuPy quote the runtime's text) or names them (driver API).
_FATAL = ("illegal memory access", "an illegal instruction", "misaligned address", "unspecified launch failure",
          "device-side assert", "uncorrectable ecc error", "launch timed out and was terminated",
          "cuda_error_illegal_address", "cuda_error_launch_failed", "cuda_error_assert",
          "cuda_error_ecc_uncorrectable", "cudaerrorillegaladdress", "cudaerrorlaunchfailure",
          "gpu has fallen off the bus")

_lock = threading.Lock()
_lost: Dict[str, str] = {}  # device -> the first fatal error reported on it


def fatal_reason(exc: BaseException) -> Optional[str]:
    """The first line of the error (or of one it was raised from) when it is one of CUDA's sticky errors."""
    for error in exception_chain(exc):
        text = str(error)
        if any(marker in text.lower() for marker in _FATAL):
            first = next((line.strip() for line in text.splitlines() if line.strip()), text)
            return f"{type(error).__name__}: {first}"
    return None


def report(device: str, reason: str) -> None:
    with _lock:
        if device in _lost:
            return
        _lost[device] = reason
    logger.critical("%s is in an unrecoverable state (%s): the server reports itself not live; restart it",
                    device, reason)


def lost() -> Dict[str, str]:
    """{device: first fatal error} for every device that reported one (empty while all is well)."""
    return dict(_lost)


def clear() -> None:
    """Forget what was reported (tests; a process never recovers from the errors themselves)."""
    with _lock:
        _lost.clear()
