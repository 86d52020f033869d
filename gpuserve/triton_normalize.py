"""Triton's completion of a model's config (core's NormalizeModelConfig and NormalizeInstanceGroup), in one
place for every Triton-form config gpuserve shows: model files served by ONNX Runtime, PyTorch, TensorRT or
FIL (gpuserve/model_config.py) and Python-backend models (gpuserve/triton_python_config.py, whose result is
also what `initialize(args)["model_config"]` reads). Two builders that each completed part of it drifted
(one gave Oldest no preferred size, the other no pinned memory to a written `optimization`).

Clients read these fields back (perf_analyzer sizes its batches from `preferred_batch_size`, tritonclient's
examples read instance groups), so what is filled in follows Triton's rules, while a field that says what
gpuserve runs (an instance group's kind and count) says what it really runs.
"""

from __future__ import annotations

from typing import Any, Dict, List

SEQUENCE_IDLE_DEFAULT_US = 1_000_000
# an instance group's fields a config.pbtxt may write that gpuserve only shows
GROUP_FIELDS_SHOWN = ("name", "rate_limiter", "profile", "passive", "host_policy", "secondary_devices")


def normalize(config: Dict[str, Any], device: str = "") -> Dict[str, Any]:
    """A copy of `config` (Triton's JSON form, as written plus what the model file tells) completed as
    Triton completes it. `device` is where the model runs ("cpu", "cuda:N"): it settles KIND_AUTO."""
    out = dict(config)
    out.setdefault("version_policy", {"latest": {"num_versions": 1}})
    max_batch = int(out.get("max_batch_size") or 0)
    if "dynamic_batching" in out:
        out["dynamic_batching"] = _preferred(out["dynamic_batching"], max_batch)
    if "sequence_batching" in out:
        sequences = dict(out["sequence_batching"] or {})
        if not int(sequences.get("max_sequence_idle_microseconds") or 0):
            sequences["max_sequence_idle_microseconds"] = SEQUENCE_IDLE_DEFAULT_US
        if isinstance(sequences.get("oldest"), dict):
            sequences["oldest"] = _preferred(sequences["oldest"], max_batch)
        out["sequence_batching"] = sequences
    if not _is_ensemble(out):  # neither pinned staging nor instances apply to an ensemble's own steps
        optimization = dict(out.get("optimization") or {})
        for key in ("input_pinned_memory", "output_pinned_memory"):
            optimization.setdefault(key, {"enable": True})
        out["optimization"] = optimization
        out["instance_group"] = instance_groups(out.get("instance_group") or [], out.get("name", ""), device)
    return out


def instance_groups(groups: List[Dict[str, Any]], name: str, device: str) -> List[Dict[str, Any]]:
    """Groups as Triton resolves them: an added one named after the model, unnamed ones MODEL_INDEX, KIND_AUTO
    settled by the device, a GPU group without ids on the model's GPU. A KIND_GPU group on a machine without
    a usable GPU shows KIND_CPU: gpuserve serves it there (the CPU fallback, said in the load log) where
    Triton would refuse the model."""
    on_gpu = device.startswith("cuda")
    resolved = []
    for index, group in enumerate(groups or [{"name": name}]):
        kind = str(group.get("kind") or "KIND_AUTO").upper()
        if kind not in ("KIND_CPU", "KIND_GPU", "KIND_MODEL") or (kind == "KIND_GPU" and not on_gpu):
            kind = "KIND_GPU" if on_gpu and kind != "KIND_CPU" else "KIND_CPU"
        gpus = [int(g) for g in group.get("gpus") or []]
        if kind == "KIND_GPU" and not gpus:
            gpus = [int(device.partition(":")[2] or 0)]
        if kind == "KIND_CPU":
            gpus = []
        shown = {"name": group.get("name") or f"{name}_{index}", "kind": kind,
                 "count": int(group.get("count") or 1), "gpus": gpus,
                 "secondary_devices": list(group.get("secondary_devices") or []),
                 "profile": [str(p) for p in group.get("profile") or []],
                 "passive": bool(group.get("passive", False)), "host_policy": str(group.get("host_policy") or "")}
        if group.get("rate_limiter"):
            shown["rate_limiter"] = group["rate_limiter"]
        resolved.append(shown)
    return resolved


def _preferred(block: Any, max_batch: int) -> Dict[str, Any]:
    out = dict(block or {})
    if not out.get("preferred_batch_size") and max_batch:
        out["preferred_batch_size"] = [max_batch]
    return out


def _is_ensemble(config: Dict[str, Any]) -> bool:
    return config.get("platform") == "ensemble" or "ensemble_scheduling" in config
