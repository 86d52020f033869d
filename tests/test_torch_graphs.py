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


def test_capture_runs_on_the_models_gpu_and_on_its_own_stream():
    """Capture against a stand-in for torch.cuda (the calls capture_graphs makes, recorded): a model on cuda:1
    is warmed up and captured with device 1 current, each size on a stream of its own (never on
    torch.cuda.graph's default capture stream, made once, on whichever device was current at the first
    capture; and never two sizes on one stream, whose cuBLAS workspace they would share), with capture
    errors scoped to this thread (other models keep serving meanwhile)."""
    import contextlib
    import types

    from gpuserve.backends.base import TensorSpec
    from gpuserve.backends.torch_graphs import capture_graphs

    state = {"device": 0, "stream": None}
    captures, calls = [], []

    class Stream:
        def __init__(self, device=None):
            self.device = device

        def wait_stream(self, other):
            pass

    @contextlib.contextmanager
    def switch(key, value):
        before, state[key] = state[key], value
        try:
            yield
        finally:
            state[key] = before

    @contextlib.contextmanager
    def graph(cuda_graph, pool=None, stream=None, capture_error_mode="global"):
        captures.append((state["device"], stream, capture_error_mode))
        with switch("stream", stream):
            yield

    cuda = types.SimpleNamespace(
        Stream=Stream, current_stream=lambda device=None: Stream(device), CUDAGraph=object,
        device=lambda device: switch("device", int(str(device).rsplit(":", 1)[-1])),
        stream=lambda stream: switch("stream", stream), graph=graph, synchronize=lambda device=None: None)
    fake_torch = types.SimpleNamespace(cuda=cuda, float32=np.float32,
                                       zeros=lambda shape, dtype, device: np.zeros(shape, dtype))

    def call(x):
        calls.append((state["device"], state["stream"]))
        return {"y": x * 2}

    made = []

    def streams():
        made.append(Stream(state["device"]))
        return made[-1]

    graphs = capture_graphs(fake_torch, call, [TensorSpec("x", "FP32", [-1, 3])], [2, 4], "cuda:1", lambda t: t,
                            streams)
    assert sorted(graphs) == [2, 4] and graphs[4].inputs[0].shape == (4, 3)
    assert len(made) == 2 and all(stream.device == 1 for stream in made)
    assert captures == [(1, made[0], "thread_local"), (1, made[1], "thread_local")]
    assert calls == [(1, made[0])] * 4 + [(1, made[1])] * 4  # three warm-ups and the capture, per size
    assert graphs[2].lock is not graphs[4].lock
    del graphs
    assert state == {"device": 0, "stream": None}


def test_graphs_captured_on_one_stream_share_its_lock_and_eager_calls_there_take_it():
    """Graphs whose capture streams coincide share a cuBLAS workspace: they replay under one lock, which an
    eager call on that stream takes too, and which is free again once every such graph is gone."""
    import gc

    from gpuserve.backends import torch_graphs

    first = torch_graphs.CapturedGraph(None, [], {}, stream_id=101)
    second = torch_graphs.CapturedGraph(None, [], {}, stream_id=101)
    other = torch_graphs.CapturedGraph(None, [], {}, stream_id=102)
    lock = first.lock
    assert second.lock is lock and other.lock is not lock
    assert torch_graphs.lock_for_stream(101) is lock and torch_graphs.lock_for_stream(103) is None
    assert torch_graphs.graphs_alive()
    del first
    gc.collect()
    assert torch_graphs.lock_for_stream(101) is lock  # the second still lives
    del second, other
    gc.collect()
    assert torch_graphs.lock_for_stream(101) is None and torch_graphs.lock_for_stream(102) is None
    assert not torch_graphs.graphs_alive()


def test_torch_versions_are_compared_by_major_and_minor():
    import types

    from gpuserve.backends.torch import _torch_at_least

    def version(text):
        return types.SimpleNamespace(__version__=text)

    assert _torch_at_least(version("2.11.0+cu130"), 2, 10) and _torch_at_least(version("2.10.0"), 2, 10)
    assert not _torch_at_least(version("2.9.1+cpu"), 2, 10) and not _torch_at_least(version("1.13.1"), 2, 10)
    assert _torch_at_least(version("3.0.0a0"), 2, 10) and not _torch_at_least(version("nightly"), 2, 10)
