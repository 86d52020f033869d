"""A Triton config's `input` / `output` against what the model file itself declares.

Triton checks a config.pbtxt's tensors against an ONNX or TensorRT model when it loads: a name the model
lacks, another datatype, or a fixed dimension the model contradicts fails the load with the reason; and
what clients are shown (metadata, the config endpoint) and held to (each request's shape) is the config's
more specific shape, so a model exported with dynamic axes and pinned in its config takes the config's
dims. perf_analyzer builds its inputs from that metadata. gpuserve does the same for config.pbtxt models of
the frameworks whose files describe their tensors (TorchScript takes the config as its description).
"""

from __future__ import annotations

from typing import List, Sequence

from gpuserve.backends.base import TensorSpec
from gpuserve.errors import InvalidSettings


def reconcile(model: str, declared: Sequence, actual: Sequence[TensorSpec], kind: str) -> List[TensorSpec]:
    """The tensors to serve: `declared` (settings' TensorMetadata, shapes with the batch dimension) checked
    against and merged with `actual` (the backend's); the backend's own when nothing is declared."""
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
        served.append(TensorSpec(want.name, want.datatype, _merge(model, kind, want.name, list(want.shape),
                                                                  list(spec.shape))))
    if kind == "input":  # every input the model needs must be declared; a config may list fewer outputs
        missing = [name for name in have if name not in {want.name for want in declared}]
        if missing:
            raise InvalidSettings(f"model '{model}': the model file needs input(s) {', '.join(missing)} that "
                                  "config.pbtxt does not declare")
    return served


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
