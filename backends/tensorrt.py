"""TensorRT backend: serialized engines (`model.plan`) through the TensorRT Python API (10.x / 11.x).

The engine names its I/O tensors (`num_io_tensors`, `get_tensor_name/mode/dtype/shape`); -1 marks a
dynamic dimension, and optimization profile 0 bounds each one (`get_tensor_profile_shape` -> min,
opt, max). A batch sets its input shapes (`set_input_shape`), binds device buffers by address
(`set_tensor_address`) and runs with `execute_async_v3` on a stream this backend owns. Device buffers
come from CuPy (or torch when CuPy is absent). A batch larger than the profile allows is refused
with the limit named; the model also caps its batcher at that limit (`max_batch_size`).

Written against the TensorRT API; it needs a GPU, the driver and the `tensorrt` wheel, none of which
CI has. The shape and spec logic is tested on the CPU with a fake engine object
(tests/test_tensorrt_backend.py); the real engine path runs in benchmarks/gpu (verify_all.sh).
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from gpuserve.backends import device_arrays
from gpuserve.backends.base import TensorSpec
from gpuserve.errors import InvalidInput

logger = logging.getLogger("gpuserve.backends.tensorrt")

# trt.DataType member names -> (V2 datatype, NumPy dtype); BF16 and FP8 have no NumPy dtype we serve.
_TRT_TYPES = {"FLOAT": ("FP32", np.float32), "HALF": ("FP16", np.float16), "INT8": ("INT8", np.int8),
              "INT32": ("INT32", np.int32), "INT64": ("INT64", np.int64), "BOOL": ("BOOL", np.bool_),
              "UINT8": ("UINT8", np.uint8)}

Shape = Tuple[int, ...]
Limits = Dict[str, Tuple[Shape, Shape, Shape]]  # input -> the profile's (min, opt, max) shapes


def _trt():
    import tensorrt as trt  # paid by the first engine load only; needs the NVIDIA libraries

    return trt


def _type(tensor: str, dtype) -> Tuple[str, type]:
    name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
    found = _TRT_TYPES.get(name)
    if found is None:
        raise ValueError(f"TensorRT tensor '{tensor}' has type {name}, which gpuserve does not serve")
    return found


def describe(engine, profile: int = 0) -> Tuple[List[TensorSpec], List[TensorSpec], Limits]:
    """Inputs, outputs and, per input with dynamic dimensions, the profile's (min, opt, max) shapes."""
    inputs, outputs, limits = [], [], {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        datatype, _ = _type(name, engine.get_tensor_dtype(name))
        shape = [int(d) for d in engine.get_tensor_shape(name)]
        spec = TensorSpec(name, datatype, shape)
        if _is_input(engine.get_tensor_mode(name)):
            inputs.append(spec)
            if any(d < 0 for d in shape):
                low, opt, high = engine.get_tensor_profile_shape(name, profile)
                limits[name] = (tuple(int(d) for d in low), tuple(int(d) for d in opt), tuple(int(d) for d in high))
        else:
            outputs.append(spec)
    return inputs, outputs, limits


def _is_input(mode) -> bool:
    return getattr(mode, "name", str(mode).rsplit(".", 1)[-1]) == "INPUT"


def max_batch_size(inputs: Sequence[TensorSpec], limits: Limits) -> int:
    """Rows the profile allows when every input has a dynamic batch dimension, else 0 (no batching)."""
    if not inputs or any(not s.shape or s.shape[0] != -1 or s.name not in limits for s in inputs):
        return 0
    return min(limits[s.name][2][0] for s in inputs)


def check_shape(spec: TensorSpec, shape: Shape, limits: Limits) -> None:
    """Refuse, with the limit named, a shape the engine or its optimization profile cannot take."""
    if len(shape) != len(spec.shape) or any(d not in (-1, a) for d, a in zip(spec.shape, shape)):
        raise InvalidInput(f"input '{spec.name}' has shape {list(shape)}; the TensorRT engine takes {spec.shape}")
    bounds = limits.get(spec.name)
    if bounds is None:
        return
    low, _, high = bounds
    for axis, (size, lo, hi) in enumerate(zip(shape, low, high)):
        if not lo <= size <= hi:
            what = "batch size" if axis == 0 else f"dimension {axis}"
            raise InvalidInput(f"input '{spec.name}': {what} {size} is outside the TensorRT engine's optimization "
                               f"profile [{lo}, {hi}] (shape {list(shape)}, profile max {list(high)})")


# TensorRT's setTensorAddress: "The pointer must have at least 256-byte alignment" (NvInferRuntime.h)
TENSOR_ALIGNMENT = 256


class _CupyBuffers:
    def __init__(self, cupy, stream):
        self.cupy, self.stream = cupy, stream

    def to_device(self, host: np.ndarray):
        out = self.cupy.empty(host.shape, host.dtype)
        out.set(host, stream=self.stream)
        return out

    def empty(self, shape, dtype):
        return self.cupy.empty(shape, dtype)

    def copy_of(self, device_array):
        """A fresh (aligned) copy of any device array, made on our stream."""
        with self.stream:
            return self.cupy.array(device_array, copy=True)

    @staticmethod
    def pointer(array) -> int:
        return int(array.data.ptr)

    def to_host(self, array) -> np.ndarray:
        return array.get(stream=self.stream)

    def on_device(self, index: int):
        return self.cupy.cuda.Device(index)


class _TorchBuffers:
    """Where CuPy is absent: torch tensors as device buffers (the image may have only torch)."""

    def __init__(self, torch, device, stream):
        self.torch, self.device, self.stream = torch, device, stream

    def to_device(self, host: np.ndarray):
        with self.torch.cuda.stream(self.stream):
            return self.torch.from_numpy(host).to(self.device, non_blocking=True)

    def empty(self, shape, dtype):
        return self.torch.empty(tuple(shape), dtype=getattr(self.torch, np.dtype(dtype).name), device=self.device)

    def copy_of(self, device_array):
        """A fresh (aligned) copy of any device array, made on our stream."""
        with self.torch.cuda.stream(self.stream):
            return self.torch.as_tensor(device_array, device=self.device).clone()

    @staticmethod
    def pointer(array) -> int:
        return int(array.data_ptr())

    def to_host(self, array) -> np.ndarray:
        with self.torch.cuda.stream(self.stream):
            host = self.torch.empty(array.shape, dtype=array.dtype, pin_memory=True)
            host.copy_(array, non_blocking=True)
        self.stream.synchronize()
        return host.numpy()

    def on_device(self, index: int):
        return self.torch.cuda.device(index)


class TensorRTBackend:
    max_concurrency = 1  # one execution context, one stream; the instance thread runs batches in order

    def __init__(self, path: str, device: str = "cuda:0", profile: int = 0):
        trt = _trt()
        if not device.startswith("cuda"):
            raise RuntimeError(f"TensorRT engines run on a GPU only; this model was placed on {device}")
        self.device = device if ":" in device else f"{device}:0"
        self.device_index = int(self.device.split(":", 1)[1])
        self.fallback = ""
        self._stream = device_arrays.Stream(self.device_index)
        self._buffers = self._make_buffers()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with self._buffers.on_device(self.device_index):  # TensorRT loads onto the thread's current device
            self.engine = self._runtime.deserialize_cuda_engine(Path(path).read_bytes())
            if self.engine is None:
                raise RuntimeError(f"TensorRT could not deserialize {path} (built by another TensorRT version or "
                                   "for another GPU?)")
            self.context = self.engine.create_execution_context()
            if profile:
                self.context.set_optimization_profile_async(profile, self._stream.handle)
        self.inputs, self.outputs, self.limits = describe(self.engine, profile)
        self.max_batch_size = max_batch_size(self.inputs, self.limits)
        self._numpy = {s.name: _type(s.name, self.engine.get_tensor_dtype(s.name))[1]
                       for s in self.inputs + self.outputs}
        self._lock = threading.Lock()
        self._held = None
        self._scratch = None  # the address of empty outputs

    def _make_buffers(self):
        stream = self._stream
        if stream.cupy_stream is not None:
            import cupy

            return _CupyBuffers(cupy, stream.cupy_stream)
        import torch

        return _TorchBuffers(torch, torch.device(f"cuda:{self.device_index}"), stream.torch_stream)

    def run(self, inputs: Dict[str, np.ndarray], output_names: Optional[Sequence[str]] = None
            ) -> Dict[str, np.ndarray]:
        with self._lock:
            device = self._execute(inputs)
            names = list(output_names) if output_names else [s.name for s in self.outputs]
            host = {name: self._buffers.to_host(device[name]) for name in names}
            self._stream.synchronize()
            return host

    def run_on_device(self, inputs: Dict[str, object], output_names: Optional[Sequence[str]] = None
                      ) -> Dict[str, object]:
        """Outputs are the engine's own output buffers as CuPy arrays (fresh per call), synchronised."""
        device_arrays.require_device("TensorRT", self.device)
        cupy = device_arrays.cupy_module()
        with self._lock:
            device = self._execute(inputs)
            self._stream.synchronize()
        names = list(output_names) if output_names else [s.name for s in self.outputs]
        return {name: device[name] if isinstance(device[name], cupy.ndarray) else cupy.from_dlpack(device[name])
                for name in names}

    def _execute(self, inputs: Dict[str, object]) -> Dict[str, object]:
        with self._buffers.on_device(self.device_index):  # allocations land on this backend's GPU
            return self._enqueue(inputs)

    def _enqueue(self, inputs: Dict[str, object]) -> Dict[str, object]:
        """Shapes, addresses and one `execute_async_v3` on our stream; returns every output's device buffer
        (not yet synchronised). Every input is checked before anything is queued, and a failure after the
        first copy waits for the stream: queued copies must not outlive the buffers they read or write."""
        context, held = self.context, {}
        cupy_stream = self._stream.cupy_stream
        checked = []
        for spec in self.inputs:
            value = inputs.get(spec.name)
            if value is None:
                raise InvalidInput(f"TensorRT engine needs input '{spec.name}'")
            if device_arrays.is_device_array(value):
                # Bound by address alone: TensorRT would read another dtype's bytes as its own.
                dtype = np.dtype(device_arrays.interface(value)["typestr"])
                if dtype != self._numpy[spec.name]:
                    raise InvalidInput(f"input '{spec.name}' is a {dtype} device array; the TensorRT engine takes "
                                       f"{np.dtype(self._numpy[spec.name])}")
                shape = tuple(int(d) for d in device_arrays.interface(value)["shape"])
            else:
                value = np.ascontiguousarray(value, dtype=self._numpy[spec.name])
                shape = tuple(value.shape)
            check_shape(spec, shape, self.limits)
            checked.append((spec, value, shape))
        try:
            for spec, value, shape in checked:
                if device_arrays.is_device_array(value):
                    value = device_arrays.contiguous(value)
                    device_arrays.wait_for_producer(value, cupy_stream)
                    pointer = device_arrays.pointer(value)
                    if pointer % TENSOR_ALIGNMENT:  # e.g. a view from x[1:]
                        value = self._buffers.copy_of(value)
                        pointer = self._buffers.pointer(value)
                else:
                    value = self._buffers.to_device(value)
                    pointer = self._buffers.pointer(value)
                if not context.set_input_shape(spec.name, shape):
                    raise InvalidInput(f"TensorRT refused shape {list(shape)} for input '{spec.name}'")
                self._bind(spec.name, pointer)
                held[spec.name] = value
            outputs = {}
            for spec in self.outputs:
                shape = tuple(int(d) for d in context.get_tensor_shape(spec.name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"TensorRT output '{spec.name}' has a data-dependent shape {list(shape)}, "
                                       "which this backend does not serve")
                buffer = self._buffers.empty(shape, self._numpy[spec.name])
                # an empty output still needs a valid, aligned address (TensorRT refuses null)
                self._bind(spec.name, self._buffers.pointer(buffer) if math.prod(shape) else self._scratch_pointer())
                outputs[spec.name] = buffer
            if not context.execute_async_v3(self._stream.handle):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        except BaseException:
            self._stream.synchronize()
            raise
        self._held = held  # the inputs must outlive the work queued on the stream
        return outputs

    def _bind(self, name: str, pointer: int) -> None:
        if not self.context.set_tensor_address(name, pointer):
            raise RuntimeError(f"TensorRT refused the device address {pointer:#x} for tensor '{name}'")

    def _scratch_pointer(self) -> int:
        if self._scratch is None:
            self._scratch = self._buffers.empty((TENSOR_ALIGNMENT,), np.uint8)
        return self._buffers.pointer(self._scratch)

    def unload(self) -> None:
        self.context = None
        self.engine = None
        self._runtime = None
        self._held = None
        self._scratch = None


def build_engine(onnx_path, plan_path, profile: Limits, workspace_bytes: int = 1 << 30) -> Path:
    """Build `model.plan` from an ONNX model with one optimization profile {input: (min, opt, max)}.

    Plans are specific to the GPU and TensorRT version that built them, so this runs where the model
    will serve (the GPU checks use it to make their engine). The network is strongly typed in
    TensorRT 11 (no precision flags): the ONNX types are the engine's types.
    """
    trt = _trt()
    log = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(log)
    network = builder.create_network()
    parser = trt.OnnxParser(network, log)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    optimization = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        optimization.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    Path(plan_path).write_bytes(bytes(serialized))
    return Path(plan_path)
