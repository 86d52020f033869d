"""CUDA shared memory (Triton's extension) through tritonclient.http and tritonclient.grpc.

This machine has no GPU, so two things are tested here and the rest on a GPU (tests/test_gpu.py):
- with the real CUDA runtime of this process (cuda-bindings, or none): registering answers
  UNIMPLEMENTED with CUDA's reason, and bad registrations are refused before CUDA is asked;
- the whole path — handle bytes over both transports, the registry, inputs read from a region,
  outputs written into one, bounds, unregistering — against `HostMemoryRuntime`, a stand-in for the
  CUDA runtime that keeps "device" buffers in host memory. It replaces only the four runtime calls
  (device count, open, close, copy); everything above them is the code a GPU runs.
"""

from __future__ import annotations

import base64
import ctypes
import struct

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from addsub_model import AddSub
from conftest import running_server
from gpuserve.backends.cuda_ipc import HANDLE_SIZE, CudaError, CudaIpc
from gpuserve.errors import InvalidInput, Unimplemented
from gpuserve.shared_memory import RegionExists, RegionNotFound, SharedMemoryRegistry

X = np.arange(16, dtype=np.float32).reshape(1, 16)
Y = np.full((1, 16), 0.5, dtype=np.float32)
NBYTES = X.nbytes  # 64


class HostMemoryRuntime:
    """The CUDA runtime calls CudaIpc makes, over host buffers: a "handle" names a buffer by id."""

    name = "host-memory test runtime"

    def __init__(self):
        self.buffers = {}
        self.opened = {}  # address -> buffer id, as cudaIpcOpenMemHandle's mappings
        self.closed = []

    def allocate(self, byte_size: int) -> bytes:
        """A new buffer and its 64-byte handle (what cudaMalloc + cudaIpcGetMemHandle give a client)."""
        ident = len(self.buffers) + 1
        self.buffers[ident] = ctypes.create_string_buffer(byte_size)
        return struct.pack("<Q", ident) + b"\x5a" * (HANDLE_SIZE - 8)

    def array(self, handle: bytes, dtype, count: int, offset: int = 0) -> np.ndarray:
        buffer = self.buffers[struct.unpack("<Q", handle[:8])[0]]
        return np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)

    def device_count(self) -> int:
        return 1

    def open(self, handle: bytes, device_id: int) -> int:
        ident = struct.unpack("<Q", handle[:8])[0]
        if ident not in self.buffers or handle[8:] != b"\x5a" * (HANDLE_SIZE - 8):
            raise CudaError("cudaIpcOpenMemHandle failed: invalid argument (cudaErrorInvalidValue)")
        address = ctypes.addressof(self.buffers[ident])
        self.opened[address] = ident
        return address

    def close(self, pointer: int) -> None:
        self.closed.append(self.opened.pop(pointer))

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        ctypes.memmove(dst, src, nbytes)


@pytest.fixture(scope="module")
def server():
    with running_server([AddSub("addsub")]) as srv:
        yield srv


@pytest.fixture
def runtime(server):
    """Swap the server's CUDA runtime for host memory during one test."""
    registry = server.dataplane.shared_memory
    real = registry.cuda
    fake = HostMemoryRuntime()
    registry.cuda = CudaIpc(fake)
    try:
        yield fake
    finally:
        registry.cuda_unregister()
        registry.cuda = real


@pytest.fixture(params=["http", "grpc"])
def api(request, server):
    module = triton_http if request.param == "http" else triton_grpc
    client = module.InferenceServerClient(f"127.0.0.1:{server.ports[request.param]}")
    try:
        yield module, client
    finally:
        client.unregister_cuda_shared_memory()
        client.close()


def wire(module, handle: bytes):
    """The handle as both clients take it: base64 (tritonclient.grpc decodes it before sending)."""
    return base64.b64encode(handle)


def code_of(module, excinfo) -> str:
    status = excinfo.value.status()
    return str(status) if module is triton_http else str(status).replace("StatusCode.", "")


def cuda_status(module, client, name=""):
    status = client.get_cuda_shared_memory_status(name)
    if module is triton_http:
        return sorted(status, key=lambda r: r["name"])
    return sorted(({"name": r.name, "device_id": r.device_id, "byte_size": r.byte_size}
                   for r in status.regions.values()), key=lambda r: r["name"])


def test_inputs_and_outputs_in_cuda_shared_memory(api, runtime):
    module, client = api
    inputs, outputs = runtime.allocate(2 * NBYTES), runtime.allocate(2 * NBYTES)
    runtime.array(inputs, np.float32, 16)[:] = X.ravel()
    runtime.array(inputs, np.float32, 16, offset=NBYTES)[:] = Y.ravel()
    client.register_cuda_shared_memory("in", wire(module, inputs), 0, 2 * NBYTES)
    client.register_cuda_shared_memory("out", wire(module, outputs), 0, 2 * NBYTES)
    assert cuda_status(module, client) == [{"name": "in", "device_id": 0, "byte_size": 2 * NBYTES},
                                           {"name": "out", "device_id": 0, "byte_size": 2 * NBYTES}]
    first, second = module.InferInput("INPUT0", [1, 16], "FP32"), module.InferInput("INPUT1", [1, 16], "FP32")
    first.set_shared_memory("in", NBYTES)
    second.set_shared_memory("in", NBYTES, offset=NBYTES)
    wanted = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    wanted[0].set_shared_memory("out", NBYTES)
    wanted[1].set_shared_memory("out", NBYTES, offset=NBYTES)
    result = client.infer("addsub", [first, second], outputs=wanted)
    np.testing.assert_array_equal(runtime.array(outputs, np.float32, 16), (X + Y).ravel())
    np.testing.assert_array_equal(runtime.array(outputs, np.float32, 16, offset=NBYTES), (X - Y).ravel())
    answered = result.get_output("OUTPUT1")
    if module is triton_http:  # the data went to the client's buffer, not the wire; no parameters (as Triton)
        assert "data" not in answered and "parameters" not in answered
    else:
        assert not answered.parameters
        assert not result.get_response().raw_output_contents or not result.get_response().raw_output_contents[1]
    client.unregister_cuda_shared_memory("in")
    assert [r["name"] for r in cuda_status(module, client)] == ["out"]
    assert len(runtime.closed) == 1  # the IPC mapping was closed on unregister


def test_bad_cuda_registrations_are_refused(api, runtime):
    module, client = api
    handle = runtime.allocate(NBYTES)

    def fails(call, code_http, code_grpc, *words):
        with pytest.raises(InferenceServerException) as excinfo:
            call()
        assert code_of(module, excinfo) == (code_http if module is triton_http else code_grpc)
        for word in words:
            assert word in excinfo.value.message()

    fails(lambda: client.register_cuda_shared_memory("short", base64.b64encode(b"x" * 10), 0, NBYTES),
          "400", "INVALID_ARGUMENT", "64-byte")
    forged = bytearray(handle)
    forged[20] ^= 1
    fails(lambda: client.register_cuda_shared_memory("forged", base64.b64encode(bytes(forged)), 0, NBYTES),
          "400", "INVALID_ARGUMENT", "cudaIpcOpenMemHandle")
    fails(lambda: client.register_cuda_shared_memory("gpu7", wire(module, handle), 7, NBYTES),
          "400", "INVALID_ARGUMENT", "device 7")
    fails(lambda: client.register_cuda_shared_memory("empty", wire(module, handle), 0, 0),
          "400", "INVALID_ARGUMENT", "byte_size")
    client.register_cuda_shared_memory("r", wire(module, handle), 0, NBYTES)
    fails(lambda: client.register_cuda_shared_memory("r", wire(module, handle), 0, NBYTES),
          "400", "ALREADY_EXISTS", "already in manager")
    fails(lambda: client.get_system_shared_memory_status("r"), "404", "NOT_FOUND")  # a CUDA region
    client.unregister_system_shared_memory("r")  # another kind's name: nothing happens
    assert [r["name"] for r in cuda_status(module, client)] == ["r"]
    # a request that does not fit the region fails alone; the server keeps serving
    tensor = module.InferInput("INPUT0", [1, 32], "FP32")
    tensor.set_shared_memory("r", 2 * NBYTES)
    other = module.InferInput("INPUT1", [1, 32], "FP32")
    other.set_data_from_numpy(np.zeros((1, 32), np.float32))
    fails(lambda: client.infer("addsub", [tensor, other]), "400", "INVALID_ARGUMENT", "Invalid offset + byte size")
    client.unregister_cuda_shared_memory()
    fails(lambda: client.get_cuda_shared_memory_status("r"), "404", "NOT_FOUND")
    plain = [module.InferInput("INPUT0", [1, 16], "FP32"), module.InferInput("INPUT1", [1, 16], "FP32")]
    plain[0].set_data_from_numpy(X)
    plain[1].set_data_from_numpy(Y)
    np.testing.assert_array_equal(client.infer("addsub", plain).as_numpy("OUTPUT0"), X + Y)


def test_rest_registration_bodies_are_checked(server, runtime):
    import httpx

    base = f"http://127.0.0.1:{server.ports['http']}/v2/cudasharedmemory/region"
    handle = base64.b64encode(runtime.allocate(NBYTES)).decode()
    for body, words in [({"device_id": 0, "byte_size": 8}, "'raw_handle'"),
                        ({"raw_handle": {"b64": "!!"}, "device_id": 0, "byte_size": 8}, "base64"),
                        ({"raw_handle": 5, "device_id": 0, "byte_size": 8}, "b64"),
                        ({"raw_handle": {"b64": handle}, "device_id": "0", "byte_size": 8}, "device_id")]:
        answer = httpx.post(f"{base}/x/register", json=body)
        assert answer.status_code == 400 and words in answer.json()["error"], (body, answer.text)
    assert httpx.post(f"{base}/x/register", json={"raw_handle": {"b64": handle}, "device_id": 0,
                                                   "byte_size": NBYTES}).status_code == 200
    assert httpx.get(f"{base}/x/status").json() == [{"name": "x", "device_id": 0, "byte_size": NBYTES}]


def test_without_a_gpu_registering_says_why(api):
    """The process's real CUDA runtime: here there is no driver or device (or no binding at all)."""
    module, client = api
    with pytest.raises(InferenceServerException) as excinfo:
        client.register_cuda_shared_memory("gpu", base64.b64encode(b"\x01" * HANDLE_SIZE), 0, 64)
    assert code_of(module, excinfo) == ("501" if module is triton_http else "UNIMPLEMENTED")
    message = excinfo.value.message()
    assert "CUDA shared memory region 'gpu'" in message
    assert any(word in message for word in ("CUDA device", "driver", "cuda-bindings", "CuPy")), message
    assert cuda_status(module, client) == []


def test_registry_shares_one_name_space_and_closes_on_unregister(tmp_path):
    fake = HostMemoryRuntime()
    registry = SharedMemoryRegistry(root=str(tmp_path), cuda=CudaIpc(fake))
    (tmp_path / "sys").write_bytes(b"\0" * 64)
    registry.register("a", "/sys", 0, 64)
    with pytest.raises(RegionExists):
        registry.cuda_register("a", fake.allocate(64), 0, 64)
    registry.cuda_register("b", fake.allocate(64), 0, 64)
    with pytest.raises(RegionExists):
        registry.register("b", "/sys", 0, 64)
    with pytest.raises(RegionNotFound):
        registry.cuda_status("a")
    assert [r["name"] for r in registry.status()] == ["a"]
    assert [r["name"] for r in registry.cuda_status()] == ["b"]
    registry.write("b", 8, np.arange(4, dtype=np.int32))
    assert bytes(registry.read("b", 8, 16)) == np.arange(4, dtype=np.int32).tobytes()
    with pytest.raises(InvalidInput, match="Invalid offset"):
        registry.read("b", 64, 1)
    registry.unregister_all()  # system regions only
    assert [r["name"] for r in registry.cuda_status()] == ["b"]
    registry.cuda_unregister()
    assert registry.cuda_status() == [] and fake.closed == [2]


def test_disallowed_clients_cannot_register_cuda_regions():
    registry = SharedMemoryRegistry(allowed=False, cuda=CudaIpc(HostMemoryRuntime()))
    with pytest.raises(Unimplemented, match="disabled"):
        registry.cuda_register("g", b"\0" * HANDLE_SIZE, 0, 64)
