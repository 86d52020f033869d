"""Triton's `config.pbtxt` (protobuf text format of ModelConfig) -> a dict in Triton's JSON form -> ModelSettings.

The facade must import no protobuf (`import gpuserve` stays light), and the JSON form is what the
config endpoints already speak, so the text format is read by the small parser below rather than
through generated message classes. Fields that repeat in ModelConfig are always lists here.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from gpuserve.errors import InvalidSettings
from gpuserve.repo_agents import run_repository_agents
from gpuserve.triton_normalize import GROUP_FIELDS_SHOWN
from gpuserve.triton_schema_check import check_config

logger = logging.getLogger("gpuserve.triton_config")

REPEATED = {"input", "output", "dims", "instance_group", "gpus", "preferred_batch_size", "versions",
            "model_warmup", "batch_input", "batch_output", "profile", "source_input",
            "label_filename_list", "secondary_devices", "ensemble_scheduling", "step",
            "graph_spec", "control_input", "control", "state", "initial_state",
            "op_library_filename", "resources", "agents"}
MAPS = {"parameters", "input_map", "output_map", "cc_model_filenames", "metric_tags", "inputs", "priority_queue_policy"}
_TOKEN = re.compile(r"""\s*(?:(\#[^\n]*)|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([A-Za-z_][\w.]*)|"""
                    r"""([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan))|([{}\[\]:,;<>]))""")

V2_TYPES = {"TYPE_BOOL": "BOOL", "TYPE_UINT8": "UINT8", "TYPE_UINT16": "UINT16", "TYPE_UINT32": "UINT32",
            "TYPE_UINT64": "UINT64", "TYPE_INT8": "INT8", "TYPE_INT16": "INT16", "TYPE_INT32": "INT32",
            "TYPE_INT64": "INT64", "TYPE_FP16": "FP16", "TYPE_FP32": "FP32", "TYPE_FP64": "FP64",
            "TYPE_STRING": "BYTES", "TYPE_BF16": "BF16"}
PLATFORMS = {"onnxruntime_onnx": "onnx", "onnxruntime": "onnx", "pytorch_libtorch": "torch", "pytorch": "torch",
             "torch_aoti": "torch",
             "tensorrt_plan": "tensorrt", "tensorrt": "tensorrt", "python": "triton_python", "ensemble": "ensemble",
             "fil": "fil", "tensorflow_savedmodel": "tensorflow_savedmodel",
             "tensorflow_graphdef": "tensorflow_graphdef"}
# Triton's identity and square backends (C++ libraries it builds for its tests), served as Python-backend models
OWN_BACKENDS = {"identity": "triton_backends/identity.py", "square": "triton_backends/square.py"}
DEFAULT_FILES = {"onnx": "model.onnx", "torch": "model.pt", "tensorrt": "model.plan", "triton_python": "model.py",
                 "ensemble": "", "fil": "", "tensorflow_savedmodel": "model.savedmodel",
                 "tensorflow_graphdef": "model.graphdef"}


def _tokens(text: str) -> List[Tuple[str, Any]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            pos += len(text[pos:]) - len(text[pos:].lstrip())
            line = text.count("\n", 0, pos) + 1
            raise InvalidSettings(f"config.pbtxt line {line}: cannot read '{text[pos:pos + 20].strip()}'")
        pos = match.end()
        comment, string, ident, number, punct = match.groups()
        if comment:
            continue
        if string is not None:
            out.append(("str", bytes(string[1:-1], "utf-8").decode("unicode_escape")))
        elif ident is not None:
            out.append(("id", ident))
        elif number is not None:
            value = float(number) if re.search(r"[.eE]|inf|nan", number) else int(number)
            out.append(("num", value))
        else:
            out.append(("p", punct))
    return out


class _Parser:
    """Protobuf text format; `repeated` and `maps` name the message's repeated and map fields (config.pbtxt's by
    default; gpuserve/tfserving_config.py passes ModelServerConfig's, its map entries `strict`: each one a
    `{ key value }` message)."""

    def __init__(self, tokens, repeated=REPEATED, maps=MAPS, strict: bool = False):
        self.tokens, self.i = tokens, 0
        self.repeated, self.maps, self.strict = repeated, maps, strict

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else ("eof", None)

    def take(self, kind=None, value=None):
        token = self.peek()
        if (kind and token[0] != kind) or (value is not None and token[1] != value):
            found = "the end of the file" if token[0] == "eof" else repr(token[1])
            raise InvalidSettings(f"config.pbtxt: expected {value or kind}, found {found}")
        self.i += 1
        return token

    def message(self, closing: Optional[str]) -> Dict[str, Any]:
        fields: Dict[str, Any] = {}
        while True:
            kind, value = self.peek()
            if kind == "eof" or (kind == "p" and value == closing):
                if closing is not None:
                    self.take("p", closing)
                return fields
            if kind == "p" and value in ",;":
                self.i += 1
                continue
            name = self.take("id")[1]
            if self.peek() == ("p", ":"):
                self.i += 1
            self._add(fields, name, self.value())

    def value(self):
        kind, value = self.peek()
        if kind == "eof":  # a file cut off after a field's name or inside a list
            raise InvalidSettings("config.pbtxt: the file ends where a value was expected")
        if kind == "p" and value in "{<":
            self.i += 1
            return self.message("}" if value == "{" else ">")
        if kind == "p" and value == "[":
            self.i += 1
            items = []
            while self.peek() != ("p", "]"):
                items.append(self.value())
                if self.peek() == ("p", ","):
                    self.i += 1
            self.i += 1
            return _ListValue(items)
        if kind == "p":  # `name: }`, `name: ,`: punctuation where a value belongs
            raise InvalidSettings(f"config.pbtxt: expected a value, found {value!r}")
        self.i += 1
        if kind == "id" and value in ("true", "True"):
            return True
        if kind == "id" and value in ("false", "False"):
            return False
        return value

    def _add(self, fields: Dict[str, Any], name: str, value: Any) -> None:
        entries = value if isinstance(value, _ListValue) else [value]
        if name in self.maps and entries and all(isinstance(e, dict) and "key" in e for e in entries):
            for entry in entries:  # `input_map { key value }` once per entry, or `input_map [ {...}, {...} ]`
                fields.setdefault(name, {})[entry["key"]] = entry.get("value")
            return
        if name in self.maps and self.strict:
            raise InvalidSettings(f"{name}: each entry is {{ key: ... value: ... }}")
        items = list(value) if isinstance(value, _ListValue) else [value]
        if name in self.repeated:
            fields.setdefault(name, []).extend(items)
        elif isinstance(value, _ListValue):
            fields[name] = items
        else:
            fields[name] = value


class _ListValue(list):
    pass


def parse_pbtxt(text: str) -> Dict[str, Any]:
    return _Parser(_tokens(text)).message(None)


def to_pbtxt(config: Dict[str, Any]) -> str:
    """A config in Triton's JSON form (what read_config returns, what load requests carry) as protobuf text,
    so a config given at load time is read where every reader looks for one. Lists are written in brackets,
    so fields this parser does not know to repeat still come back as lists."""
    lines: List[str] = []
    _write_fields(config, lines, "")
    return "\n".join(lines) + "\n"


def _write_fields(fields: Dict[str, Any], lines: List[str], indent: str) -> None:
    for name, value in fields.items():
        if name in MAPS and isinstance(value, dict):
            for key, entry in value.items():
                lines.append(f"{indent}{name} {{")
                lines.append(f"{indent}  key: {_scalar(key)}")
                _write_value("value", entry, lines, indent + "  ")
                lines.append(f"{indent}}}")
        else:
            _write_value(name, value, lines, indent)


def _write_value(name: str, value: Any, lines: List[str], indent: str) -> None:
    if isinstance(value, dict):
        lines.append(f"{indent}{name} {{")
        _write_fields(value, lines, indent + "  ")
        lines.append(f"{indent}}}")
    elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
        lines.append(f"{indent}{name} [")
        for item in value:
            if not isinstance(item, dict):
                raise InvalidSettings(f"config field '{name}' mixes messages and values")
            lines.append(f"{indent}  {{")
            _write_fields(item, lines, indent + "    ")
            lines.append(f"{indent}  }},")
        lines.append(f"{indent}]")
    elif isinstance(value, list):
        lines.append(f"{indent}{name}: [{', '.join(_scalar(item) for item in value)}]")
    else:
        lines.append(f"{indent}{name}: {_scalar(value)}")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # ASCII with \u escapes, which the tokenizer decodes
    raise InvalidSettings(f"config value {value!r} is neither a message, a list, a string, a number nor a bool")


# Triton's --model-config-name: the file under a model's configs/ folder read in place of config.pbtxt
_config_name: Optional[str] = None


def use_config_name(name: Optional[str]) -> None:
    """Set once per server from --model-config-name (None: config.pbtxt only)."""
    global _config_name
    _config_name = name or None


def config_path(folder: Path) -> Path:
    """configs/NAME.pbtxt where --model-config-name names one that exists, else config.pbtxt, as Triton."""
    if _config_name:
        custom = folder / "configs" / f"{_config_name}.pbtxt"
        if custom.is_file():
            return custom
    return folder / "config.pbtxt"


def read_config(folder: Path) -> Dict[str, Any]:
    path = config_path(folder)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidSettings(f"cannot read {path}: {exc}") from None
    config = parse_pbtxt(text)
    check_config(config)  # ModelConfig's field types, before any reader meets a value of the wrong one
    config.setdefault("name", folder.name)
    return config


def config_tensors(entries: List[dict], batched: bool, where: str) -> List[dict]:
    """config.pbtxt tensors as V2 metadata; with batching, dims gain the leading -1 batch dimension."""
    out = []
    for entry in entries:
        datatype = V2_TYPES.get(entry.get("data_type", ""))
        if datatype is None:
            raise InvalidSettings(f"{where} '{entry.get('name')}': unsupported data_type {entry.get('data_type')!r}")
        dims = [int(d) for d in entry.get("dims", [])]
        out.append({"name": entry["name"], "datatype": datatype, "shape": ([-1] if batched else []) + dims})
    return out


def _written(config: Dict[str, Any], key: str, runtime: str) -> List[dict]:
    """A config's tensors; for a Python model only the complete ones, as its auto_complete_config may still
    give the rest their type and dims (Triton's qa incomplete_output)."""
    entries = config.get(key, [])
    if runtime != "triton_python":
        return entries
    return [e for e in entries if e.get("data_type") and e.get("dims") is not None]


def chosen_versions(config: Dict[str, Any], available: List[int]) -> List[int]:
    """Triton's version_policy: latest N (default 1), all, or specific."""
    policy = config.get("version_policy") or {"latest": {"num_versions": 1}}
    available = sorted(available)
    if "all" in policy:
        return available
    if "specific" in policy:
        wanted = {int(v) for v in policy["specific"].get("versions", [])}
        return [v for v in available if v in wanted]
    count = int((policy.get("latest") or {}).get("num_versions", 1) or 1)
    return available[-count:]


def delay_scheduler_count() -> int:
    """Triton's TRITONSERVER_DELAY_SCHEDULER=N: each dynamic batcher starts only once N requests are queued
    for its model, so a test (Triton's qa/L0_batcher) can watch how a full queue is cut into batches.
    Read when a model loads, as Triton reads it when the batcher starts; unset or not a number: 0."""
    try:
        return max(int(os.environ.get("TRITONSERVER_DELAY_SCHEDULER", "0").strip() or 0), 0)
    except ValueError:
        return 0


def dynamic_batching_settings(dyn: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Triton's `dynamic_batching` block as the model settings' `dynamic_batching` fields."""
    dyn = dyn or {}
    return {
        "preferred_batch_size": [int(x) for x in dyn.get("preferred_batch_size", [])],
        "max_queue_delay_microseconds": int(dyn.get("max_queue_delay_microseconds", 0) or 0),
        "priority_levels": int(dyn.get("priority_levels", 0) or 0),
        "default_priority_level": int(dyn.get("default_priority_level", 0) or 0),
        "default_queue_policy": dyn.get("default_queue_policy") or {},
        "priority_queue_policy": dyn.get("priority_queue_policy") or {},
    }


def _runtime_of_files(where: Path, config: Dict[str, Any]) -> Optional[str]:
    """A config without platform or backend (e.g. `{"max_batch_size": 16}` given to load_model) is served by
    the framework of the file it would load: default_model_filename's suffix, else the default file found."""
    suffixes = {".onnx": "onnx", ".pt": "torch", ".pt2": "torch", ".plan": "tensorrt",
                ".savedmodel": "tensorflow_savedmodel", ".graphdef": "tensorflow_graphdef"}
    named = config.get("default_model_filename")
    if named:
        return suffixes.get(Path(named).suffix)
    return next((runtime for runtime in ("onnx", "torch", "tensorrt", "tensorflow_savedmodel", "tensorflow_graphdef")
                 if (where / DEFAULT_FILES[runtime]).exists()), None)


def settings_from_config(folder: Path, config: Dict[str, Any], version: Optional[int]) -> Dict[str, Any]:
    """model-settings fields for one version of a Triton model folder."""
    platform = config.get("platform") or ""
    backend = config.get("backend") or ""
    runtime = PLATFORMS.get(platform) or PLATFORMS.get(backend) or ("triton_python" if backend in OWN_BACKENDS else None)
    torch_in_python = backend == "pytorch" and str(config.get("runtime") or "") == "model.py"
    if torch_in_python:  # Triton's PyTorch runtime in Python, a Python-backend model (its file below)
        runtime = "triton_python"
    if runtime is None and not platform and not backend:  # as Triton: the framework the version's file names
        runtime = _runtime_of_files(folder / str(version) if version is not None else folder, config)
    _check_runtime_field(config, backend)
    if runtime is None:
        served = "gpuserve serves onnxruntime, pytorch, tensorflow, tensorrt, python, fil and ensemble models"
        if backend:  # Triton's words for a backend it has no library for
            raise InvalidSettings(f"Invalid argument: unable to find backend library for backend '{backend}', try "
                                  f"specifying runtime on the model configuration. ({served})")
        raise InvalidSettings(f"model '{config['name']}': platform '{platform}' is not served ({served})")
    run_repository_agents(folder, config)
    if "sequence_batching" in config and runtime == "ensemble":
        raise InvalidSettings(f"model '{config['name']}': an ensemble cannot have sequence_batching")
    if runtime != "ensemble":
        from gpuserve.batching import check_batch_strategy

        check_batch_strategy(folder, config, version)
    max_batch = int(config.get("max_batch_size", 0) or 0)
    where = folder / str(version) if version is not None else folder
    filename = config.get("default_model_filename") or ("model.pt2" if platform == "torch_aoti"
                                                        else DEFAULT_FILES[runtime])
    if backend in OWN_BACKENDS:  # Triton's test backends: gpuserve's own model.py for each (gpuserve/triton_*.py)
        where, filename = Path(__file__).parent, OWN_BACKENDS[backend]
    if torch_in_python:
        where, filename = Path(__file__).parent, "triton_backends/pytorch_runtime.py"
    settings: Dict[str, Any] = {
        "name": config["name"], "implementation": runtime, "platform": platform,
        "parameters": {"uri": str(where / filename), "version": str(version) if version is not None else None},
        "inputs": config_tensors(_written(config, "input", runtime), max_batch > 0, "input"),
        "outputs": config_tensors(_written(config, "output", runtime), max_batch > 0, "output"),
        "max_batch_size": max_batch if max_batch > 1 else 0,
        "triton_max_batch_size": max_batch,  # Triton refuses requests with more rows than this
        "triton_version_policy": config.get("version_policy") or {"latest": {"num_versions": 1}},
        "instance_groups": [{"count": int(g.get("count", 1)), "kind": str(g.get("kind", "KIND_AUTO"))[5:].lower(),
                             "gpus": [int(x) for x in g.get("gpus", [])],
                             **{key: g[key] for key in GROUP_FIELDS_SHOWN if g.get(key)}}
                            for g in config.get("instance_group", [])],
    }
    if (config.get("response_cache") or {}).get("enable") is True:  # an ensemble's too: its top-level answers
        settings["response_cache"] = True
    dyn = config.get("dynamic_batching")
    if dyn is not None:
        settings["dynamic_batching"] = dynamic_batching_settings(dyn)
        held = delay_scheduler_count()
        if held and "sequence_batching" not in config:
            settings["triton_delay_scheduler"] = held
    if config.get("batch_input") or config.get("batch_output") or any(
            e.get("allow_ragged_batch") is True for e in config.get("input", [])):  # gpuserve/ragged_batch.py
        settings["triton_ragged"] = {key: config.get(key) or [] for key in ("input", "batch_input", "batch_output")}
    shown = {key: config[key] for key in ("parameters", "model_warmup", "optimization", "cc_model_filenames",
                                          "metric_tags", "model_operations", "model_repository_agents",
                                          "model_transaction_policy")
             if config.get(key)}
    if "response_cache" in config:  # shown as written, `enable: false` too, as Triton shows it
        shown["response_cache"] = {"enable": (config["response_cache"] or {}).get("enable") is True}
    if shown:  # the config endpoints show them as written
        settings["triton_shown"] = shown
    sequences = config.get("sequence_batching")
    if sequences is not None and runtime != "triton_python":  # gpuserve/sequence_state.py
        settings["triton_sequence_batching"] = sequences
        settings["triton_folder"] = str(folder)
    if sequences is not None:  # the strategy's delay holds a batch for Python models too, as Triton's
        strategy = sequences.get("oldest") or sequences.get("direct") or {}
        strategy = strategy[0] if isinstance(strategy, list) and strategy else strategy
        if isinstance(strategy, dict) and (strategy.get("max_queue_delay_microseconds")
                                           or strategy.get("preferred_batch_size")):
            settings["dynamic_batching"] = dynamic_batching_settings(
                {k: strategy[k] for k in ("max_queue_delay_microseconds", "preferred_batch_size") if k in strategy})
    # As Triton: a request's own `timeout` counts only where the queue policy says allow_timeout_override.
    policy = settings.get("dynamic_batching", {}).get("default_queue_policy") or {}
    policy = dict(policy, allow_timeout_override=bool(policy.get("allow_timeout_override", False)))
    settings["default_queue_policy"] = policy
    if dyn is not None and dyn.get("default_queue_policy"):  # shown by the config endpoints only where written
        settings["dynamic_batching"]["default_queue_policy"] = policy
    warmups = config.get("model_warmup") or []
    if warmups:
        settings["warmup_samples"] = [{
            "name": str(w.get("name") or f"warmup-{i}"), "batch_size": int(w.get("batch_size", 0) or 0),
            "count": int(w.get("count", 1) or 1),
            "inputs": {key: {"data_type": V2_TYPES.get((value or {}).get("data_type", ""), "") or None,
                             "dims": [int(d) for d in (value or {}).get("dims", [])],
                             **{k: (value or {})[k] for k in ("zero_data", "random_data", "input_data_file")
                                if k in (value or {})}}
                       for key, value in (w.get("inputs") or {}).items()},
        } for i, w in enumerate(warmups)]
    label_file = next((o.get("label_filename") for o in config.get("output", []) if o.get("label_filename")), None)
    reshapes = {kind: {e["name"]: shape for e in config.get(key, []) if (shape := reshape_of(e)) is not None}
                for kind, key in (("inputs", "input"), ("outputs", "output"))}
    if reshapes["inputs"] or reshapes["outputs"]:  # the model's own dims (gpuserve/declared_tensors.py)
        settings["triton_reshapes"] = reshapes
    labels = {o["name"]: o["label_filename"] for o in config.get("output", []) if o.get("label_filename")}
    if labels:  # the config endpoints show them as written
        settings["triton_label_files"] = labels
    optional = [i["name"] for i in config.get("input", []) if i.get("optional") is True]
    if optional:  # inputs a request may leave out (an ONNX graph's overridable initializers keep their values)
        settings["triton_optional_inputs"] = optional
    formats = {i["name"]: i["format"] for i in config.get("input", []) if i.get("format") not in (None, "FORMAT_NONE")}
    if formats:  # shown as written: image clients (Triton's image_client) read an input's layout from it
        settings["triton_input_formats"] = formats
    extra = optimization_settings(config)
    if runtime not in ("tensorrt", "triton_python", "ensemble"):  # their backends read none of these; nor do we
        extra.update(backend_parameters(config))
    profiles = [str(p) for g in config.get("instance_group", []) for p in (g.get("profile") or [])]
    if profiles and runtime == "tensorrt":  # an instance group's TensorRT optimization profile, as Triton's
        if len(set(profiles)) > 1:
            logger.warning("model '%s': instance groups name TensorRT profiles %s; gpuserve runs every instance "
                           "on profile %s", config["name"], sorted(set(profiles)), profiles[0])
        if not profiles[0].isdigit():
            raise InvalidSettings(f"model '{config['name']}': instance_group profile '{profiles[0]}' is not a "
                                  "profile index")
        extra["optimization_profile"] = int(profiles[0])
    libraries = (config.get("model_operations") or {}).get("op_library_filename")
    if libraries and runtime in ("onnx", "torch"):  # custom operators: into each ONNX session (as Triton's ORT
        # backend), into torch before a PyTorch model loads (Triton's libtorch backend wants them LD_PRELOADed)
        listed = libraries if isinstance(libraries, list) else [libraries]
        extra["custom_op_libraries"] = [str(name) for name in listed]
    if label_file:
        extra["labels_file"] = str(folder / label_file)
    if extra:
        settings["parameters"]["extra"] = extra
    for key in ("preprocess", "ragged"):  # gpuserve's kernel settings, JSON in a string parameter
        entry = (config.get("parameters") or {}).get(key)
        if entry is not None:
            settings[key] = _json_parameter(config["name"], key, entry)
    for group in settings["instance_groups"]:
        if group["kind"] == "model":  # KIND_MODEL: the model places itself; its inputs arrive on the CPU
            group["kind"], group["triton_kind"] = "cpu", "KIND_MODEL"
            settings["triton_kind_model"] = True
        if group["kind"] not in ("auto", "gpu", "cpu"):
            group["kind"] = "auto"
        if group["kind"] == "cpu":
            settings["device"] = "cpu"
    if runtime == "fil":  # FIL's forests on the CPU tree runtimes (gpuserve/triton_fil_config.py)
        from gpuserve.triton_fil_config import fil_settings

        fil_settings(config, settings, where)
    return settings


def _check_runtime_field(config: Dict[str, Any], backend: str) -> None:
    """A config's `runtime` names the backend library to load; gpuserve has its own runtimes, so only the
    backend's own library name (or model.py for a Python model) is accepted, and a name reaching outside
    the backend folder is refused first, as Triton refuses it."""
    runtime = str(config.get("runtime") or "")
    if not runtime:
        return
    import posixpath

    if runtime.startswith("/") or posixpath.normpath(runtime).startswith(".."):
        raise InvalidSettings(f"backend library name '{runtime}' escapes backend directory")
    if runtime not in (f"libtriton_{backend}.so", "model.py" if backend in ("python", "pytorch") else ""):
        raise InvalidSettings(f"unable to find backend library '{runtime}' for model '{config['name']}'")


def reshape_of(entry: Dict[str, Any]) -> Optional[List[int]]:
    """A tensor's `reshape { shape: [...] }`: the dims the model itself takes or gives (batch dimension apart),
    while clients send and get the entry's `dims`. None where there is none."""
    reshape = entry.get("reshape")
    if isinstance(reshape, list):  # written as a one-element list
        reshape = reshape[0] if reshape else None
    if not isinstance(reshape, dict):
        return None
    return [int(d) for d in reshape.get("shape") or []]


def optimization_settings(config: Dict[str, Any]) -> Dict[str, Any]:
    """Triton's `optimization` block -> gpuserve model parameters: the ONNX Runtime TensorRT accelerator
    (`gpu_execution_accelerator: [{name: "tensorrt", parameters {precision_mode: "FP16"}}]`) and
    `cuda { graphs: true }` (CUDA graphs for PyTorch models)."""
    optimization = config.get("optimization") or {}
    extra: Dict[str, Any] = {}
    accelerators = (optimization.get("execution_accelerators") or {}).get("gpu_execution_accelerator") or []
    for accelerator in accelerators if isinstance(accelerators, list) else [accelerators]:
        if str(accelerator.get("name", "")).lower() != "tensorrt":
            continue
        extra["execution_provider"] = "tensorrt"
        parameters = accelerator.get("parameters") or {}
        if str(parameters.get("precision_mode", "")).upper() == "FP16":
            extra["trt_fp16"] = True
        if parameters.get("trt_engine_cache_path"):
            extra["trt_engine_cache_path"] = str(parameters["trt_engine_cache_path"])
        if parameters.get("max_workspace_size_bytes"):
            extra.setdefault("provider_options", {})["tensorrt"] = {
                "trt_max_workspace_size": str(parameters["max_workspace_size_bytes"])}
    if (optimization.get("cuda") or {}).get("graphs") is True:
        extra["cuda_graphs"] = True
    return extra


# Triton's ONNX Runtime and PyTorch backends read these `parameters` (string values); gpuserve's own
# names are accepted there too. Other keys are the model's own (a Python model reads them) and stay put.
_THREAD_KEYS = {"intra_op_thread_count": "intra_op_threads", "INTRA_OP_THREAD_COUNT": "intra_op_threads",
                "inter_op_thread_count": "inter_op_threads", "intra_op_threads": "intra_op_threads",
                "inter_op_threads": "inter_op_threads",
                # Triton's TensorFlow backend's (process-wide in TensorFlow: backends/tensorflow.py)
                "TF_NUM_INTRA_THREADS": "intra_op_threads", "TF_NUM_INTER_THREADS": "inter_op_threads"}
# Triton's TensorFlow backend's signature and MetaGraph tag, as written
_TEXT_KEYS = {"TF_SIGNATURE_DEF": "signature_name", "TF_GRAPH_TAG": "tags"}
_SWITCH_KEYS = ("enable_mem_arena", "enable_mem_pattern", "allow_spinning")  # the same names in our settings
# Entries Triton's ONNX Runtime backend hands to the session's / each run's config, as written.
_SESSION_ENTRIES = ("session.use_device_allocator_for_initializers",)
_RUN_ENTRIES = ("memory.enable_memory_arena_shrinkage",)
_TRUE, _FALSE = ("1", "true", "on"), ("0", "false", "off")  # Triton's ParseBoolValue, case-insensitive
# Triton's libtorch backend switches: (gpuserve parameter or None, Triton's words when given, inverted)
_TORCH_SWITCHES = {"DISABLE_OPTIMIZED_EXECUTION": ("optimized_execution", "Optimized execution", True),
                   "INFERENCE_MODE": ("inference_mode", "Inference Mode", False),
                   "ENABLE_WEIGHT_SHARING": ("weight_sharing", "Weight sharing", False),
                   "ENABLE_CACHE_CLEANING": (None, "Cache Cleaning", False),
                   "ENABLE_TENSOR_FUSER": (None, "Tensor fuser", False),
                   "ENABLE_JIT_PROFILING": (None, "Jit profiling", False),
                   "ENABLE_JIT_EXECUTOR": (None, "Jit executor", False),
                   "ENABLE_NVFUSER": (None, "NvFuser", False), "DISABLE_CUDNN": (None, "cuDNN", True)}
# optimization { graph { level } } in Triton's ONNX Runtime backend: -1 basic, 1 extended, 2 none, else all
_GRAPH_LEVELS = {-1: "basic", 1: "extended", 2: "disable"}


def backend_parameters(config: Dict[str, Any]) -> Dict[str, Any]:
    """Framework session options from a config.pbtxt: thread counts, execution mode, memory arena and
    pattern, spinning, and the ONNX Runtime graph optimisation level. A malformed value is refused at
    load (InvalidSettings) rather than ignored."""
    name = config.get("name", "?")
    extra: Dict[str, Any] = {}
    for key, entry in (config.get("parameters") or {}).items():
        text = entry.get("string_value") if isinstance(entry, dict) else None
        word = str(text).strip().lower()
        if key in _THREAD_KEYS:
            count = _int_parameter(name, key, text)
            if count < 0:
                raise InvalidSettings(f"model '{name}': parameters '{key}' must be 0 or more, got {text!r}")
            if count:  # 0: the backend's default (the cores this process may use)
                extra[_THREAD_KEYS[key]] = count
        elif key in _TEXT_KEYS and str(text or "").strip():
            extra[_TEXT_KEYS[key]] = str(text).strip()
        elif key in _SWITCH_KEYS:
            if word not in _TRUE + _FALSE:
                raise InvalidSettings(f"model '{name}': parameters '{key}': failed to convert '{text}' to boolean")
            extra[key] = word in _TRUE
            logger.debug("Configuring %s to %s", key, text)  # Triton's words
        elif key in _SESSION_ENTRIES:
            extra.setdefault("session_config", {})[key] = str(text)
            logger.debug("Configuring '%s' to '%s' for '%s'", key, text, name)  # Triton's words
        elif key in _RUN_ENTRIES:
            extra.setdefault("run_config", {})[key] = str(text)
            logger.debug("Configuring %s to %s", key, text)
        elif key == "execution_mode":
            if word not in ("0", "1"):
                raise InvalidSettings(f"model '{name}': parameters 'execution_mode' must be 0 (sequential) or "
                                      f"1 (parallel), got {text!r}")
            extra["execution_mode"] = "parallel" if word == "1" else "sequential"
    if config.get("platform") == "pytorch_libtorch" or config.get("backend") == "pytorch":
        extra.update(_torch_switches(name, config.get("parameters")))
    if config.get("platform") == "onnxruntime_onnx" or config.get("backend") == "onnxruntime":
        _check_cpu_accelerators(name, config.get("optimization") or {})
    graph = (config.get("optimization") or {}).get("graph") or {}
    if "level" in graph:
        try:
            level = int(graph["level"])
        except (TypeError, ValueError):
            raise InvalidSettings(f"model '{name}': optimization.graph.level must be an integer") from None
        extra["graph_optimization_level"] = _GRAPH_LEVELS.get(level, "all")
    return extra


def _check_cpu_accelerators(name: str, optimization: Dict[str, Any]) -> None:
    """Triton's ONNX Runtime backend knows one CPU execution accelerator, OpenVINO, and refuses any other
    name at load in its words (gpuserve ignored them); ONNX Runtime here has no OpenVINO provider, so that
    one runs on the CPU provider, said in the log."""
    listed = (optimization.get("execution_accelerators") or {}).get("cpu_execution_accelerator") or []
    for accelerator in listed if isinstance(listed, list) else [listed]:
        accelerator_name = str((accelerator or {}).get("name", ""))
        if accelerator_name != "openvino":
            raise InvalidSettings(f"model '{name}': unknown Execution Accelerator '{accelerator_name}' is requested")
        logger.warning("model '%s': the OpenVINO Execution Accelerator is not in this ONNX Runtime; the model runs "
                       "on its CPU provider", name)


def _torch_switches(name: str, parameters: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The libtorch backend's boolean parameters, refused in Triton's words when not a boolean; `triton_said` holds
    its log lines for them (optimized execution and inference mode always, once a config has parameters),
    which each load of the model logs. Those gpuserve leaves to torch's defaults (JIT executor, fusers,
    cuDNN, cache cleaning) are checked and said only."""
    if not parameters:
        return {}
    extra: Dict[str, Any] = {}
    said = extra["triton_said"] = []
    for key, (setting, words, inverted) in _TORCH_SWITCHES.items():
        entry = parameters.get(key)
        if entry is None:
            if setting in ("optimized_execution", "inference_mode"):
                said.append(f"{words} is enabled for model instance '{name}'")
            continue
        text = entry.get("string_value") if isinstance(entry, dict) else entry
        word = str(text).strip().lower()
        if word not in _TRUE + _FALSE:
            raise InvalidSettings(f"model '{name}': parameters '{key}': failed to convert '{text}' to boolean")
        on = (word in _TRUE) != inverted
        if setting is not None:
            extra[setting] = on
        said.append(f"{words} is {'enabled' if on else 'disabled'} for model instance '{name}'")
    return extra


def _int_parameter(model: str, key: str, text: Any) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise InvalidSettings(f"model '{model}': parameters '{key}' must hold an integer in string_value, "
                              f"got {text!r}") from None


def _json_parameter(model: str, key: str, entry: Any) -> Any:
    import json

    text = entry.get("string_value") if isinstance(entry, dict) else None
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InvalidSettings(f"model '{model}': parameters '{key}' must hold a JSON object in string_value "
                              f"({exc})") from None
