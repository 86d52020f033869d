"""The device path's Python side without a GPU: a stand-in `cupy` module over NumPy and a CPU emulation of
each `.cu` kernel, written from the kernels' C signatures and indexing. It checks what a CPU run can
check of the CuPy path: the launch arguments (count, order, array dtypes, scalar types matching the C
parameter types), the grid the kernel reads its rows/planes from, the copies on the stage's stream,
and that the device path's answers equal the host path's. The CUDA itself is checked by
tests/test_gpu_kernels.py on a GPU."""

import sys
import types

import numpy as np
import pytest

from gpuserve.backends.base import TensorSpec
from gpuserve.kernels import cuda_module
from gpuserve.kernels.preprocess import Normalize, normalize_reference
from gpuserve.kernels.ragged import pack
from gpuserve.kernels.stage import ImageInput, KernelPlan, Ragged
from gpuserve.kernels.topk import TopK, topk_reference


class FakeArray(np.ndarray):
    """A "device" array: NumPy memory with the two CuPy members the stage uses."""

    @property
    def device(self):
        return types.SimpleNamespace(id=0)

    def set(self, arr, stream=None):
        assert isinstance(stream, FakeStream) and stream.entered, "host-to-device copies go on the stage's stream"
        assert arr.shape == self.shape and arr.dtype == self.dtype
        self[...] = arr


def device(a):
    return np.asarray(a).view(FakeArray)


class FakeStream:
    current = None

    def __init__(self, non_blocking=False):
        assert non_blocking, "the stage's streams must not sync with the legacy default stream"
        self.depth, self.synchronized = 0, 0

    @property
    def entered(self):
        return self.depth > 0

    def __enter__(self):  # re-entrant, as CuPy's stream contexts
        self.depth += 1
        FakeStream.current = self
        return self

    def __exit__(self, *exc):
        self.depth -= 1
        if not self.depth:
            FakeStream.current = None

    def synchronize(self):
        self.synchronized += 1


class FakeDevice:
    def __init__(self, index):
        assert index == 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def fake_cupy():
    cp = types.ModuleType("cupy")
    cp.ndarray = FakeArray
    cp.empty = lambda shape, dtype=np.float64: device(np.empty(shape, dtype))
    cp.asarray = lambda a, dtype=None: a if isinstance(a, FakeArray) and dtype is None else device(np.asarray(a, dtype))
    cp.ascontiguousarray = lambda a: device(np.ascontiguousarray(a))
    cp.arange = lambda *a, **k: device(np.arange(*a, **k))
    cp.diff = lambda a: device(np.diff(np.asarray(a)))

    def asnumpy(a, stream=None):
        assert stream is None or stream.entered
        return np.array(a)

    cp.asnumpy = asnumpy
    cp.cuda = types.SimpleNamespace(Device=FakeDevice, Stream=FakeStream,
                                    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    return cp


# kernels emulated from the .cu files: (C parameter types, body over the launch grid) -------------------------
PTR = "ptr"
SIGNATURES = {
    "normalize_u8_f32": (PTR, PTR, PTR, np.int32, np.int64, np.int32),
    "normalize_u8_f16": (PTR, PTR, PTR, np.int32, np.int64, np.int32),
    **{f"pad_{s}": (PTR, PTR, PTR, t, np.int64, np.int64) for s, t in
       (("b1", np.uint8), ("b2", np.uint16), ("b4", np.uint32), ("b8", np.uint64))},
    **{f"unpad_{s}": (PTR, PTR, PTR, np.int64, np.int64) for s in ("b1", "b2", "b4", "b8")},
    **{f"topk_{s}": (PTR, np.int64, np.int32, PTR, PTR) for s in ("f16", "f32", "f64", "i32", "i64")},
}
POINTEE = {"normalize_u8_f32": (np.uint8, np.float32, np.float32), "normalize_u8_f16": (np.uint8, np.float16, np.float16),
           "topk_f16": np.float16, "topk_f32": np.float32, "topk_f64": np.float64, "topk_i32": np.int32,
           "topk_i64": np.int64}
launches = []


def emulate(name):
    def launch(grid, block, args, shared_mem=0):
        launches.append(name)
        assert FakeStream.current is not None, f"{name} launched outside the stage's stream"
        assert len(args) == len(SIGNATURES[name]), f"{name}: {len(args)} arguments"
        for i, (arg, kind) in enumerate(zip(args, SIGNATURES[name])):
            if kind is PTR:
                assert isinstance(arg, FakeArray) and arg.flags.c_contiguous, f"{name} argument {i} is not a device array"
            else:
                assert type(arg) is kind, f"{name} argument {i} is {type(arg).__name__}, the kernel takes {kind.__name__}"
        assert len(grid) <= 3 and all(0 < g for g in grid) and grid[1:2] <= (65535,) and block[0] <= 1024
        KERNELS[name.rsplit("_", 1)[0] if not name.startswith("normalize") else "normalize"](name, grid, *args)
    return launch


def k_normalize(name, grid, src, table, dst, channels, pixels, nhwc):
    for ptr, want in zip((src, table, dst), POINTEE[name]):
        assert ptr.dtype == want, f"{name}: {ptr.dtype} where the kernel reads {np.dtype(want)}"
    src, table, dst = src.reshape(-1), table.reshape(-1), dst.reshape(-1)
    for plane in range(grid[0]):  # blockIdx.x = (image, channel)
        image, channel = divmod(plane, int(channels))
        p = np.arange(int(pixels))
        index = (image * pixels + p) * channels + channel if nhwc else plane * pixels + p
        dst[plane * pixels + p] = table[channel * 256 + src[index].astype(np.int64)]


def k_pad(name, grid, packed, offsets, dense, pad, max_length, inner):
    assert offsets.dtype == np.int64 and packed.dtype.itemsize == dense.dtype.itemsize == np.dtype(type(pad)).itemsize
    packed, dense, bits = packed.reshape(-1), dense.reshape(-1), np.array(pad).view(dense.dtype)
    width = max_length * inner
    for row in range(grid[0]):
        start, filled = offsets[row] * inner, (offsets[row + 1] - offsets[row]) * inner
        dense[row * width:(row + 1) * width] = bits
        dense[row * width:row * width + filled] = packed[start:start + filled]


def k_unpad(name, grid, dense, offsets, packed, max_length, inner):
    assert offsets.dtype == np.int64 and packed.dtype.itemsize == dense.dtype.itemsize
    packed, dense = packed.reshape(-1), dense.reshape(-1)
    for row in range(grid[0]):
        start, filled = offsets[row] * inner, (offsets[row + 1] - offsets[row]) * inner
        packed[start:start + filled] = dense[row * max_length * inner:row * max_length * inner + filled]


def k_topk(name, grid, values, columns, k, out_values, out_index):
    assert values.dtype == POINTEE[name] == out_values.dtype and out_index.dtype == np.int64
    rows = values.reshape(-1, int(columns))
    assert grid[0] == len(rows)
    top, index = topk_reference(rows, int(k))  # the kernel's order is the reference's (see topk.cu)
    out_values.reshape(-1, int(k))[...] = top
    out_index.reshape(-1, int(k))[...] = index


KERNELS = {"normalize": k_normalize, "pad": k_pad, "unpad": k_unpad, "topk": k_topk}


@pytest.fixture
def cp(monkeypatch):
    fake = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(cuda_module, "function", lambda filename, name, index: emulate(name))
    launches.clear()
    return fake


class DeviceBackend:
    """run_on_device over the stand-in arrays; `run` is the same computation for the host-path comparison."""

    def __init__(self, inputs, outputs, compute, device="cuda:0"):
        self.inputs, self.outputs, self.compute, self.device, self.seen = inputs, outputs, compute, device, None

    def run(self, inputs, output_names=None):
        results = self.compute({k: np.asarray(v) for k, v in inputs.items()})
        return {k: np.asarray(v) for k, v in results.items() if not output_names or k in output_names}

    def run_on_device(self, inputs, output_names=None):
        self.seen = inputs
        return {k: device(v) for k, v in self.run(inputs, output_names).items()}


def host_twin(backend):
    return DeviceBackend(backend.inputs, backend.outputs, backend.compute, device="cpu")


@pytest.mark.parametrize("layout, dtype", [("NHWC", "FP32"), ("NCHW", "FP32"), ("NHWC", "FP16"), ("NCHW", "FP16")])
def test_image_kernel_launch_matches_the_reference(cp, layout, dtype):
    backend = DeviceBackend([TensorSpec("image", dtype, [-1, 3, 5, 7])], [TensorSpec("logits", "FP32", [-1, 20])],
                            lambda i: {"logits": (i["image"].reshape(len(i["image"]), -1)[:, :20] * 3).astype(np.float32)})
    spec = Normalize(layout, 1 / 255, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4))
    plan = KernelPlan(backend.inputs, backend.outputs, ImageInput("image", spec))
    stage = plan.bind(backend)
    assert stage.on_device
    shape = (4, 5, 7, 3) if layout == "NHWC" else (4, 3, 5, 7)
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = stage.run({"image": x}, None, {"logits": 3}, True)
    assert launches[0].startswith("normalize_u8_f") and launches[-1] == "topk_f32"
    fed = np.asarray(backend.seen["image"])
    assert isinstance(backend.seen["image"], FakeArray) and fed.shape == (4, 3, 5, 7)
    assert np.array_equal(fed, normalize_reference(x, spec, np.float32 if dtype == "FP32" else np.float16))
    host = plan.bind(host_twin(backend)).run({"image": x}, None, {"logits": 3}, True)
    assert isinstance(out["logits"], TopK) and np.array_equal(out["logits"].indices, host["logits"].indices)
    assert np.array_equal(out["logits"].values, host["logits"].values)


@pytest.mark.parametrize("dtype", ["INT64", "INT32", "FP16", "UINT8"])
@pytest.mark.parametrize("inner", [[], [3]])
def test_ragged_pad_and_unpad_launches_match_the_host_path(cp, dtype, inner):
    def compute(i):
        return {"tokens": i["ids"] + i["mask"].reshape(i["mask"].shape + (1,) * len(inner)).astype(i["ids"].dtype),
                "count": i["mask"].sum(axis=1), "lengths": i["lengths"]}

    ins = [TensorSpec("ids", dtype, [-1, -1] + inner), TensorSpec("mask", "INT64", [-1, -1]),
           TensorSpec("lengths", "INT32", [-1, 1])]
    outs = [TensorSpec("tokens", dtype, [-1, -1] + inner), TensorSpec("count", "INT64", [-1]),
            TensorSpec("lengths", "INT32", [-1, 1])]
    backend = DeviceBackend(ins, outs, compute)
    plan = KernelPlan(ins, outs, ragged=Ragged(("ids",), 9, "lengths", "mask", ("tokens",)))
    rng = np.random.default_rng(1)
    numpy_dtype = {"INT64": np.int64, "INT32": np.int32, "FP16": np.float16, "UINT8": np.uint8}[dtype]
    parts = [rng.integers(0, 50, (int(rng.integers(1, 3)), length, *inner)).astype(numpy_dtype)
             for length in (3, 1, 6, 6, 2)]
    batch, _ = pack(parts)
    out = plan.bind(backend).run({"ids": batch}, None, {}, True)
    size = {"INT64": "b8", "INT32": "b4", "FP16": "b2", "UINT8": "b1"}[dtype]
    assert launches == [f"pad_{size}", f"unpad_{size}"]
    host = plan.bind(host_twin(backend)).run({"ids": batch}, None, {}, True)
    assert np.array_equal(np.asarray(backend.seen["lengths"]), host_lengths(batch))
    assert np.array_equal(out["count"], host["count"]) and np.array_equal(out["lengths"], host["lengths"])
    assert np.array_equal(out["tokens"].packed, host["tokens"].packed) and out["tokens"].inner == host["tokens"].inner
    start = 0
    for part in parts:
        assert np.array_equal(out["tokens"].take_rows(start, len(part)), part + 1)
        start += len(part)


def host_lengths(batch):
    return batch.lengths.astype(np.int32).reshape(-1, 1)


def test_packed_mode_on_the_device_path_needs_no_kernel(cp):
    backend = DeviceBackend([TensorSpec("ids", "INT64", [-1]), TensorSpec("offsets", "INT32", [-1])],
                            [TensorSpec("tokens", "INT64", [-1]), TensorSpec("rows", "INT32", [-1])],
                            lambda i: {"tokens": i["ids"] * 2, "rows": np.diff(i["offsets"])})
    plan = KernelPlan(backend.inputs, backend.outputs,
                      ragged=Ragged(("ids",), outputs=("tokens",), mode="packed", offsets_input="offsets"))
    parts = [np.array([[1, 2, 3]]), np.array([[4], [5]])]
    out = plan.bind(backend).run({"ids": pack(parts)[0]}, None, {}, True)
    assert launches == [] and np.asarray(backend.seen["offsets"]).dtype == np.int32
    assert out["rows"].tolist() == [3, 1, 1] and out["tokens"].take_rows(1, 2).tolist() == [[8], [10]]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8])
def test_topk_launch_per_dtype_and_host_fallback_for_the_rest(cp, dtype):
    values = np.random.default_rng(2).integers(0, 9, (3, 2, 20)).astype(dtype)
    backend = DeviceBackend([TensorSpec("x", "FP32", [-1, 1])], [TensorSpec("y", "FP32", [-1, 2, 20])],
                            lambda i: {"y": values})
    out = KernelPlan().bind(backend).run({"x": np.zeros((3, 1), np.float32)}, None, {"y": 4}, True)["y"]
    want = topk_reference(values.reshape(3, -1), 4)
    assert np.array_equal(out.indices, want[1]) and np.array_equal(out.values, want[0])
    kernel = {np.float16: "topk_f16", np.float32: "topk_f32", np.float64: "topk_f64", np.int32: "topk_i32",
              np.int64: "topk_i64"}.get(dtype)
    assert launches == ([kernel] if kernel else [])  # uint8 has no kernel: copied back whole, reduced on the host


def test_kernel_functions_allocate_and_copy_on_the_stream_they_are_given(cp, monkeypatch):
    """Called with a stream but from outside it (as tests/test_gpu_kernels.py does), each kernel function
    still allocates its output and makes its contiguous copies on that stream, not on the current one: a
    copy on another stream would race the kernel, a buffer from another stream's pool could be reused under it."""
    from gpuserve.kernels.preprocess import normalize_device
    from gpuserve.kernels.ragged import pad_device, unpad_device
    from gpuserve.kernels.topk import topk_device

    seen = []

    def watched(make):
        def call(*args, **kwargs):
            seen.append(FakeStream.current)
            return make(*args, **kwargs)
        return call

    monkeypatch.setattr(cp, "empty", watched(cp.empty))
    monkeypatch.setattr(cp, "ascontiguousarray", watched(cp.ascontiguousarray))
    stream = FakeStream(non_blocking=True)
    spec = Normalize("NHWC", 1 / 255, (0.5,), (0.25,))
    normalize_device(device(np.zeros((2, 4, 4, 3), np.uint8)), device(spec.table(3, np.float32)), "NHWC", stream)
    topk_device(device(np.arange(12, dtype=np.float32).reshape(3, 4)), 2, stream)
    batch, _ = pack([np.ones((1, 3), np.int64), np.ones((2, 1), np.int64)])
    offsets = device(batch.offsets)
    dense = pad_device(device(batch.packed), offsets, batch.rows, batch.max_length, batch.inner, 0, stream)
    unpad_device(dense, offsets, int(batch.lengths.sum()), stream)
    assert len(seen) >= 6 and all(s is stream for s in seen), seen
    assert launches == ["normalize_u8_f32", "topk_f32", "pad_b8", "unpad_b8"]
