"""CUDA graph batching logic on the CPU: which captured size a batch pads to, the padding itself
(NumPy and torch CPU tensors, the same code the GPU replay uses) and the output slicing. Capture and
replay run on a GPU only (tests/test_gpu.py)."""

import numpy as np
import pytest

from gpuserve.backends.torch_graphs import fill_static, graph_batch_sizes, graph_size_for, slice_rows


def test_captured_sizes_follow_preferred_else_powers_of_two():
    assert graph_batch_sizes([8, 4, 4, 16], 64) == [4, 8, 16]
    assert graph_batch_sizes([], 64) == [1, 2, 4, 8, 16, 32, 64]
    assert graph_batch_sizes([], 48) == [1, 2, 4, 8, 16, 32, 48]
    assert graph_batch_sizes([], 0) == [1]


def test_batch_pads_up_to_the_nearest_captured_size():
    sizes = [4, 8, 16]
    assert [graph_size_for(r, sizes) for r in (1, 4, 5, 8, 9, 16)] == [4, 4, 8, 8, 16, 16]
    assert graph_size_for(17, sizes) is None  # larger than every graph: eager


def test_fill_static_pads_with_zeros_and_slices_back_numpy():
    static = np.full((8, 3), 7.0, np.float32)  # stale rows from an earlier, larger batch
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    fill_static(static, x, 5)
    np.testing.assert_array_equal(static[:5], x)
    assert not static[5:].any()
    out = {"y": static * 2}
    np.testing.assert_array_equal(slice_rows(out, 5)["y"], x * 2)
    with pytest.raises(ValueError, match="does not fit"):
        fill_static(static, np.zeros((9, 3), np.float32), 9)
    with pytest.raises(ValueError, match="does not fit"):
        fill_static(static, np.zeros((2, 4), np.float32), 2)


def test_fill_static_on_torch_tensors():
    torch = pytest.importorskip("torch")
    static = torch.full((4, 2), 3.0)
    fill_static(static, torch.ones(3, 2), 3)
    assert static[:3].eq(1).all() and static[3:].eq(0).all()
    fill_static(static, torch.full((4, 2), 2.0), 4)
    assert static.eq(2).all()


def test_cuda_graphs_setting_on_a_cpu_machine_serves_eagerly_and_says_so(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this checks the CPU fallback")
    from gpuserve.backends.torch import TorchBackend

    net = torch.nn.Linear(4, 2).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(torch.export.export(net, (torch.zeros(2, 4),), dynamic_shapes={"input": {0: batch}}),
                      str(tmp_path / "model.pt2"))
    backend = TorchBackend(str(tmp_path / "model.pt2"), device="cuda:0", cuda_graphs=True, graph_batch_sizes=[4])
    assert backend.device == "cpu" and backend.graphs == {} and "no GPU" in backend.fallback
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    with torch.inference_mode():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(backend.run({"input": x})["output__0"], want, rtol=1e-5, atol=1e-6)
