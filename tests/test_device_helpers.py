"""The GPU helpers' Python side on the CPU, against stand-ins for torch's and CuPy's CUDA calls: how long
page-locked staging memory lives, and how a device array's producer stream is waited for. The real
calls run on a GPU (tests/test_gpu.py)."""

import gc
import sys
import types
import weakref

import numpy as np
import pytest

from gpuserve.backends import cuda, device_arrays


def test_pinned_buffers_live_as_long_as_their_array(monkeypatch):
    """The staging pool drops buffers past its cache limit, and all of them at unload; page-locked memory is
    scarce, so each buffer must go back when its array goes, not be held for the life of the process."""
    torch = pytest.importorskip("torch")
    tensors = []
    real_empty = torch.empty

    def empty(*args, pin_memory=False, **kwargs):  # the CPU build cannot pin: plain memory, watched
        assert pin_memory
        tensor = real_empty(*args, **kwargs)
        tensors.append(weakref.ref(tensor))
        return tensor

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "empty", empty)
    allocate = cuda.pinned_allocator()
    array = allocate(4096)
    assert array.dtype == np.uint8 and array.shape == (4096,)
    gc.collect()
    array[:] = 7
    filler = [real_empty(4096, dtype=torch.uint8).fill_(1) for _ in range(8)]  # would reuse freed memory
    assert (array == 7).all(), "the memory went away while its array lives"
    del array, filler
    gc.collect()
    assert tensors[0]() is None, "the allocator keeps every pinned tensor it made: page-locked memory leaks"


class _Runtime:
    def __init__(self):
        self.calls = []

    def getDeviceCount(self):
        return 1

    def streamSynchronize(self, stream):
        self.calls.append(("streamSynchronize", stream))

    def eventRecord(self, event, stream):
        self.calls.append(("eventRecord", event, stream))


_current = {"device": 0}


class _Device:
    def __init__(self, index):
        self.index = index

    def __enter__(self):
        self.before, _current["device"] = _current["device"], self.index

    def __exit__(self, *exc):
        _current["device"] = self.before


class _Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        assert _current["device"] == 1, "an event made on another device than the streams'"
        self.ptr = 0xE1


class _Stream:
    def __init__(self):
        self.waited, self.device_id = [], 1

    def wait_event(self, event):
        self.waited.append(event.ptr)


def _fake_cupy(runtime):
    cupy = types.ModuleType("cupy")

    def external(*args, **kwargs):  # deprecated in CuPy 14: the helper must not need it
        raise AssertionError("ExternalStream used")

    cupy.cuda = types.SimpleNamespace(runtime=runtime, Event=_Event, ExternalStream=external, Device=_Device)
    return cupy


class _Produced:
    def __init__(self, stream):
        self.__cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0xD000, False), "version": 3,
                                         "strides": None, "stream": stream}


def test_wait_for_producer_orders_our_stream_after_the_producer(monkeypatch):
    runtime = _Runtime()
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(runtime))
    ours = _Stream()
    device_arrays.wait_for_producer(_Produced(0x5A), ours)
    assert runtime.calls == [("eventRecord", 0xE1, 0x5A)] and ours.waited == [0xE1]
    runtime.calls.clear()
    device_arrays.wait_for_producer(_Produced(1), None)  # no stream of ours: the host waits (legacy stream)
    assert runtime.calls == [("streamSynchronize", 1)]
    runtime.calls.clear()
    device_arrays.wait_for_producer(_Produced(None), ours)  # the producer asks for no ordering
    assert runtime.calls == [] and ours.waited == [0xE1]


def test_cuda_ipc_copies_wait_until_the_bytes_are_on_the_device():
    """cudaMemcpy from pageable host memory returns once the bytes are staged, not written; the client
    reads its region from another process as soon as the answer arrives, so each copy ends with a sync."""
    from gpuserve.backends.cuda_ipc import _BindingsRuntime, _CupyRuntime

    calls = []
    success = object()
    bindings = types.SimpleNamespace(
        cudaError_t=types.SimpleNamespace(cudaSuccess=success),
        cudaMemcpyKind=types.SimpleNamespace(cudaMemcpyDefault=4),
        cudaMemcpy=lambda dst, src, n, kind: calls.append(("cudaMemcpy", dst, src, n, kind)) or (success,),
        cudaStreamSynchronize=lambda stream: calls.append(("cudaStreamSynchronize", stream)) or (success,))
    runtime = object.__new__(_BindingsRuntime)
    runtime.rt = bindings
    runtime.copy(0xD000, 0x1000, 64)
    assert calls == [("cudaMemcpy", 0xD000, 0x1000, 64, 4), ("cudaStreamSynchronize", 0)]
    calls.clear()
    cupy_runtime = types.SimpleNamespace(
        memcpyDefault=4, memcpy=lambda dst, src, n, kind: calls.append(("memcpy", dst, src, n, kind)),
        streamSynchronize=lambda stream: calls.append(("streamSynchronize", stream)))
    runtime = object.__new__(_CupyRuntime)
    runtime.rt = cupy_runtime
    runtime.copy(0xD000, 0x1000, 64)
    assert calls == [("memcpy", 0xD000, 0x1000, 64, 4), ("streamSynchronize", 0)]
