"""Device helpers behind the backend boundary: CUDA discovery without touching CUDA in the parent.

NVML (nvidia-ml-py) answers "how many GPUs" without creating a CUDA context, so a process that
later forks or spawns workers stays clean (seldon-core#4429). Every import is lazy and every
failure means "no GPU".
"""

from __future__ import annotations

import functools
import os


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return 0
    try:
        import pynvml
    except ImportError:
        return _count_device_files()
    try:
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


def _count_device_files() -> int:
    """Without NVML, count the driver's device nodes; a container without GPUs has none."""
    import glob

    return len([p for p in glob.glob("/dev/nvidia[0-9]*") if p[len("/dev/nvidia"):].isdigit()])


def pinned_allocator():
    """An allocator of page-locked host memory (nbytes -> uint8 array), or None without CUDA.

    Page-locked buffers let host-to-device copies run asynchronously (DMA) on a worker's stream; the
    engine's staging pool keeps and reuses them, so pinning is paid once per buffer, not per batch.
    """
    try:
        import torch

        if torch.cuda.is_available():
            def allocate(nbytes: int):
                # The array's base is the tensor, so the page-locked memory lives exactly as long as the
                # array: when the pool drops a buffer (or is cleared at unload) it goes back to torch.
                return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True).numpy()

            return allocate
    except ImportError:
        pass
    try:
        import cupy
        import numpy as np

        if cupy.cuda.runtime.getDeviceCount() > 0:
            def allocate(nbytes: int):
                memory = cupy.cuda.alloc_pinned_memory(nbytes)
                return np.frombuffer(memory, dtype=np.uint8, count=nbytes)

            return allocate
    except Exception:
        pass
    return None
