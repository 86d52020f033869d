"""A Triton config's `input` / `output` against what the model file itself declares.

Triton checks a config.pbtxt's tensors against an ONNX or TensorRT model when it loads: a name the model
lacks, another datatype, or a fixed dimension the model contradicts fails the load with the reason; and
what clients are shown (metadata, the config endpoint) and held to (each request's shape) is the config's
more specific shape, so a model exported with dynamic axes and pinned in its config takes the config's
dims. perf_analyzer builds its inputs from that metadata. gpuserve does the same for config.pbtxt models of
the frameworks whose files describe their tensors (TorchScript takes the config as its description).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from gpuserve.backends.base import TensorSpec
from gpuserve.errors import InvalidInput, InvalidSettings


def reconcile(model: str, declared: Sequence, actual: Sequence[TensorSpec], kind: str,
              reshapes: Optional[Dict[str, List[int]]] = None, batched: bool = False) -> List[TensorSpec]:
    """The tensors to serve: `declared` (settings' TensorMetadata, shapes with the batch dimension) checked
    against and merged with `actual` (the backend's); the backend's own when nothing is declared. A tensor
    with a `reshape` is checked against the model by its reshape shape and served by its declared dims."""
    if not declared:
        return list(actual)
    have = {spec.name: spec for spec in actual}
    served = []
    for want in declared:
        spec = have.get(want.name)
        if spec is None:
            raise InvalidSettings(f"model '{model}': unexpected inference {kind} '{want.name}' in config.pbtxt; "
                                  f"the model's {kind}s are: {', '.join(have) or 'none'}")
        if spec.datatype != want.datatype:
            raise InvalidSettings(f"model '{model}': {kind} '{want.name}' is {want.datatype} in config.pbtxt but "
                                  f"{spec.datatype} in the model file")
        reshape = (reshapes or {}).get(want.name)
        if reshape is not None:
            _merge(model, kind, want.name, ([-1] if batched else []) + list(reshape), list(spec.shape))
            served.append(TensorSpec(want.name, want.datatype, list(want.shape)))
            continue
        served.append(TensorSpec(want.name, want.datatype, _merge(model, kind, want.name, list(want.shape),
                                                                  list(spec.shape))))
    if kind == "input":  # every input the model needs must be declared; a config may list fewer outputs
        missing = [name for name in have if name not in {want.name for want in declared}]
        if missing:
            raise InvalidSettings(f"model '{model}': the model file needs input(s) {', '.join(missing)} that "
                                  "config.pbtxt does not declare")
    return served


def reshaped(array, shape: Sequence[int], batched: bool, what: str, error=InvalidInput):
    """`array` in `shape` (a `reshape` or the declared dims), its batch dimension kept where there is one."""
    target = ((array.shape[0],) if batched and array.ndim else ()) + tuple(shape)
    try:
        return array.reshape(target)
    except ValueError:
        raise error(f"{what} of shape {list(array.shape)} does not reshape to {list(target)}") from None


def _merge(model: str, kind: str, name: str, want: List[int], have: List[int]) -> List[int]:
    if not have:  # the file does not say
        return want
    if len(want) != len(have):
        raise InvalidSettings(f"model '{model}': {kind} '{name}' has shape {want} by config.pbtxt (with the batch "
                              f"dimension where max_batch_size > 0) but {have} in the model file")
    merged = []
    for wanted, had in zip(want, have):
        if wanted != -1 and had != -1 and wanted != had:
            raise InvalidSettings(f"model '{model}': {kind} '{name}' has shape {want} by config.pbtxt (with the "
                                  f"batch dimension where max_batch_size > 0) but {have} in the model file")
        merged.append(had if had != -1 else wanted)
    return merged
