"""Triton's system shared-memory extension: tensors that travel through POSIX shared memory.

A client creates a shared-memory object (`tritonclient.utils.shared_memory` makes
`/dev/shm/<key>`), registers a window of it under a name, and then names that window in a tensor's
parameters instead of sending data: `shared_memory_region`, `shared_memory_byte_size` and the
optional `shared_memory_offset`. Inputs are read zero-copy (read-only arrays over the mapping);
outputs are written into the client's region and answered with those parameters and no data.

Semantics follow Triton's `SharedMemoryManager`: a second registration under a name is
ALREADY_EXISTS ("already in manager"); a region must lie inside the object; status of an unknown
name is NOT_FOUND; unregistering an unknown name succeeds. A region unregistered while a request
still reads it stays mapped until that request lets go of it (Triton defers the same way).

CUDA shared memory needs CUDA IPC, which this build does not do: its status is empty and
registering is UNIMPLEMENTED with a sentence saying so.
"""

from __future__ import annotations

import mmap
import os
import stat
import threading
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from gpuserve.datatypes import numpy_to_raw, raw_to_numpy, to_numpy_dtype
from gpuserve.errors import InferenceError, InvalidInput, RegionExists, RegionNotFound, Unimplemented
from gpuserve.types import InferOutput, InferRequest, InferResponse

SHM_ROOT = "/dev/shm"  # where shm_open(3) keeps POSIX shared-memory objects on Linux
REGION, BYTE_SIZE, OFFSET = "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"
_KEYS = (REGION, BYTE_SIZE, OFFSET)
_ENCODED = frozenset({"BYTES", "BF16"})  # datatypes whose raw form is not the array's own bytes


def _count(name: str, value: Any, where: str, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (1 if positive else 0):
        kind = "a positive" if positive else "a non-negative"
        raise InvalidInput(f"{where}: '{name}' must be {kind} integer, got {value!r}")
    return int(value)


class _Region:
    __slots__ = ("name", "key", "offset", "byte_size", "map", "start")

    def __init__(self, name: str, key: str, offset: int, byte_size: int, mapping: mmap.mmap, start: int):
        self.name, self.key, self.offset, self.byte_size = name, key, offset, byte_size
        self.map, self.start = mapping, start  # the region begins `start` bytes into the mapping

    def window(self, offset: int, byte_size: int) -> memoryview:
        """Bytes [offset, offset + byte_size) of the region, checked as Triton's GetMemoryInfo does."""
        self.check(offset, byte_size)
        begin = self.start + offset
        return memoryview(self.map)[begin:begin + byte_size]

    def check(self, offset: int, byte_size: int) -> None:
        if offset >= self.byte_size:
            raise InvalidInput(f"Invalid offset for shared memory region: '{self.name}' "
                               f"(offset {offset}, region of {self.byte_size} bytes)")
        if offset + byte_size > self.byte_size:
            raise InvalidInput(f"Invalid offset + byte size for shared memory region: '{self.name}' "
                               f"(offset {offset} + {byte_size} bytes > region of {self.byte_size} bytes)")

    def status(self) -> Dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}

    def release(self) -> None:
        try:
            self.map.close()
        except BufferError:  # a request still views it: unmapped when the last view goes
            pass


class SharedMemoryRegistry:
    """Registered system shared-memory regions by name; every method is thread-safe."""

    def __init__(self, root: str = SHM_ROOT, allowed: bool = True):
        self.root = root
        self.allowed = allowed  # False: clients may not register regions (Triton's --allow-client-shm=false)
        self._lock = threading.Lock()
        self._regions: Dict[str, _Region] = {}

    # registration ------------------------------------------------------------------------------
    def _path(self, key: Any) -> str:
        """`key` as shm_open(3) reads it: leading slashes dropped, no other slash, not '.' or '..'."""
        if not isinstance(key, str):
            raise InvalidInput(f"shared memory key must be a string, got {key!r}")
        bare = key.lstrip("/")
        if not bare or "/" in bare or "\x00" in bare or bare in (".", ".."):
            raise InvalidInput(f"invalid shared memory key '{key}': expected a POSIX shared-memory name "
                               "such as '/my_region' (one leading slash, no other)")
        return os.path.join(self.root, bare)

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not self.allowed:
            raise Unimplemented("client shared memory is disabled on this server; send tensors in the request")
        if not isinstance(name, str) or not name:
            raise InvalidInput("a shared memory region needs a non-empty name")
        where = f"shared memory region '{name}'"
        offset = _count("offset", offset, where)
        byte_size = _count("byte_size", byte_size, where, positive=True)
        path = self._path(key)
        with self._lock:
            if name in self._regions:
                raise RegionExists(f"shared memory region '{name}' already in manager")
            try:  # as shm_open: read-write, never create, never follow a planted symlink
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise InvalidInput(f"Unable to open shared memory region: '{key}' ({exc.strerror})") from None
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise InvalidInput(f"Unable to open shared memory region: '{key}' (not a shared-memory object)")
                if offset + byte_size > info.st_size:
                    raise InvalidInput(f"failed to register shared memory region '{name}': offset {offset} + "
                                       f"byte_size {byte_size} runs past the end of '{key}' ({info.st_size} bytes)")
                base = offset - offset % mmap.ALLOCATIONGRANULARITY  # mmap offsets must be page-aligned
                try:
                    mapping = mmap.mmap(fd, offset + byte_size - base, mmap.MAP_SHARED,
                                        mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
                except (OSError, ValueError) as exc:
                    raise InvalidInput(f"failed to register shared memory region '{name}': {exc}") from None
            finally:
                os.close(fd)
            self._regions[name] = _Region(name, key, offset, byte_size, mapping, offset - base)

    def unregister(self, name: Optional[str] = None) -> None:
        """Forget one region (an unknown name is fine, as in Triton), or every region without a name."""
        with self._lock:
            if name:
                regions = [self._regions.pop(name)] if name in self._regions else []
            else:
                regions, self._regions = list(self._regions.values()), {}
        for region in regions:
            region.release()

    def unregister_all(self) -> None:
        self.unregister(None)

    def status(self, name: Optional[str] = None) -> List[Dict[str, Any]]:
        with self._lock:
            if not name:
                return [region.status() for region in self._regions.values()]
            region = self._regions.get(name)
        if region is None:
            raise RegionNotFound(f"Unable to find system shared memory region: '{name}'")
        return [region.status()]

    def __len__(self) -> int:
        return len(self._regions)

    # CUDA shared memory: not in this build ------------------------------------------------------
    def cuda_status(self, name: Optional[str] = None) -> List[Dict[str, Any]]:
        if not name:
            return []
        with self._lock:
            system = name in self._regions
        if system:
            raise RegionNotFound(f"The region named '{name}' is registered as system shared memory, "
                                 "not CUDA shared memory")
        raise RegionNotFound(f"Unable to find cuda shared memory region: '{name}'")

    def cuda_register(self, name: str, *_: Any) -> None:
        raise Unimplemented(f"cannot register CUDA shared memory region '{name}': CUDA shared memory is not "
                            "supported by this gpuserve build (it needs a GPU build with CUDA IPC); "
                            "use system shared memory instead")

    def cuda_unregister(self, name: Optional[str] = None) -> None:
        """Nothing is ever registered, so there is nothing to forget (unknown names are fine)."""

    # tensor data -------------------------------------------------------------------------------
    def _window(self, name: str, offset: int, byte_size: int) -> memoryview:
        with self._lock:
            region = self._regions.get(name)
            if region is None:
                raise InvalidInput(f"Unable to find shared memory region: '{name}'")
            return region.window(offset, byte_size)  # the view keeps the mapping alive

    def check(self, name: str, offset: int, byte_size: int) -> None:
        """Raise InvalidInput unless `byte_size` bytes at `offset` lie in registered region `name`."""
        with self._lock:
            region = self._regions.get(name)
            if region is None:
                raise InvalidInput(f"Unable to find shared memory region: '{name}'")
            region.check(offset, byte_size)

    def read(self, name: str, offset: int, byte_size: int) -> memoryview:
        """A read-only, zero-copy view of `byte_size` bytes at `offset` in region `name`."""
        return self._window(name, offset, byte_size).toreadonly()

    def write(self, name: str, offset: int, data, tensor_name: str = "") -> None:
        """Copy `data` (bytes-like) into region `name` at `offset`."""
        data = memoryview(data).cast("B")
        try:
            view = self._window(name, offset, len(data))
        except InvalidInput as exc:
            if not tensor_name:
                raise
            raise InvalidInput(f"output '{tensor_name}' ({len(data)} bytes) does not fit: {exc}") from None
        view[:] = data


# -- requests and responses (called by DataPlane.infer) -----------------------------------------

def _spec(parameters: dict, where: str) -> Optional[Tuple[str, int, int]]:
    """(region, offset, byte_size) from a tensor's parameters, or None when it names no region."""
    region = parameters.get(REGION)
    if region is None:
        if BYTE_SIZE in parameters or OFFSET in parameters:
            raise InvalidInput(f"{where}: '{BYTE_SIZE}' and '{OFFSET}' need '{REGION}'")
        return None
    if not isinstance(region, str) or not region:
        raise InvalidInput(f"{where}: '{REGION}' must be the name of a registered region")
    if parameters.get(BYTE_SIZE) is None:
        raise InvalidInput(f"{where}: '{REGION}' needs '{BYTE_SIZE}'")
    return (region, _count(OFFSET, parameters.get(OFFSET, 0), where),
            _count(BYTE_SIZE, parameters[BYTE_SIZE], where))


def resolve_shared_memory(registry: SharedMemoryRegistry, request: InferRequest
                          ) -> Optional[Dict[str, Tuple[str, int, int]]]:
    """Give every input that names a region its array (zero-copy) and take the shared-memory
    parameters off the request, so the model (or a predictor it forwards to) never sees them.
    Returns the outputs to be written to shared memory, by name, or None."""
    for tensor in request.inputs:
        parameters = tensor.parameters
        if REGION not in parameters and BYTE_SIZE not in parameters and OFFSET not in parameters:
            continue
        where = f"input '{tensor.name}'"
        spec = _spec(parameters, where)
        if tensor._data is not None or tensor._array is not None or "binary_data_size" in parameters:
            raise InvalidInput(f"{where} has both data and '{REGION}'; send one or the other")
        region, offset, byte_size = spec
        view = registry.read(region, offset, byte_size)
        try:
            tensor._array = raw_to_numpy(view, tensor.datatype, tensor.shape)
        except InvalidInput as exc:
            raise InvalidInput(f"{where} in shared memory region '{region}': {exc}") from None
        for key in _KEYS:
            parameters.pop(key, None)
    outputs = None
    for wanted in request.request_outputs or ():
        spec = _spec(wanted.parameters, f"requested output '{wanted.name}'")
        if spec is not None:
            try:  # a bad region fails the request before the model runs, as in Triton
                registry.check(*spec)
            except InvalidInput as exc:
                raise InvalidInput(f"requested output '{wanted.name}': {exc}") from None
            outputs = outputs or {}
            outputs[wanted.name] = spec
            for key in _KEYS:
                wanted.parameters.pop(key, None)
    return outputs


class SharedMemoryOutput(InferOutput):
    """An output whose data went to the client's shared memory: it encodes with no data
    (`to_dict` has no "data"; gRPC sends an empty raw entry). `as_numpy()` still answers with the
    array, for code that asks."""

    __slots__ = ("_written",)

    def __init__(self, name: str, shape: list, datatype: str, parameters: dict, written: np.ndarray):
        super().__init__(name, shape, datatype, None, parameters)
        self._written = written

    def as_numpy(self) -> np.ndarray:
        return self._written


def is_shared_memory_output(tensor: Any) -> bool:
    return isinstance(tensor, SharedMemoryOutput)


def _raw_size(array: np.ndarray, datatype: str) -> Tuple[int, Optional[bytes]]:
    """Bytes the output takes in shared memory, and its raw form when that is not the array's own."""
    if datatype in _ENCODED or array.dtype == np.object_:
        raw = numpy_to_raw(array, datatype)
        return len(raw), raw
    return array.size * to_numpy_dtype(datatype).itemsize, None


def write_shared_memory(registry: SharedMemoryRegistry, outputs: Optional[Dict[str, Tuple[str, int, int]]],
                        response: Any, request: InferRequest) -> Any:
    """Write the outputs asked for in shared memory and answer them with parameters only."""
    if not outputs:
        return response
    if isinstance(response, dict) and isinstance(response.get("outputs"), list):
        response = InferResponse.from_rest(request.model_name, response)
    if not isinstance(response, InferResponse):
        raise InferenceError(f"model '{request.model_name}' returned {type(response).__name__}; "
                             "shared-memory outputs need an InferResponse")
    plans = []
    for index, output in enumerate(response.outputs):
        spec = outputs.get(output.name)
        if spec is None:
            continue
        region, offset, byte_size = spec
        array = output.as_numpy()
        size, raw = _raw_size(array, output.datatype)
        if size > byte_size:  # Triton's words
            raise InvalidInput(f"shared memory size specified with the request for output '{output.name}' "
                               f"({byte_size} bytes) should be at least {size} bytes to hold the results")
        shape = list(output.shape)
        if not shape or int(np.prod(shape)) != array.size:
            shape = list(array.shape)
        plans.append((index, output, region, offset, size, raw, array, shape))
    for index, output, region, offset, size, raw, array, shape in plans:  # all checked: now write
        if raw is not None:
            registry.write(region, offset, raw, output.name)
        else:
            try:
                view = registry._window(region, offset, size)
            except InvalidInput as exc:
                raise InvalidInput(f"output '{output.name}' ({size} bytes) does not fit: {exc}") from None
            np.frombuffer(view, dtype=to_numpy_dtype(output.datatype)).reshape(array.shape)[...] = array
        parameters = {k: v for k, v in output.parameters.items() if k not in ("binary_data_size", "binary_data")}
        parameters[REGION], parameters[BYTE_SIZE] = region, size
        if offset:
            parameters[OFFSET] = offset
        response.outputs[index] = SharedMemoryOutput(output.name, shape, output.datatype, parameters, array)
    return response
