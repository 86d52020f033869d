"""Triton's ragged batching for model files: `allow_ragged_batch` inputs, `batch_input`, `batch_output`.

Requests whose ragged inputs differ in length share a batch without padding: each ragged input is the
requests' elements concatenated into one 1-D tensor, as Triton's ONNX Runtime, TensorRT and PyTorch
backends give it, and the model learns where each request's elements lie from the batch inputs Triton
computes (element counts, running counts, the longest count as a shape, item shapes). An output marked
BATCH_SCATTER_WITH_INPUT_SHAPE comes back concatenated the same way and is cut per request to the
output's config dims, each -1 taken from the source input's shape (as Triton's backends cut it); other
outputs are split by rows.

`RaggedBackend` wraps the framework backend and shows the engine a plain batched model (ragged inputs in
the client's form, batch inputs hidden) that takes whole requests (`run_requests`), so the engine's
batcher only has to let ragged lengths share a batch (BatchingConfig.ragged_inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from gpuserve.backends.base import TensorSpec
from gpuserve.datatypes import from_numpy_dtype
from gpuserve.errors import InferenceError, InvalidSettings
from gpuserve.triton_pb_utils import TRITON_STRING_TO_NUMPY
from gpuserve.triton_sequence import as_list

KINDS = ("BATCH_ELEMENT_COUNT", "BATCH_ACCUMULATED_ELEMENT_COUNT", "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO",
         "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE", "BATCH_ITEM_SHAPE", "BATCH_ITEM_SHAPE_FLATTEN")


@dataclass(frozen=True)
class BatchInput:
    kind: str
    targets: Tuple[str, ...]
    dtype: Any
    source: str


@dataclass(frozen=True)
class RaggedSpec:
    ragged: Tuple[str, ...]  # inputs concatenated into 1-D
    batch_inputs: Tuple[BatchInput, ...]
    scatter: Dict[str, str]  # output -> the input whose per-request shape cuts it

    @property
    def hidden_inputs(self) -> set:
        return {target for b in self.batch_inputs for target in b.targets}

    def hidden_tensors(self) -> List[Tuple[str, str, List[int]]]:
        """(name, V2 datatype, shape) of the batch inputs, for a file that does not describe its tensors."""
        return [(target, from_numpy_dtype(np.dtype(b.dtype)), [-1, -1] if b.kind == "BATCH_ITEM_SHAPE" else [-1])
                for b in self.batch_inputs for target in b.targets]


def ragged_spec(model: str, config: Dict[str, Any]) -> Optional[RaggedSpec]:
    """What a config.pbtxt asks for, checked; None when it uses none of it."""
    ragged = tuple(e["name"] for e in as_list(config.get("input")) if e.get("allow_ragged_batch") is True)
    inputs = {e["name"] for e in as_list(config.get("input"))}
    batch_inputs = []
    for entry in as_list(config.get("batch_input")):
        kind = str(entry.get("kind", "BATCH_ELEMENT_COUNT"))
        dtype = TRITON_STRING_TO_NUMPY.get(str(entry.get("data_type", "")))
        sources = [str(s) for s in as_list(entry.get("source_input"))]
        targets = tuple(str(t) for t in as_list(entry.get("target_name")))
        if kind not in KINDS or len(sources) != 1 or not targets:
            raise InvalidSettings(f"model '{model}': batch_input {entry} needs a known kind, one source_input "
                                  "and a target_name")
        if entry.get("data_type") not in ("TYPE_INT32", "TYPE_FP32"):  # as Triton's model config check
            raise InvalidSettings(f"model '{model}': batch input data type must be TYPE_INT32 or TYPE_FP32, "
                                  f"got {entry.get('data_type')} for '{targets[0]}'")
        if sources[0] not in inputs:
            raise InvalidSettings(f"model '{model}': batch_input source '{sources[0]}' is not one of its inputs")
        batch_inputs.append(BatchInput(kind, targets, dtype, sources[0]))
    scatter = {}
    for entry in as_list(config.get("batch_output")):
        kind = str(entry.get("kind", "BATCH_SCATTER_WITH_INPUT_SHAPE"))
        sources = [str(s) for s in as_list(entry.get("source_input"))]
        if kind != "BATCH_SCATTER_WITH_INPUT_SHAPE" or len(sources) != 1 or sources[0] not in inputs:
            raise InvalidSettings(f"model '{model}': batch_output {entry} needs kind BATCH_SCATTER_WITH_INPUT_SHAPE "
                                  "and one of its inputs as source_input")
        for target in as_list(entry.get("target_name")):
            scatter[str(target)] = sources[0]
    if not ragged and not batch_inputs and not scatter:
        return None
    return RaggedSpec(ragged, tuple(batch_inputs), scatter)


def batch_input_array(spec: BatchInput, parts: Sequence[np.ndarray]) -> np.ndarray:
    """One batch input for the requests' source arrays (each with its batch dimension), as Triton fills it."""
    counts = np.array([part.size for part in parts], dtype=np.int64)
    if spec.kind == "BATCH_ELEMENT_COUNT":
        return counts.astype(spec.dtype)
    if spec.kind == "BATCH_ACCUMULATED_ELEMENT_COUNT":
        return np.cumsum(counts).astype(spec.dtype)
    if spec.kind == "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO":
        return np.concatenate([[0], np.cumsum(counts)]).astype(spec.dtype)
    if spec.kind == "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE":  # only its shape carries the value
        return np.zeros(int(counts.max()) if len(counts) else 0, dtype=spec.dtype)
    items = [shape for part in parts for shape in [part.shape[1:]] * (part.shape[0] if part.ndim else 1)]
    width = len(items[0]) if items else 0  # a source with only the batch dimension gives [batch, 0]
    shapes = np.array(items, dtype=spec.dtype).reshape(len(items), width)
    return shapes.reshape(-1) if spec.kind == "BATCH_ITEM_SHAPE_FLATTEN" else shapes


class RaggedBackend:
    """A framework backend seen by the engine as a batched model that takes whole requests."""

    def __init__(self, backend, spec: RaggedSpec, declared_inputs: Sequence, declared_outputs: Sequence):
        self.backend = backend
        self.spec = spec
        declared_in = {t.name: t for t in declared_inputs}
        declared_out = {t.name: t for t in declared_outputs}
        self.inputs = [self._client_spec(s, declared_in) if s.name in spec.ragged else s
                       for s in backend.inputs if s.name not in spec.hidden_inputs]
        self.outputs = [self._client_spec(s, declared_out) if s.name in spec.scatter else s for s in backend.outputs]
        # Triton cuts a scattered output by its config shape (batch dimension included), each -1 taken from
        # the same dimension of the request's source input
        self.scatter_shapes = {name: list(declared_out[name].shape) for name in spec.scatter if name in declared_out}
        missing = [t for t in spec.hidden_inputs if t not in {s.name for s in backend.inputs}]
        if missing:
            raise InvalidSettings(f"batch_input target(s) {', '.join(sorted(missing))} are not inputs of the model file")

    @staticmethod
    def _client_spec(spec: TensorSpec, declared: Dict[str, Any]) -> TensorSpec:
        want = declared.get(spec.name)
        return TensorSpec(spec.name, spec.datatype, list(want.shape) if want is not None else [-1, -1])

    def __getattr__(self, name: str):  # device, unload, max_concurrency, ...: the framework backend's
        return getattr(self.backend, name)

    def run(self, arrays: Dict[str, np.ndarray], output_names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        """One request on its own (warmup)."""
        return self._run_batch([arrays], output_names)[0]

    def run_requests(self, jobs) -> List[object]:
        """Per job its outputs, or the error it alone caused: a failed batch is retried one request at a time."""
        wanted = None
        if all(job.outputs is not None for job in jobs):
            wanted = list(dict.fromkeys(name for job in jobs for name in job.outputs))
        try:
            return self._run_batch([job.arrays for job in jobs], wanted)
        except Exception as exc:
            if len(jobs) == 1:
                return [exc]
        results: List[object] = []
        for job in jobs:
            try:
                results.extend(self._run_batch([job.arrays], wanted))
            except Exception as exc:
                results.append(exc)
        return results

    def _run_batch(self, requests: List[Dict[str, np.ndarray]], wanted) -> List[Dict[str, np.ndarray]]:
        spec = self.spec
        arrays: Dict[str, np.ndarray] = {}
        for name in requests[0]:
            parts = [request[name] for request in requests]
            if name in spec.ragged:
                arrays[name] = np.concatenate([np.ravel(part) for part in parts])
            else:
                arrays[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        for batch_input in spec.batch_inputs:
            value = batch_input_array(batch_input, [request[batch_input.source] for request in requests])
            for target in batch_input.targets:
                arrays[target] = value
        outputs = self.backend.run(arrays, wanted)
        return self._scatter(outputs, requests)

    def _scatter(self, outputs: Dict[str, np.ndarray], requests: List[Dict[str, np.ndarray]]):
        per_request: List[Dict[str, np.ndarray]] = [{} for _ in requests]
        rows = [next(iter(r.values())).shape[0] if r and next(iter(r.values())).ndim else 1 for r in requests]
        for name, array in outputs.items():
            source = self.spec.scatter.get(name)
            if source is None:  # one row per request row
                if len(requests) == 1:
                    per_request[0][name] = array
                    continue
                if np.ndim(array) == 0 or array.shape[0] != sum(rows):
                    raise InferenceError(f"output '{name}' has shape {list(np.shape(array))}; a batch of "
                                         f"{sum(rows)} rows needs that many")
                for i, chunk in enumerate(np.split(array, np.cumsum(rows)[:-1])):
                    per_request[i][name] = chunk
                continue
            flat = np.ravel(array)
            declared = self.scatter_shapes.get(name)
            if declared is not None:
                self._scatter_declared(name, flat, declared, [request[source].shape for request in requests],
                                       per_request)
                continue
            shapes = [request[source].shape for request in requests]
            counts = [request[source].size for request in requests]
            if not sum(counts) or flat.size % sum(counts):
                raise InferenceError(f"output '{name}' has {flat.size} elements, which do not scatter by input "
                                     f"'{source}' ({sum(counts)} elements)")
            each = flat.size // sum(counts)
            start = 0
            for i, (shape, count) in enumerate(zip(shapes, counts)):
                piece = flat[start * each:(start + count) * each]
                per_request[i][name] = piece.reshape(tuple(shape) + ((each,) if each > 1 else ()))
                start += count
        return per_request

    @staticmethod
    def _scatter_declared(name: str, flat: np.ndarray, declared: List[int], sources: List[Tuple[int, ...]],
                          per_request: List[Dict[str, np.ndarray]]) -> None:
        start = 0
        for i, source in enumerate(sources):
            if any(d < 0 and at >= len(source) for at, d in enumerate(declared)):
                raise InferenceError(f"output '{name}' has shape {declared} in the config; its source input's "
                                     f"shape {list(source)} has no dimension for each -1")
            shape = tuple(source[at] if d < 0 else d for at, d in enumerate(declared))
            count = int(np.prod(shape))
            if start + count > flat.size:
                raise InferenceError(f"output '{name}' has {flat.size} elements, fewer than the batch's requests "
                                     f"need when scattered by their input shapes")
            per_request[i][name] = flat[start:start + count].reshape(shape)
            start += count
