"""kernels/: each CPU path against its NumPy reference for random inputs, the kernel stage's host path
with a recording backend, the settings checks, and every `.cu` file through nvcc.

Tolerances: the image kernel and the ragged kernels are exact (the image map is a per-byte table of
the float64 reference rounded once to FP32/FP16, so even FP16 is bit-equal); top-k is exact.
"""

import shutil
import subprocess
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuserve.backends.base import TensorSpec
from gpuserve.errors import InferenceError, InvalidInput
from gpuserve.kernels.preprocess import Normalize, normalize_cpu, normalize_reference
from gpuserve.kernels.ragged import (RaggedBatch, mask, pack, pad_cpu, pad_reference, unpad_cpu,
                                     unpad_reference)
from gpuserve.kernels.stage import ImageInput, KernelPlan, Ragged, batch_reductions
from gpuserve.kernels.topk import TopK, topk_cpu, topk_reference

FAST = settings(max_examples=60, deadline=None)


# uint8 images -> normalised float ----------------------------------------------------------------
@st.composite
def images(draw):
    layout = draw(st.sampled_from(["NHWC", "NCHW"]))
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    c = draw(st.integers(1, 4))
    shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
    seed = draw(st.integers(0, 2**32 - 1))
    x = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    finite = st.floats(-3, 3, allow_nan=False)
    nonzero = st.floats(0.01, 5, allow_nan=False) | st.floats(-5, -0.01, allow_nan=False)
    per = draw(st.sampled_from([1, c]))
    spec = Normalize(layout, draw(st.floats(1e-3, 10, allow_nan=False)),
                     tuple(draw(st.lists(finite, min_size=per, max_size=per))),
                     tuple(draw(st.lists(nonzero, min_size=per, max_size=per))))
    return x, spec, c


@FAST
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # both sides reach inf alike
@given(images(), st.sampled_from([np.float32, np.float16]))
def test_normalize_cpu_equals_reference_bit_for_bit(case, dtype):
    x, spec, channels = case
    got = normalize_cpu(x, spec.table(channels, dtype), spec.layout)
    want = normalize_reference(x, spec, dtype)
    assert got.dtype == dtype and got.shape == want.shape
    assert np.array_equal(got, want)


def test_normalize_reference_is_the_textbook_formula():
    x = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3) * 10
    spec = Normalize("NHWC", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    got = normalize_reference(x, spec, np.float32)
    assert got.shape == (2, 3, 2, 2)
    assert np.isclose(got[1, 2, 0, 1], (x[1, 0, 1, 2] / 255 - 0.406) / 0.225)


def test_normalize_rejects_bad_specs_and_images():
    with pytest.raises(ValueError, match="std"):
        Normalize(std=(0.0,))
    with pytest.raises(ValueError, match="layout"):
        Normalize(layout="HWC")
    table = Normalize(mean=(1, 2, 3), std=(1, 1, 1)).table(3, np.float32)
    with pytest.raises(ValueError, match="channels"):
        normalize_cpu(np.zeros((1, 4, 4, 4), np.uint8), table, "NHWC")
    with pytest.raises(ValueError, match="uint8"):
        normalize_cpu(np.zeros((1, 4, 4, 3), np.float32), table, "NHWC")
    with pytest.raises(ValueError, match="2 values"):
        Normalize(mean=(1, 2)).table(3, np.float32)


# ragged -----------------------------------------------------------------------------------------
@st.composite
def ragged_parts(draw):
    inner = draw(st.sampled_from([(), (2,), (3, 2)]))
    dtype = draw(st.sampled_from([np.int64, np.int32, np.float32, np.float16, np.uint8]))
    count = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    parts = [rng.integers(0, 100, (draw(st.integers(1, 3)), draw(st.integers(0, 6))) + inner).astype(dtype)
             for _ in range(count)]
    return parts, draw(st.sampled_from([0, 7] if dtype == np.uint8 else [0, -1, 7]))


@FAST
@given(ragged_parts())
def test_pack_pad_unpad_equal_the_reference(case):
    parts, pad_value = case
    batch, lease = pack(parts)
    assert lease is None or len(parts) > 1
    dense, lengths = pad_reference(parts, pad_value)
    got = pad_cpu(batch, pad_value)
    assert got.dtype == parts[0].dtype and np.array_equal(got, dense)
    assert np.array_equal(batch.lengths, lengths)
    packed = unpad_cpu(dense, lengths)
    assert np.array_equal(packed, np.concatenate([row.reshape(-1) for row in unpad_reference(dense, lengths)]))
    start = 0
    for part in parts:  # each request back at its own length
        assert np.array_equal(RaggedBatch(packed, lengths, dense.shape[2:]).take_rows(start, len(part)), part)
        start += len(part)
    assert np.array_equal(mask(lengths, dense.shape[1], np.int64).sum(axis=1), lengths)


def test_pack_uses_the_pool_and_rejects_mismatched_parts():
    from gpuserve.engine.staging import StagingPool

    pool = StagingPool()
    batch, lease = pack([np.ones((1, 3), np.int64), np.ones((2, 5), np.int64)], pool)
    assert lease is not None and batch.packed.base is not None and pool.stats()["in_use"] == 1
    lease.release()
    with pytest.raises(ValueError, match="share dtype"):
        pack([np.ones((1, 3), np.int64), np.ones((1, 3), np.int32)])
    with pytest.raises(ValueError, match="ragged axis"):
        unpad_cpu(np.zeros((2, 3)), np.array([4, 1]))


# top-k ------------------------------------------------------------------------------------------
@st.composite
def rows(draw):
    dtype = draw(st.sampled_from([np.float32, np.float16, np.float64, np.int32, np.int64, np.uint8]))
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 80)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.integers(-4, 5, shape).astype(dtype) if dtype != np.uint8 else rng.integers(0, 5, shape).astype(dtype)
    if np.dtype(dtype).kind == "f":
        values = values * draw(st.sampled_from([1.0, 0.37]))
        special = rng.random(shape)
        values[special < 0.1] = np.nan
        values[(special >= 0.1) & (special < 0.15)] = -np.inf
        values[(special >= 0.15) & (special < 0.18)] = np.inf
        values = values.astype(dtype)
    return values, draw(st.integers(0, shape[1] + 2))


@FAST
@given(rows())
def test_topk_cpu_equals_reference(case):
    values, k = case
    top, index = topk_cpu(values, k)
    want_top, want_index = topk_reference(values, k)
    assert np.array_equal(index, want_index)
    assert np.array_equal(top, want_top, equal_nan=values.dtype.kind == "f")


def test_topk_orders_nan_last_and_ties_by_index():
    values = np.array([[np.nan, 1.0, 3.0, 1.0, -np.inf, np.nan] + [0.0] * 30], np.float32)
    assert topk_cpu(values, 6)[1][0].tolist() == [2, 1, 3, 6, 7, 8]
    assert topk_cpu(values, 3)[1][0].tolist() == topk_reference(values, 3)[1][0].tolist()


# the kernel stage on the host, with a backend that records what it was given --------------------------
class Recorder:
    device = "cpu"

    def __init__(self, inputs, outputs, compute):
        self.inputs, self.outputs, self.compute, self.seen = inputs, outputs, compute, None

    def run(self, inputs, output_names=None):
        self.seen = inputs
        results = self.compute(inputs)
        return {k: v for k, v in results.items() if not output_names or k in output_names}


def test_stage_normalizes_uint8_nhwc_before_the_backend():
    backend = Recorder([TensorSpec("image", "FP16", [-1, 3, 4, 5])], [TensorSpec("sum", "FP32", [-1])],
                       lambda i: {"sum": i["image"].astype(np.float32).sum(axis=(1, 2, 3))})
    spec = Normalize("NHWC", 1 / 255, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    plan = KernelPlan(backend.inputs, backend.outputs, ImageInput("image", spec))
    assert plan.client_input(backend.inputs[0]) == ("UINT8", [-1, 4, 5, 3])
    x = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    stage = plan.bind(backend)
    assert not stage.on_device
    out = stage.run({"image": x}, None, {}, True)
    assert backend.seen["image"].dtype == np.float16
    assert np.array_equal(backend.seen["image"], normalize_reference(x, spec, np.float16))
    assert out["sum"].shape == (2,)
    with pytest.raises(InvalidInput, match="shape"):
        plan.check_request({"image": np.zeros((1, 5, 4, 3), np.uint8)})


def test_stage_pads_feeds_lengths_and_mask_and_unpads_outputs():
    def compute(i):
        assert i["ids"].shape == i["mask"].shape
        return {"tokens": i["ids"] * 10 * i["mask"], "count": i["mask"].sum(axis=1), "lengths_seen": i["lengths"]}

    backend = Recorder([TensorSpec("ids", "INT64", [-1, -1]), TensorSpec("mask", "INT64", [-1, -1]),
                        TensorSpec("lengths", "INT32", [-1])],
                       [TensorSpec("tokens", "INT64", [-1, -1]), TensorSpec("count", "INT64", [-1]),
                        TensorSpec("lengths_seen", "INT32", [-1])], compute)
    plan = KernelPlan(backend.inputs, backend.outputs, ragged=Ragged(("ids",), -5, "lengths", "mask", ("tokens",)))
    assert plan.client_input(backend.inputs[1]) is None and plan.client_input(backend.inputs[2]) is None
    parts = [np.array([[1, 2, 3]]), np.array([[4], [5]]), np.array([[6, 7, 8, 9, 10]])]
    batch, _ = pack(parts)
    out = plan.bind(backend).run({"ids": batch}, None, {}, True)
    assert backend.seen["ids"].tolist()[1] == [4, -5, -5, -5, -5]
    assert backend.seen["lengths"].dtype == np.int32 and backend.seen["lengths"].tolist() == [3, 1, 1, 5]
    assert out["count"].tolist() == [3, 1, 1, 5]
    tokens = out["tokens"]
    assert isinstance(tokens, RaggedBatch)
    assert tokens.take_rows(0, 1).tolist() == [[10, 20, 30]] and tokens.take_rows(1, 2).tolist() == [[40], [50]]
    assert tokens.take_rows(3, 1).tolist() == [[60, 70, 80, 90, 100]]
    with pytest.raises(InvalidInput, match="agree"):
        KernelPlan(backend.inputs + [TensorSpec("types", "INT64", [-1, -1])], backend.outputs,
                   ragged=Ragged(("ids", "types"))).check_request({"ids": np.zeros((1, 3)), "types": np.zeros((1, 4))})


def test_stage_packed_mode_feeds_rows_back_to_back_with_offsets():
    backend = Recorder([TensorSpec("ids", "INT64", [-1]), TensorSpec("offsets", "INT32", [-1])],
                       [TensorSpec("tokens", "INT64", [-1, 2]), TensorSpec("rows", "INT32", [-1])],
                       lambda i: {"tokens": np.stack([i["ids"], -i["ids"]], axis=1), "rows": np.diff(i["offsets"])})
    plan = KernelPlan(backend.inputs, backend.outputs,
                      ragged=Ragged(("ids",), outputs=("tokens",), mode="packed", offsets_input="offsets"))
    assert plan.client_input(backend.inputs[0]) == ("INT64", [-1, -1]) and plan.client_input(backend.inputs[1]) is None
    parts = [np.array([[1, 2, 3]]), np.array([[4], [5]]), np.array([[6, 7]])]
    out = plan.bind(backend).run({"ids": pack(parts)[0]}, None, {}, True)
    assert backend.seen["ids"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert backend.seen["offsets"].dtype == np.int32 and backend.seen["offsets"].tolist() == [0, 3, 4, 5, 7]
    assert out["rows"].tolist() == [3, 1, 1, 2]
    assert out["tokens"].take_rows(1, 2).tolist() == [[[4, -4]], [[5, -5]]]
    assert out["tokens"].take_rows(3, 1).tolist() == [[[6, -6], [7, -7]]]
    with pytest.raises(ValueError, match="offsets_input"):
        KernelPlan(backend.inputs, backend.outputs, ragged=Ragged(("ids",), mode="packed"))


def test_stage_reports_a_ragged_output_without_the_ragged_axis():
    backend = Recorder([TensorSpec("ids", "INT64", [-1, -1])], [TensorSpec("pooled", "FP32", [-1, 4])],
                       lambda i: {"pooled": np.zeros((i["ids"].shape[0], 2), np.float32)})
    plan = KernelPlan(backend.inputs, backend.outputs, ragged=Ragged(("ids",), outputs=("pooled",)))
    batch, _ = pack([np.ones((1, 3), np.int64), np.ones((1, 5), np.int64)])
    with pytest.raises(InferenceError, match="pooled"):
        plan.bind(backend).run({"ids": batch}, None, {}, True)


def test_stage_reduces_to_top_k_and_batch_reductions_respect_every_job():
    logits = np.random.default_rng(3).normal(size=(3, 40)).astype(np.float32)
    backend = Recorder([TensorSpec("x", "FP32", [-1, 1])], [TensorSpec("logits", "FP32", [-1, 40])],
                       lambda i: {"logits": logits})
    out = KernelPlan().bind(backend).run({"x": np.zeros((3, 1), np.float32)}, ["logits"], {"logits": 4}, True)
    assert isinstance(out["logits"], TopK)
    want = topk_reference(logits, 4)
    assert np.array_equal(out["logits"].values, want[0]) and np.array_equal(out["logits"].indices, want[1])
    unbatched = KernelPlan().bind(backend).run({"x": np.zeros((3, 1), np.float32)}, None, {"logits": 2}, False)
    assert np.array_equal(unbatched["logits"].indices, topk_reference(logits.reshape(1, -1), 2)[1])

    class Job:
        def __init__(self, outputs, reduce):
            self.outputs, self.reduce = outputs, reduce

    assert batch_reductions([Job(("a",), {"a": 2}), Job(("a", "b"), {"a": 5})]) == {"a": 5}
    assert batch_reductions([Job(("a",), {"a": 2}), Job(("a",), None)]) == {}  # one wants it whole
    assert batch_reductions([Job(("a",), {"a": 2}), Job(None, None)]) == {}
    assert batch_reductions([Job(("a",), {"a": 2}), Job(("b",), None)]) == {"a": 2}


def test_stage_without_cupy_runs_the_host_path_for_a_cuda_backend():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here; the fallback is for machines without it")
    except ImportError:
        pass

    class CudaBackend(Recorder):
        device = "cuda:0"

        def run_on_device(self, inputs, output_names=None):  # pragma: no cover - must not be called
            raise AssertionError("the device path needs CuPy")

    backend = CudaBackend([TensorSpec("x", "FP32", [-1, 3])], [TensorSpec("y", "FP32", [-1, 3])], lambda i: {"y": i["x"]})
    stage = KernelPlan().bind(backend)
    assert not stage.on_device
    assert isinstance(stage.run({"x": np.ones((1, 3), np.float32)}, None, {"y": 1}, True)["y"], TopK)


@pytest.mark.parametrize("image, ragged, message", [
    (ImageInput("nope", Normalize()), None, "not an input"),
    (ImageInput("ids", Normalize()), None, "FP32 or FP16"),
    (ImageInput("image", Normalize(mean=(1, 2))), None, "3 channels"),
    (ImageInput("half", Normalize(scale=1.0, std=(1e-3,))), None, "range"),
    (None, Ragged(("image",)), "dynamic axis 1"),
    (None, Ragged(("ids",), lengths_input="ids"), "separate"),
    (None, Ragged(("ids",), outputs=("missing",)), "not an output"),
    (None, Ragged(("ids",), pad_value=1e30), "does not fit"),
    (None, Ragged(("ids",), pad_value=0.5), "does not fit"),
])
def test_bad_kernel_settings_are_named(image, ragged, message):
    inputs = [TensorSpec("image", "FP32", [-1, 3, 8, 8]), TensorSpec("ids", "INT64", [-1, -1]),
              TensorSpec("half", "FP16", [-1, 3, 8, 8])]
    with pytest.raises((ValueError, OverflowError), match=message):
        KernelPlan(inputs, [TensorSpec("out", "FP32", [-1, 2])], image, ragged)


# the CUDA sources --------------------------------------------------------------------------------------
CU_FILES = sorted(p.name for p in resources.files("gpuserve.kernels").iterdir() if p.name.endswith(".cu"))


def test_every_kernel_has_a_cu_file():
    assert CU_FILES == ["preprocess.cu", "ragged.cu", "topk.cu"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("name", CU_FILES)
def test_cu_file_compiles_for_a_real_arch(name, tmp_path):
    source = resources.files("gpuserve.kernels").joinpath(name)
    result = subprocess.run(["nvcc", "-c", "-arch=sm_80", "--std=c++14", "-Werror", "all-warnings", "-o",
                             str(tmp_path / "k.o"), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_non_editable_install_ships_the_cu_files(tmp_path):
    """Package data: an installed gpuserve (not this checkout) must find kernels/*.cu at run time."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--no-compile", "--target", str(tmp_path / "site"), str(root)],
                           capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and "No module named" in build.stderr:  # pragma: no cover - a venv without pip/setuptools
        pytest.skip(f"cannot build here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    check = ("import gpuserve.kernels.cuda_module as m; "
             "print(m.__file__); print(all(len(m.source(n)) > 100 for n in ('preprocess.cu', 'ragged.cu', 'topk.cu')))")
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=str(tmp_path),
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    where, found = run.stdout.split()
    assert where.startswith(str(tmp_path / "site")) and found == "True"
