"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers.

onnxruntime is imported on the first load only, so importing gpuserve stays light. Thread counts
are set explicitly: ORT sizes its pools by host cores, not the container's share
(microsoft/onnxruntime#29510).

On CUDA every run goes through IOBinding: host inputs (the engine's pinned staging buffers) are bound
as they are and device inputs by pointer, outputs are bound on the device, and the session runs on a
stream this backend owns (`user_compute_stream`), so nothing is copied that the model does not need.
On the CPU `session.run` stays: IOBinding measured slower there (benchmarks/RESULTS.md, issue 6).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from gpuserve.backends import device_arrays
from gpuserve.backends.base import TensorSpec

logger = logging.getLogger("gpuserve.backends.onnx")

_ORT_TO_V2 = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64", "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES", "tensor(bfloat16)": "BF16",
}
_ORT_TO_NUMPY = {
    "tensor(bool)": np.bool_, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64, "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(float16)": np.float16, "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}
# Element types NumPy has no dtype for and nothing here converts: requests cannot hand them to ONNX Runtime.
# BF16 is served on the CPU: requests hold it as float32 (gpuserve/datatypes.py), converted at the session.
_NO_NUMPY_TYPE = {"tensor(float8e4m3fn)", "tensor(float8e4m3fnuz)", "tensor(float8e5m2)", "tensor(float8e5m2fnuz)",
                  "tensor(float4e2m1)"}
_BF16 = "tensor(bfloat16)"
_ONNX_BFLOAT16 = 16  # TensorProto.BFLOAT16
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider"}
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _ort():
    import onnxruntime as ort  # paid by the first ONNX load only

    return ort


_CUDA_LIBRARIES_TRIED = False


def load_cuda_libraries(ort) -> None:
    """Let the CUDA provider find CUDA and cuDNN where pip put them, once per process.

    onnxruntime-gpu's CUDA provider links cuBLAS, cuFFT, the CUDA runtime and cuDNN by name, and the
    loader searches only the system's paths, not the `nvidia-*` wheels pip installs (`pip install
    onnxruntime-gpu[cuda,cudnn]`, or the ones torch brought): there the provider fails to start and the
    model falls back to the CPU. onnxruntime >= 1.21's `preload_dlls` loads them from those wheels (or
    the system's paths) first. Absent (older or CPU builds) or failing, the session reports its own
    fallback as before."""
    global _CUDA_LIBRARIES_TRIED
    if _CUDA_LIBRARIES_TRIED:
        return
    _CUDA_LIBRARIES_TRIED = True
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or "CUDAExecutionProvider" not in ort.get_available_providers():
        return
    try:
        preload()
    except Exception as exc:  # noqa: BLE001 - a missing library is the provider's fallback to report
        logger.warning("onnxruntime could not preload the CUDA libraries: %s", exc)


def _dims(shape) -> List[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in (shape or [])]


def _spec(arg) -> TensorSpec:
    datatype = _ORT_TO_V2.get(arg.type)
    if datatype is None:
        raise ValueError(f"ONNX tensor '{arg.name}' has unsupported type {arg.type}")
    return TensorSpec(arg.name, datatype, _dims(arg.shape))


def _bf16_spec(arg, widened) -> TensorSpec:
    spec = _spec(arg)
    return TensorSpec(spec.name, "BF16", spec.shape) if arg.name in widened else spec


def cpu_threads() -> int:
    """Cores this process may use (cgroup affinity), not the host's count."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def wanted_providers(device: str, execution_provider: Optional[str] = None,
                     providers: Optional[Sequence[str]] = None) -> List[str]:
    """ORT provider names in order of preference; each GPU provider falls back to the next, then CPU."""
    if providers:
        names = [PROVIDERS.get(str(p).strip().lower(), str(p).strip()) for p in providers]
    else:
        choice = (execution_provider or ("cuda" if device.startswith("cuda") else "cpu")).lower()
        if choice not in PROVIDERS:
            raise ValueError(f"execution_provider must be one of cpu, cuda, tensorrt; got '{execution_provider}'")
        names = {"TensorrtExecutionProvider": list(_GPU_PROVIDERS),
                 "CUDAExecutionProvider": ["CUDAExecutionProvider"]}.get(PROVIDERS[choice], [])
    names = [n for i, n in enumerate(names) if n not in names[:i]]
    return [n for n in names if n != "CPUExecutionProvider"] + ["CPUExecutionProvider"]


def provider_chain(wanted: Sequence[str], available: Sequence[str], device: str) -> Tuple[List[str], str]:
    """The providers this process can start, and why it falls short of `wanted` ("" when it does not)."""
    if not device.startswith("cuda"):
        chain = ["CPUExecutionProvider"]
    else:
        chain = [n for n in wanted if n in available or n == "CPUExecutionProvider"]
    missing = [n for n in wanted if n not in chain]
    if not missing or wanted[0] == chain[0]:
        return chain, ""
    if not device.startswith("cuda"):
        why = f"{wanted[0]} asked for but the model runs on {device}"
    else:
        why = (f"{', '.join(missing)} not available in this onnxruntime "
               f"(available: {', '.join(available)})")
    return chain, f"{why}; using {chain[0]}"


def provider_options(name: str, device_index: int, stream_handle: Optional[int], trt_fp16: bool = False,
                     trt_engine_cache_path: Optional[str] = None, extra: Optional[dict] = None) -> dict:
    """Options for one GPU provider; ORT takes them as strings, and each provider parses its own.

    A user stream needs a non-zero handle (ORT treats 0 as "none"). The CUDA provider wants the stream as
    `has_user_compute_stream` + `user_compute_stream` and booleans as 0/1; the TensorRT provider refuses
    `has_user_compute_stream` ("Invalid TensorRT EP option", its `user_compute_stream` sets the flag) and
    wants booleans spelled True/False (checked against onnxruntime-gpu 1.31.1's option parser). A refused
    option fails the provider, and ORT then retries with the CUDA provider's defaults, losing our stream."""
    trt = name == "TensorrtExecutionProvider"
    flag = (lambda on: "True" if on else "False") if trt else (lambda on: "1" if on else "0")
    options: Dict[str, str] = {"device_id": str(device_index)}
    if stream_handle:
        if not trt:
            options["has_user_compute_stream"] = "1"
        options["user_compute_stream"] = str(int(stream_handle))
    if trt:
        options["trt_fp16_enable"] = flag(trt_fp16)
        if trt_engine_cache_path:
            os.makedirs(trt_engine_cache_path, exist_ok=True)
            options["trt_engine_cache_enable"] = flag(True)
            options["trt_engine_cache_path"] = str(trt_engine_cache_path)
            options["trt_timing_cache_enable"] = flag(True)
            options["trt_timing_cache_path"] = str(trt_engine_cache_path)
    for key, value in (extra or {}).items():
        options[str(key)] = flag(value) if isinstance(value, bool) else str(value)
    return options


class OnnxBackend:
    def __init__(self, path: str, device: str = "cpu", intra_op_threads: Optional[int] = None,
                 inter_op_threads: Optional[int] = None, graph_optimization_level: str = "all",
                 allow_spinning: bool = False, execution_provider: Optional[str] = None,
                 providers: Optional[Sequence[str]] = None, trt_fp16: bool = False,
                 trt_engine_cache_path: Optional[str] = None, provider_extra: Optional[Dict[str, dict]] = None,
                 user_stream: bool = True, execution_mode: str = "sequential", enable_mem_arena: Optional[bool] = None,
                 enable_mem_pattern: Optional[bool] = None, custom_op_libraries: Sequence[str] = (),
                 session_config: Optional[Dict[str, str]] = None, run_config: Optional[Dict[str, str]] = None):
        ort = _ort()
        options = ort.SessionOptions()
        for key, value in (session_config or {}).items():  # e.g. session.use_device_allocator_for_initializers
            options.add_session_config_entry(str(key), str(value))
        # Per-run entries (memory.enable_memory_arena_shrinkage) go with every run, as Triton's backend sets them
        self.run_options = None
        if run_config:
            self.run_options = ort.RunOptions()
            for key, value in run_config.items():
                self.run_options.add_run_config_entry(str(key), str(value))
        for library in custom_op_libraries:  # Triton's model_operations { op_library_filename }
            try:
                options.register_custom_ops_library(str(library))
            except Exception as exc:  # onnxruntime says only "Failed to load library": name it
                raise RuntimeError(f"custom operator library {library} could not be loaded: {exc}") from exc
        if execution_mode not in ("sequential", "parallel"):
            raise ValueError(f"execution_mode must be sequential or parallel, not {execution_mode!r}")
        options.intra_op_num_threads = intra_op_threads or cpu_threads()
        # parallel execution with one inter-op thread is sequential (ONNX Runtime says so and switches)
        options.inter_op_num_threads = inter_op_threads or (cpu_threads() if execution_mode == "parallel" else 1)
        options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if execution_mode == "parallel"
                                  else ort.ExecutionMode.ORT_SEQUENTIAL)
        if enable_mem_arena is not None:
            options.enable_cpu_mem_arena = enable_mem_arena
        if enable_mem_pattern is not None:
            options.enable_mem_pattern = enable_mem_pattern
        # Spinning workers burn the cores the event loop and staging need; off unless asked for.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if allow_spinning else "0")
        level = _LEVELS.get(graph_optimization_level)
        if level is None:
            raise ValueError(f"graph_optimization_level must be one of {', '.join(_LEVELS)}")
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        wanted = wanted_providers(device, execution_provider, providers)
        if wanted[0] in _GPU_PROVIDERS and device.startswith("cuda"):
            load_cuda_libraries(ort)
        chain, self.fallback = provider_chain(wanted, ort.get_available_providers(), device)
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        self.stream = device_arrays.new_stream(index) if chain[0] in _GPU_PROVIDERS and user_stream else None
        handle = self.stream.handle if self.stream is not None else None
        extra = {PROVIDERS.get(str(k).lower(), str(k)): v for k, v in (provider_extra or {}).items()}
        configured = [(name, provider_options(name, index, handle, trt_fp16, trt_engine_cache_path, extra.get(name)))
                      if name in _GPU_PROVIDERS else name for name in chain]
        # A provider that fails to start makes ORT retry with CUDA's defaults and say why only on stdout;
        # keep its words for the fallback note (a refused option must not pass for a missing library).
        said = io.StringIO()
        self.widened_inputs: set = set()  # BF16 tensors of a graph widened to float32 (backends/onnx_bf16.py)
        self.widened_outputs: set = set()
        with contextlib.redirect_stdout(said):
            try:
                self.session = ort.InferenceSession(str(path), sess_options=options, providers=configured)
            except Exception as exc:
                source = self._widened_bf16(path, exc, configured)
                self.session = ort.InferenceSession(source, sess_options=options, providers=configured)
        active = self.session.get_providers()
        started = next((n for n in chain if n in active), "CPUExecutionProvider")
        if started != chain[0]:
            note = f"onnxruntime could not start {chain[0]}; using {started}"
            error = next((line.strip() for line in said.getvalue().splitlines() if line.startswith("EP Error ")), "")
            if error:
                note = f"{note} ({error[:500]})"
            self._note_fallback(note)
        self.provider = started
        if started in _GPU_PROVIDERS:
            running = self._running_device_index(started, index)
            if running != index:
                self._note_fallback(f"onnxruntime runs {started} on cuda:{running}, not the cuda:{index} asked for")
                index = running
        self.device = f"cuda:{index}" if started in _GPU_PROVIDERS else "cpu"
        if self.device == "cpu" or not self._on_our_stream(started):
            self.stream = None  # then device inputs are waited for on the host, not ordered on a stream
        if self.fallback:
            logger.warning("%s: %s", path, self.fallback)
        self.device_index = index
        self.inputs = [_bf16_spec(arg, self.widened_inputs) for arg in self.session.get_inputs()]
        # Initializers the graph also lists as inputs: a request may override them (Triton's optional inputs)
        self.overridable_inputs = [_spec(arg) for arg in self.session.get_overridable_initializers()]
        every = [*self.session.get_inputs(), *self.session.get_outputs()]
        unserved = [f"{arg.name} ({arg.type})" for arg in every
                    if arg.type in _NO_NUMPY_TYPE or (arg.type == _BF16 and self.device != "cpu")]
        self.bf16_inputs = {arg.name for arg in self.session.get_inputs() if arg.type == _BF16}
        self.bf16_outputs = {arg.name for arg in self.session.get_outputs() if arg.type == _BF16}
        self._bf16_bits = bool(self.bf16_inputs or self.bf16_outputs)  # the session itself takes BF16
        self.bf16_inputs |= self.widened_inputs  # what requests and answers hold as float32, typed BF16
        self.bf16_outputs |= self.widened_outputs
        if unserved:  # the model would load READY and fail every request: say so at load instead
            raise ValueError(f"{path}: tensors {', '.join(unserved)} have no NumPy dtype, so no request can carry "
                             "them to ONNX Runtime here (BF16 is served on the CPU only); cast them to FP16 or FP32 "
                             "at the graph's inputs and outputs")
        self.outputs = [_bf16_spec(arg, self.widened_outputs) for arg in self.session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]
        self._output_types = {arg.name: arg.type for arg in self.session.get_outputs()}

    def _widened_bf16(self, path, exc: Exception, providers) -> bytes:
        """The graph widened to float32 where ONNX Runtime's CPU provider has no BF16 kernel for it, else
        `exc` again (see backends/onnx_bf16.py)."""
        import onnx

        from gpuserve.backends import onnx_bf16

        if "NOT_IMPLEMENTED" not in str(exc) or providers[0] != "CPUExecutionProvider":
            raise exc
        try:
            holds = onnx_bf16.holds_bf16(onnx.load(str(path), load_external_data=False))
        except Exception:
            holds = False
        if not holds:
            raise exc
        source, self.widened_inputs, self.widened_outputs = onnx_bf16.widened(path)
        self._note_fallback("onnxruntime has no CPU kernels for this model's BF16 operators; it computes in "
                            "float32 and its BF16 outputs are rounded to BF16")
        logger.warning("%s: %s", path, self.fallback)
        return source

    def _note_fallback(self, note: str) -> None:
        self.fallback = f"{self.fallback}; {note}" if self.fallback else note

    def _on_our_stream(self, provider: str) -> bool:
        """Whether ORT took our stream. Its own fallback (an EP that fails to start is dropped and the
        session retried with default CUDA options) loses the option, so ask the session, not our list."""
        if self.stream is None:
            return False
        try:
            given = self.session.get_provider_options().get(provider, {})
        except Exception:  # pragma: no cover - older onnxruntime without provider options
            return False
        return given.get("has_user_compute_stream") in ("1", "True", "true") or \
            given.get("user_compute_stream") not in (None, "", "0")

    def _running_device_index(self, provider: str, asked: int) -> int:
        """The device the provider really runs on: after ORT's own fallback (default CUDA options) it is
        device 0 whatever was asked for."""
        try:
            return int(self.session.get_provider_options().get(provider, {}).get("device_id", asked))
        except Exception:  # pragma: no cover - older onnxruntime without provider options
            return asked

    def run(self, inputs: Dict[str, np.ndarray], output_names: Optional[Sequence[str]] = None
            ) -> Dict[str, np.ndarray]:
        names = list(output_names) if output_names else self._output_names
        if self.device == "cpu":
            if self._bf16_bits:
                return self._run_bf16(inputs, names)
            if self.widened_inputs:  # BF16 held as float32 already; the widened graph takes float32
                inputs = {k: (np.asarray(v, dtype=np.float32) if k in self.widened_inputs else v)
                          for k, v in inputs.items()}
            results = self.session.run(names, inputs, self.run_options)
            if self.widened_outputs:
                from gpuserve.backends.onnx_bf16 import round_to_bf16

                results = [round_to_bf16(r) if n in self.widened_outputs else r for n, r in zip(names, results)]
            return dict(zip(names, results))
        binding = self._bound_run(inputs, names)
        return dict(zip(names, binding.copy_outputs_to_cpu()))

    def _run_bf16(self, inputs: Dict[str, np.ndarray], names: Sequence[str]) -> Dict[str, np.ndarray]:
        """BF16 tensors cross as OrtValues of their 16-bit patterns (NumPy has no bfloat16); requests and
        answers hold them as float32, as tritonclient does."""
        from gpuserve.datatypes import bf16_from_bytes, bf16_to_bytes

        ort = _ort()
        feeds = {}
        for name, array in inputs.items():
            if name in self.bf16_inputs:
                bits = np.frombuffer(bf16_to_bytes(array), dtype=np.uint16).reshape(np.shape(array))
                feeds[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, onnx_element_type=_ONNX_BFLOAT16)
            else:
                feeds[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
        results = {}
        for name, value in zip(names, self.session.run_with_ort_values(list(names), feeds, self.run_options)):
            if name in self.bf16_outputs:
                shape = tuple(value.shape())
                count = int(np.prod(shape)) if shape else 1
                raw = (ctypes.c_uint16 * count).from_address(value.data_ptr())  # read while `value` lives
                results[name] = bf16_from_bytes(bytes(raw)).reshape(shape)
            else:
                results[name] = value.numpy()
        return results

    def run_on_device(self, inputs: Dict[str, object], output_names: Optional[Sequence[str]] = None
                      ) -> Dict[str, object]:
        """Outputs stay on the device, wrapped into CuPy without a copy (see backends/device_arrays.py)."""
        index = device_arrays.require_device("onnxruntime", self.device)
        device_arrays.cupy_module()
        names = list(output_names) if output_names else self._output_names
        strings = [n for n in names if self._output_types.get(n) == "tensor(string)"]
        if strings:
            raise ValueError(f"outputs {strings} are strings and cannot live on the device")
        binding = self._bound_run(inputs, names)
        results = {}
        for name, value in zip(names, binding.get_outputs()):
            dtype = _ORT_TO_NUMPY[value.data_type()]
            results[name] = device_arrays.wrap(value.data_ptr(), value.shape(), dtype, index, (value, binding))
        return results

    def _bound_run(self, inputs: Dict[str, object], names: Sequence[str]):
        """Bind, run on the device and wait for the outputs. A fresh binding per call: its outputs may be
        held by the caller (as CuPy arrays) after the next call starts."""
        binding = self.session.io_binding()
        cupy_stream = self.stream.cupy_stream if self.stream is not None else None
        held = []  # contiguous copies made here must outlive the run
        for name, value in inputs.items():
            if device_arrays.is_device_array(value):
                value = device_arrays.contiguous(value)
                held.append(value)
                device_arrays.wait_for_producer(value, cupy_stream)
                cai = device_arrays.interface(value)
                binding.bind_input(name, "cuda", self.device_index, np.dtype(cai["typestr"]), list(cai["shape"]),
                                   device_arrays.pointer(value))
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        on_device = "cuda" if self.device != "cpu" else "cpu"  # "cpu" only where the tests drive it
        for name in names:
            on = "cpu" if self._output_types.get(name) == "tensor(string)" else on_device
            binding.bind_output(name, on, self.device_index if on == "cuda" else 0)
        self.session.run_with_iobinding(binding, self.run_options)
        binding.synchronize_outputs()
        if self.stream is not None:
            self.stream.synchronize()
        del held
        return binding

    def unload(self) -> None:
        self.session = None
        self.stream = None
