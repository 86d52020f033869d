"""Issue 6 on a GPU: unloading a model gives its device memory back, and a load that runs out of device
memory serves on the CPU and says why in its metadata. Skipped without CUDA; run by
benchmarks/gpu/verify_all.sh (the CPU versions are in test_backend_lifecycle.py)."""

import asyncio
import gc
import json

import numpy as np
import pytest

from gpuserve.repository import DiskRepository

pytestmark = pytest.mark.gpu

WIDTH = 4096  # one Linear(4096, 4096): 64 MiB of weights on the device


def _torch_folder(root, torch, device="cuda:0"):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU()).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(net, (torch.zeros(2, WIDTH),), dynamic_shapes={"input": {0: batch}})
    folder = root / "big"
    folder.mkdir()
    torch.export.save(program, str(folder / "model.pt2"))
    (folder / "model-settings.json").write_text(json.dumps({
        "implementation": "torch", "device": device, "parameters": {"uri": "model.pt2"}}))
    return net


def _served(model, x):
    async def call():
        return await model.scheduler.submit({"input": x})

    return next(iter(asyncio.run(call()).values()))


def _load_serve_unload(root, torch, x, want):
    """(bytes allocated while loaded, bytes allocated after the unload)."""
    model = DiskRepository(root).build("big")[0]
    assert model.load() is True and model.metadata()["parameters"]["device"] == "cuda:0"
    np.testing.assert_allclose(_served(model, x), want, rtol=1e-3, atol=1e-3)
    loaded = torch.cuda.memory_allocated(0)
    model.stop()
    del model
    gc.collect()
    return loaded, torch.cuda.memory_allocated(0)


def test_unload_gives_the_device_memory_back(tmp_path):
    """The weights go at unload, and so do the cuBLAS workspaces the model's threads made (torch keeps one,
    32 MiB on Hopper, per thread handle and stream for the process: the first run on an H200 found 66 MiB
    left after each unload, 132 after two); load/unload cycles leave nothing behind."""
    torch = pytest.importorskip("torch")
    from gpuserve.backends import torch_graphs
    from gpuserve.backends.torch import _torch_at_least

    if not _torch_at_least(torch, 2, 10):
        pytest.skip("before torch 2.10 the cuBLAS workspaces cannot be dropped safely, so they stay "
                    "(backends/torch.py)")
    net = _torch_folder(tmp_path, torch)
    x = np.random.default_rng(0).normal(size=(3, WIDTH)).astype(np.float32)
    with torch.inference_mode():
        want = net(torch.from_numpy(x)).numpy()
    gc.collect()
    assert not torch_graphs.graphs_alive()  # else the unload must keep every workspace (torch_graphs.py)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(0)
    loaded, first = _load_serve_unload(tmp_path, torch, x, want)
    assert loaded - before >= 64 * 2**20, (before, loaded)
    _, second = _load_serve_unload(tmp_path, torch, x, want)
    mib = [round((value - before) / 2**20, 1) for value in (first, second)]
    assert max(first, second) - before < 2**20, f"MiB still allocated after the first and second unload: {mib}"


def test_a_load_that_runs_out_of_device_memory_serves_on_the_cpu(tmp_path):
    torch = pytest.importorskip("torch")
    net = _torch_folder(tmp_path, torch)
    gc.collect()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(16 * 2**20 / total, 0)  # 16 MiB: the 64 MiB model cannot fit
    try:
        model = DiskRepository(tmp_path).build("big")[0]
        assert model.load() is True
        parameters = model.metadata()["parameters"]
        assert parameters["device"] == "cpu" and "out of memory on cuda:0" in parameters["fallback"], parameters
        x = np.random.default_rng(1).normal(size=(2, WIDTH)).astype(np.float32)
        with torch.inference_mode():
            want = net(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_served(model, x), want, rtol=1e-4, atol=1e-4)
        model.stop()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
