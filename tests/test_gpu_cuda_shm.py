"""CUDA shared memory on a real GPU: tritonclient's own cuda_shared_memory utilities create the
regions (cudaMalloc + cudaIpcGetMemHandle in this process), a gpuserve in another process (CUDA
IPC handles cannot be opened by the process that made them) opens them, reads the inputs and
writes the outputs in place. Skipped without CUDA; run by benchmarks/gpu/verify_all.sh."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import free_ports
from test_cli import GPUSERVE, start, stop, wait_ready

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cudashm")
    (folder / "addsub").mkdir()
    (folder / "addsub" / "model-settings.json").write_text(json.dumps({"implementation": "addsub_model.AddSub"}))
    shutil.copy(Path(__file__).parent / "addsub_model.py", folder / "addsub" / "addsub_model.py")
    http, grpc, metrics = free_ports(3)
    ports = {"http": http, "grpc": grpc}
    proc = start([*GPUSERVE, "start", str(folder), "--http-port", str(http), "--grpc-port", str(grpc),
                  "--metrics-port", str(metrics)])
    try:
        wait_ready(ports["http"], proc)
        yield ports
    finally:
        stop(proc)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_tritonclient_cuda_shared_memory_round_trip(server, transport):
    cudashm = pytest.importorskip("tritonclient.utils.cuda_shared_memory")
    client_module = pytest.importorskip(f"tritonclient.{transport}")
    x = np.random.default_rng(0).normal(size=(4, 256)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(4, 256)).astype(np.float32)
    nbytes = x.nbytes
    client = client_module.InferenceServerClient(f"127.0.0.1:{server[transport]}")
    inputs = cudashm.create_shared_memory_region("in", 2 * nbytes, 0)
    outputs = cudashm.create_shared_memory_region("out", 2 * nbytes, 0)
    try:
        cudashm.set_shared_memory_region(inputs, [x, y])
        client.register_cuda_shared_memory("in", cudashm.get_raw_handle(inputs), 0, 2 * nbytes)
        client.register_cuda_shared_memory("out", cudashm.get_raw_handle(outputs), 0, 2 * nbytes)
        tensors = [client_module.InferInput("INPUT0", list(x.shape), "FP32"),
                   client_module.InferInput("INPUT1", list(y.shape), "FP32")]
        tensors[0].set_shared_memory("in", nbytes)
        tensors[1].set_shared_memory("in", nbytes, offset=nbytes)
        wanted = [client_module.InferRequestedOutput("OUTPUT0"), client_module.InferRequestedOutput("OUTPUT1")]
        wanted[0].set_shared_memory("out", nbytes)
        wanted[1].set_shared_memory("out", nbytes, offset=nbytes)
        for _ in range(3):  # the regions stay registered across requests
            client.infer("addsub", tensors, outputs=wanted)
            got = cudashm.get_contents_as_numpy(outputs, np.float32, [2, 4, 256])
            np.testing.assert_array_equal(got[0], x + y)
            np.testing.assert_array_equal(got[1], x - y)
        status = client.get_cuda_shared_memory_status()
        names = [r["name"] for r in status] if transport == "http" else sorted(status.regions)
        assert sorted(names) == ["in", "out"]
    finally:
        client.unregister_cuda_shared_memory()  # server side too, so a failure here does not fail the next case
        cudashm.destroy_shared_memory_region(inputs)
        cudashm.destroy_shared_memory_region(outputs)
        client.close()
