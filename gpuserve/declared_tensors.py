"""A Triton config's `input` / `output` against what the model file itself declares.

Triton checks a config.pbtxt's tensors against an ONNX or TensorRT model when it loads: a name the model
lacks, another datatype, or a fixed dimension the model contradicts fails the load with the reason; and
what clients are shown (metadata, the config endpoint) and held to (each request's shape) is the config's
more specific shape, so a model exported with dynamic axes and pinned in its config takes the config's
dims. perf_analyzer builds its inputs from that metadata. gpuserve does the same for config.pbtxt models of
the frameworks whose files describe their tensors (TorchScript takes the config as its description).
"""

from __future__ import annotations

from typing import Collection, Dict, List, Optional, Sequence

from gpuserve.backends.base import TensorSpec
from gpuserve.errors import InferenceError, InvalidInput, InvalidSettings


def reconcile(model: str, declared: Sequence, actual: Sequence[TensorSpec], kind: str,
              reshapes: Optional[Dict[str, List[int]]] = None, batched: bool = False,
              overridable: Sequence[TensorSpec] = (), optional: Collection[str] = ()) -> List[TensorSpec]:
    """The tensors to serve: `declared` (settings' TensorMetadata, shapes with the batch dimension) checked
    against and merged with `actual` (the backend's); the backend's own when nothing is declared. A tensor
    with a `reshape` is checked against the model by its reshape shape and served by its declared dims.
    `overridable` are initializers an ONNX graph also lists as inputs: the config may declare them as
    `optional` inputs, which are not counted against the model's (required) inputs, as Triton counts.
    The refusals are Triton's ONNX Runtime backend's, in its order and words."""
    if not declared:
        return list(actual)
    have = {spec.name: spec for spec in actual}
    if batched and any(not spec.shape or int(spec.shape[0]) != -1 for spec in actual):
        raise InvalidSettings(f"autofill failed for model '{model}': model does not support batching while "
                              "non-zero max_batch_size is specified")
    expected = len([want for want in declared if want.name not in optional])
    if kind == "input" and expected != len(have):  # every input the model needs must be declared
        missing = [name for name in have if name not in {want.name for want in declared}]
        raise InvalidSettings(f"unable to load model '{model}', configuration expects {expected} inputs, "
                              f"model provides {len(have)}" + (f" (the configuration lacks {', '.join(missing)})"
                                                               if missing else ""))
    have.update((spec.name, spec) for spec in overridable if spec.name not in have)
    served = []
    for want in declared:
        if kind == "input" and want.name in optional and batched:
            raise InvalidSettings(f"unable to load model '{model}', optional input '{want.name}' is not supported "
                                  "for models that support batching")
        spec = have.get(want.name)
        if spec is None:
            raise InvalidSettings(f"unexpected inference {kind} '{want.name}', allowed {kind}s are: "
                                  f"{', '.join(sorted(have))}")
        if spec.datatype != want.datatype:
            raise InvalidSettings(f"unable to load model '{model}', configuration expects datatype "
                                  f"{_config_type(want.datatype)} for {kind} '{want.name}', model provides "
                                  f"{_config_type(spec.datatype)}")
        reshape = (reshapes or {}).get(want.name)
        if reshape is not None:
            _merge(model, want.name, ([-1] if batched else []) + list(reshape), list(spec.shape), batched)
            served.append(TensorSpec(want.name, want.datatype, list(want.shape)))
            continue
        served.append(TensorSpec(want.name, want.datatype, _merge(model, want.name, list(want.shape),
                                                                  list(spec.shape), batched)))
    return served


def _config_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def reshaped(array, shape: Sequence[int], batched: bool, what: str, error=InvalidInput):
    """`array` in `shape` (a `reshape` or the declared dims), its batch dimension kept where there is one."""
    target = ((array.shape[0],) if batched and array.ndim else ()) + tuple(shape)
    try:
        return array.reshape(target)
    except ValueError:
        raise error(f"{what} of shape {list(array.shape)} does not reshape to {list(target)}") from None


def declared_dims(shape: Sequence[int], reshape: Sequence[int], dims: Sequence[int], batched: bool) -> List[int]:
    """An output's declared dims (no batch dimension) for what the model gave in its `reshape` shape: the
    sizes the model chose for the reshape's variable (-1) dims fill the declared variable dims in order,
    as Triton maps them."""
    given = list(shape[1:] if batched and len(shape) else shape)
    chosen = [n for r, n in zip(reshape, given) if r == -1]
    return [chosen.pop(0) if d == -1 and chosen else (-1 if d == -1 else d) for d in dims]


def config_reshapes(config: Dict) -> Dict[str, Dict[str, tuple]]:
    """A config.pbtxt's `reshape`s, {"input"|"output": {name: (reshape shape, dims)}}, for the models that
    apply them themselves (Python backend, ensembles)."""
    from gpuserve.triton_config import reshape_of

    return {kind: {t["name"]: (shape, [int(d) for d in t.get("dims", [])])
                   for t in config.get(kind, []) or [] if (shape := reshape_of(t)) is not None}
            for kind in ("input", "output")}


def to_reshape(array, entry: tuple, batched: bool, what: str):
    """A client's input (in its dims) as the model takes it (in the reshape's)."""
    shape, dims = entry
    return reshaped(array, declared_dims(array.shape, dims, shape, batched), batched, what)


def from_reshape(array, entry: tuple, batched: bool, what: str):
    """A model's output (in the reshape's dims) as clients get it (in its declared dims)."""
    shape, dims = entry
    return reshaped(array, declared_dims(array.shape, shape, dims, batched), batched, what, InferenceError)


def _merge(model: str, name: str, want: List[int], have: List[int], batched: bool = False) -> List[int]:
    """The served shape: the file's, with the config's sizes where the file leaves a dimension open. A rank
    or a fixed size that differs is refused in Triton's words (`want` holds the batch dimension if any)."""
    if not have:  # a scalar in the file: as Triton, a config without batching may give it dims of 1s only
        bad = [d for d in want if d != 1]
        if bad and not batched:
            raise InvalidSettings(f"unable to load model '{model}', scalar tensor '{name}', should only provide 1 in "
                                  "the model configuration when the model doesn't support batching. Model "
                                  f"configuration provided: {_shape(want)}.")
        return want
    if len(want) != len(have) or any(w != -1 and h != -1 and w != h for w, h in zip(want, have)):
        if batched:
            raise InvalidSettings(f"model '{model}', tensor '{name}': the model expects {len(have)} dimensions "
                                  f"(shape {_shape(have)}) but the model configuration specifies {len(want)} "
                                  "dimensions (an initial batch dimension because max_batch_size > 0 followed by "
                                  f"the explicit tensor shape, making complete shape {_shape(want)})")
        raise InvalidSettings(f"model '{model}', tensor '{name}': the model expects {len(have)} dimensions (shape "
                              f"{_shape(have)}) but the model configuration specifies {len(want)} dimensions "
                              f"(shape {_shape(want)})")
    return [had if had != -1 else wanted for wanted, had in zip(want, have)]


def _shape(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(int(d)) for d in dims) + "]"
