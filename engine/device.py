"""Device choice: `auto | cpu | cuda | cuda:N`. `auto` means CUDA when usable, else CPU, said once."""

from __future__ import annotations

import logging

from gpuserve.backends.cuda import cuda_device_count

logger = logging.getLogger("gpuserve.engine")
_said = False


def choose_device(wanted: str | None) -> str:
    global _said
    wanted = (wanted or "auto").lower()
    if wanted == "cuda":
        return "cuda:0"
    if wanted != "auto":
        return wanted
    count = cuda_device_count()
    device = "cuda:0" if count else "cpu"
    if not _said:
        logger.info("device auto: %s", f"CUDA ({count} device(s)), using cuda:0" if count else "no usable CUDA, using CPU")
        _said = True
    return device
