"""The step between staging and the backend: what the model settings chose, run where the backend runs.

`KernelPlan` is built once per model from its settings and checked against the backend's tensors at
load (a bad setting is a load error naming it). It says what clients send (UINT8 NHWC images, ragged
token rows) while the backend keeps its own tensors (FP32/FP16 NCHW, padded rows plus lengths/mask).
`KernelStage` is the plan bound to one instance's backend. When the backend runs on CUDA, offers
`run_on_device` and CuPy is importable, it copies the small inputs host-to-device on its own stream,
runs the kernels there, hands device arrays to the backend and copies back only what the requests
need (packed ragged rows, top-k). Otherwise it runs the CPU paths and calls `backend.run` with NumPy,
so the same engine code serves everywhere.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from gpuserve.datatypes import to_numpy_dtype
from gpuserve.errors import InferenceError, InvalidInput
from gpuserve.kernels.cuda_module import cupy_module, device_index
from gpuserve.kernels.preprocess import Normalize, normalize_cpu, normalize_device
from gpuserve.kernels.ragged import (RaggedBatch, check_dense, check_packed, mask, pad_cpu, pad_device, unpad_cpu,
                                     unpad_device)
from gpuserve.kernels.topk import DEVICE_KERNELS, TopK, topk_cpu, topk_device


@dataclass(frozen=True)
class ImageInput:
    input: str
    normalize: Normalize


@dataclass(frozen=True)
class Ragged:
    """`pad`: the model takes [rows, longest, ...] padded with pad_value (and optionally lengths, a mask).
    `packed`: the model takes the rows back to back, [sum of lengths, ...], and their `offsets` (rows + 1)."""

    inputs: Tuple[str, ...]
    pad_value: float = 0
    lengths_input: Optional[str] = None
    mask_input: Optional[str] = None
    outputs: Tuple[str, ...] = ()
    mode: str = "pad"
    offsets_input: Optional[str] = None

    @property
    def packed(self) -> bool:
        return self.mode == "packed"


def _specs(specs) -> Dict[str, object]:
    return {s.name: s for s in specs}


class KernelPlan:
    """The kernels one model uses, checked against its backend's inputs and outputs (duck-typed specs)."""

    def __init__(self, backend_inputs: Sequence = (), backend_outputs: Sequence = (),
                 image: Optional[ImageInput] = None, ragged: Optional[Ragged] = None):
        self.image = image
        self.ragged = ragged
        self.table: Optional[np.ndarray] = None
        self.hidden: Tuple[str, ...] = ()
        inputs, outputs = _specs(backend_inputs), _specs(backend_outputs)
        if image is not None:
            self._check_image(inputs)
        if ragged is not None:
            self._check_ragged(inputs, outputs)

    @property
    def active(self) -> bool:
        return self.image is not None or self.ragged is not None

    @property
    def ragged_inputs(self) -> Tuple[str, ...]:
        return self.ragged.inputs if self.ragged is not None else ()

    # checks at load ----------------------------------------------------------------------------
    def _check_image(self, inputs) -> None:
        name = self.image.input  # (the images' layout matters to the kernel; the model input is NCHW)
        spec = inputs.get(name)
        if spec is None:
            raise ValueError(f"preprocess.input '{name}' is not an input of the model ({sorted(inputs)})")
        if spec.datatype not in ("FP32", "FP16"):
            raise ValueError(f"preprocess.input '{name}' is {spec.datatype}; the kernel writes FP32 or FP16")
        if len(spec.shape) != 4:
            raise ValueError(f"preprocess.input '{name}' has shape {list(spec.shape)}; the kernel writes "
                             "[batch, channels, height, width] (declare the model's input shape)")
        normalize = self.image.normalize
        channels = int(spec.shape[1])
        if channels < 1:
            channels = max(len(normalize.mean), len(normalize.std))
            if channels < 2:
                raise ValueError(f"preprocess.input '{name}' has a dynamic channel count; give one mean and std "
                                 "per channel")
        with np.errstate(over="ignore"):
            self.table = normalize.table(channels, to_numpy_dtype(spec.datatype))
        if not np.all(np.isfinite(self.table)):
            raise ValueError(f"preprocess maps some byte values outside {spec.datatype}'s range (scale, mean, std)")
        self.channels = channels
        self.image_spec = spec

    def _check_ragged(self, inputs, outputs) -> None:
        ragged = self.ragged
        if not ragged.inputs:
            raise ValueError("ragged.inputs names no input")
        if ragged.mode not in ("pad", "packed"):
            raise ValueError(f"ragged.mode must be pad or packed, got '{ragged.mode}'")
        if ragged.packed and (not ragged.offsets_input or ragged.mask_input):
            raise ValueError("ragged.mode packed needs offsets_input (and has no padding to mask)")
        for name in ragged.inputs:
            spec = inputs.get(name)
            if spec is None:
                raise ValueError(f"ragged input '{name}' is not an input of the model ({sorted(inputs)})")
            if ragged.packed and (len(spec.shape) < 1 or spec.shape[0] != -1):
                raise ValueError(f"ragged input '{name}' has shape {list(spec.shape)}; packed rows need a dynamic "
                                 "first axis (all rows' positions back to back)")
            if not ragged.packed and (len(spec.shape) < 2 or spec.shape[0] != -1 or spec.shape[1] != -1):
                raise ValueError(f"ragged input '{name}' has shape {list(spec.shape)}; it needs a dynamic batch "
                                 "axis and a dynamic axis 1 (the ragged one)")
            if self.image is not None and name == self.image.input:
                raise ValueError(f"input '{name}' cannot be both ragged and a preprocessed image")
            _check_pad(ragged.pad_value, spec)
        for role, name in (("lengths_input", ragged.lengths_input), ("mask_input", ragged.mask_input),
                           ("offsets_input", ragged.offsets_input)):
            if name is None:
                continue
            spec = inputs.get(name)
            if spec is None:
                raise ValueError(f"ragged.{role} '{name}' is not an input of the model ({sorted(inputs)})")
            if name in ragged.inputs or spec.datatype in ("BYTES", "BF16"):
                raise ValueError(f"ragged.{role} '{name}' must be a separate numeric input")
        for name in ragged.outputs:
            spec = outputs.get(name)
            if spec is None:
                raise ValueError(f"ragged output '{name}' is not an output of the model ({sorted(outputs)})")
            if spec.shape and len(spec.shape) < (1 if ragged.packed else 2):
                raise ValueError(f"ragged output '{name}' has shape {list(spec.shape)}; it needs the ragged axis")
        self.hidden = tuple(n for n in (ragged.lengths_input, ragged.mask_input, ragged.offsets_input) if n)
        self.input_specs = inputs

    # what clients see --------------------------------------------------------------------------
    def client_input(self, spec) -> Optional[Tuple[str, List[int]]]:
        """(datatype, shape) a client sends for backend input `spec`; None when the stage fills it in."""
        if spec.name in self.hidden:
            return None
        shape = list(spec.shape)
        if self.ragged is not None and self.ragged.packed and spec.name in self.ragged.inputs:
            return spec.datatype, [-1, -1] + shape[1:]  # clients send [rows, length, ...] as with padding
        if self.image is not None and spec.name == self.image.input:
            n, c, h, w = shape
            c = c if c > 0 else self.channels
            return "UINT8", ([n, h, w, c] if self.image.normalize.layout == "NHWC" else [n, c, h, w])
        return spec.datatype, shape

    def check_request(self, arrays: Dict[str, np.ndarray]) -> None:
        """Per request: ragged inputs agree on their length along axis 1, images on their fixed sizes."""
        if self.ragged is not None:
            lengths = {name: arrays[name].shape[1] for name in self.ragged.inputs if name in arrays}
            if len(set(lengths.values())) > 1:
                raise InvalidInput(f"ragged inputs must agree on their length along axis 1; got {lengths}")
        if self.image is not None and self.image.input in arrays:
            shape = arrays[self.image.input].shape
            expected = self.client_input(self.image_spec)[1]
            if any(e > 0 and e != a for e, a in zip(expected[1:], shape[1:])):
                raise InvalidInput(f"input '{self.image.input}' has shape {list(shape)}; expected {expected}")

    def bind(self, backend) -> "KernelStage":
        return KernelStage(self, backend)


NO_KERNELS = KernelPlan()


def batch_reductions(jobs) -> Dict[str, int]:
    """Outputs every job of the batch wants only as top-k (Job.reduce): name -> the largest k asked."""
    reduced: Dict[str, int] = {}
    for job in jobs:
        if job.reduce:
            for name, k in job.reduce.items():
                reduced[name] = max(reduced.get(name, 0), int(k))
    if not reduced:
        return reduced
    for job in jobs:
        if job.outputs is None:
            return {}
        for name in job.outputs:
            if name in reduced and not (job.reduce and name in job.reduce):
                del reduced[name]  # someone wants the whole output: copy it whole, reduce on the host
    return reduced


def _reduction_rows(shape: Tuple[int, ...], batched: bool) -> Optional[int]:
    """Rows top-k runs over, as the classification extension reads an output; None: leave it whole."""
    if batched:
        return int(shape[0]) if len(shape) > 1 and shape[0] > 0 else None
    return 1 if len(shape) > 0 else None


class KernelStage:
    def __init__(self, plan: KernelPlan, backend):
        self.plan = plan
        self.backend = backend
        self._cupy = None
        self._decided = False
        self._local = threading.local()
        self._device_table = None
        self._table_lock = threading.Lock()
        # The plan's, read once: a plan is complete before it is bound, and every batch asks
        self.ragged_inputs: Tuple[str, ...] = plan.ragged_inputs
        self.active: bool = plan.active

    @property
    def on_device(self) -> bool:
        """Whether this backend's batches take the device path (decided on first use: imports CuPy)."""
        if not self._decided:
            device = str(getattr(self.backend, "device", "cpu"))
            if device.startswith("cuda") and callable(getattr(self.backend, "run_on_device", None)):
                self._cupy = cupy_module()
            self._decided = True
        return self._cupy is not None

    def run(self, arrays: Dict[str, object], output_names: Optional[Sequence[str]], reductions: Dict[str, int],
            batched: bool) -> Dict[str, object]:
        """One batch through kernels and backend; ragged outputs come back as RaggedBatch, reduced ones as TopK."""
        if self.on_device:
            return self._run_device(arrays, output_names, reductions, batched)
        return self._run_host(arrays, output_names, reductions, batched)

    # host --------------------------------------------------------------------------------------
    def _run_host(self, arrays, output_names, reductions, batched):
        plan = self.plan
        inputs: Dict[str, object] = {}
        lengths = None
        for name, value in arrays.items():
            if isinstance(value, RaggedBatch):
                lengths, longest, offsets = value.lengths, value.max_length, value.offsets
                if plan.ragged.packed:
                    inputs[name] = value.packed.reshape((-1,) + value.inner)
                else:
                    inputs[name] = pad_cpu(value, plan.ragged.pad_value, longest)
            elif plan.image is not None and name == plan.image.input:
                inputs[name] = _as_input_error(normalize_cpu, value, plan.table, plan.image.normalize.layout)
            else:
                inputs[name] = value
        if lengths is not None:
            self._lengths_inputs(inputs, lengths, offsets, longest, np)
        results = self.backend.run(inputs, output_names)
        out: Dict[str, object] = {}
        for name, value in results.items():
            if lengths is not None and name in plan.ragged.outputs:
                if plan.ragged.packed:
                    _as_inference_error(name, check_packed, value, lengths)
                    out[name] = RaggedBatch(np.ascontiguousarray(value).reshape(-1), lengths, value.shape[1:])
                else:
                    packed = _as_inference_error(name, unpad_cpu, value, lengths)
                    out[name] = RaggedBatch(packed, lengths, value.shape[2:])
                continue
            rows = _reduction_rows(np.shape(value), batched) if name in reductions else None
            if rows is not None and value.dtype.kind in "fiu":
                out[name] = TopK(*topk_cpu(value.reshape(rows, -1), reductions[name]))
            else:
                out[name] = value
        return out

    def _lengths_inputs(self, inputs, lengths: np.ndarray, offsets, longest: int, xp) -> None:
        """The inputs the stage fills in: row lengths, the padding mask, packed rows' offsets."""
        ragged, specs = self.plan.ragged, self.plan.input_specs
        if ragged.offsets_input:
            inputs[ragged.offsets_input] = xp.asarray(offsets).astype(
                to_numpy_dtype(specs[ragged.offsets_input].datatype))
        if ragged.lengths_input:
            spec = specs[ragged.lengths_input]
            value = xp.asarray(lengths).astype(to_numpy_dtype(spec.datatype))
            inputs[ragged.lengths_input] = value.reshape(-1, 1) if len(spec.shape) == 2 else value
        if ragged.mask_input:
            dtype = to_numpy_dtype(self.plan.input_specs[ragged.mask_input].datatype)
            if xp is np:
                inputs[ragged.mask_input] = mask(lengths, longest, dtype)
            else:
                inputs[ragged.mask_input] = (xp.arange(longest)[None, :] < xp.asarray(lengths)[:, None]).astype(dtype)

    # device ------------------------------------------------------------------------------------
    def _stream(self):
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = self._cupy.cuda.Stream(non_blocking=True)
        return stream

    def _to_device(self, host: np.ndarray, stream):
        """One async host-to-device copy on `stream` (asynchronous when `host` is page-locked staging)."""
        device = self._cupy.empty(host.shape, dtype=host.dtype)
        device.set(np.ascontiguousarray(host), stream=stream)
        return device

    def _table(self, stream):
        """The image map's table on the device, copied once; complete before any thread's stream reads it."""
        if self._device_table is None:
            with self._table_lock:
                if self._device_table is None:
                    table = self._to_device(self.plan.table, stream)
                    stream.synchronize()
                    self._device_table = table
        return self._device_table

    def _run_device(self, arrays, output_names, reductions, batched):
        cp, plan = self._cupy, self.plan
        with cp.cuda.Device(device_index(self.backend.device)):
            stream = self._stream()
            inputs: Dict[str, object] = {}
            lengths = offsets = None
            with stream:
                for name, value in arrays.items():
                    if isinstance(value, RaggedBatch):
                        lengths, longest = value.lengths, value.max_length
                        if offsets is None:
                            offsets = self._to_device(value.offsets, stream)
                        packed = self._to_device(value.packed, stream)
                        if plan.ragged.packed:
                            inputs[name] = packed.reshape((-1,) + value.inner)
                        else:
                            inputs[name] = pad_device(packed, offsets, value.rows, longest, value.inner,
                                                      plan.ragged.pad_value, stream)
                    elif plan.image is not None and name == plan.image.input:
                        images = self._to_device(value, stream)
                        inputs[name] = _as_input_error(normalize_device, images, self._table(stream),
                                                       plan.image.normalize.layout, stream)
                    else:
                        inputs[name] = value  # the backend copies plain NumPy inputs itself
                if lengths is not None:
                    self._lengths_inputs(inputs, lengths, offsets, longest, cp)
            stream.synchronize()  # the backend computes on its own stream: our inputs must be complete
            results = self.backend.run_on_device(inputs, output_names)
            out: Dict[str, object] = {}
            with stream:
                for name, value in results.items():
                    if lengths is not None and name in plan.ragged.outputs:
                        if plan.ragged.packed:
                            _as_inference_error(name, check_packed, value, lengths)
                            packed, inner = value.reshape(-1), tuple(value.shape[1:])
                        else:
                            _as_inference_error(name, check_dense, value, lengths)
                            packed = unpad_device(value, offsets, int(lengths.sum()), stream)
                            inner = tuple(value.shape[2:])
                        out[name] = RaggedBatch(cp.asnumpy(packed, stream=stream), lengths, inner)
                        continue
                    rows = _reduction_rows(tuple(value.shape), batched) if name in reductions else None
                    if rows is not None and np.dtype(value.dtype) in DEVICE_KERNELS:
                        top, index = topk_device(value.reshape(rows, -1), reductions[name], stream)
                        out[name] = TopK(cp.asnumpy(top, stream=stream), cp.asnumpy(index, stream=stream))
                    else:
                        host = cp.asnumpy(value, stream=stream)
                        if rows is not None and host.dtype.kind in "fiu":
                            host = TopK(*topk_cpu(host.reshape(rows, -1), reductions[name]))
                        out[name] = host
            stream.synchronize()
        return out


def _check_pad(pad_value: float, spec) -> None:
    dtype = to_numpy_dtype(spec.datatype)
    with np.errstate(all="ignore"):
        cast = np.array(pad_value, dtype=np.float64).astype(dtype)
    if (dtype.kind in "iub" and float(cast) != float(pad_value)) or \
            (dtype.kind == "f" and np.isfinite(pad_value) and not np.isfinite(cast)):
        raise ValueError(f"ragged.pad_value {pad_value} does not fit input '{spec.name}' ({spec.datatype})")


def _as_input_error(function, *args):
    try:
        return function(*args)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _as_inference_error(name, function, *args):
    try:
        return function(*args)
    except ValueError as exc:
        raise InferenceError(f"output '{name}': {exc}") from None
