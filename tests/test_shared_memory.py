"""System shared memory (Triton's extension) through tritonclient.http and tritonclient.grpc:
registration, inputs read from and outputs written to regions, status, unregistering, every error
case with the server still serving afterwards (CUDA shared memory: test_cuda_shared_memory.py); plus the
registry on its own (zero-copy views, unaligned offsets, unregistering under a live view)."""

from __future__ import annotations

import os
import threading
import uuid

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from conftest import running_server
from gpuserve import InferOutput, InferResponse, Model
from gpuserve.errors import InvalidInput, Unimplemented
from gpuserve.shared_memory import RegionExists, RegionNotFound, SharedMemoryRegistry

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs POSIX shared memory in /dev/shm")

X = np.arange(16, dtype=np.int32).reshape(1, 16)
Y = np.full((1, 16), 3, dtype=np.int32)
NBYTES = X.nbytes  # 64


class AddSub(Model):
    """INT32 [1, 16] twice: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1. Remembers what the
    last request looked like to the model."""

    def load(self):
        self.ready = True
        self.seen = None

    def predict(self, payload, headers=None):
        a = payload.get_input_by_name("INPUT0").as_numpy()
        b = payload.get_input_by_name("INPUT1").as_numpy()
        self.seen = {"params": [dict(t.parameters) for t in payload.inputs], "writeable": a.flags.writeable,
                     "outputs": [dict(o.parameters) for o in payload.request_outputs or ()]}
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("OUTPUT0", a + b),
                                                     InferOutput.from_numpy("OUTPUT1", a - b)])


class Echo(Model):
    """OUTPUT0 is INPUT0 as it came, in any datatype (BYTES included)."""

    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        tensor = payload.get_input_by_name("INPUT0")
        array = tensor.as_numpy()
        return InferResponse(payload.id, self.name, [InferOutput("OUTPUT0", list(array.shape), tensor.datatype, array)])


@pytest.fixture(scope="module")
def models():
    return {"addsub": AddSub("addsub"), "echo": Echo("echo")}


@pytest.fixture(scope="module")
def server(models):
    with running_server(list(models.values())) as srv:
        yield srv


CLIENTS = ["http", "grpc"]


@pytest.fixture(params=CLIENTS)
def api(request, server):
    """(tritonclient module, client); every region is unregistered after the test."""
    module = triton_http if request.param == "http" else triton_grpc
    client = module.InferenceServerClient(f"127.0.0.1:{server.ports[request.param]}")
    try:
        yield module, client
    finally:
        client.unregister_system_shared_memory()
        client.close()


@pytest.fixture
def regions():
    """`make(byte_size)` -> (key, handle) of a fresh shared-memory object; all destroyed afterwards."""
    made = []

    def make(byte_size: int):
        key = f"/gpuserve_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(key.lstrip("/"), key, byte_size, create_only=True)
        made.append(handle)
        return key, handle

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def statuses(module, client, name=""):
    """Region status as a list of dicts from either client."""
    status = client.get_system_shared_memory_status(name)
    if module is triton_http:
        return sorted(status, key=lambda r: r["name"])
    return sorted(({"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                   for r in status.regions.values()), key=lambda r: r["name"])


def code_of(module, excinfo) -> str:
    """HTTP status or gRPC code name of a client error, comparable across clients."""
    status = excinfo.value.status()
    return str(status) if module is triton_http else str(status).replace("StatusCode.", "")


def shm_inputs(module, region="inputs"):
    first = module.InferInput("INPUT0", [1, 16], "INT32")
    first.set_shared_memory(region, NBYTES)
    second = module.InferInput("INPUT1", [1, 16], "INT32")
    second.set_shared_memory(region, NBYTES, offset=NBYTES)
    return [first, second]


def shm_output(module, name, region, byte_size, offset=0):
    output = module.InferRequestedOutput(name)
    output.set_shared_memory(region, byte_size, offset=offset)
    return output


def plain_output(module, name, binary=True):
    return module.InferRequestedOutput(name, binary_data=binary) if module is triton_http \
        else module.InferRequestedOutput(name)


def assert_serving(module, client):
    """A plain request still works: the server survived whatever came before."""
    tensors = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    tensors[0].set_data_from_numpy(X)
    tensors[1].set_data_from_numpy(Y)
    np.testing.assert_array_equal(client.infer("addsub", tensors).as_numpy("OUTPUT0"), X + Y)


# -- through the clients --------------------------------------------------------------------------

def test_inputs_and_outputs_in_shared_memory(api, regions, models):
    module, client = api
    in_key, in_handle = regions(2 * NBYTES)
    out_key, out_handle = regions(2 * NBYTES + 100)
    shm.set_shared_memory_region(in_handle, [X, Y])
    client.register_system_shared_memory("inputs", in_key, 2 * NBYTES)
    client.register_system_shared_memory("outputs", out_key, 2 * NBYTES, offset=100)
    assert statuses(module, client) == [
        {"name": "inputs", "key": in_key, "offset": 0, "byte_size": 2 * NBYTES},
        {"name": "outputs", "key": out_key, "offset": 100, "byte_size": 2 * NBYTES}]
    assert statuses(module, client, "outputs")[0]["offset"] == 100

    result = client.infer("addsub", shm_inputs(module),
                          outputs=[shm_output(module, "OUTPUT0", "outputs", NBYTES),
                                   shm_output(module, "OUTPUT1", "outputs", NBYTES, offset=NBYTES)])
    # the region starts 100 bytes into the object, so the outputs are at 100 and 164
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.int32, [1, 16], offset=100), X + Y)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.int32, [1, 16], offset=164), X - Y)
    for name in ("OUTPUT0", "OUTPUT1"):
        output = result.get_output(name)
        if module is triton_http:  # as Triton: no data and no parameters (perf_analyzer's C++ client needs
            assert "data" not in output and "parameters" not in output  # binary_data_size in any it finds)
            assert list(output["shape"]) == [1, 16]
        else:
            assert list(output.shape) == [1, 16] and not output.parameters
    if module is triton_grpc:  # one raw entry per output, empty for shared-memory outputs (as Triton)
        raw = result.get_response().raw_output_contents
        assert len(raw) == 2 and not raw[0] and not raw[1]
    seen = models["addsub"].seen  # the model got plain read-only arrays, no shared-memory plumbing
    assert seen["params"] == [{}, {}] and seen["writeable"] is False
    assert all("shared_memory_region" not in p for p in seen["outputs"])

    client.unregister_system_shared_memory("inputs")
    assert [r["name"] for r in statuses(module, client)] == ["outputs"]
    client.unregister_system_shared_memory()
    assert statuses(module, client) == []


@pytest.mark.parametrize("binary", [False, True])
def test_shared_memory_output_beside_a_plain_one(api, regions, binary):
    """Outputs are matched to raw_output_contents by index in tritonclient.grpc: a plain output after
    a shared-memory one must still decode. On HTTP the plain one goes as JSON or binary."""
    module, client = api
    in_key, in_handle = regions(2 * NBYTES)
    out_key, out_handle = regions(NBYTES)
    shm.set_shared_memory_region(in_handle, [X, Y])
    client.register_system_shared_memory("inputs", in_key, 2 * NBYTES)
    client.register_system_shared_memory("out0", out_key, NBYTES)
    result = client.infer("addsub", shm_inputs(module), outputs=[shm_output(module, "OUTPUT0", "out0", NBYTES),
                                                                  plain_output(module, "OUTPUT1", binary)])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), X - Y)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.int32, [1, 16]), X + Y)
    if module is triton_http and not binary:
        assert "data" not in result.get_output("OUTPUT0")


def test_no_data_for_shared_memory_output_beside_a_binary_one(server, regions):
    in_key, in_handle = regions(2 * NBYTES)
    out_key, _ = regions(NBYTES)
    shm.set_shared_memory_region(in_handle, [X, Y])
    with triton_http.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        try:
            client.register_system_shared_memory("inputs", in_key, 2 * NBYTES)
            client.register_system_shared_memory("out0", out_key, NBYTES)
            result = client.infer("addsub", shm_inputs(triton_http),
                                  outputs=[shm_output(triton_http, "OUTPUT0", "out0", NBYTES),
                                           plain_output(triton_http, "OUTPUT1", binary=True)])
            assert "data" not in result.get_output("OUTPUT0")
        finally:
            client.unregister_system_shared_memory()


def test_shared_memory_input_beside_a_plain_one(api, regions):
    """tritonclient sends raw contents (gRPC) or binary data (HTTP) only for the inputs not in shared memory."""
    module, client = api
    key, handle = regions(NBYTES)
    shm.set_shared_memory_region(handle, [Y])
    client.register_system_shared_memory("second", key, NBYTES)
    first = module.InferInput("INPUT0", [1, 16], "INT32")
    first.set_data_from_numpy(X)
    second = module.InferInput("INPUT1", [1, 16], "INT32")
    second.set_shared_memory("second", NBYTES)
    result = client.infer("addsub", [second, first])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), X + Y)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), X - Y)


def test_bytes_through_shared_memory(api, regions):
    module, client = api
    words = np.array([b"shared", b"", b"memory \x00 bytes"], dtype=np.object_)
    serialized = serialize_byte_tensor(words)
    size = len(serialized.item())
    in_key, in_handle = regions(size)
    out_key, out_handle = regions(size)
    shm.set_shared_memory_region(in_handle, [serialized])
    client.register_system_shared_memory("words_in", in_key, size)
    client.register_system_shared_memory("words_out", out_key, size)
    tensor = module.InferInput("INPUT0", [3], "BYTES")
    tensor.set_shared_memory("words_in", size)
    client.infer("echo", [tensor], outputs=[shm_output(module, "OUTPUT0", "words_out", size)])
    back = shm.get_contents_as_numpy(out_handle, np.object_, [3])
    assert list(back) == list(words)


def test_errors_leave_the_server_serving(api, regions):
    module, client = api
    key, handle = regions(2 * NBYTES)
    shm.set_shared_memory_region(handle, [X, Y])
    small_key, _ = regions(NBYTES // 2)

    def fails(call, code, *words):
        with pytest.raises(InferenceServerException) as excinfo:
            call()
        assert code_of(module, excinfo) == code, excinfo.value.message()
        for word in words:
            assert word in excinfo.value.message()
        assert_serving(module, client)

    invalid = "400" if module is triton_http else "INVALID_ARGUMENT"
    client.register_system_shared_memory("inputs", key, 2 * NBYTES)
    client.register_system_shared_memory("small", small_key, NBYTES // 2)
    # registration
    fails(lambda: client.register_system_shared_memory("inputs", key, NBYTES),
          "400" if module is triton_http else "ALREADY_EXISTS", "already in manager")
    fails(lambda: client.register_system_shared_memory("ghost", f"/gpuserve_missing_{uuid.uuid4().hex}", 64),
          "500" if module is triton_http else "INTERNAL", "Unable to open")  # as Triton 2.51
    fails(lambda: client.register_system_shared_memory("big", key, 2 * NBYTES + 1), invalid, "big")
    fails(lambda: client.register_system_shared_memory("shifted", key, NBYTES, offset=NBYTES + 1), invalid)
    fails(lambda: client.register_system_shared_memory("escape", "/../../etc/passwd", 16), invalid, "invalid")
    fails(lambda: client.register_system_shared_memory("nested", "/a/b", 16), invalid)
    fails(lambda: client.get_system_shared_memory_status("nope"),
          "404" if module is triton_http else "NOT_FOUND", "nope")
    client.unregister_system_shared_memory("nope")  # unknown names are fine, as in Triton
    # inference
    not_found = "404" if module is triton_http else "NOT_FOUND"  # as Triton: an unregistered region
    fails(lambda: client.infer("addsub", shm_inputs(module, region="nope")), not_found, "nope")
    short = shm_inputs(module)
    short[1].set_shared_memory("inputs", NBYTES - 4, offset=NBYTES)
    fails(lambda: client.infer("addsub", short), invalid, "INPUT1")
    past = shm_inputs(module)
    past[1].set_shared_memory("inputs", NBYTES, offset=NBYTES + 4)
    fails(lambda: client.infer("addsub", past), invalid, "inputs")
    fails(lambda: client.infer("addsub", shm_inputs(module), outputs=[shm_output(module, "OUTPUT0", "small",
                                                                                 NBYTES // 2)]),
          invalid, "OUTPUT0", "at least 64 bytes")
    # declared big enough, but the region is not
    fails(lambda: client.infer("addsub", shm_inputs(module), outputs=[shm_output(module, "OUTPUT0", "small", NBYTES)]),
          invalid, "OUTPUT0")
    fails(lambda: client.infer("addsub", shm_inputs(module), outputs=[shm_output(module, "OUTPUT0", "nope", NBYTES)]),
          not_found, "nope")
    assert [r["name"] for r in statuses(module, client)] == ["inputs", "small"]


def test_one_registry_for_both_transports(server, regions):
    key, _ = regions(NBYTES)
    with triton_http.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as rest, \
            triton_grpc.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as rpc:
        try:
            rest.register_system_shared_memory("shared", key, NBYTES)
            assert list(rpc.get_system_shared_memory_status().regions) == ["shared"]
            rpc.unregister_system_shared_memory("shared")
            assert rest.get_system_shared_memory_status() == []
        finally:
            rest.unregister_system_shared_memory()


def test_rest_bodies_are_checked(server, http):
    client = http(server)
    for body in (b"", b"[1]", b'{"key": "/x"}', b'{"key": 5, "byte_size": 8}', b'{"key": "/x", "byte_size": -1}'):
        reply = client.post("/v2/systemsharedmemory/region/r/register", content=body)
        assert reply.status_code == 400 and reply.json()["error"], body
    assert client.get("/v2/systemsharedmemory/status").json() == []


# -- the registry on its own ------------------------------------------------------------------------

def test_registry_reads_and_writes_in_place(regions):
    key, handle = regions(9000)
    registry = SharedMemoryRegistry()
    registry.register("r", key, 4099, 4000)  # an offset that is not page-aligned
    try:
        data = np.arange(10, dtype=np.float64)
        registry.write("r", 8, data.tobytes())
        np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float64, [10], offset=4099 + 8), data)
        view = registry.read("r", 8, data.nbytes)
        assert view.readonly and bytes(view) == data.tobytes()
        shm.set_shared_memory_region(handle, [np.full(10, 7.0)], offset=4099 + 8)
        assert np.frombuffer(view, dtype=np.float64)[0] == 7.0  # a view, not a copy
        with pytest.raises(InvalidInput, match="does not fit"):
            registry.write("r", 3990, b"x" * 11, "OUT")
        with pytest.raises(InvalidInput, match="Invalid offset"):
            registry.read("r", 4000, 1)
        registry.unregister("r")  # a live view keeps the mapping until it goes
        assert bytes(view[:8]) == np.float64(7.0).tobytes()
        del view
        with pytest.raises(RegionNotFound, match="Unable to find"):
            registry.read("r", 0, 1)
    finally:
        registry.unregister_all()


def test_registry_errors_and_threads(regions):
    key, _ = regions(4096)
    registry = SharedMemoryRegistry()
    try:
        with pytest.raises(InvalidInput, match="byte_size"):
            registry.register("zero", key, 0, 0)
        with pytest.raises(InvalidInput, match="offset"):
            registry.register("negative", key, -1, 8)
        with pytest.raises(InvalidInput, match="cannot register shared memory region 'dots' - invalid shm key '/..'"):
            registry.register("dots", "/..", 0, 8)
        with pytest.raises(InvalidInput, match="64-byte"):
            registry.cuda_register("gpu", b"short", 0, 64)

        def register(i):
            registry.register(f"r{i}", key, i * 16, 16)

        threads = [threading.Thread(target=register, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(registry.status()) == 32
        with pytest.raises(RegionExists):
            registry.register("r0", key, 0, 16)
        with pytest.raises(RegionNotFound):
            registry.status("zero")
    finally:
        registry.unregister_all()
    assert registry.status() == []


def test_registry_can_refuse_clients(regions):
    key, _ = regions(64)
    registry = SharedMemoryRegistry(allowed=False)
    with pytest.raises(Unimplemented, match="disabled"):
        registry.register("r", key, 0, 64)
    assert registry.status() == []
