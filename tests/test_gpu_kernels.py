"""The kernels' CuPy paths on a GPU against their NumPy references (exact: the image map is a table of
the float64 reference, ragged and top-k move or pick elements), and the kernel stage's device path
through a backend's `run_on_device`. Skipped without CUDA; run by benchmarks/gpu/verify_all.sh."""

import numpy as np
import pytest

from gpuserve.backends.base import TensorSpec
from gpuserve.kernels.preprocess import Normalize, normalize_device, normalize_reference
from gpuserve.kernels.ragged import pack, pad_device, pad_reference, unpad_device, unpad_reference
from gpuserve.kernels.stage import ImageInput, KernelPlan, Ragged
from gpuserve.kernels.topk import TopK, topk_device, topk_reference

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (4, 224, 224, 3), (3, 17, 5, 3), (2, 9, 300, 1)])
def test_normalize_device_equals_reference(cp, layout, dtype, shape):
    n, h, w, c = shape
    shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    spec = Normalize(layout, 1 / 255, (0.485, 0.456, 0.406)[:c], (0.229, 0.224, 0.225)[:c])
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:  # the inputs' copies on the kernel's stream: a non-blocking stream does not wait for the null one
        images, table = cp.asarray(x), cp.asarray(spec.table(c, dtype))
    got = normalize_device(images, table, layout, stream)
    stream.synchronize()
    assert got.dtype == dtype and np.array_equal(cp.asnumpy(got), normalize_reference(x, spec, dtype))


@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.int32, np.float32, np.int64, np.float64])
@pytest.mark.parametrize("inner", [(), (3,), (2, 5)])
def test_pad_and_unpad_device_equal_reference(cp, dtype, inner):
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 100, (int(rng.integers(1, 4)), int(rng.integers(0, 40))) + inner).astype(dtype)
             for _ in range(9)]
    batch, _ = pack(parts)
    dense, lengths = pad_reference(parts, 7)
    offsets = cp.asarray(batch.offsets)
    got = pad_device(cp.asarray(batch.packed), offsets, batch.rows, batch.max_length, batch.inner, 7)
    assert np.array_equal(cp.asnumpy(got), dense)
    packed = unpad_device(cp.asarray(dense), offsets, int(lengths.sum()))
    want = np.concatenate([row.reshape(-1) for row in unpad_reference(dense, lengths)])
    assert np.array_equal(cp.asnumpy(packed), want)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("rows, columns, k", [(1, 1, 1), (7, 10, 10), (64, 1000, 5), (8, 32000, 50), (3, 513, 1)])
def test_topk_device_equals_reference(cp, dtype, rows, columns, k):
    rng = np.random.default_rng(2)
    values = rng.integers(-50, 50, (rows, columns)).astype(dtype)  # many ties
    if np.dtype(dtype).kind == "f":
        values = (values * 0.25).astype(dtype)
        values[rng.random(values.shape) < 0.05] = np.nan
        values[rng.random(values.shape) < 0.01] = np.inf
    top, index = topk_device(cp.asarray(values), k)
    want_top, want_index = topk_reference(values, k)
    assert np.array_equal(cp.asnumpy(index), want_index)
    assert np.array_equal(cp.asnumpy(top), want_top, equal_nan=np.dtype(dtype).kind == "f")


class CupyBackend:
    """A stand-in GPU backend: `run_on_device` takes device arrays and answers with device arrays."""

    device = "cuda:0"

    def __init__(self, cp, inputs, outputs, compute):
        self.cp, self.inputs, self.outputs, self.compute, self.seen = cp, inputs, outputs, compute, None

    def run(self, inputs, output_names=None):  # pragma: no cover - the device path must not call it
        raise AssertionError("the stage should have used run_on_device")

    def run_on_device(self, inputs, output_names=None):
        self.seen = inputs
        results = self.compute(self.cp, inputs)
        self.cp.cuda.get_current_stream().synchronize()
        return {k: v for k, v in results.items() if not output_names or k in output_names}


def test_stage_device_path_image_and_topk(cp):
    spec = Normalize("NHWC", 1 / 255, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    weight = np.random.default_rng(3).normal(size=(3 * 16 * 16, 100)).astype(np.float32)
    w = cp.asarray(weight)
    backend = CupyBackend(cp, [TensorSpec("image", "FP32", [-1, 3, 16, 16])], [TensorSpec("logits", "FP32", [-1, 100])],
                          lambda xp, i: {"logits": i["image"].reshape(len(i["image"]), -1) @ w})
    stage = KernelPlan(backend.inputs, backend.outputs, ImageInput("image", spec)).bind(backend)
    assert stage.on_device
    x = np.random.default_rng(4).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    out = stage.run({"image": x}, None, {"logits": 3}, True)
    assert isinstance(backend.seen["image"], cp.ndarray)
    fed = normalize_reference(x, spec, np.float32)
    assert np.array_equal(cp.asnumpy(backend.seen["image"]), fed)
    assert isinstance(out["logits"], TopK) and out["logits"].values.shape == (5, 3)
    whole = stage.run({"image": x}, None, {}, True)["logits"]  # the same batch, copied back whole
    assert isinstance(whole, np.ndarray)
    np.testing.assert_allclose(whole, fed.reshape(5, -1) @ weight, rtol=1e-3, atol=1e-3)  # TF32 vs CPU
    assert np.array_equal(out["logits"].indices, topk_reference(whole, 3)[1])


def test_stage_device_path_ragged(cp):
    def compute(xp, i):
        return {"tokens": i["ids"] * 2, "count": i["mask"].sum(axis=1)}

    backend = CupyBackend(cp, [TensorSpec("ids", "INT64", [-1, -1]), TensorSpec("mask", "INT32", [-1, -1])],
                          [TensorSpec("tokens", "INT64", [-1, -1]), TensorSpec("count", "INT64", [-1])], compute)
    stage = KernelPlan(backend.inputs, backend.outputs, ragged=Ragged(("ids",), -1, None, "mask", ("tokens",))).bind(backend)
    parts = [np.arange(n * 3 + length).reshape(-1)[: n * length].reshape(n, length).astype(np.int64)
             for n, length in [(1, 7), (2, 1), (1, 30)]]
    batch, _ = pack(parts)
    out = stage.run({"ids": batch}, None, {}, True)
    assert cp.asnumpy(backend.seen["ids"]).tolist()[1] == [0] + [-1] * 29
    assert out["count"].tolist() == [7, 1, 1, 30]
    assert out["tokens"].take_rows(0, 1).tolist() == (parts[0] * 2).tolist()
    assert out["tokens"].take_rows(1, 2).tolist() == (parts[1] * 2).tolist()
    assert out["tokens"].take_rows(3, 1).tolist() == (parts[2] * 2).tolist()


def test_stage_device_path_packed_rows_and_offsets(cp):
    backend = CupyBackend(cp, [TensorSpec("ids", "INT64", [-1]), TensorSpec("offsets", "INT64", [-1])],
                          [TensorSpec("tokens", "INT64", [-1]), TensorSpec("rows", "INT64", [-1])],
                          lambda xp, i: {"tokens": i["ids"] + 1, "rows": xp.diff(i["offsets"])})
    plan = KernelPlan(backend.inputs, backend.outputs,
                      ragged=Ragged(("ids",), outputs=("tokens",), mode="packed", offsets_input="offsets"))
    parts = [np.array([[1, 2, 3]]), np.array([[4], [5]])]
    out = plan.bind(backend).run({"ids": pack(parts)[0]}, None, {}, True)
    assert isinstance(backend.seen["ids"], cp.ndarray) and cp.asnumpy(backend.seen["offsets"]).tolist() == [0, 3, 4, 5]
    assert out["rows"].tolist() == [3, 1, 1]
    assert out["tokens"].take_rows(0, 1).tolist() == [[2, 3, 4]] and out["tokens"].take_rows(1, 2).tolist() == [[5], [6]]


def test_torch_backend_fed_by_the_image_kernel_matches_cpu(cp, tmp_path):
    torch = pytest.importorskip("torch")
    from gpuserve.backends.torch import TorchBackend

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(net, (torch.zeros(2, 3, 64, 64),), dynamic_shapes={"input": {0: batch}}),
                      str(path))
    backend = TorchBackend(str(path), device="cuda:0")
    if not callable(getattr(backend, "run_on_device", None)):
        pytest.skip("this TorchBackend has no run_on_device")
    spec = Normalize("NHWC", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    name = backend.inputs[0].name
    stage = KernelPlan(backend.inputs, backend.outputs, ImageInput(name, spec)).bind(backend)
    assert stage.on_device
    x = np.random.default_rng(5).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    out = stage.run({name: x}, None, {}, True)
    with torch.inference_mode():
        want = net(torch.from_numpy(normalize_reference(x, spec, np.float32))).numpy()
    got = next(iter(out.values()))
    assert np.allclose(got, want, rtol=1e-3, atol=1e-4)  # cuDNN/TF32 vs CPU
