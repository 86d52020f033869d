"""Device arrays at the backend boundary: the `run_on_device` contract's CuPy side.

GPU-capable backends offer `run_on_device(inputs, output_names) -> Dict[str, cupy.ndarray]`: inputs are
NumPy arrays or device arrays (anything with `__cuda_array_interface__`, e.g. CuPy) already on the
backend's device; outputs are CuPy arrays on that device, synchronised, so any stream may read them.
Kernels (gpuserve.kernels) consume these outputs without a trip through host memory.

CuPy is imported on first use only; without it (or without CUDA) `run_on_device` fails with one clear
error rather than an ImportError from deep inside a backend.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np


class DeviceUnavailable(RuntimeError):
    """run_on_device was asked for where it cannot work (no CuPy, no CUDA, a CPU backend)."""


def cupy_module():
    try:
        import cupy
    except ImportError as exc:
        raise DeviceUnavailable(f"run_on_device needs CuPy ({exc}); pip install cupy-cuda12x or cupy-cuda13x") \
            from None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise DeviceUnavailable("run_on_device needs a CUDA device; none is visible")
    except DeviceUnavailable:
        raise
    except Exception as exc:  # cupy without a driver raises CUDARuntimeError
        raise DeviceUnavailable(f"run_on_device needs a CUDA device: {exc}") from None
    return cupy


def require_device(backend_name: str, device: str) -> int:
    """The CUDA index a backend runs on, or a clear error for a CPU backend."""
    if not device.startswith("cuda"):
        raise DeviceUnavailable(f"{backend_name} runs on {device}; run_on_device needs a model loaded on CUDA")
    return int(device.split(":", 1)[1]) if ":" in device else 0


def is_device_array(value: Any) -> bool:
    return hasattr(value, "__cuda_array_interface__")


def interface(value: Any) -> dict:
    return value.__cuda_array_interface__


def contiguous(value: Any):
    """A C-contiguous device array for `value` (the same object when it already is one)."""
    cai = interface(value)
    strides = cai.get("strides")
    if strides is None:
        return value
    dtype = np.dtype(cai["typestr"])
    expected, step = [], dtype.itemsize
    for dim in reversed(cai["shape"]):
        expected.append(step)
        step *= dim
    if tuple(reversed(expected)) == tuple(strides):
        return value
    return cupy_module().ascontiguousarray(cupy_module().asarray(value))


def pointer(value: Any) -> int:
    return int(interface(value)["data"][0])


def wait_for_producer(value: Any, stream=None) -> None:
    """Make `stream` (a cupy Stream) wait for the stream that produced `value`, without blocking the host.

    `__cuda_array_interface__` v3 names the producer's stream (1: legacy default, 2: per-thread default);
    absent or None means the producer needs no synchronisation. Without a stream of ours to order
    against, the host waits for the producer instead.

    The producer's handle goes straight to the runtime calls: CuPy 14 deprecates `ExternalStream`
    (a warning per call site), and a raw handle is all these two calls need.
    """
    producer = interface(value).get("stream")
    if producer is None:
        return
    cupy = cupy_module()
    runtime = cupy.cuda.runtime
    if stream is None:
        runtime.streamSynchronize(int(producer))
        return
    with cupy.cuda.Device(stream.device_id):  # the event belongs to the device both streams are on
        event = cupy.cuda.Event(disable_timing=True)
        runtime.eventRecord(event.ptr, int(producer))
    stream.wait_event(event)


def wrap(ptr: int, shape, dtype, device_id: int, owner: Any):
    """A CuPy array over device memory that `owner` keeps alive (no copy)."""
    cupy = cupy_module()
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes == 0 or not ptr:
        with cupy.cuda.Device(device_id):
            return cupy.empty(shape, dtype)
    memory = cupy.cuda.UnownedMemory(int(ptr), nbytes, owner, device_id)
    return cupy.ndarray(shape, dtype, cupy.cuda.MemoryPointer(memory, 0))


class Stream:
    """A non-blocking CUDA stream a backend owns; `handle` is the raw cudaStream_t as an int.

    CuPy's stream when CuPy is there (so producer events can be waited on), else torch's.
    """

    def __init__(self, device_id: int):
        self.device_id = device_id
        self.cupy_stream = None
        self.torch_stream = None
        try:
            import cupy

            with cupy.cuda.Device(device_id):
                self.cupy_stream = cupy.cuda.Stream(non_blocking=True)
            self.handle = int(self.cupy_stream.ptr)
            return
        except ImportError:
            pass
        import torch  # the only other way this project makes streams

        self.torch_stream = torch.cuda.Stream(device=device_id)
        self.handle = int(self.torch_stream.cuda_stream)

    def synchronize(self) -> None:
        (self.cupy_stream or self.torch_stream).synchronize()


def new_stream(device_id: int) -> Optional[Stream]:
    """A stream of our own, or None where neither CuPy nor torch can make one."""
    try:
        return Stream(device_id)
    except Exception:
        return None
