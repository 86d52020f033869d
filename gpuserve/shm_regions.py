"""The two kinds of registered shared-memory region behind one interface (`check`, `read`, `write`,
`status`, `release`): a window of a POSIX shared-memory object mapped into this process, read without
a copy, and another process's device buffer opened with CUDA IPC, read and written by copies. The
registry (gpuserve/shared_memory.py) keeps both in one name space, as Triton does.
"""

from __future__ import annotations

import logging
import mmap
import threading
from typing import Any, Dict

import numpy as np

from gpuserve.backends.cuda_ipc import CudaError, CudaIpc
from gpuserve.errors import InferenceError, InvalidInput

logger = logging.getLogger("gpuserve.shared_memory")


class Window:
    """What both kinds of region share: a name, a size and Triton's bounds checks."""

    __slots__ = ()
    kind = ""

    def check(self, offset: int, byte_size: int) -> None:
        if offset >= self.byte_size:
            raise InvalidInput(f"Invalid offset for shared memory region: '{self.name}' "
                               f"(offset {offset}, region of {self.byte_size} bytes)")
        if offset + byte_size > self.byte_size:
            raise InvalidInput(f"Invalid offset + byte size for shared memory region: '{self.name}' "
                               f"(offset {offset} + {byte_size} bytes > region of {self.byte_size} bytes)")


class SystemRegion(Window):
    __slots__ = ("name", "key", "offset", "byte_size", "map", "start")
    kind = "system"

    def __init__(self, name: str, key: str, offset: int, byte_size: int, mapping: mmap.mmap, start: int):
        self.name, self.key, self.offset, self.byte_size = name, key, offset, byte_size
        self.map, self.start = mapping, start  # the region begins `start` bytes into the mapping

    def window(self, offset: int, byte_size: int) -> memoryview:
        """Bytes [offset, offset + byte_size) of the region, checked as Triton's GetMemoryInfo does."""
        self.check(offset, byte_size)
        begin = self.start + offset
        try:
            return memoryview(self.map)[begin:begin + byte_size]
        except ValueError:  # closed by an unregister that raced this request
            raise InvalidInput(f"shared memory region '{self.name}' was unregistered") from None

    def read(self, offset: int, byte_size: int) -> memoryview:
        return self.window(offset, byte_size).toreadonly()  # zero-copy; the view keeps the mapping

    def write(self, offset: int, array: np.ndarray) -> None:
        view = self.window(offset, array.nbytes)
        np.frombuffer(view, dtype=array.dtype).reshape(array.shape)[...] = array

    def status(self) -> Dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}

    def release(self) -> None:
        try:
            self.map.close()
        except BufferError:  # a request still views it: unmapped when the last view goes
            pass


class CudaRegion(Window):
    """Another process's device buffer, opened with CUDA IPC. Copies hold the region's lock so an
    unregister never closes the mapping under a copy in flight."""

    __slots__ = ("name", "device_id", "byte_size", "pointer", "ipc", "lock", "closed")
    kind = "cuda"

    def __init__(self, name: str, device_id: int, byte_size: int, pointer: int, ipc: CudaIpc):
        self.name, self.device_id, self.byte_size, self.pointer, self.ipc = name, device_id, byte_size, pointer, ipc
        self.lock = threading.Lock()
        self.closed = False

    def _open(self) -> None:
        if self.closed:
            raise InvalidInput(f"shared memory region '{self.name}' was unregistered")

    def read(self, offset: int, byte_size: int) -> memoryview:
        self.check(offset, byte_size)
        with self.lock:
            self._open()
            try:
                return memoryview(self.ipc.to_host(self.pointer + offset, byte_size)).toreadonly()
            except CudaError as exc:
                raise InferenceError(f"reading CUDA shared memory region '{self.name}': {exc}") from None

    def write(self, offset: int, array: np.ndarray) -> None:
        self.check(offset, array.nbytes)
        with self.lock:
            self._open()
            try:
                self.ipc.from_host(self.pointer + offset, array)
            except CudaError as exc:
                raise InferenceError(f"writing CUDA shared memory region '{self.name}': {exc}") from None

    def status(self) -> Dict[str, Any]:
        return {"name": self.name, "device_id": self.device_id, "byte_size": self.byte_size}

    def release(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            try:
                self.ipc.close(self.pointer)
            except CudaError as exc:  # the client's process may already be gone; nothing to undo
                logger.warning("closing CUDA shared memory region '%s': %s", self.name, exc)
