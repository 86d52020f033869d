"""AOTInductor packages (`model.pt2` from torch._inductor.aoti_compile_and_package), Triton's `torch_aoti`.

Such a package is compiled code, not a program torch.export.load can read, and it describes only the
structure of its arguments and results (its call spec), not their dtypes or shapes: a config names the
tensors, either by position (INPUT__N / OUTPUT__N, or any NAME__N) or by where they sit in forward's
arguments and result (ARGS[0], ARGS[2][key], KWARGS[key], RESULT, RESULT[key][0]), as Triton's PyTorch
backend names them. The compiled code trusts its inputs (a wrong dtype or dimension reads past its
buffers) unless AOTI_RUNTIME_CHECK_INPUTS is set, and those checks also refuse one row where the export
said a batch of 1 to max (torch refines such a dimension to start at 2, yet the code runs one row
right, and Triton runs it unchecked). So the checks stay off, and the dtypes and fixed dimensions they
would check are read from the wrapper source the package carries: a config that contradicts them fails
the load, and a request that does is refused before it reaches the compiled code.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from gpuserve.backends.base import TensorSpec
from gpuserve.errors import InvalidInput, ModelLoadError

logger = logging.getLogger("gpuserve.backends.torch")

_INDEX = re.compile(r".*__(\d+)$")
_HANDLE = re.compile(r"input_handles\[(\d+)\]")
_FORWARD_FORM = re.compile(r"^(ARGS|KWARGS|RESULT)(\[|$)")  # a misspelt forward name is an error, not "in order"


def is_aoti_package(path: Path) -> bool:
    """A PT2 archive that holds compiled AOTInductor code (an exported program's archive holds none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/data/aotinductor/" in f"/{name}" for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _names(node: dict, prefix: str) -> List[str]:
    """The leaf names under one call-spec node, in the order the package flattens them."""
    kind = node.get("type")
    children = node.get("children_spec") or []
    if kind is None:
        return [prefix]
    if kind in ("builtins.tuple", "builtins.list"):
        return [name for i, child in enumerate(children) for name in _names(child, f"{prefix}[{i}]")]
    if kind in ("builtins.dict", "collections.OrderedDict"):
        context = node.get("context")
        keys = json.loads(context) if isinstance(context, str) else (context or [])
        if len(keys) != len(children):
            raise ModelLoadError(f"call spec node {kind} has {len(keys)} keys for {len(children)} children")
        return [name for key, child in zip(keys, children) for name in _names(child, f"{prefix}[{key}]")]
    raise ModelLoadError(f"call spec type '{kind}' is not served (only tensors in tuples, lists and dicts)")


def call_names(in_spec: str, out_spec: str) -> Tuple[List[str], List[str]]:
    """Forward-argument names of a package's flat inputs and outputs (ARGS[..], KWARGS[..], RESULT[..])."""
    try:
        inputs, outputs = json.loads(in_spec)[1], json.loads(out_spec)[1]
        parts = inputs.get("children_spec") or []
        if inputs.get("type") != "builtins.tuple" or len(parts) != 2:
            raise ModelLoadError("the package's input call spec is not (args, kwargs)")
        names = _names(parts[0], "ARGS")
        kwargs = parts[1]
        keys = (json.loads(kwargs["context"]) if isinstance(kwargs.get("context"), str) else None) or []
        for key, child in zip(keys, kwargs.get("children_spec") or []):
            names += _names(child, f"KWARGS[{key}]")
        return names, _names(outputs, "RESULT")
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise ModelLoadError(f"the package's call spec is unreadable ({type(exc).__name__}: {exc})") from None


def _placed(model: str, kind: str, declared: Sequence[TensorSpec], forward: List[str]) -> List[int]:
    """Each declared tensor's position among the package's flat tensors: by its forward name, else by its
    NAME__N suffix, else (when no name says one, nor has forward's form) by the order the config lists them."""
    places: List[Optional[int]] = []
    for spec in declared:
        if spec.name in forward:
            places.append(forward.index(spec.name))
        else:
            match = _INDEX.match(spec.name)
            places.append(int(match.group(1)) if match else None)
    forward_like = [spec.name for spec in declared if _FORWARD_FORM.match(spec.name)]
    if all(place is None for place in places) and not forward_like:
        logger.warning("%ss of model '%s' follow neither forward's names (%s) nor the <name>__<index> naming "
                       "convention; they are taken in the config's order", kind.capitalize(), model,
                       ", ".join(forward))
        places = list(range(len(declared)))
    for spec, place in zip(declared, places):
        if place is None:
            raise ModelLoadError(f"{kind} '{spec.name}' of model '{model}' is neither one of forward's "
                                 f"{kind}s ({', '.join(forward)}) nor named <name>__<index>")
        if place >= len(forward):
            raise ModelLoadError(f"{kind} '{spec.name}' of model '{model}' refers to {kind} {place}; the "
                                 f"package has {len(forward)} {kind}s")
    taken: Dict[int, str] = {}
    for spec, place in zip(declared, places):
        if place in taken:
            raise ModelLoadError(f"{kind}s '{taken[place]}' and '{spec.name}' of model '{model}' both name "
                                 f"{forward[place]}")
        taken[place] = spec.name
    return [int(place) for place in places]


_CHECK_BLOCK = re.compile(r"static void check_input_(\d+)\((.*?)\n}", re.S)
_DTYPE = re.compile(r"_expected_dtype = aoti_torch_dtype_(\w+)\(\)")
_FIXED = re.compile(r"if \((\d+) != \w+_size\[(\d+)\]\)")
_HANDLE_NAME = re.compile(r"ConstantHandle (\w+) = ConstantHandle\(input_handles\[\d+\]\)")
_V2 = {"bool": "BOOL", "uint8": "UINT8", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
       "float16": "FP16", "float32": "FP32", "float64": "FP64", "bfloat16": "BF16", "uint16": "UINT16",
       "uint32": "UINT32", "uint64": "UINT64"}


def expected_inputs(path: Path) -> Dict[int, Tuple[Optional[str], int, Dict[int, int]]]:
    """Per flat input: the V2 datatype, the rank (-1: not found) and the fixed dimensions the package's compiled
    input checks hold (empty where the package carries no wrapper source)."""
    try:
        with zipfile.ZipFile(path) as archive:
            sources = [archive.read(n).decode("utf-8", "replace") for n in archive.namelist()
                       if "/data/aotinductor/" in f"/{n}" and n.endswith(".wrapper.cpp")]
    except (OSError, zipfile.BadZipFile):
        return {}
    found: Dict[int, Tuple[Optional[str], int, Dict[int, int]]] = {}
    for source in sources[:1]:
        for index, body in _CHECK_BLOCK.findall(source):
            dtype = _DTYPE.search(body)
            handle = _HANDLE_NAME.search(body)
            sizes = re.search(r"assert_size_stride\(%s, \{([^}]*)\}" % handle.group(1), source) if handle else None
            rank = len([d for d in sizes.group(1).split(",") if d.strip()]) if sizes else -1
            fixed = {int(dim): int(value) for value, dim in _FIXED.findall(body)}
            found[int(index)] = (_V2.get(dtype.group(1)) if dtype else None, rank, fixed)
    return found


def _config_name(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


class AotiModule:
    """A loaded package called as forward would be: positional tensors in, a dict of named outputs back."""

    def __init__(self, path: Path, model: str, device: str, inputs: Optional[List[TensorSpec]],
                 outputs: Optional[List[TensorSpec]]):
        import torch

        index = torch.device(device).index
        try:
            compiled = torch._inductor.aoti_load_package(str(path), device_index=-1 if index is None else index)
        except Exception as exc:  # a package built for another device, ISA or torch
            raise ModelLoadError(f"model '{model}': cannot load the AOTInductor package {path.name} "
                                 f"({type(exc).__name__}: {str(exc).strip().splitlines()[0]})") from None
        self.loader = compiled.loader
        self.device = (self.loader.get_metadata() or {}).get("AOTI_DEVICE_KEY") or "cpu"
        arg_names, result_names = call_names(*self.loader.get_call_spec())
        logger.info("Model %s loaded with the following interface: (%s) -> (%s)", path,
                    ", ".join(arg_names), ", ".join(result_names))
        if not inputs or not outputs:
            raise ModelLoadError(f"model '{model}': an AOTInductor package does not record its tensors' types "
                                 f"or shapes; declare its inputs ({', '.join(arg_names)}) and outputs "
                                 f"({', '.join(result_names)}) in config.pbtxt (platform: \"torch_aoti\")")
        for kind, specs in (("input", inputs), ("output", outputs)):
            strings = [spec.name for spec in specs if spec.datatype == "BYTES"]
            if strings:
                raise ModelLoadError(f"unsupported datatype TYPE_STRING for {kind} '{strings[0]}' for model "
                                     f"'{model}': an AOTInductor package takes and gives tensors only")
        if len(inputs) != len(arg_names):
            raise ModelLoadError(f"unable to load model '{model}', configuration expects {len(inputs)} inputs, "
                                 f"model provides {len(arg_names)}")
        places = _placed(model, "input", inputs, arg_names)
        self.inputs = [spec for _, spec in sorted(zip(places, inputs), key=lambda pair: pair[0])]
        self.outputs = list(zip(_placed(model, "output", outputs, result_names), outputs))
        self._names = [spec.name for spec in self.inputs]
        self._expected = expected_inputs(path)
        for place, spec in enumerate(self.inputs):
            dtype, rank, fixed = self._expected.get(place, (None, -1, {}))
            if dtype is not None and dtype != spec.datatype:
                raise ModelLoadError(f"unable to load model '{model}', configuration expects datatype "
                                     f"{_config_name(spec.datatype)} for input '{spec.name}', model provides "
                                     f"{_config_name(dtype)}")
            if spec.shape and rank >= 0 and len(spec.shape) != rank:
                raise ModelLoadError(f"unable to load model '{model}', input '{spec.name}' has {len(spec.shape)} "
                                     f"dimensions in the configuration, the model takes {rank}")
            for dim, size in fixed.items():
                if dim < len(spec.shape) and spec.shape[dim] not in (-1, size):
                    raise ModelLoadError(f"unable to load model '{model}', input '{spec.name}' dimension {dim} is "
                                         f"{spec.shape[dim]} in the configuration, the model takes {size}")
        if not self._expected:
            logger.warning("model '%s': the package carries no wrapper source; requests are not checked against "
                           "its compiled dtypes and dimensions", model)

    def _check(self, args) -> None:
        """A request whose tensor would not fit the compiled code (a shape only a config with -1 lets through)."""
        for place, arg in enumerate(args):
            dtype, rank, fixed = self._expected.get(place, (None, -1, {}))
            if rank >= 0 and arg.dim() != rank:
                raise InvalidInput(f"input '{self._names[place]}' has {arg.dim()} dimensions, the model takes {rank}")
            if dtype is not None and _V2.get(str(arg.dtype).replace("torch.", "")) != dtype:
                raise InvalidInput(f"input '{self._names[place]}' is {arg.dtype}, the model takes {dtype}")
            for dim, size in fixed.items():
                if dim < arg.dim() and int(arg.shape[dim]) != size:
                    raise InvalidInput(f"input '{self._names[place]}' dimension {dim} is {int(arg.shape[dim])}, "
                                       f"the model takes {size}")

    def __call__(self, *args):
        self._check(args)
        tensors = [arg.to(self.device) if arg.device.type != self.device else arg for arg in args]
        try:
            flat = self.loader.boxed_run(tensors)
        except RuntimeError as exc:  # the compiled checks: a dtype, a rank, a dimension out of range
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            text = _HANDLE.sub(lambda m: f"input '{self._names[int(m.group(1))]}'"
                               if int(m.group(1)) < len(self._names) else m.group(0), text)
            raise InvalidInput(f"the AOTInductor package refused the inputs: {text}") from None
        results = {}
        for place, spec in self.outputs:
            given = _V2.get(str(flat[place].dtype).replace("torch.", ""))
            if given is not None and given != spec.datatype:  # in the words of Triton's libtorch backend
                raise InvalidInput(f"configuration expects datatype {_config_name(spec.datatype)} for output "
                                   f"'{spec.name}', model provides {_config_name(given)}")
            results[spec.name] = flat[place]
        return results
