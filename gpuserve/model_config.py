"""A model's configuration in Triton's JSON form (what `GET /v2/models/NAME/config` and the gRPC
ModelConfig answer), completed from its metadata and settings for models that have no config.pbtxt.

With `max_batch_size > 0`, Triton's dims leave out the batch dimension, so that is only claimed when
every tensor's first dimension is the variable (-1) batch dimension.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from gpuserve.triton_normalize import GROUP_FIELDS_SHOWN, normalize
from gpuserve.triton_validate import PLATFORM_BACKENDS

CONFIG_TYPES = {"BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
                "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
                "INT64": "TYPE_INT64", "FP16": "TYPE_FP16", "FP32": "TYPE_FP32", "FP64": "TYPE_FP64",
                "BYTES": "TYPE_STRING", "BF16": "TYPE_BF16"}
_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
_FILES = {"onnxruntime_onnx": "model.onnx", "pytorch_libtorch": "model.pt", "tensorrt_plan": "model.plan",
          "torch_aoti": "model.pt2"}


def _max_batch(meta: Dict[str, Any], settings: Optional[Any]) -> int:
    # A config.pbtxt's own (its max_batch_size 1 leaves the engine unbatched, yet requests keep the batch dim)
    declared = (getattr(settings, "model_extra", None) or {}).get("triton_max_batch_size")
    if declared is None:
        declared = (meta.get("parameters") or {}).get("max_batch_size")
    if declared is None:
        declared = getattr(settings, "max_batch_size", 0)
    declared = declared if isinstance(declared, int) and declared > 0 else 0
    tensors = [*(meta.get("inputs") or []), *(meta.get("outputs") or [])]
    if declared and not all(t["shape"] and int(t["shape"][0]) == -1 for t in tensors):
        return 0
    return declared


def model_config(meta: Dict[str, Any], settings: Optional[Any] = None) -> Dict[str, Any]:
    max_batch = _max_batch(meta, settings)
    skip = 1 if max_batch else 0
    platform = meta.get("platform") or ""
    backend = {**PLATFORM_BACKENDS, "fil": "fil"}.get(platform, "python" if platform in ("", "python") else "")
    if platform in ("python", "fil"):  # Triton's metadata names these backends; their config leaves platform empty
        platform = ""
    config: Dict[str, Any] = {"name": meta.get("name", ""), "platform": platform, "backend": backend,
                              "max_batch_size": max_batch}
    for key, target in (("inputs", "input"), ("outputs", "output")):
        config[target] = [{"name": t["name"], "data_type": CONFIG_TYPES.get(t["datatype"], "TYPE_INVALID"),
                           "dims": [int(d) for d in t["shape"]][skip:]} for t in meta.get(key) or []]
    extra = getattr(settings, "model_extra", None) or {}
    labels = extra.get("triton_label_files") or {}
    for entry in config["output"]:
        if entry["name"] in labels:
            entry["label_filename"] = labels[entry["name"]]
    formats = extra.get("triton_input_formats") or {}
    optional = extra.get("triton_optional_inputs") or ()
    for entry in config["input"]:
        if entry["name"] in formats:
            entry["format"] = formats[entry["name"]]
        if entry["name"] in optional:
            entry["optional"] = True
    reshapes = extra.get("triton_reshapes") or {}
    for kind, key in (("inputs", "input"), ("outputs", "output")):
        for entry in config[key]:
            if entry["name"] in (reshapes.get(kind) or {}):
                entry["reshape"] = {"shape": list(reshapes[kind][entry["name"]])}
    for key, value in (extra.get("triton_shown") or {}).items():
        config[key] = _as_triton_json(key, value)
    ragged = extra.get("triton_ragged")
    if ragged:  # as written (gpuserve/ragged_batch.py)
        flagged = {e.get("name") for e in ragged.get("input") or [] if e.get("allow_ragged_batch") is True}
        for entry in config["input"]:
            if entry["name"] in flagged:
                entry["allow_ragged_batch"] = True
        for key in ("batch_input", "batch_output"):  # repeated fields as lists, as Triton's JSON has them
            if ragged.get(key):
                config[key] = [{k: (v if k not in ("target_name", "source_input") or isinstance(v, list) else [v])
                                for k, v in e.items()} for e in ragged[key]]
    versions = sorted(int(v) for v in meta.get("versions") or [] if str(v).isdigit())
    declared = extra.get("triton_version_policy")
    if declared:  # a config.pbtxt's own policy, as Triton reports it
        config["version_policy"] = declared
    else:
        config["version_policy"] = {"specific": {"versions": versions}} if versions else {"latest": {"num_versions": 1}}
    sequences = extra.get("triton_sequence_batching")
    if sequences is not None:  # as written: Triton schedules such a model with it instead of dynamic_batching
        config["sequence_batching"] = dict(sequences)
    elif max_batch or getattr(settings, "dynamic_batching", None) is not None:  # a written one shows, as Triton
        dyn = getattr(settings, "dynamic_batching", None)
        delay_us = int(getattr(settings, "max_batch_time", 0) * 1_000_000)
        batching: Dict[str, Any] = {"max_queue_delay_microseconds": delay_us}
        if dyn is not None:
            batching["max_queue_delay_microseconds"] = dyn.max_queue_delay_microseconds or delay_us
            if dyn.preferred_batch_size:
                batching["preferred_batch_size"] = list(dyn.preferred_batch_size)
            if dyn.priority_levels:
                batching["priority_levels"] = dyn.priority_levels
            if dyn.default_priority_level:
                batching["default_priority_level"] = dyn.default_priority_level
            batching.update(_queue_policies(dyn.model_extra or {}))
        config["dynamic_batching"] = batching
    if platform in _FILES:  # as Triton completes it: the file the versions hold
        uri = str((getattr(settings, "parameters", None) and settings.parameters.uri) or "")
        config["default_model_filename"] = os.path.basename(uri) or _FILES[platform]
    if getattr(settings, "response_cache", False):
        config["response_cache"] = {"enable": True}
    groups = [_written_group(g) for g in getattr(settings, "instance_groups", None) or []]
    if groups:
        config["instance_group"] = groups
    return normalize(config, (meta.get("parameters") or {}).get("device", ""))


def _written_group(group: Any) -> Dict[str, Any]:
    """A settings instance group back in the config's words (its name, rate limiter, profile as written)."""
    written = group.model_extra or {}
    return {**{key: written[key] for key in GROUP_FIELDS_SHOWN if key in written},
            "count": group.count, "kind": written.get("triton_kind") or _KINDS.get(group.kind, "KIND_AUTO"),
            "gpus": list(group.gpus)}


def _queue_policies(extra: Dict[str, Any]) -> Dict[str, Any]:
    """A config's queue policies as Triton's JSON shows them (the per-level map keyed by level)."""
    out: Dict[str, Any] = {}
    if extra.get("default_queue_policy"):
        out["default_queue_policy"] = dict(extra["default_queue_policy"])
    levels = extra.get("priority_queue_policy")  # level -> policy (the text parser reads it as a map)
    if levels:
        out["priority_queue_policy"] = {str(key): dict(value or {}) for key, value in levels.items()}
    return out


def _as_triton_json(key: str, value: Any) -> Any:
    """A config.pbtxt field as Triton's JSON has it: repeated messages as lists (the text parser gives a
    lone one as a dict), warmup inputs' `dims` as lists."""
    import copy

    value = copy.deepcopy(value)
    if key == "model_warmup":
        value = value if isinstance(value, list) else [value]
        for sample in value:
            for spec in (sample.get("inputs") or {}).values():
                if isinstance(spec, dict) and "dims" in spec and not isinstance(spec["dims"], list):
                    spec["dims"] = [spec["dims"]]
    return value
