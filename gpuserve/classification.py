"""Triton's classification extension: `classification: k` (tritonclient's `class_count`) on a
requested output turns that output into
its top-k classes per row, each a `value:index[:label]` BYTES string, labels read from the model's
label file (`labels_file` in the model settings' parameters.extra, or `labels.txt` in its folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from gpuserve.errors import InvalidInput
from gpuserve.kernels.topk import TopK, topk_cpu
from gpuserve.types import InferOutput, InferRequest, InferResponse

_label_cache: Dict[str, List[str]] = {}


def labels_for(model, output: Optional[str] = None, path: Optional[Path] = None) -> Optional[List[str]]:
    """The labels of `output`: a config.pbtxt names a label_filename per output (as Triton, an output without
    one has none; an ensemble's comes from the step that produces it); other models have one file for all.
    With `path`, that file's."""
    if path is not None:
        return _read_labels(path)
    own = getattr(model, "output_labels", None)
    if own is not None and output is not None:
        return own(output)
    settings = getattr(model, "settings", None)
    if settings is None:
        return None
    extra = getattr(getattr(settings, "parameters", None), "extra", None) or {}
    folder = Path(getattr(settings, "folder", None) or ".")
    per_output = (getattr(settings, "model_extra", None) or {}).get("triton_label_files")
    if output is not None and per_output is not None:
        return _read_labels(folder / per_output[output]) if output in per_output else None
    if output is not None and "triton_max_batch_size" in (getattr(settings, "model_extra", None) or {}) \
            and not extra.get("labels_file"):
        return None  # a config.pbtxt model without label_filename: no labels
    path = Path(extra["labels_file"]) if extra.get("labels_file") else folder / "labels.txt"
    if not path.is_absolute():
        path = folder / path
    return _read_labels(path)


def _read_labels(path: Path) -> Optional[List[str]]:
    key = str(path)
    if key not in _label_cache:
        _label_cache[key] = path.read_text().splitlines() if path.is_file() else []
    return _label_cache[key] or None


def check_count(name: str, k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInput(f"output '{name}': classification must be a positive integer, got {k!r}")
    return k


def requested_counts(request: InferRequest) -> Dict[str, int]:
    """Output name -> k for every requested output that asks for classification (checked)."""
    return {o.name: check_count(o.name, _count(o.parameters)) for o in request.request_outputs or ()
            if _count(o.parameters) is not None}


def classify(output: InferOutput, k: int, labels: Optional[List[str]], batched: bool) -> InferOutput:
    check_count(output.name, k)
    values = output.as_numpy()
    if values.dtype == object or values.dtype == bool:
        raise InvalidInput(f"output '{output.name}' of datatype {output.datatype} cannot be classified")
    flat = not (batched and values.ndim > 1)
    rows = values.reshape(1, -1) if flat else values.reshape(values.shape[0], -1)
    return classes_output(output.name, TopK(*topk_cpu(rows, k)), labels, flat, output.parameters)


def classes_output(name: str, top: TopK, labels: Optional[List[str]], flat: bool,
                   parameters: Optional[dict] = None) -> InferOutput:
    """Rows of top-k (value, index) pairs as `value:index[:label]` BYTES; `flat` for an unbatched output."""
    top, index = top.values, top.indices
    text = np.empty(top.shape, dtype=object)
    for r in range(top.shape[0]):
        for c in range(top.shape[1]):
            i = int(index[r, c])
            entry = f"{float(top[r, c]):f}:{i}"
            if labels is not None and i < len(labels):
                entry += f":{labels[i]}"
            text[r, c] = entry.encode()
    if flat:
        text = text.reshape(-1)
    params = {k2: v for k2, v in (parameters or {}).items() if k2 not in ("classification", "class_count")}
    return InferOutput(name, list(text.shape), "BYTES", text, params)


def apply_classification(model, request: InferRequest, response: InferResponse) -> None:
    if getattr(model, "classifies_outputs", False):  # engine models reduce in the kernel stage themselves
        return
    wanted = {o.name: _count(o.parameters) for o in request.request_outputs or () if _count(o.parameters)}
    if not wanted:
        return
    batched = _batched(model)
    response.outputs = [classify(o, wanted[o.name], labels_for(model, o.name), batched) if o.name in wanted else o
                        for o in response.outputs]


def _count(parameters: dict):
    """The wire name is `classification`; `class_count` is accepted too."""
    return parameters.get("classification") or parameters.get("class_count")


def _batched(model) -> bool:
    scheduler = getattr(model, "scheduler", None)
    if scheduler is not None:
        return bool(scheduler.batch_dim)
    batched = getattr(model, "batched", None)  # an ensemble: its max_batch_size
    return batched if isinstance(batched, bool) else True
