"""Triton's checks of a model's config.pbtxt before any version loads, with its error sentences.

Users script against those sentences (Triton's own qa greps the log for them), and a broken config must be
refused for what is wrong in it, not for a missing version folder found later. The order is Triton's: fill
in the backend from the platform or the files (AutoCompleteBackendFields), then the model-wide checks, then,
with auto-complete off (--disable-auto-complete-config), the tensors; with it on, the tensors are checked
once the model file has completed them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from gpuserve.errors import InvalidSettings

logger = logging.getLogger("gpuserve")

# platform -> the backend that serves it (Triton's GetBackendTypeFromPlatform, by name)
PLATFORM_BACKENDS = {"tensorrt_plan": "tensorrt", "onnxruntime_onnx": "onnxruntime", "pytorch_libtorch": "pytorch",
                     "tensorflow_graphdef": "tensorflow", "tensorflow_savedmodel": "tensorflow",
                     "torch_aoti": "pytorch"}
KNOWN_BACKENDS = set(PLATFORM_BACKENDS.values())
_CONTROL_KINDS = ("CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_END", "CONTROL_SEQUENCE_READY")
_BATCH_INPUT_KINDS = ("BATCH_ELEMENT_COUNT", "BATCH_ACCUMULATED_ELEMENT_COUNT",
                      "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE",
                      "BATCH_ITEM_SHAPE", "BATCH_ITEM_SHAPE_FLATTEN")


def complete_backend(name: str, folder: Path, config: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of `config` with name, backend, platform and default_model_filename filled in as Triton's
    server does before any backend sees the model: from the platform, the default file's name, or the
    files of the first version folder; a model named `NAME.BACKEND` with nothing else said names its
    backend."""
    out = dict(config)
    out["name"] = out.get("name") or name
    platform, backend = out.get("platform") or "", out.get("backend") or ""
    filename = out.get("default_model_filename") or ""
    versions = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    files = {p.name: p for p in versions[0].iterdir()} if versions else {}

    def found(default: str, folder_ok: bool = False) -> bool:
        return not platform and not filename and default in files and (folder_ok or not files[default].is_dir())

    done = False
    if not platform and backend in ("", "tensorflow"):  # TensorFlow's platform from the file name or the files
        if filename == "model.savedmodel" or (not filename and "model.savedmodel" in files
                                               and files["model.savedmodel"].is_dir()):
            platform = "tensorflow_savedmodel"
        elif not filename and "saved_model.pb" in files:  # TFServing's layout (1/saved_model.pb): gpuserve's own
            platform = "tensorflow_savedmodel"
        elif filename == "model.graphdef" or (not filename and "model.graphdef" in files
                                              and not files["model.graphdef"].is_dir()):
            platform = "tensorflow_graphdef"
    if platform in ("tensorflow_savedmodel", "tensorflow_graphdef"):
        backend = backend or "tensorflow"
        filename = filename or ("model.savedmodel" if platform == "tensorflow_savedmodel" else "model.graphdef")
        done = True
    for candidate, implied, default in (("tensorrt", "tensorrt_plan", "model.plan"),
                                        ("onnxruntime", "onnxruntime_onnx", "model.onnx")):
        if done:
            break
        if not backend and (platform == implied or filename == default or found(default, candidate != "tensorrt")):
            backend = candidate
        if backend == candidate:
            platform, filename, done = platform or implied, filename or default, True
            break
    if not done and not backend and (filename == "model.xml" or found("model.xml", True)):
        backend = "openvino"
    if not done and backend == "openvino":
        filename, done = filename or "model.xml", True
    if not done and not backend:
        if platform in ("pytorch_libtorch", "torch_aoti") or filename in ("model.pt", "model.pt2"):
            backend = "pytorch"
        elif found("model.pt"):
            backend, platform = "pytorch", "pytorch_libtorch"
        elif found("model.pt2"):  # an AOTInductor package or a torch.export program (backends/torch.py)
            backend, platform = "pytorch", "torch_aoti"
    if not done and backend == "pytorch":
        if not platform:
            platform, filename = "pytorch_libtorch", filename or "model.pt"
        elif platform == "torch_aoti":
            filename = filename or "model.pt2"
        done = True
    if not done and not backend and (filename == "model.py" or found("model.py", True)):
        backend = "python"
    if not done and backend == "python":
        filename, done = filename or "model.py", True
    if not done and not backend and not platform and not filename:
        _, dot, suffix = name.partition(".")
        if not dot:
            raise InvalidSettings(f"Invalid model name: Could not determine backend for model '{name}' with no "
                                  "backend in model configuration. Expected model name of the form "
                                  "'model.<backend_name>'.")
        backend, filename = suffix, f"model.{suffix}"
    for key, value in (("platform", platform), ("backend", backend), ("default_model_filename", filename)):
        if value:
            out[key] = value
    return out


def validate(config: Dict[str, Any], auto_complete: bool, gpu_count: int = 0) -> None:
    """Triton's ValidateModelConfig, then (auto-complete off) ValidateModelIOConfig and its instance group
    checks; raises InvalidSettings with Triton's sentence."""
    validate_model(config)
    if not auto_complete:
        validate_io(config)
    validate_instance_groups(config, gpu_count)


def validate_model(config: Dict[str, Any]) -> None:
    name = config.get("name") or ""
    platform, backend = config.get("platform") or "", config.get("backend") or ""
    if not name:
        raise InvalidSettings("model configuration must specify 'name'")
    if not backend and platform != "ensemble":
        raise InvalidSettings(f"unexpected platform type '{platform}' for {name}")
    if backend and platform == "ensemble":
        raise InvalidSettings(f"Ensemble model '{name}' must have platform type '{platform}' and empty backend type")
    if backend in KNOWN_BACKENDS and PLATFORM_BACKENDS.get(platform) != backend:
        raise InvalidSettings(f"unexpected 'platform' and 'backend' pair, got:{platform}, {backend}")
    max_batch = _int(config.get("max_batch_size"))
    if max_batch < 0:
        raise InvalidSettings(f"'max_batch_size' must be non-negative value for {name}")
    dynamic = config.get("dynamic_batching")
    if isinstance(dynamic, dict):
        _check_dynamic_batching(name, dynamic, max_batch)
    sequences = config.get("sequence_batching")
    if isinstance(sequences, dict):
        _check_sequence_batching(name, config, sequences, max_batch)
    if config.get("ensemble_scheduling") is not None:
        check_ensemble_graph(config)
    elif platform == "ensemble":
        raise InvalidSettings(f"ensemble scheduling must be set for ensemble {name} whose platform is ensemble")
    if _flag(config.get("model_transaction_policy"), "decoupled") and _flag(config.get("response_cache"), "enable"):
        raise InvalidSettings(_cache_refusal(name, "'decoupled' transaction policy"))
    metrics = config.get("model_metrics")
    if isinstance(metrics, dict):
        _check_model_metrics(metrics, name)


def _check_dynamic_batching(name: str, dynamic: Dict[str, Any], max_batch: int) -> None:
    for size in _ints(dynamic.get("preferred_batch_size")):
        if size <= 0:
            raise InvalidSettings(f"dynamic batching preferred size must be positive for {name}")
        if size > max_batch:
            raise InvalidSettings(f"dynamic batching preferred size must be <= max batch size for {name}")
    levels = _int(dynamic.get("priority_levels"))
    policies = dynamic.get("priority_queue_policy") or {}
    policies = policies if isinstance(policies, dict) else {}
    if levels:
        default = _int(dynamic.get("default_priority_level"))
        if default == 0 or default > levels:
            raise InvalidSettings(f"default priority level must be in range [1, {levels}] for {name}")
        for level in policies:
            if _int(level) == 0 or _int(level) > levels:
                raise InvalidSettings(f"priority queue policy must have priority level in range [1, {levels}] "
                                      f"for {name}")
    if dynamic.get("preserve_ordering") is True:
        if levels > 1:
            raise InvalidSettings(f"Only one priority level is allowed when 'preserve_ordering' is true for {name}")
        for policy in [dynamic.get("default_queue_policy") or {}, *policies.values()]:
            if isinstance(policy, dict) and _int(policy.get("default_timeout_microseconds")) != 0 \
                    and str(policy.get("timeout_action", "REJECT")) == "DELAY":
                raise InvalidSettings("Queue policy can not have DELAY as timeout action when 'preserve_ordering' "
                                      f"is true for {name}")


def _check_sequence_batching(name: str, config: Dict[str, Any], sequences: Dict[str, Any], max_batch: int) -> None:
    if _flag(config.get("response_cache"), "enable"):
        raise InvalidSettings(_cache_refusal(name, "sequence batching scheduler"))
    seen: Dict[str, str] = {}
    controls: Dict[str, List[Dict[str, Any]]] = {}
    for entry in _list(sequences.get("control_input")):
        tensor = str(entry.get("name") or "")
        for control in _list(entry.get("control")):
            kind = str(control.get("kind") or "CONTROL_SEQUENCE_START")
            if kind not in _CONTROL_KINDS + ("CONTROL_SEQUENCE_CORRID",):
                continue
            if not tensor:
                raise InvalidSettings(f"sequence batching control tensor must have a name for {name}")
            if seen.setdefault(tensor, kind) != kind:
                raise InvalidSettings(f"sequence batching control tensor '{tensor}' is specified for multiple "
                                      f"control kinds for {name}")
            controls.setdefault(kind, []).append(control)
    for kind in _CONTROL_KINDS:
        found = controls.get(kind, [])
        if len(found) > 1:
            raise InvalidSettings(f"sequence batching specifies multiple {kind} tensors for {name}")
        if found:
            given = [key for key in ("int32_false_true", "fp32_false_true", "bool_false_true") if found[0].get(key)]
            if not given:
                raise InvalidSettings("sequence batching must specify either 'int32_false_true', 'fp32_false_true' "
                                      f"or 'bool_false_true' for {kind} for {name}")
            if len(given) > 1:
                raise InvalidSettings("sequence batching specifies more than one from 'int32_false_true', "
                                      f"'fp32_false_true' and 'bool_false_true' for {kind} for {name}")
            if len(_list(found[0][given[0]])) != 2:
                raise InvalidSettings(f"sequence batching control '{given[0]}' must have exactly 2 entries for "
                                      f"{kind} for {name}")
    corrids = controls.get("CONTROL_SEQUENCE_CORRID", [])
    if len(corrids) > 1:
        raise InvalidSettings(f"sequence batching specifies multiple CONTROL_SEQUENCE_CORRID tensors for {name}")
    if corrids and str(corrids[0].get("data_type") or "TYPE_INVALID") not in (
            "TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING"):
        raise InvalidSettings(f"unexpected data type for control CONTROL_SEQUENCE_CORRID for {name}. Allowed data "
                              "types are TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING")
    oldest = sequences.get("oldest")
    if isinstance(oldest, dict):
        for size in _ints(oldest.get("preferred_batch_size")):
            if size <= 0:
                raise InvalidSettings(f"sequence batching preferred batch size must be positive for {name}")
            if size > max_batch:
                raise InvalidSettings(f"sequence batching preferred batch size must be <= max batch size for {name}")
    direct = sequences.get("direct")
    if isinstance(direct, dict):
        utilization = float(direct.get("minimum_slot_utilization") or 0.0)
        if utilization < 0.0 or utilization > 1.0:
            raise InvalidSettings(f"sequence batching minimum slot utilization must be in range (0.0, 1.0] for {name}")


# the metric families a config's model_metrics may give buckets to (Triton core's customizable ones)
CUSTOMIZABLE_METRICS = ("nv_inference_first_response_histogram_ms",)
_warned: set = set()


def _check_model_metrics(metrics: Dict[str, Any], model: str = "") -> None:
    for control in _list(metrics.get("metric_control")):
        identifier = control.get("metric_identifier")
        if not isinstance(identifier, dict):
            raise InvalidSettings("metric control must specify 'metric_identifier'")
        if not identifier.get("family"):
            raise InvalidSettings("metric identifier must specify non-empty 'family'")
        options = control.get("histogram_options")
        if not isinstance(options, dict):
            raise InvalidSettings("metric control must specify 'histogram_options'")
        if not _list(options.get("buckets")):
            raise InvalidSettings("histogram options must specify non-empty 'buckets'")
        family = str(identifier["family"])
        if family not in CUSTOMIZABLE_METRICS and (model, family) not in _warned:  # said once per model, as a load
            _warned.add((model, family))
            logger.warning("Metric family '%s' in 'metric_identifier' is not a customizable metric in Triton core.",
                           family)


def check_ensemble_graph(config: Dict[str, Any]) -> None:
    """Triton's ValidateEnsembleSchedulingConfig: the ensemble's own fields and its steps' data flow."""
    name = config.get("name") or ""
    if config.get("platform") != "ensemble":
        raise InvalidSettings(f"ensemble scheduling cannot be set for model '{name}' whose platform is not ensemble")
    if config.get("instance_group"):
        raise InvalidSettings(f"instance group should not be specified for ensemble '{name}'")
    if config.get("optimization") is not None:
        raise InvalidSettings(f"optimization should not be specified for ensemble '{name}'")
    if config.get("model_warmup"):
        raise InvalidSettings(f"model_warmup can not be specified for ensemble '{name}'")
    scheduling = config.get("ensemble_scheduling")
    if isinstance(scheduling, list):
        scheduling = scheduling[0] if scheduling else {}
    steps = _list((scheduling or {}).get("step"))
    if not steps:
        raise InvalidSettings(f"must specify 'step' for ensemble '{name}'")
    producers: Dict[str, List[str]] = {}  # tensor -> the tensors its step reads
    readers: Dict[str, int] = {}
    written = set()
    order: List[str] = []
    for index, step in enumerate(steps):
        if not isinstance(step, dict):  # a config given as JSON at load time can hold anything
            raise InvalidSettings(f"step {index} of ensemble '{name}' must be an object, not {type(step).__name__}")
        for key in ("model_name", "input_map", "output_map"):
            if not step.get(key):
                raise InvalidSettings(f"must specify '{key}' in step {index} of ensemble '{name}'")
        if not isinstance(step["model_name"], str):
            raise InvalidSettings(f"'model_name' in step {index} of ensemble '{name}' must be a string")
        for key in ("input_map", "output_map"):
            if not isinstance(step[key], dict):
                raise InvalidSettings(f"'{key}' in step {index} of ensemble '{name}' must map tensor names to "
                                      f"tensor names, not be {type(step[key]).__name__}")
        reads = [str(v) for v in (step.get("input_map") or {}).values()]
        for tensor in map(str, (step.get("output_map") or {}).values()):
            if tensor in written:
                raise InvalidSettings(f"ensemble tensor '{tensor}' can appear in an output map only once for "
                                      f"ensemble '{name}' step {index}")
            written.add(tensor)
            producers[tensor] = reads
            _note(order, tensor)
        for tensor in reads:
            readers[tensor] = readers.get(tensor, 0) + 1
            _note(order, tensor)
    ready = set()
    for entry in _list(config.get("input")):
        if entry.get("name") not in order:
            raise InvalidSettings(f"ensemble input '{entry.get('name')}' for ensemble {name}' is not used")
        ready.add(entry["name"])
    changed = True
    while changed:  # a written tensor is ready once everything its step reads is
        changed = False
        for tensor, reads in producers.items():
            if tensor not in ready and all(t in ready for t in reads):
                ready.add(tensor)
                changed = True
    outputs = set()
    for entry in _list(config.get("output")):
        tensor = entry.get("name")
        if tensor not in order:
            raise InvalidSettings(f"ensemble output '{tensor}' for ensemble {name}' is not used")
        if tensor not in ready:
            raise InvalidSettings(_not_written(name, tensor, producers, ready))
        outputs.add(tensor)
    for tensor in order:
        if tensor not in outputs and (tensor not in ready or not readers.get(tensor)):
            raise InvalidSettings(f"ensemble tensor '{tensor}' is unused in ensemble '{name}'")


def _note(order: List[str], tensor: str) -> None:
    if tensor not in order:
        order.append(tensor)


def _not_written(name: str, tensor: str, producers: Dict[str, List[str]], ready: set) -> str:
    message = f"output '{tensor}' for ensemble '{name}' is not written"
    seen, last, reads = set(), tensor, producers.get(tensor, [])
    while reads:  # follow the first not-ready tensor back to where the flow breaks
        nxt = next((t for t in reads if t not in ready and t not in seen), None)
        if nxt is None:
            break
        seen.add(nxt)
        last, reads = nxt, producers.get(nxt, [])
    if last != tensor:
        message += f": at least one of its depending tensors, '{last}', is not connected"
    return message


def validate_io(config: Dict[str, Any]) -> None:
    """Triton's ValidateModelIOConfig: each tensor's name, type, dims and reshape, then batch inputs/outputs."""
    name = config.get("name") or ""
    max_batch = _int(config.get("max_batch_size"))
    platform = config.get("platform") or ""
    for kind, key in (("input", "input"), ("output", "output")):
        for entry in _list(config.get(key)):
            try:
                _check_tensor(entry, max_batch, f"model {kind} ", platform, kind == "input")
            except InvalidSettings as exc:
                raise InvalidSettings(f"{exc} for {name}") from None
    try:
        _check_batch_io(config)
    except InvalidSettings as exc:
        raise InvalidSettings(f"{exc} for {name}") from None


def _check_tensor(entry: Dict[str, Any], max_batch: int, prefix: str, platform: str, is_input: bool) -> None:
    if not entry.get("name"):
        raise InvalidSettings(f"{prefix}must specify 'name'")
    prefix = f"{prefix}'{entry['name']}' "
    if str(entry.get("data_type") or "TYPE_INVALID") == "TYPE_INVALID":
        raise InvalidSettings(f"{prefix}must specify 'data_type'")
    dims = _ints(entry.get("dims"))
    if not dims:
        raise InvalidSettings(f"{prefix}must specify 'dims'")
    reshape = entry.get("reshape")
    if isinstance(reshape, list):
        reshape = reshape[0] if reshape else {}
    shape = _ints(reshape.get("shape")) if isinstance(reshape, dict) else None
    if shape is not None and not shape and max_batch == 0:
        raise InvalidSettings(f"{prefix}cannot have empty reshape for non-batching model as scalar tensors are "
                              "not supported")
    if any(d < 1 and d != -1 for d in dims):
        raise InvalidSettings(f"{prefix}dimension must be integer >= 1, or -1 to indicate a variable-size dimension")
    if shape is not None:
        if any(d < 1 and d != -1 for d in shape):
            raise InvalidSettings(f"{prefix}reshape dimensions must be integer >= 1, or -1 to indicate a "
                                  "variable-size dimension")
        dims_size, shape_size = _elements(dims), _elements(shape)
        if dims_size != shape_size and (shape_size != 0 or dims_size != 1):
            raise InvalidSettings(f"{prefix}has different size for dims and reshape")
        if dims_size == -1:
            dims_runs, shape_runs = _runs(dims), _runs(shape)
            if len(dims_runs) != len(shape_runs):
                raise InvalidSettings(f"{prefix}has different number of variable-size dimensions for dims and "
                                      "reshape")
            if dims_runs != shape_runs:
                raise InvalidSettings(f"{prefix}has different size for dims and reshape")
    if is_input and str(entry.get("format") or "") in ("FORMAT_NHWC", "FORMAT_NCHW") and len(dims) != 3:
        raise InvalidSettings("model input NHWC/NCHW require 3 dims")
    if platform != "tensorrt_plan" and entry.get("is_shape_tensor") is True:
        raise InvalidSettings("shape tensors are only supported for TensorRT platform")
    if entry.get("is_non_linear_format_io") is True:
        if platform != "tensorrt_plan":
            raise InvalidSettings("Non-linear IO format is only supported for the TensorRT platform")
        if len(dims) != 3:
            raise InvalidSettings(f"Non-linear IO format {'input' if is_input else 'output'} requires 3 dims")


def _elements(dims: List[int]) -> int:
    """Element count; -1 when any dimension is variable, 0 for no dimensions (Triton's GetElementCount)."""
    if not dims:
        return 0
    if -1 in dims:
        return -1
    count = 1
    for d in dims:
        count *= d
    return count


def _runs(dims: List[int]) -> List[int]:
    """The element counts of the stretches between variable-size dimensions."""
    runs, current = [], 1
    for d in dims:
        if d == -1:
            runs.append(current)
            current = 1
        else:
            current *= d
    return runs + [current]


def _check_batch_io(config: Dict[str, Any]) -> None:
    inputs = {e.get("name") for e in _list(config.get("input"))}
    outputs = {e.get("name") for e in _list(config.get("output"))}
    for entry in _list(config.get("batch_input")):
        kind = str(entry.get("kind") or "BATCH_ELEMENT_COUNT")
        sources = [str(s) for s in _list(entry.get("source_input"))]
        if kind not in _BATCH_INPUT_KINDS:
            raise InvalidSettings(f"unknown batch input kind '{kind}'")
        if len(sources) != 1:
            raise InvalidSettings(f"batch input kind '{kind}' expects 1 source input, got {len(sources)}")
        if str(entry.get("data_type") or "TYPE_INVALID") not in ("TYPE_INT32", "TYPE_FP32"):
            raise InvalidSettings("batch input data type must be TYPE_INT32 or TYPE_FP32")
        for source in sources:
            if source not in inputs:
                raise InvalidSettings(f"unknown source input name '{source}'")
    for entry in _list(config.get("batch_output")):
        kind = str(entry.get("kind") or "BATCH_SCATTER_WITH_INPUT_SHAPE")
        sources = [str(s) for s in _list(entry.get("source_input"))]
        if kind != "BATCH_SCATTER_WITH_INPUT_SHAPE":
            raise InvalidSettings(f"unknown batch output kind '{kind}'")
        if len(sources) != 1:
            raise InvalidSettings(f"batch output kind '{kind}' expects 1 source input, got {len(sources)}")
        for source in sources:
            if source not in inputs:
                raise InvalidSettings(f"unknown source input name '{source}'")
        targets = set()
        for target in map(str, _list(entry.get("target_name"))):
            if target not in outputs:
                raise InvalidSettings(f"unknown target output name '{target}'")
            if target in targets:
                raise InvalidSettings(f"target output name '{target}' can only be specified once")
            targets.add(target)


def validate_instance_groups(config: Dict[str, Any], gpu_count: int) -> None:
    """Triton's ValidateInstanceGroup on the groups as written (unnamed ones named MODEL_INDEX). A KIND_GPU
    group may name GPU 0 on a machine without GPUs (gpuserve serves it on the CPU); an id that names no
    device otherwise is refused, as Triton refuses it."""
    name = config.get("name") or ""
    if config.get("ensemble_scheduling") is not None or config.get("platform") == "ensemble":
        return
    platform = config.get("platform") or ""
    for index, group in enumerate(_list(config.get("instance_group"))):
        label = group.get("name") or f"{name}_{index}"
        kind = str(group.get("kind") or "KIND_AUTO")
        gpus = _ints(group.get("gpus"))
        count = group.get("count")
        if count is not None and int(count) < 0:  # (Triton 2.51 serves one instance; nothing says so)
            raise InvalidSettings(f"instance group {label} of model {name} has count {count}; a count is 0 or more")
        if kind in ("KIND_CPU", "KIND_MODEL") and gpus:
            raise InvalidSettings(f"instance group {label} of model {name} has kind {kind} but specifies one or "
                                  f"more GPU{'s' if kind == 'KIND_MODEL' else ''}")
        if kind == "KIND_GPU":
            usable = set(range(max(gpu_count, 1)))
            for gpu in gpus:
                if gpu not in usable:
                    listed = ", ".join(str(g) for g in range(gpu_count))
                    raise InvalidSettings(f"instance group {label} of model {name} specifies invalid or unsupported "
                                          f"gpu id {gpu}. GPUs with at least the minimum required CUDA compute "
                                          f"compatibility of 6.000000 are: {listed}")
        profiles = [str(p) for p in _list(group.get("profile"))]
        if profiles and platform != "tensorrt_plan":
            raise InvalidSettings(f"instance group {label} of model {name} and platform {platform}specifies profile "
                                  "field which is only supported for TensorRT models")


def gpu_count() -> int:
    try:
        from gpuserve.backends.cuda import cuda_device_count

        return int(cuda_device_count())
    except Exception:  # no CUDA runtime at all: no GPUs
        return 0


def _flag(block: Any, key: str) -> bool:
    return isinstance(block, dict) and block.get(key) is True


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _ints(value: Any) -> List[int]:
    return [_int(v) for v in _list(value)]


def _list(value: Any) -> List[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def checked_config(folder: Path, config: Dict[str, Any], auto_complete: bool,
                   gpus: Optional[int] = None) -> Dict[str, Any]:
    """The whole check of one model folder's config, as Triton makes it before looking at versions; returns
    the config with its backend fields filled in."""
    completed = complete_backend(folder.name, folder, config)
    validate(completed, auto_complete, gpu_count() if gpus is None else gpus)
    if completed["name"] != folder.name:
        raise InvalidSettings(f"unexpected directory name '{folder.name}' for model '{completed['name']}', "
                              "directory name must equal model name")
    return completed


def check_ensemble_steps(config: Dict[str, Any], steps: List[Dict[str, Any]],
                         step_configs: List[Dict[str, Any]]) -> Optional[str]:
    """Triton's ValidateEnsembleConfig once the steps' models are loaded: each step's batch size, its
    input/output maps against the model's tensors, every ensemble tensor's type and shape as each model
    infers it, and that no step joins tensors that come from different decoupled steps. Returns Triton's
    sentence for the first problem, None when there is none. `steps` are the ensemble_scheduling steps and
    `step_configs` their models' completed configs (Triton's JSON form), in the same order."""
    name = config.get("name") or ""
    max_batch = _int(config.get("max_batch_size"))
    tensors: Dict[str, _Tensor] = {}
    for entry in _list(config.get("input")):
        tensors[entry["name"]] = _Tensor(name, max_batch > 0, entry, own=True)
    sink = _Tensor(name)
    for entry in _list(config.get("output")):
        node = tensors.setdefault(entry["name"], _Tensor(name, max_batch > 0, entry, own=True))
        sink.prev.append(node)
        node.next.append(sink)
    for step, model in zip(steps, step_configs):
        model_name = str(step.get("model_name") or "")
        step_batch = _int(model.get("max_batch_size"))
        if step_batch != 0 and step_batch < max_batch:
            return (f"ensemble {name} allows maximum batch size {max_batch}, but it contains model {model_name} "
                    f"which only allows maximum batch size to be {step_batch}")
        problem = _map_step(name, model_name, step, model, tensors)
        if problem:
            return problem
    problem = _decoupled_join(name, config, tensors)
    if problem is None and _flag(config.get("response_cache"), "enable") and any(
            _flag(model.get("model_transaction_policy"), "decoupled") for model in step_configs):
        # a decoupled step makes the ensemble decoupled, which the cache cannot serve (as Triton refuses it)
        return _cache_refusal(name, "'decoupled' transaction policy")
    return problem


def _cache_refusal(name: str, what: str) -> str:
    return f"Response Cache does not currently support model {name} with {what}. Please disable the response cache."


class _Tensor:
    """An ensemble tensor as one model infers it (Triton's TensorNode)."""

    def __init__(self, model: str, batching: bool = False, entry: Optional[Dict[str, Any]] = None,
                 own: bool = False):
        self.model = model
        entry = entry or {}
        reshape = entry.get("reshape")
        reshape = reshape[0] if isinstance(reshape, list) and reshape else reshape
        # the ensemble's own tensors count by their reshape, its steps' by their dims (as Triton)
        dims = _ints(reshape.get("shape")) if own and isinstance(reshape, dict) else _ints(entry.get("dims"))
        self.type = str(entry.get("data_type") or "TYPE_INVALID")
        self.dims = dims
        self.full = ([-1] if batching else []) + dims
        self.decoupled, self.label, self.visited = False, 0, False
        self.prev: List["_Tensor"] = []
        self.next: List["_Tensor"] = []
        self.sibling: Optional["_Tensor"] = None


def _same_dims(a: List[int], b: List[int]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))


def _merge(tensors: dict, tensor: str, node, ensemble: str) -> Optional[str]:
    """Record what a step says of an ensemble tensor; the problem when an earlier step said otherwise."""
    if tensor not in tensors:
        tensors[tensor] = node
        return None
    return _consistent(tensors[tensor], node, f"in ensemble {ensemble}, ensemble tensor {tensor}: ")


def _consistent(known: _Tensor, new: _Tensor, prefix: str) -> Optional[str]:
    if known.type != new.type:
        return (f"{prefix}inconsistent data type: {known.type} is inferred from model {known.model} while "
                f"{new.type} is inferred from model {new.model}")
    if not _same_dims(known.dims, new.dims) and not _same_dims(known.full, new.full):
        return (f"{prefix}inconsistent shape: {_shape(known.full)} is inferred from model {known.model} while "
                f"{_shape(new.full)} is inferred from model {new.model}")
    return None


def _shape(dims: List[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _map_step(ensemble: str, model_name: str, step: Dict[str, Any], model: Dict[str, Any],
              tensors: Dict[str, _Tensor]) -> Optional[str]:
    batching = _int(model.get("max_batch_size")) > 0
    input_map = {str(k): str(v) for k, v in (step.get("input_map") or {}).items()}
    output_map = {str(k): str(v) for k, v in (step.get("output_map") or {}).items()}
    inputs = _list(model.get("input"))
    names = {e.get("name") for e in inputs}
    for key, tensor in input_map.items():
        if key not in names:
            return (f"in ensemble {ensemble}, ensemble tensor {tensor} is mapping to non-existing input {key} in "
                    f"model {model_name}")
    for entry in inputs:
        tensor = input_map.get(entry.get("name"))
        if tensor is None:
            if entry.get("optional") is True:
                continue
            return (f"in ensemble {ensemble}, input {entry.get('name')} in model {model_name} is not mapped to any "
                    "ensemble tensors")
        problem = _merge(tensors, tensor, _Tensor(model_name, batching, entry), ensemble)
        if problem:
            return problem
    outputs = {e.get("name"): e for e in _list(model.get("output"))}
    for key, tensor in output_map.items():
        if key not in outputs:
            return (f"in ensemble {ensemble}, ensemble tensor {tensor} is mapped from non-existing output {key} in "
                    f"model {model_name}")
    sibling = _Tensor(model_name)
    for key, tensor in output_map.items():
        problem = _merge(tensors, tensor, _Tensor(model_name, batching, outputs[key]), ensemble)
        if problem:
            return problem
        tensors[tensor].sibling = sibling
    decoupled = _flag(model.get("model_transaction_policy"), "decoupled")
    for tensor in output_map.values():
        node = tensors[tensor]
        node.decoupled = decoupled
        for source in input_map.values():
            node.prev.append(tensors[source])
            tensors[source].next.append(node)
    return None


def _decoupled_join(ensemble: str, config: Dict[str, Any], tensors: Dict[str, _Tensor]) -> Optional[str]:
    """Walks the graph from the ensemble's inputs, labelling each tensor with the decoupled step it comes
    from; a step (or the ensemble's outputs) fed by two labels pairs nothing and is refused."""
    label = 0
    queue = []
    for entry in _list(config.get("input")):
        node = tensors[entry["name"]]
        node.visited = True
        queue.append(node)
    while queue:
        current = queue.pop(0)
        for node in current.next:
            if node.visited or not all(p.visited for p in node.prev):
                continue
            first = node.prev[0].label
            if any(p.label != first for p in node.prev):
                return (f"in ensemble {ensemble}, step of model '{node.model}' receives inputs originated from "
                        "different decoupled models")
            if node.sibling is not None and node.sibling.visited:
                node.label = node.sibling.label
            else:
                if node.decoupled:
                    label += 1
                node.label = label if node.decoupled else first
                if node.sibling is not None:
                    node.sibling.label, node.sibling.visited = node.label, True
            node.visited = True
            queue.append(node)
    return None
