"""PyTorch backend: TorchScript (`model.pt`) and `torch.export` programs (`model.pt2`).

On a GPU every worker thread owns one stream: inputs arrive in page-locked staging buffers, go
host-to-device, run, and come back device-to-host into page-locked tensors, all queued on that stream
before the thread waits on it once. With two threads per instance, one batch's copies run while the
other batch computes (profiled on an H200, benchmarks/RESULTS.md). A copy stream and a compute stream
per thread, ordered by events, was the first design: it cost 390 against 220 us a batch-1 call on the
H200 (the cross-stream waits), and added no overlap that the two threads' streams do not give. On the CPU
the same `run` is a plain call under inference mode. torch is imported on the first load only.
Optional CUDA graphs (backends/torch_graphs.py) replay captured batch sizes; `run_on_device` keeps
inputs and outputs on the GPU (DLPack to and from CuPy, no copies).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from gpuserve.backends import device_arrays, torch_aoti, torch_graphs, torch_strings
from gpuserve.backends.base import TensorSpec
from gpuserve.errors import InvalidInput, ModelLoadError

logger = logging.getLogger("gpuserve.backends.torch")

# torch.export.load keeps its deserializer in a module global ("_CURRENT_DESERIALIZER is already set" when
# two threads load at once), and the repository loads models in parallel: loads take turns.
_LOAD_LOCK = threading.Lock()

_TORCH_TO_V2 = {"bool": "BOOL", "uint8": "UINT8", "int8": "INT8", "int16": "INT16", "int32": "INT32",
                "int64": "INT64", "float16": "FP16", "float32": "FP32", "float64": "FP64", "bfloat16": "BF16",
                "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64"}


_CONFIG_NAMES = {"BYTES": "STRING"}  # V2 datatype -> the TYPE_ name a config.pbtxt uses, where they differ


def _torch():
    import torch  # paid by the first torch load only

    return torch


_UNLOCKED = contextlib.nullcontext()
_INDEX_SUFFIX = re.compile(r".*__(\d+)$")


def _torch_at_least(torch, major: int, minor: int) -> bool:
    try:
        have = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    except ValueError:  # a version string of another form: assume the older behaviour
        return False
    return have >= (major, minor)


# Request arrays are read-only views of the request body, and torch.export.load reads weights from
# read-only buffers; torch warns once about each ("not writable ... undefined behavior"). Nothing here
# writes into an input (inference mode, inputs are only read), so the warnings only alarm readers of
# the server log.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)


_LOADED_LIBRARIES: Dict[str, str] = {}  # op library as named -> the file torch loaded, once a process


def load_op_libraries(torch, libraries: Sequence[str], model_file: Path) -> None:
    """Custom operator libraries a model names (config.pbtxt's model_operations { op_library_filename }, as
    Triton's ONNX Runtime backend takes them; Triton's libtorch backend needs them LD_PRELOADed): loaded into
    torch before the model, a relative name found beside the model (its folder, then the version's) or else
    from the working directory, as dlopen would."""
    folder = model_file.parent.parent if model_file.parent.name.isdigit() else model_file.parent
    for library in libraries:
        named = Path(str(library))
        candidates = [named] if named.is_absolute() else [folder / named, model_file.parent / named, named]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ModelLoadError(f"custom operator library '{library}' not found (looked in "
                                 f"{', '.join(str(c.parent.resolve()) for c in candidates)})")
        key = str(found.resolve())
        if key in _LOADED_LIBRARIES.values():
            continue
        registers = _operators_of(key, library)
        have = {f"{schema.name}.{schema.overload_name}" for schema in torch._C._jit_get_all_schemas()}
        again = sorted(registers & have)
        if again and len(again) == len(registers):  # this library, or a copy of it, is loaded already
            logger.info("custom operator library %s: its operators are registered already", key)
        elif again:
            raise ModelLoadError(f"custom operator library '{library}' registers operators another library "
                                 f"registered already ({', '.join(again)}); loading it would abort the server")
        else:
            torch.ops.load_library(key)
            logger.info("Loaded custom operator library %s", key)
        _LOADED_LIBRARIES[str(library)] = key


_PROBE = """
import json, sys, torch
known = lambda: {f"{s.name}.{s.overload_name}" for s in torch._C._jit_get_all_schemas()}
before = known()
torch.ops.load_library(sys.argv[1])
print(json.dumps(sorted(known() - before)))
"""


def _operators_of(path: str, library: str) -> set:
    """The operators a library registers, found by loading it in a child process first: registering an
    operator twice (two copies of one library, two models' libraries) aborts the process in c10, and a
    library that fails in its initializers would take the server down with it."""
    import json
    import subprocess
    import sys

    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, path], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(f"custom operator library '{library}' did not load within 120 s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise ModelLoadError(f"custom operator library '{library}' could not be loaded: "
                             f"{lines[-1] if lines else f'exit status {done.returncode}'}")
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _script_load(torch, path: Path, map_location):
    """torch.jit.load, an operator no loaded library registers said with the way to name its library."""
    try:
        return torch.jit.load(str(path), map_location=map_location)
    except RuntimeError as exc:
        text = str(exc)
        if "Unknown builtin op" not in text:
            raise
        first = next((line.strip() for line in text.splitlines() if "Unknown builtin op" in line), text)
        raise ModelLoadError(f"{path.name} uses an operator torch does not know ({first}); name the library that "
                             f"registers it in config.pbtxt: model_operations {{ op_library_filename: "
                             f"\"LIBRARY.so\" }}") from None


def _export_load(torch, path: Path):
    """torch.export.load, its failure said as what the file is not (torch's own text is its deserializer's)."""
    try:
        return torch.export.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"{path.name} is neither a torch.export program (torch.export.save) nor an AOTInductor "
                             f"package (torch._inductor.aoti_compile_and_package) this torch can read "
                             f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
                             ) from None


def _spec_from_value(name: str, value) -> TensorSpec:
    dtype = str(value.dtype).replace("torch.", "")
    shape = [int(d) if str(d).lstrip("-").isdigit() else -1 for d in value.shape]
    return TensorSpec(name, _TORCH_TO_V2.get(dtype, "FP32"), shape)


def _in_file_order(declared: List[TensorSpec], found: List[TensorSpec]) -> List[TensorSpec]:
    """Declared inputs in the order the model's forward takes them, where the declared names are exactly
    its argument names (they are passed by position); else by Triton's NAME__N naming (N the position);
    otherwise as declared."""
    order = {spec.name: i for i, spec in enumerate(found)}
    if len(order) != len(declared) or any(spec.name not in order for spec in declared):
        return _by_index_suffix(declared)
    return sorted(declared, key=lambda spec: order[spec.name])


def _by_index_suffix(declared: List[TensorSpec]) -> List[TensorSpec]:
    """Sorted by N where every name ends in a distinct `__N`, as Triton's libtorch backend places them.
    A sequence model's control and state tensors (START__2, INPUT_STATE__1) are listed in its config apart
    from its inputs, so the declared order is not the position; taken as listed they reached the wrong
    arguments (qa/L0_sequence_batcher's libtorch implicit-state models)."""
    indices = [_INDEX_SUFFIX.match(spec.name) for spec in declared]
    if not declared or any(m is None for m in indices) or len({int(m.group(1)) for m in indices}) != len(declared):
        return list(declared)
    return [spec for _, spec in sorted(zip((int(m.group(1)) for m in indices), declared), key=lambda p: p[0])]


class TorchBackend:
    # Every call runs on its thread's own stream (and graph replays hold the graph's lock), so the engine may
    # call it from the event loop's thread too (a lone client's batch: engine/batcher.py).
    runs_on_any_thread = True

    def __init__(self, path: str, device: str = "cpu", threads: Optional[int] = None,
                 inputs: Optional[List[TensorSpec]] = None, outputs: Optional[List[TensorSpec]] = None,
                 precision: Optional[str] = None, compile: bool = False, overlap: bool = True,
                 cuda_graphs: bool = False, graph_batch_sizes: Sequence[int] = (), inference_mode: bool = True,
                 optimized_execution: bool = True, shared: Optional["TorchBackend"] = None,
                 placed_by_model: bool = False, name: str = "", op_libraries: Sequence[str] = ()):
        """`inference_mode` False runs under no_grad only and `optimized_execution` False turns TorchScript's
        graph optimizer off, as Triton's INFERENCE_MODE / DISABLE_OPTIMIZED_EXECUTION; `shared`: another
        instance on this device whose module (weights) this one runs too (ENABLE_WEIGHT_SHARING).
        `placed_by_model` (Triton's KIND_MODEL): the module keeps the devices it was saved with (it may span
        several) and moves its inputs itself; they arrive on the CPU."""
        torch = _torch()
        self.inference_mode = inference_mode
        self.optimized_execution = optimized_execution
        self.fallback = ""  # why this runs otherwise than asked; the model's metadata reports it
        if threads and device == "cpu":
            torch.set_num_threads(threads)
        if device.startswith("cuda") and not torch.cuda.is_available():
            self.fallback = f"{device} asked for but torch sees no GPU; running on CPU"
            logger.warning("%s: %s", path, self.fallback)
            device = "cpu"
        self.device = device
        self.torch_device = torch.device(device)
        path = Path(path)
        self.exported = path.suffix == ".pt2"
        name = name or path.parent.name
        load_op_libraries(torch, op_libraries, path)
        self.shares = shared is not None and shared.device == device
        with _LOAD_LOCK:
            if self.shares:
                self.module = shared.module
                found_in, found_out = shared._found
            elif self.exported and torch_aoti.is_aoti_package(path):
                self.module = torch_aoti.AotiModule(path, name, device, inputs, outputs)
                found_in, found_out = self.module.inputs, [spec for _, spec in self.module.outputs]
            elif self.exported:
                program = _export_load(torch, path)
                found_in, found_out = self._export_specs(program)
                self.module = program.module().to(self.torch_device)
            else:
                self.module = _script_load(torch, path, None if placed_by_model else self.torch_device)
                found_in, found_out = self._script_specs(self.module)
        self._found = (found_in, found_out)
        # A TorchScript file names its inputs but not their dtypes or shapes, nor a dict's keys: without
        # declared tensors (model-settings.json / config.pbtxt) requests bring their own dtypes, and a dict
        # return's outputs are known by its keys once it runs.
        self.loose_inputs = not self.exported and not inputs
        self.loose_outputs = not self.exported and not outputs and self._returns_dict(self.module)
        if not self.exported and not self.shares:  # an exported program's module is already in inference form
            self.module.eval()
        self.aoti = isinstance(self.module, torch_aoti.AotiModule)  # compiled code: no casts, compiles, graphs
        self.precision = None if self.aoti else {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            (precision or "").lower())
        if self.precision is not None and not self.shares and not self.aoti:
            self.module = self.module.to(self.precision)
        if compile and not self.shares and not self.aoti:
            self.module = torch.compile(self.module)
        self.inputs = _in_file_order(inputs, found_in) if inputs else found_in
        self.outputs = _by_index_suffix(outputs) if outputs else found_out
        self.declared_outputs = bool(outputs)
        self._local = threading.local()
        # Two batches in flight per instance on a GPU (one copying while the other computes).
        # overlap=False is the baseline the benchmarks compare against: synchronous, pageable copies.
        self.overlap = overlap
        self.max_concurrency = 2 if self.device != "cpu" and overlap else 1
        self.graphs: Dict[int, torch_graphs.CapturedGraph] = {}
        if cuda_graphs and self.device != "cpu" and not self.aoti:
            try:
                with self._mode():
                    self.graphs = torch_graphs.capture_graphs(
                        torch, lambda *args: self._outputs(self.module(*args)), self.inputs,
                        graph_batch_sizes or [1], self.torch_device, self._cast)
            except Exception as exc:  # a model that cannot be captured still serves, eagerly
                self.fallback = f"CUDA graph capture failed ({type(exc).__name__}: {exc}); running eagerly"
                logger.warning("%s: %s", path, self.fallback)
                self.graphs = {}
        self._graph_sizes = sorted(self.graphs)

    # description -------------------------------------------------------------------------------
    @staticmethod
    def _export_specs(program):
        signature = program.graph_signature
        user_inputs = list(signature.user_inputs)
        nodes = {n.name: n for n in program.graph.nodes}
        inputs = [_spec_from_value(name, nodes[name].meta["val"]) for name in user_inputs]
        # A program that returns a dict names its outputs by the dict's keys (its output tree says them, in
        # the order the outputs are flattened); anything else gets Triton's output__N.
        out_spec = getattr(getattr(program, "call_spec", None), "out_spec", None)
        keys = list(out_spec.context) if out_spec is not None and out_spec.type is dict else []
        outputs = []
        for index, name in enumerate(signature.user_outputs):
            node = nodes.get(name)
            value = node.meta.get("val") if node is not None else None
            label = str(keys[index]) if index < len(keys) else f"output__{index}"
            outputs.append(_spec_from_value(label, value) if value is not None else TensorSpec(label, "FP32", []))
        # A dimension marked dynamic at export is symbolic; the first is the batch dimension.
        return inputs, outputs

    @staticmethod
    def _script_specs(module):
        names = [i.debugName().split(".")[0] for i in list(module.graph.inputs())[1:]]
        inputs = [TensorSpec(name, "FP32", []) for name in names]
        returned = TorchBackend._return_type(module)
        count = len(returned.elements()) if returned is not None and returned.kind() == "TupleType" else 1
        return inputs, [TensorSpec(f"output__{i}", "FP32", []) for i in range(count)]

    @staticmethod
    def _returns_dict(module) -> bool:
        returned = TorchBackend._return_type(module)
        return returned is not None and returned.kind() == "DictType"

    @staticmethod
    def _return_type(module):
        """The TorchScript type `forward` returns (Tuple[...], Dict[...], Tensor), or None where it says none."""
        try:
            return module.forward.schema.returns[0].type
        except (AttributeError, IndexError, RuntimeError):
            return None

    # execution ---------------------------------------------------------------------------------
    def _mode(self):
        torch = _torch()
        grad = torch.inference_mode() if self.inference_mode else torch.no_grad()
        if self.optimized_execution or self.exported:
            return grad
        stack = contextlib.ExitStack()
        stack.enter_context(grad)
        stack.enter_context(torch.jit.optimized_execution(False))
        return stack

    def _stream(self):
        local = self._local
        if not hasattr(local, "stream"):
            local.stream = _torch().cuda.Stream(device=self.torch_device)
            local.stream_id = int(local.stream.cuda_stream)
        return local.stream

    def _eager_guard(self):
        """The lock of this thread's stream if a live CUDA graph was captured on it (torch_graphs.py: the two
        would share a cuBLAS workspace), else a no-op."""
        return torch_graphs.lock_for_stream(self._local.stream_id) or _UNLOCKED

    def run(self, inputs: Dict[str, np.ndarray], output_names: Optional[Sequence[str]] = None
            ) -> Dict[str, np.ndarray]:
        torch = _torch()
        names = [spec.name for spec in self.inputs]
        with self._mode():
            if self.device == "cpu" or not self.overlap or self._has_strings(inputs, names):
                args = [self._arg(inputs[n]) for n in names]
                results = self._outputs(self.module(*args))
                rows = self._rows(inputs, names)
                return self._select({k: self._host(k, v, rows) for k, v in results.items()}, output_names)
            graph = self._graph_for(inputs, names)
            if graph is not None:
                return self._select(self._replay(graph, inputs, names), output_names)
            stream = self._stream()
            with self._eager_guard(), torch.cuda.stream(stream):
                args = [self._cast(torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.torch_device,
                                                                                      non_blocking=True))
                        for n in names]
                host = {}
                for name, value in self._outputs(self.module(*args)).items():
                    if isinstance(value, (list, tuple)):  # a List[str] output is on the host already
                        host[name] = value
                        continue
                    buffer = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
                    buffer.copy_(value, non_blocking=True)
                    host[name] = buffer
                # Every tensor of this call was made and used on this stream alone, so the caching
                # allocator may hand its memory out again once it is freed; the staging buffers go
                # back to the pool only after this wait.
                stream.synchronize()
            rows = self._rows(inputs, names)
            return self._select({k: self._host(k, v, rows) for k, v in host.items()}, output_names)

    def _graph_for(self, inputs, names) -> Optional[torch_graphs.CapturedGraph]:
        if not self._graph_sizes or not names:
            return None
        size = torch_graphs.graph_size_for(int(np.shape(inputs[names[0]])[0]), self._graph_sizes)
        return self.graphs.get(size) if size is not None else None

    def _replay(self, graph: torch_graphs.CapturedGraph, inputs, names) -> Dict[str, np.ndarray]:
        """Host rows into the static buffers, replay, outputs back into pinned memory; one batch at a time
        per graph, on this thread's stream."""
        torch = _torch()
        rows = int(np.shape(inputs[names[0]])[0])
        compute = self._stream()
        with graph.lock, torch.cuda.stream(compute):
            for static, name in zip(graph.inputs, names):
                torch_graphs.fill_static(static, torch.from_numpy(np.ascontiguousarray(inputs[name])), rows)
            graph.graph.replay()
            host = {}
            for name, value in torch_graphs.slice_rows(graph.outputs, rows).items():
                buffer = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
                buffer.copy_(value, non_blocking=True)
                host[name] = buffer
            compute.synchronize()
        return {k: v.numpy() for k, v in host.items()}

    def run_on_device(self, inputs: Dict[str, object], output_names: Optional[Sequence[str]] = None
                      ) -> Dict[str, object]:
        """Inputs: NumPy or device arrays (CuPy, via DLPack); outputs: CuPy arrays on this device, synchronised."""
        device_arrays.require_device("torch", self.device)
        cupy = device_arrays.cupy_module()
        torch = _torch()
        names = [spec.name for spec in self.inputs]
        compute = self._stream()
        with self._mode(), self._eager_guard(), torch.cuda.stream(compute):
            args = []
            for name in names:
                value = inputs[name]
                if device_arrays.is_device_array(value):
                    tensor = torch.from_dlpack(value)  # the producer orders itself before this stream
                else:
                    tensor = torch.from_numpy(np.ascontiguousarray(value)).to(self.torch_device, non_blocking=True)
                args.append(self._cast(tensor))
            results = self._select(self._outputs(self.module(*args)), output_names)
            results = {name: value.contiguous() for name, value in results.items()}
            compute.synchronize()
        return {name: cupy.from_dlpack(value) for name, value in results.items()}

    def _has_strings(self, inputs, names) -> bool:
        """A call with a BYTES input goes the plain way (its List[str] has no device copy to overlap)."""
        return any(torch_strings.is_bytes_array(inputs[n]) for n in names)

    def _arg(self, array):
        """One forward argument: a BYTES array as Triton's flat List[str], else a tensor on this device."""
        if torch_strings.is_bytes_array(array):
            return torch_strings.to_list(array)
        return self._cast(_torch().from_numpy(np.ascontiguousarray(array)).to(self.torch_device))

    @staticmethod
    def _rows(inputs, names) -> Optional[int]:
        shape = np.shape(inputs[names[0]]) if names else ()
        return int(shape[0]) if shape else None

    def _host(self, name: str, value, rows: Optional[int]) -> np.ndarray:
        """An output on the host: a returned List[str] as BYTES, shaped as declared where it fits."""
        if isinstance(value, (list, tuple)):
            spec = next((s for s in self.outputs if s.name == name), None)
            return torch_strings.from_list(value, spec.shape if spec is not None else None, rows)
        return value.cpu().numpy()

    def _cast(self, tensor):
        if self.precision is not None and tensor.is_floating_point():
            return tensor.to(self.precision)
        return tensor

    def _outputs(self, result) -> Dict[str, object]:
        torch = _torch()
        names = [spec.name for spec in self.outputs]
        if isinstance(result, torch.Tensor):
            values = [result]
        elif isinstance(result, dict):
            return {k: self._uncast(v) for k, v in result.items()}
        elif isinstance(result, list) and (not result or isinstance(result[0], str)):
            values = [result]  # one List[str] output (TorchScript gives several outputs as a tuple)
        else:
            values = list(result)
        if self.declared_outputs:
            return self._declared_outputs(values)
        if len(names) < len(values):
            names = names + [f"output__{i}" for i in range(len(names), len(values))]
        return {name: self._uncast(value) for name, value in zip(names, values)}

    def _declared_outputs(self, values: list) -> Dict[str, object]:
        """Outputs a config declared, checked as Triton's libtorch backend checks them at each run: NAME__N
        is the forward's N-th return value (which must exist), and a tensor's dtype must be the declared one."""
        indices = [_INDEX_SUFFIX.match(spec.name) for spec in self.outputs]
        by_index = all(indices) and len({int(m.group(1)) for m in indices}) == len(indices)
        out = {}
        for position, spec in enumerate(self.outputs):
            index = int(indices[position].group(1)) if by_index else position
            if index >= len(values):
                if not by_index:
                    continue
                raise InvalidInput(f"The output {spec.name} in the model configuration refers to an output index "
                                   f"which doesn't exist. This model has {len(values)} outputs")
            value = self._uncast(values[index])
            dtype = getattr(value, "dtype", None)
            if dtype is not None and self.precision is None:
                given = _TORCH_TO_V2.get(str(dtype).replace("torch.", ""))
                if given is not None and given != spec.datatype:
                    raise InvalidInput(f"configuration expects datatype TYPE_{_CONFIG_NAMES.get(spec.datatype, spec.datatype)} "
                                       f"for output '{spec.name}', model provides "
                                       f"TYPE_{_CONFIG_NAMES.get(given, given)}")
            out[spec.name] = value
        return out

    def _uncast(self, tensor):
        if self.precision is not None and getattr(tensor, "dtype", None) == self.precision:
            return tensor.float()
        return tensor

    @staticmethod
    def _select(results: Dict[str, np.ndarray], wanted: Optional[Sequence[str]]) -> Dict[str, np.ndarray]:
        if not wanted:
            return results
        missing = [name for name in wanted if name not in results]
        if missing:
            raise InvalidInput(f"unexpected inference output {missing}; the model returned {sorted(results)}")
        return {name: results[name] for name in wanted}

    def unload(self) -> None:
        self.module = None
        self.graphs, self._graph_sizes = {}, []  # their capture streams are free once they are collected
        if self.device != "cpu":
            torch = _torch()
            # torch keeps a cuBLAS workspace (32 MiB on Hopper) for every (thread handle, stream) pair that ever
            # ran a matmul, for the life of the process; this model's threads and streams are gone, so each
            # unload would leave theirs behind (66 MiB a load on an H200, 2026-12-04). Dropping them all is safe
            # for models still serving (a stream's freed block is only reused on that stream, in order; the
            # next matmul makes a new one) from torch 2.10, whose workspace maps have a mutex (earlier ones
            # crash when another thread looks one up meanwhile: pytorch#167928), but not under a live CUDA
            # graph, which replays the workspace it was captured with: then they stay.
            clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
            if clear is not None and _torch_at_least(torch, 2, 10) and not torch_graphs.graphs_alive():
                clear()
            torch.cuda.empty_cache()
