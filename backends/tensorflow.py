"""TensorFlow backend: SavedModel folders and frozen GraphDef files, as Triton's TensorFlow backend serves
them (`platform: "tensorflow_savedmodel"` / `"tensorflow_graphdef"`) and TFServing serves SavedModels.

A SavedModel runs one signature (`serving_default` unless the config names another, Triton's
TF_SIGNATURE_DEF); its tensors are the signature's input and output *keys*, as Triton and TFServing name
them, not the graph's tensor names. A GraphDef describes no inputs or outputs, so its config must name them
(as in Triton): each name is an operation in the graph (its first output) or `op:N`; the graph is imported
once into a function pruned to the declared inputs and the outputs a batch asks for.

tensorflow is imported on the first TensorFlow load only. Its thread pools and GPU memory options are
process-wide and fixed once TensorFlow's runtime starts, so the first TensorFlow model sets them: the
intra/inter-op thread counts it asks for (Triton's TF_NUM_INTRA_THREADS / TF_NUM_INTER_THREADS, or
`intra_op_threads` / `inter_op_threads`; TensorFlow's defaults, which follow this process's CPU
affinity, otherwise), and memory growth on every GPU, so one model does not reserve all device memory.
A later model asking for other thread counts is told in the log that the first one's stand.

Runs are plain calls of the concrete function under `tf.device` (TensorFlow releases the GIL while it
computes); NumPy in, NumPy out. BYTES tensors are object arrays of bytes (tf.string), and BF16 tensors are
held as float32 (NumPy has no bfloat16 of its own), cast to and from bfloat16 at the call.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from gpuserve.backends.base import TensorSpec
from gpuserve.errors import ModelLoadError

logger = logging.getLogger("gpuserve.backends.tensorflow")

DEFAULT_SIGNATURE = "serving_default"  # tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY, Triton's and TFServing's
INSTALL_HINT = "pip install gpuserve[tensorflow] (tensorflow-cpu), or tensorflow[and-cuda] on a GPU machine"

_TF_TO_V2 = {"bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
             "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64", "float16": "FP16",
             "float32": "FP32", "float64": "FP64", "string": "BYTES", "bfloat16": "BF16"}

_LOCK = threading.Lock()
# The thread counts the process's TensorFlow runs with (None: its default), and whether its runtime had started
# before the first TensorFlow model, keeping what it had
_PROCESS: Optional[Dict[str, Any]] = None


def _tf(intra_op_threads: Optional[int] = None, inter_op_threads: Optional[int] = None):
    """The tensorflow module, its process-wide options set on the first call; a missing tensorflow is a
    load error that names the extra to install."""
    global _PROCESS
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines (oneDNN, CPU features) at import
    try:
        import tensorflow as tf  # paid by the first TensorFlow load only (about 5 s)
    except ImportError as exc:
        raise ModelLoadError(f"tensorflow is not installed ({exc}); {INSTALL_HINT}") from None
    wanted = {"intra_op_threads": intra_op_threads or None, "inter_op_threads": inter_op_threads or None}
    with _LOCK:
        if _PROCESS is None:
            _PROCESS = _configure(tf, wanted)
        elif any(value and value != _PROCESS.get(key) for key, value in wanted.items()):
            logger.warning("tensorflow's thread pools are process-wide and were set by the first TensorFlow model "
                           "(intra_op_threads %s, inter_op_threads %s); this model's %s are not applied",
                           _PROCESS["intra_op_threads"] or "default", _PROCESS["inter_op_threads"] or "default",
                           {k: v for k, v in wanted.items() if v})
    return tf


def _configure(tf, wanted: Dict[str, Optional[int]]) -> Dict[str, Any]:
    """Thread counts and GPU memory growth, before TensorFlow's runtime starts; where it has started already
    (the embedding program ran TensorFlow first), what it runs with stays, said in the log."""
    threading_config = tf.config.threading
    setters = {"intra_op_threads": threading_config.set_intra_op_parallelism_threads,
               "inter_op_threads": threading_config.set_inter_op_parallelism_threads}
    kept = False
    for key, value in wanted.items():
        if value:
            try:
                setters[key](int(value))
            except RuntimeError as exc:  # "cannot be modified after initialization"
                kept = True
                logger.warning("tensorflow %s stays as it is: %s", key, exc)
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError) as exc:  # the runtime started already, or a virtual device setup
            logger.warning("tensorflow memory growth not set on %s: %s", gpu.name, exc)
    return {"intra_op_threads": threading_config.get_intra_op_parallelism_threads() or None,
            "inter_op_threads": threading_config.get_inter_op_parallelism_threads() or None, "kept": kept}


def placement(tf, device: str) -> Tuple[str, str, str]:
    """(TensorFlow device string, gpuserve device, why it falls short of `device` or "") for a model asked to
    run on `device` (cpu | cuda | cuda:N). TensorFlow places ops on a GPU by itself wherever it sees one, so
    a CPU model is pinned to /CPU:0 too."""
    if not device.startswith("cuda"):
        return "/CPU:0", "cpu", ""
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    gpus = tf.config.list_physical_devices("GPU")
    if index < len(gpus):
        return f"/GPU:{index}", f"cuda:{index}", ""
    if not tf.test.is_built_with_cuda():
        why = f"this tensorflow ({tf.__version__}) is built without CUDA (tensorflow-cpu); install tensorflow[and-cuda]"
    else:
        why = f"tensorflow sees {len(gpus)} GPU(s) (its CUDA libraries missing or not matching the driver?)"
    return "/CPU:0", "cpu", f"{device} asked for but {why}; using cpu"


def v2_datatype(dtype, what: str) -> str:
    datatype = _TF_TO_V2.get(getattr(dtype, "name", str(dtype)))
    if datatype is None:
        raise ModelLoadError(f"{what} has type {getattr(dtype, 'name', dtype)}, which no V2 datatype carries")
    return datatype


def dims(shape, what: str, declared: Optional[List[int]] = None) -> List[int]:
    """A TensorShape as V2 dims, -1 for each unknown one; a tensor of unknown rank takes the declared dims."""
    if shape is None or shape.rank is None:
        if declared is not None:
            return list(declared)
        raise ModelLoadError(f"{what} has no known rank; give the signature a TensorSpec with a shape "
                             "(None for dynamic dimensions)")
    return [-1 if d is None else int(d) for d in shape.as_list()]


def graph_tensor_name(name: str) -> str:
    """A config's GraphDef tensor name as the graph knows it: `op` is the op's first output, `op:N` as given."""
    return name if ":" in name else f"{name}:0"


class TensorFlowBackend:
    # A concrete function may be called from several threads at once; placement is per call (tf.device).
    runs_on_any_thread = True

    def __init__(self, path: str, device: str = "cpu", graphdef: bool = False,
                 signature: Optional[str] = None, tags: Optional[Sequence[str]] = None,
                 inputs: Optional[List[TensorSpec]] = None, outputs: Optional[List[TensorSpec]] = None,
                 intra_op_threads: Optional[int] = None, inter_op_threads: Optional[int] = None,
                 shared: Optional["TensorFlowBackend"] = None):
        """`inputs`/`outputs`: a config's declared tensors (the model's own dims, batch dimension included);
        a GraphDef needs them, a SavedModel describes its own. `shared`: another instance on this device
        whose loaded model this one calls too (a concrete function runs concurrently from many threads;
        loading it once per instance would only copy the weights)."""
        tf = self._tf = _tf(intra_op_threads, inter_op_threads)
        self.path = str(path)
        self.graphdef = graphdef
        self.signature = signature or DEFAULT_SIGNATURE
        self.tags = list(tags) if tags else None
        self._signature_defs: Optional[Dict[str, dict]] = None
        self._place, self.device, self.fallback = placement(tf, device)
        if self.fallback:
            logger.warning("%s: %s", path, self.fallback)
        self.max_concurrency = 2 if self.device != "cpu" else 1  # GPU: one batch's copies beside another's compute
        self._pruned: Dict[Tuple[str, ...], object] = {}
        if shared is not None and shared.device == self.device:
            self._take(shared)
        elif graphdef:
            self._load_graphdef(tf, inputs, outputs)
        else:
            self._load_savedmodel(tf, tags, inputs, outputs)
        self._output_names = [spec.name for spec in self.outputs]
        self._in_dtypes = {spec.name: self._tf_dtype(spec) for spec in self.inputs}
        self.bf16_inputs = {spec.name for spec in self.inputs if spec.datatype == "BF16"}
        self.bf16_outputs = {spec.name for spec in self.outputs if spec.datatype == "BF16"}

    def _take(self, other: "TensorFlowBackend") -> None:
        self._signature_defs = other._signature_defs
        self.loaded, self.function, self._wrapped = other.loaded, other.function, other._wrapped
        self._feeds, self._fetches = other._feeds, other._fetches
        self.inputs, self.outputs = list(other.inputs), list(other.outputs)

    def _tf_dtype(self, spec: TensorSpec):
        tf = self._tf
        names = {v: k for k, v in _TF_TO_V2.items()}
        return getattr(tf, "string" if spec.datatype == "BYTES" else names[spec.datatype])

    # loading ----------------------------------------------------------------------------------------
    def _load_savedmodel(self, tf, tags, inputs, outputs) -> None:
        if not (Path(self.path) / "saved_model.pb").is_file() and not (Path(self.path) / "saved_model.pbtxt").is_file():
            raise ModelLoadError(f"{self.path} is not a SavedModel folder (it has no saved_model.pb)")
        try:
            with tf.device(self._place):  # variables live where the model runs
                self.loaded = tf.saved_model.load(self.path, tags=list(tags) if tags else None)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelLoadError(f"tensorflow could not load the SavedModel {self.path} "
                                 f"({type(exc).__name__}: {first[:500]})") from None
        signatures = getattr(self.loaded, "signatures", None) or {}
        if self.signature not in signatures:
            raise ModelLoadError(f"SavedModel {self.path} has no signature '{self.signature}' (it has: "
                                 f"{', '.join(sorted(signatures)) or 'none'}); name one with the TF_SIGNATURE_DEF "
                                 "parameter")
        self.function = signatures[self.signature]
        self._wrapped, self._feeds, self._fetches = None, {}, {}
        args, kwargs = self.function.structured_input_signature
        if args:  # loaded signatures take keywords only; anything else is not a signature Triton could serve
            raise ModelLoadError(f"signature '{self.signature}' of {self.path} takes positional arguments")
        declared_in = {spec.name: spec.shape for spec in inputs or ()}
        declared_out = {spec.name: spec.shape for spec in outputs or ()}
        self.inputs = [TensorSpec(key, v2_datatype(spec.dtype, f"input '{key}'"),
                                  dims(spec.shape, f"input '{key}'", declared_in.get(key)))
                       for key, spec in sorted(kwargs.items())]
        shapes, dtypes = self.function.output_shapes, self.function.output_dtypes
        if not isinstance(dtypes, dict):  # a signature's outputs are a dict of named tensors
            raise ModelLoadError(f"signature '{self.signature}' of {self.path} does not name its outputs")
        self.outputs = [TensorSpec(key, v2_datatype(dtypes[key], f"output '{key}'"),
                                   dims(shapes[key], f"output '{key}'", declared_out.get(key)))
                        for key in sorted(dtypes)]

    def _load_graphdef(self, tf, inputs, outputs) -> None:
        if not inputs or not outputs:
            raise ModelLoadError("a GraphDef does not describe its inputs and outputs: its config.pbtxt must list "
                                 "them (input [...] and output [...], named as the graph's operations)")
        try:
            graph_def = tf.compat.v1.GraphDef()
            graph_def.ParseFromString(Path(self.path).read_bytes())
        except Exception as exc:
            raise ModelLoadError(f"{self.path} is not a GraphDef protobuf ({type(exc).__name__}: {exc})") from None

        def imported():
            tf.compat.v1.import_graph_def(graph_def, name="")

        try:
            with tf.device(self._place):
                self._wrapped = tf.compat.v1.wrap_function(imported, [])
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelLoadError(f"tensorflow could not import the GraphDef {self.path} "
                                 f"({type(exc).__name__}: {first[:500]})") from None
        self.loaded, self.function = None, None
        graph = self._wrapped.graph

        def tensor(spec: TensorSpec, kind: str):
            try:
                return graph.get_tensor_by_name(graph_tensor_name(spec.name))
            except (KeyError, ValueError):
                raise ModelLoadError(f"{kind} '{spec.name}' is not a tensor of the GraphDef {self.path}") from None

        self._feeds = {spec.name: tensor(spec, "input") for spec in inputs}
        self._fetches = {spec.name: tensor(spec, "output") for spec in outputs}
        self.inputs = [TensorSpec(spec.name, v2_datatype(t.dtype, f"input '{spec.name}'"),
                                  dims(t.shape, f"input '{spec.name}'", spec.shape))
                       for spec, t in zip(inputs, self._feeds.values())]
        self.outputs = [TensorSpec(spec.name, v2_datatype(t.dtype, f"output '{spec.name}'"),
                                   dims(t.shape, f"output '{spec.name}'", spec.shape))
                        for spec, t in zip(outputs, self._fetches.values())]

    def _pruned_for(self, names: Tuple[str, ...]):
        """The GraphDef's function from the inputs to these outputs, built once per set of outputs."""
        pruned = self._pruned.get(names)
        if pruned is None:
            with _LOCK:
                pruned = self._pruned.get(names)
                if pruned is None:
                    pruned = self._wrapped.prune(feeds=list(self._feeds.values()),
                                                 fetches=[self._fetches[n] for n in names])
                    self._pruned[names] = pruned
        return pruned

    # running ------------------------------------------------------------------------------------------
    def _tensor(self, name: str, array):
        tf = self._tf
        dtype = self._in_dtypes.get(name)
        if name in self.bf16_inputs:  # held as float32
            return tf.cast(tf.constant(np.asarray(array, dtype=np.float32)), tf.bfloat16)
        return tf.constant(array, dtype=dtype)

    def _numpy(self, name: str, tensor) -> np.ndarray:
        if name in self.bf16_outputs:
            return tensor.numpy().astype(np.float32)  # exact: every bfloat16 is a float32
        return tensor.numpy()

    def run(self, inputs: Dict[str, np.ndarray], output_names: Optional[Sequence[str]] = None
            ) -> Dict[str, np.ndarray]:
        names = tuple(output_names) if output_names else tuple(self._output_names)
        tf = self._tf
        with tf.device(self._place):
            feeds = {name: self._tensor(name, array) for name, array in inputs.items()}
            if self._wrapped is not None:
                results = self._pruned_for(names)(*[feeds[name] for name in self._feeds])
                return {name: self._numpy(name, t) for name, t in zip(names, results)}
            results = self.function(**feeds)
        return {name: self._numpy(name, results[name]) for name in names}

    # a SavedModel's other signatures (TensorFlow Serving's clients name them per request) ----------------------
    def signatures(self) -> Dict[str, Tuple[List[TensorSpec], List[TensorSpec]]]:
        """Every signature of the SavedModel that takes keywords and names its outputs: (inputs, outputs) by
        name, the served one included. A GraphDef has none."""
        found = {}
        for name, function in sorted((getattr(self.loaded, "signatures", None) or {}).items()):
            args, kwargs = function.structured_input_signature
            dtypes, shapes = function.output_dtypes, function.output_shapes
            if args or not isinstance(dtypes, dict):
                continue
            try:
                found[name] = ([TensorSpec(k, v2_datatype(s.dtype, k), dims(s.shape, k, None))
                                for k, s in sorted(kwargs.items())],
                               [TensorSpec(k, v2_datatype(dtypes[k], k), dims(shapes[k], k, None))
                                for k in sorted(dtypes)])
            except ModelLoadError:  # a tensor type gpuserve has no V2 datatype for: not offered
                continue
        return found

    def signature_defs(self) -> Dict[str, dict]:
        """Each SignatureDef of the SavedModel's served MetaGraph as saved_model.pb holds it: {name: {"method_name":
        ..., "inputs": {key: DataType number}, "outputs": {...}}}. A loaded signature forgets its method_name, and
        TensorFlow Serving's Classify and Regress go by it; a signature with tensors of types gpuserve has no V2
        datatype for is described here too. A GraphDef has none."""
        if self._signature_defs is None:
            self._signature_defs = {} if self.graphdef else _read_signature_defs(Path(self.path), self.tags)
        return self._signature_defs

    def run_signature(self, signature: str, inputs: Dict[str, np.ndarray], output_names: Sequence[str]
                      ) -> Dict[str, np.ndarray]:
        """One unbatched call of another signature of the SavedModel (the served one goes through run())."""
        tf = self._tf
        function = (getattr(self.loaded, "signatures", None) or {})[signature]
        _, kwargs = function.structured_input_signature
        with tf.device(self._place):
            feeds = {}
            for name, array in inputs.items():
                dtype = kwargs[name].dtype
                if dtype == tf.bfloat16:
                    feeds[name] = tf.cast(tf.constant(np.asarray(array, dtype=np.float32)), tf.bfloat16)
                else:
                    feeds[name] = tf.constant(array, dtype=dtype)
            results = function(**feeds)
        out = {}
        for name in output_names:
            value = results[name]
            out[name] = value.numpy().astype(np.float32) if value.dtype == tf.bfloat16 else value.numpy()
        return out

    def unload(self) -> None:
        """Drop the model's references; the caller's collection (gpuserve.runtimes.release_memory) frees its
        variables and functions. Not tf.keras.backend.clear_session(): a loaded SavedModel keeps no Keras
        state, and clearing it would import Keras and reset globals other models' threads may be using.
        TensorFlow's GPU allocator keeps freed memory for its next model (as in Triton's backend)."""
        self.loaded = self.function = self._wrapped = None
        self._feeds, self._fetches, self._pruned = {}, {}, {}


def _read_signature_defs(folder: Path, tags: Optional[Sequence[str]]) -> Dict[str, dict]:
    """The SignatureDefs of the MetaGraph tf.saved_model.load serves: the one tagged as asked (`serve` by
    default), else the only one. Unreadable files describe nothing (the model loaded; only Classify and Regress
    then find no signature)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        if (folder / "saved_model.pb").is_file():
            saved.ParseFromString((folder / "saved_model.pb").read_bytes())
        else:
            from google.protobuf import text_format

            text_format.Parse((folder / "saved_model.pbtxt").read_text(), saved)
    except Exception as exc:  # a file tensorflow itself loaded: not expected
        logger.warning("%s: could not read its signatures' method names (%s)", folder, exc)
        return {}
    wanted = set(tags or ["serve"])
    graphs = [g for g in saved.meta_graphs if set(g.meta_info_def.tags) == wanted] or \
        (list(saved.meta_graphs) if len(saved.meta_graphs) == 1 else [])
    if not graphs:
        return {}
    return {name: {"method_name": sig.method_name,
                   "inputs": {key: info.dtype for key, info in sig.inputs.items()},
                   "outputs": {key: info.dtype for key, info in sig.outputs.items()}}
            for name, sig in graphs[0].signature_def.items()}
