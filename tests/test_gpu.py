"""GPU paths against their CPU references. Skipped without CUDA; run on a lent GPU by
benchmarks/gpu/verify_all.sh."""

import asyncio

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def torch_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    path = tmp_path_factory.mktemp("gpu") / "model.pt2"
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(torch.export.export(net, (torch.zeros(2, 64),), dynamic_shapes={"input": {0: batch}}),
                      str(path))
    return path, net


def test_pinned_pool_is_page_locked_and_reused():
    torch = pytest.importorskip("torch")
    from gpuserve.backends.cuda import pinned_allocator
    from gpuserve.engine.staging import StagingPool

    allocate = pinned_allocator()
    assert allocate is not None
    pool = StagingPool(allocate)
    lease = pool.acquire(np.float32, (128, 64))
    assert torch.from_numpy(lease.buffer).is_pinned()
    lease.release()
    pool.acquire(np.float32, (100, 64)).release()
    assert pool.stats()["allocations"] == 1 and pool.stats()["reuses"] == 1


@pytest.mark.parametrize("overlap", [True, False])
def test_torch_cuda_matches_cpu(torch_model, overlap):
    torch = pytest.importorskip("torch")
    from gpuserve.backends.torch import TorchBackend

    path, net = torch_model
    gpu = TorchBackend(str(path), device="cuda:0", overlap=overlap)
    rng = np.random.default_rng(0)
    for rows in (1, 7, 256):
        x = rng.normal(size=(rows, 64)).astype(np.float32)
        got = gpu.run({"input": x})["output__0"]
        with torch.inference_mode():
            want = net(torch.from_numpy(x)).numpy()
        assert np.allclose(got, want, rtol=1e-3, atol=1e-4)  # TF32/cuBLAS vs CPU


def test_engine_on_gpu_matches_cpu(torch_model):
    torch = pytest.importorskip("torch")
    from gpuserve.backends.cuda import pinned_allocator
    from gpuserve.backends.torch import TorchBackend
    from gpuserve.engine.batcher import BatchingConfig, Scheduler
    from gpuserve.engine.instance import Instance
    from gpuserve.engine.staging import StagingPool

    path, net = torch_model
    instance = Instance(TorchBackend(str(path), device="cuda:0"), "gpu-0", StagingPool(pinned_allocator()))
    assert instance.slots >= 2
    scheduler = Scheduler("gpu", [instance], BatchingConfig(max_batch_size=64))
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(int(rng.integers(1, 4)), 64)).astype(np.float32) for _ in range(200)]

    async def run():
        results = await asyncio.gather(*(scheduler.submit({"input": x}) for x in xs))
        await scheduler.stop()
        return results

    results = asyncio.run(run())
    with torch.inference_mode():
        for x, result in zip(xs, results):
            assert np.allclose(result["output__0"], net(torch.from_numpy(x)).numpy(), rtol=1e-3, atol=1e-4)
    assert max(scheduler.batches_formed) > 1
