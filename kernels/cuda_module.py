"""The `.cu` sources beside this package, compiled by CuPy (NVRTC) on first use, once per device.

CuPy is imported here and only when a device path asks for it, so `import gpuserve` never loads it.
The sources ship as package data (pyproject's package-data), read through importlib.resources so an
installed wheel finds them as well as a source checkout.
"""

from __future__ import annotations

import threading
from importlib import resources
from typing import Dict, Optional, Tuple

_functions: Dict[Tuple[str, str, int], object] = {}
_modules: Dict[Tuple[str, int], object] = {}
_lock = threading.Lock()

OPTIONS = ("--std=c++14",)


def source(filename: str) -> str:
    return resources.files("gpuserve.kernels").joinpath(filename).read_text()


def cupy_module():
    """CuPy, or None when it is not installed or sees no CUDA device (then the CPU paths run)."""
    try:
        import cupy
    except Exception:
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # CuPy without a driver
        return None
    return cupy


def function(filename: str, name: str, device: int):
    """The compiled kernel `name` from `filename`, for CUDA device `device`."""
    key = (filename, name, device)
    kernel = _functions.get(key)
    if kernel is not None:
        return kernel
    import cupy

    with _lock:
        kernel = _functions.get(key)
        if kernel is None:
            with cupy.cuda.Device(device):
                module = _modules.get((filename, device))
                if module is None:
                    module = cupy.RawModule(code=source(filename), options=OPTIONS)
                    _modules[(filename, device)] = module
                kernel = module.get_function(name)
            _functions[key] = kernel
    return kernel


def device_index(device: Optional[str]) -> int:
    device = device or "cuda:0"
    return int(device.split(":", 1)[1]) if ":" in device else 0


def blocks(count: int, threads: int, limit: int = 65535) -> int:
    """Blocks that cover `count` elements at `threads` per block, capped (the kernels loop beyond)."""
    return max(1, min((int(count) + threads - 1) // threads, limit))
