"""A Triton Python model's files and configuration: its model.py imported as Triton's stub imports it,
`auto_complete_config` applied, and the completed config with the defaults Triton fills in, which is
what `initialize(args)["model_config"]` and the model configuration endpoints both show.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import threading
import types
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from gpuserve import triton_pb_utils as pb
from gpuserve.backends.base import TensorSpec
from gpuserve.errors import InvalidInput, InvalidSettings
from gpuserve.import_path import move_on_path
from gpuserve.triton_config import config_tensors
from gpuserve.triton_normalize import normalize
from gpuserve.triton_refusals import missing_inputs
from gpuserve.triton_request_check import check_request

UTILS_MODULE = "triton_python_backend_utils"
_IMPORT_LOCK = threading.Lock()  # models load on several threads; sys.path and sys.modules are shared
_INPUT_DEFAULTS = {"format": "FORMAT_NONE", "is_shape_tensor": False, "allow_ragged_batch": False, "optional": False,
                   "is_non_linear_format_io": False}
_OUTPUT_DEFAULTS = {"label_filename": "", "is_shape_tensor": False, "is_non_linear_format_io": False}
_OPTIMIZATION_DEFAULTS = {"priority": "PRIORITY_DEFAULT", "gather_kernel_buffer_threshold": 0, "eager_batching": False}
_BATCHER_DEFAULTS = {"preferred_batch_size": [], "max_queue_delay_microseconds": 0, "preserve_ordering": False,
                     "priority_levels": 0, "default_priority_level": 0, "priority_queue_policy": {}}


_RUNNING = threading.local()  # .module: the model module whose code this thread runs


class _RunningModel(types.ModuleType):
    """`model` in sys.modules. Triton's stub imports a model.py as `model`, and models find themselves by
    that name (qa's call `unittest.main("model")` to run their own tests); models share this process, so
    here `model` is the module of the model whose code the asking thread runs."""

    def __getattr__(self, name):
        module = getattr(_RUNNING, "module", None)
        if module is None:
            raise AttributeError(f"module 'model' has no attribute '{name}' (no model runs on this thread)")
        return getattr(module, name)

    def __dir__(self):
        module = getattr(_RUNNING, "module", None)
        return dir(module) if module is not None else []


def running_model(module) -> None:
    """This thread runs `module`'s code from now on (what `import model` gives it)."""
    _RUNNING.module = module


def install_utils_module() -> None:
    """`import triton_python_backend_utils` finds gpuserve's implementation (unless one is installed), and
    `import model` the running model's module."""
    sys.modules.setdefault(UTILS_MODULE, pb)
    if not isinstance(sys.modules.get("model"), _RunningModel):
        sys.modules["model"] = _RunningModel("model")


def import_model_file(path: Path, unique: str):
    """The user's model.py as a module of its own, its folder first on sys.path while it imports, as in
    Triton's stub, so helpers next to it import. Triton gives each model a process; here models share
    one, so afterwards the helpers leave sys.modules (the model keeps its references) and the folder
    moves to the end of sys.path: two models may each bring their own `utils.py`, and a model's
    `types.py` never shadows the standard library for the rest of the server."""
    install_utils_module()
    folder = str(path.parent)
    # As Triton's stub imports '<version>.model', the module sits in a package that is its folder, so its
    # relative imports (`from . import helper`) work: the package is `unique`, the module `unique.<stem>`.
    package = types.ModuleType(unique)
    package.__path__ = [folder]
    own = f"{unique}.{path.stem.replace('.', '_')}"
    with _IMPORT_LOCK:
        before = set(sys.modules)
        move_on_path(folder, first=True)
        try:
            spec = importlib.util.spec_from_file_location(own, path)
            if spec is None or spec.loader is None:
                raise InvalidSettings(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique], sys.modules[own] = package, module
            running = getattr(_RUNNING, "module", None)
            running_model(module)  # its top-level code finds itself as `model` (pb_utils.get_model_dir())
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(own, None)
                sys.modules.pop(unique, None)
                raise
            finally:
                running_model(running)
        finally:
            move_on_path(folder, first=False)
            for name in set(sys.modules) - before - {unique, own}:
                if _inside(getattr(sys.modules[name], "__file__", None), folder):
                    del sys.modules[name]
    if not hasattr(module, "TritonPythonModel"):
        raise InvalidSettings(f"{path} defines no class TritonPythonModel")
    return module


def _inside(filename, folder: str) -> bool:
    return bool(filename) and Path(filename).resolve().is_relative_to(Path(folder).resolve())


# What in a model.py keeps its execute off the server's event loop: calls back into the server (BLS, the
# model loading API), and the usual ways Python code waits (sleeping, I/O, locks, queues, processes).
SERVER_CALLS = ("InferenceRequest", "load_model", "unload_model", "is_model_ready", "async_exec", ".exec(")
WAITING_CALLS = ("sleep(", "open(", ".wait(", ".acquire(", ".recv(", "input(", "Lock(", "Event(", "Condition(")
WAITING_IMPORTS = re.compile(r"^\s*(?:import|from)\s+(?:socket|requests|urllib|http|aiohttp|httpx|grpc|tritonclient|"
                             r"subprocess|multiprocessing|queue|select|redis|boto3|kafka|sqlite3|psycopg2?)\b", re.M)


def may_block(path: Path) -> bool:
    """Whether model.py mentions a server call or a way to wait (then its execute never runs on the loop's
    thread: a quick execute there saves two thread wake-ups, a slow one would stall every request)."""
    text = path.read_text(errors="replace")
    return any(marker in text for marker in SERVER_CALLS + WAITING_CALLS) or bool(WAITING_IMPORTS.search(text))


def complete_config(cls, config: Dict[str, Any]) -> Dict[str, Any]:
    """Triton's auto-complete: the class's `auto_complete_config(ModelConfig)` may add inputs, outputs,
    max_batch_size, the dynamic batcher and the transaction policy."""
    hook = getattr(cls, "auto_complete_config", None)
    if hook is None:
        return config
    wrapped = pb.ModelConfig(json.loads(json.dumps(config)))
    result = hook(wrapped)
    if not isinstance(result, pb.ModelConfig):  # as Triton's stub: the hook must hand the config back
        raise ValueError(f"auto_complete_config function in model '{config.get('name', '')}' must return a valid "
                         "pb.ModelConfig object.")
    return result.as_dict()


def tensor_specs(entries: List[dict], batched: bool, kind: str) -> List[TensorSpec]:
    return [TensorSpec(t["name"], t["datatype"], t["shape"]) for t in config_tensors(entries, batched, kind)]


def completed_config(config: Dict[str, Any], name: str, device: str) -> Dict[str, Any]:
    """`config` (after auto-complete), completed as Triton completes it, with every field Triton's JSON form
    of ModelConfig carries."""
    config = normalize({**config, "name": name}, device)
    out: Dict[str, Any] = {
        "name": name, "platform": "",
        "backend": config["backend"] if config.get("backend") in ("identity", "square", "pytorch") else "python",
        "runtime": "model.py" if config.get("backend") == "pytorch" else "",
        "version_policy": config.get("version_policy") or {"latest": {"num_versions": 1}},
        "max_batch_size": int(config.get("max_batch_size", 0) or 0),
        "input": [{**_INPUT_DEFAULTS, **t, "dims": [int(d) for d in t.get("dims", [])]} for t in config.get("input", [])],
        "output": [{**_OUTPUT_DEFAULTS, **t, "dims": [int(d) for d in t.get("dims", [])]}
                   for t in config.get("output", [])],
        "batch_input": config.get("batch_input", []), "batch_output": config.get("batch_output", []),
        "optimization": {**_OPTIMIZATION_DEFAULTS, **config["optimization"]},
        "instance_group": config["instance_group"],
        # as Triton core: model.py is filled in for the Python backend only (a PyTorch runtime model's file is
        # found by the runtime; the identity and square test backends are C++ backends there)
        "default_model_filename": config.get("default_model_filename") or (
            "" if config.get("backend") in ("pytorch", "identity", "square") else "model.py"),
        "cc_model_filenames": config.get("cc_model_filenames", {}), "metric_tags": config.get("metric_tags", {}),
        "parameters": config.get("parameters", {}), "model_warmup": config.get("model_warmup", []),
    }
    if config.get("model_repository_agents"):
        out["model_repository_agents"] = config["model_repository_agents"]
    if "dynamic_batching" in config:
        out["dynamic_batching"] = {**_BATCHER_DEFAULTS, **config["dynamic_batching"]}
    if "sequence_batching" in config:
        out["sequence_batching"] = {"iterative_sequence": False, **config["sequence_batching"]}
    if "model_transaction_policy" in config:
        out["model_transaction_policy"] = {"decoupled": bool(config["model_transaction_policy"].get("decoupled"))}
    if "response_cache" in config:
        out["response_cache"] = {"enable": bool((config["response_cache"] or {}).get("enable"))}
    return out


def bytes_elements(array: np.ndarray, name: str) -> np.ndarray:
    """A BYTES input as Triton's Python backend hands it over: `bytes` elements whichever way the client
    sent them (JSON strings arrive as `str`); an element that is neither is the client's error."""
    flat = array.ravel()
    items = flat.tolist()
    kinds = set(map(type, items))  # C-level maps: a Python test per element cost ~5 ms at 100k
    if kinds <= {bytes}:
        return array
    out = np.empty(flat.shape, dtype=object)
    if kinds == {str}:
        out[:] = list(map(str.encode, items))
        return out.reshape(array.shape)
    for i, element in enumerate(flat):
        if isinstance(element, str):
            out[i] = element.encode("utf-8")
        elif isinstance(element, (bytes, bytearray, memoryview)):
            out[i] = bytes(element)
        else:
            raise InvalidInput(f"input '{name}': BYTES elements must be strings, got {type(element).__name__} "
                               f"({element!r})")
    return out.reshape(array.shape)


def checked_inputs(model: str, request, by_name: Dict[str, TensorSpec], optional, max_batch_size: int
                   ) -> Dict[str, Any]:
    """A request's arrays by name, checked against the config's inputs (by name) as Triton checks them
    before any backend, in its order and with its messages (gpuserve/triton_request_check.py), then decoded;
    a required input left out while the count allows it (an optional one sent instead) is refused too."""
    check_request(request, model, by_name, optional, max_batch_size)
    arrays: Dict[str, Any] = {}
    for tensor in request.inputs:
        array = tensor.as_numpy()
        if by_name[tensor.name].datatype == "BYTES" and array.dtype == object:
            array = bytes_elements(array, tensor.name)
        arrays[tensor.name] = array
    missing = [n for n in by_name if n not in arrays and n not in optional] if len(arrays) < len(by_name) else None
    if missing:
        raise missing_inputs(request.id, model, list(arrays), missing, len(by_name) - len(optional), len(by_name))
    return arrays

