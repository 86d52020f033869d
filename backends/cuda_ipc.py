"""CUDA IPC: open a device allocation another process exported, and copy through it.

Triton's CUDA shared-memory clients (`tritonclient.utils.cuda_shared_memory`) cudaMalloc a buffer,
export it with cudaIpcGetMemHandle and send the 64 handle bytes. The server maps the same memory
with cudaIpcOpenMemHandle. We use NVIDIA's `cuda-bindings` (the module those clients already
import) and fall back to CuPy's runtime wrapper, so a CUDA image with either one works. Both are
imported on first use only; a failure is `CudaUnavailable` (no CUDA here at all) or `CudaError`
(CUDA refused a call), each carrying CUDA's own words.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Optional

import numpy as np

HANDLE_SIZE = 64  # CUDA_IPC_HANDLE_SIZE: cudaIpcMemHandle_t is 64 opaque bytes


class CudaError(RuntimeError):
    """CUDA refused a call (a bad handle, a device that does not exist); CUDA's words inside."""


class CudaUnavailable(CudaError):
    """CUDA IPC cannot be used in this process at all: no binding, no driver or no device."""


class _BindingsRuntime:
    """cuda.bindings.runtime: every call returns (error, *results)."""

    name = "cuda-bindings"

    def __init__(self):
        from cuda.bindings import runtime  # noqa: PLC0415 - optional, GPU images only

        self.rt = runtime

    def _check(self, result, what: str):
        err = result[0] if isinstance(result, tuple) else result
        if err != self.rt.cudaError_t.cudaSuccess:
            _, text = self.rt.cudaGetErrorString(err)
            text = text.decode() if isinstance(text, bytes) else str(text)
            raise CudaError(f"{what} failed: {text} ({getattr(err, 'name', err)})")
        if isinstance(result, tuple) and len(result) > 1:
            return result[1] if len(result) == 2 else result[1:]
        return None

    def device_count(self) -> int:
        return int(self._check(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount"))

    def open(self, handle: bytes, device_id: int) -> int:
        self._check(self.rt.cudaSetDevice(device_id), f"cudaSetDevice({device_id})")
        native = self.rt.cudaIpcMemHandle_t()
        # The struct's bytes are reachable only through its address (cuda-bindings 13 has no field).
        ctypes.memmove(native.getPtr(), handle, HANDLE_SIZE)
        pointer = self._check(self.rt.cudaIpcOpenMemHandle(native, self.rt.cudaIpcMemLazyEnablePeerAccess),
                              "cudaIpcOpenMemHandle")
        return int(pointer)

    def close(self, pointer: int) -> None:
        self._check(self.rt.cudaIpcCloseMemHandle(pointer), "cudaIpcCloseMemHandle")

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDefault  # unified addressing tells host from device
        self._check(self.rt.cudaMemcpy(dst, src, nbytes, kind), "cudaMemcpy")
        # From pageable host memory cudaMemcpy returns once the bytes are staged, before they reach the
        # device; the client reads them from its own process as soon as we answer, so wait for them.
        self._check(self.rt.cudaStreamSynchronize(0), "cudaStreamSynchronize")


class _CupyRuntime:
    """cupy.cuda.runtime: raises CUDARuntimeError instead of returning codes."""

    name = "cupy"

    def __init__(self):
        from cupy.cuda import runtime  # noqa: PLC0415 - optional, GPU images only

        self.rt = runtime

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # CUDARuntimeError, or a missing driver library
            raise CudaError(f"{what} failed: {exc}") from None

    def device_count(self) -> int:
        return int(self._call("cudaGetDeviceCount", self.rt.getDeviceCount))

    def open(self, handle: bytes, device_id: int) -> int:
        self._call(f"cudaSetDevice({device_id})", self.rt.setDevice, device_id)
        return int(self._call("cudaIpcOpenMemHandle", self.rt.ipcOpenMemHandle, bytes(handle),
                              self.rt.cudaIpcMemLazyEnablePeerAccess))

    def close(self, pointer: int) -> None:
        self._call("cudaIpcCloseMemHandle", self.rt.ipcCloseMemHandle, pointer)

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        self._call("cudaMemcpy", self.rt.memcpy, dst, src, nbytes, self.rt.memcpyDefault)
        self._call("cudaStreamSynchronize", self.rt.streamSynchronize, 0)  # as _BindingsRuntime.copy


class CudaIpc:
    """The process's CUDA runtime as the shared-memory registry needs it.

    `open` and `close` run under a lock: cudaSetDevice is per thread but IPC mappings are per
    process, and a handle opened twice in one process is an error CUDA reports, not one to race on.
    """

    def __init__(self, runtime=None):
        self._runtime = runtime
        self._reason: Optional[str] = None
        self._lock = threading.Lock()

    def _get(self):
        if self._runtime is None:
            errors = []
            for kind in (_BindingsRuntime, _CupyRuntime):
                try:
                    self._runtime = kind()
                    break
                except ImportError as exc:
                    errors.append(f"{kind.name}: {exc}")
            else:
                raise CudaUnavailable("CUDA shared memory needs the CUDA runtime from Python: install "
                                      "gpuserve[cuda] (cuda-bindings) or CuPy (" + "; ".join(errors) + ")")
        return self._runtime

    @property
    def runtime_name(self) -> str:
        return self._get().name

    def device_count(self) -> int:
        return self._get().device_count()

    def open(self, handle: bytes, device_id: int) -> int:
        runtime = self._get()
        with self._lock:
            try:
                count = runtime.device_count()
            except CudaError as exc:
                raise CudaUnavailable(f"no usable CUDA device in this process: {exc}") from None
            if count == 0:
                raise CudaUnavailable("no usable CUDA device in this process")
            if device_id >= count:
                raise CudaError(f"CUDA device {device_id} does not exist (this process sees {count})")
            return runtime.open(handle, device_id)

    def close(self, pointer: int) -> None:
        with self._lock:
            self._get().close(pointer)

    def to_host(self, pointer: int, nbytes: int) -> np.ndarray:
        """`nbytes` device bytes at `pointer` in a new host array (uint8)."""
        out = np.empty(nbytes, dtype=np.uint8)
        if nbytes:
            self._get().copy(out.ctypes.data, pointer, nbytes)
        return out

    def from_host(self, pointer: int, data: np.ndarray) -> None:
        """Copy a C-contiguous host array's bytes to device memory at `pointer`."""
        data = np.ascontiguousarray(data)
        if data.nbytes:
            self._get().copy(pointer, data.ctypes.data, data.nbytes)
