"""Warmup at load: requests run through each backend after it loads and before the model is ready.

Samples come from the model settings' `warmup_samples` (Triton's `model_warmup` entries, mapped by
`triton_config.settings_from_config`): `{"name", "batch_size", "count", "inputs": {NAME: {"data_type",
"dims", "zero_data" | "random_data" | "input_data_file"}}}` where `dims` leave out the batch dimension,
as in Triton. Without explicit samples (and `warmup` not turned off) one zero-filled request at batch 1
runs when every input shape is known, which is cheap and warms the backend before traffic; its failure is
only logged, since zeros need not be a valid input (Triton's simple_string parses numbers from its strings)
and Triton runs no warmup that a config does not ask for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from gpuserve.datatypes import to_numpy_dtype
from gpuserve.errors import GpuserveError, InvalidSettings, ModelLoadError

TRITON_TYPES = {"TYPE_BOOL": "BOOL", "TYPE_UINT8": "UINT8", "TYPE_UINT16": "UINT16", "TYPE_UINT32": "UINT32",
                "TYPE_UINT64": "UINT64", "TYPE_INT8": "INT8", "TYPE_INT16": "INT16", "TYPE_INT32": "INT32",
                "TYPE_INT64": "INT64", "TYPE_FP16": "FP16", "TYPE_FP32": "FP32", "TYPE_FP64": "FP64",
                "TYPE_STRING": "BYTES", "TYPE_BF16": "BF16"}

logger = logging.getLogger("gpuserve")

Sample = Tuple[str, int, Dict[str, np.ndarray]]  # (name, count, arrays)


def _datatype(value: Optional[str], fallback: str) -> str:
    if not value:
        return fallback
    return TRITON_TYPES.get(value, value)


def _shape(spec_shape: Sequence[int], dims: Sequence[int], batch_size: int) -> Tuple[List[int], int]:
    """Triton's dims leave out the batch dimension; put it back when the model batches (then the rows)."""
    dims = [int(d) for d in dims]
    if spec_shape and spec_shape[0] == -1 and len(dims) == len(spec_shape) - 1:
        return [max(batch_size, 1)] + dims, max(batch_size, 1)
    return dims, 0


def _fill(datatype: str, shape: List[int], entry: dict, rng: np.random.Generator,
          folder: Optional[Path], rows: int = 0) -> np.ndarray:
    """`rows` > 0: `shape` leads with the batch, and a file's data is one request's, repeated per row (as
    Triton sends a sample of batch_size N as N requests of the same data)."""
    if datatype == "BYTES":
        dtype = np.dtype(object)
    else:
        dtype = to_numpy_dtype(datatype)
    if entry.get("input_data_file"):
        base = Path(folder) / "warmup" if folder else Path(".")
        path = Path(entry["input_data_file"])
        path = path if path.is_absolute() else base / path
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InvalidSettings(f"warmup input_data_file {path}: {exc}") from None
        if datatype == "BYTES":
            items, pos = [], 0
            while pos + 4 <= len(raw):  # Triton's serialized form: 4-byte little-endian length + bytes
                size = int.from_bytes(raw[pos:pos + 4], "little")
                items.append(raw[pos + 4:pos + 4 + size])
                pos += 4 + size
            array = np.array(items, dtype=object)
        else:
            array = np.frombuffer(raw[:len(raw) - len(raw) % dtype.itemsize], dtype=dtype)
        one = shape[1:] if rows else shape
        count = int(np.prod(one)) if one else 1
        if array.size < count:
            needs, has = ((f"{count} strings", f"{array.size}") if datatype == "BYTES"
                          else (f"{count * dtype.itemsize} bytes", f"{len(raw)} bytes"))
            raise InvalidSettings(f"warmup setting expects {needs}, but the data provided from "
                                  f"{entry['input_data_file']} only has {has}")
        sample = array[:count].reshape(one)
        return np.repeat(sample[np.newaxis], rows, axis=0) if rows else sample.copy()
    if entry.get("random_data"):
        if datatype == "BYTES":  # as Triton: random strings are empty ones (zero lengths)
            return np.full(shape, b"", dtype=object)
        if dtype.kind == "b":
            return rng.integers(0, 2, size=shape).astype(bool)
        if dtype.kind in "iu":
            return rng.integers(0, 8, size=shape).astype(dtype)
        return rng.random(size=shape).astype(dtype)
    if datatype == "BYTES":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=dtype)


def default_sample(inputs: Sequence) -> Optional[Sample]:
    """One zero-filled batch-1 request, or None when some input shape is unknown or dynamic."""
    if not inputs:
        return None
    arrays = {}
    for spec in inputs:
        shape = list(spec.shape)
        if not shape:
            return None
        if shape[0] == -1:
            shape[0] = 1
        if any(d < 0 for d in shape):
            return None
        arrays[spec.name] = _fill(spec.datatype, shape, {"zero_data": True}, np.random.default_rng(0), None)
    return "default", 1, arrays


def warmup_samples(settings, inputs: Sequence) -> List[Sample]:
    """The samples to run for a model with these settings and these backend input specs."""
    entries = list(getattr(settings, "warmup_samples", None) or [])
    if not entries:
        if not getattr(settings, "warmup", True):
            return []
        sample = default_sample(inputs)
        return [sample] if sample else []
    specs = {s.name: s for s in inputs}
    folder = Path(settings.folder) if getattr(settings, "folder", None) else None
    rng = np.random.default_rng(0)
    samples = []
    for i, entry in enumerate(entries):
        name = str(entry.get("name") or f"warmup-{i}")
        batch_size = int(entry.get("batch_size", 1) or 0)
        if batch_size == 0:  # as Triton: a sample of batch 0 (its proto default) is skipped, not run
            logger.info("warmup '%s': batch_size 0, skipped (as Triton skips it)", name)
            continue
        count = max(int(entry.get("count", 1) or 1), 1)
        arrays = {}
        for input_name, data in (entry.get("inputs") or {}).items():
            data = data or {}
            spec = specs.get(input_name)
            if spec is None:
                raise InvalidSettings(f"warmup '{name}': the model has no input '{input_name}' "
                                      f"(inputs: {sorted(specs)})")
            datatype = _datatype(data.get("data_type"), spec.datatype)
            dims = data.get("dims")
            if dims is None:
                dims = [d for d in spec.shape[1:]] if spec.shape and spec.shape[0] == -1 else list(spec.shape)
            shape, rows = _shape(spec.shape, dims, batch_size)
            if any(d < 0 for d in shape):
                raise InvalidSettings(f"warmup setting expects all variable-size dimensions are specified for "
                                      f"input '{input_name}'")
            arrays[input_name] = _fill(datatype, shape, data, rng, folder, rows)
        samples.append((name, count, arrays))
    return samples


def run_warmup(model_name: str, backends: Sequence, samples: List[Sample], prepare=None, guessed=False) -> int:
    """Run every sample through every backend; raise with the sample's name on the first failure, or
    with `guessed` (the default zero sample, which nobody asked for) log it and stop warming."""
    runs = 0
    for name, count, arrays in samples:
        prepared = {k: (prepare(k, v) if prepare else v) for k, v in arrays.items()}
        for index, backend in enumerate(backends):
            instance = getattr(backend, "name", None) or f"{model_name}_{index}"
            for iteration in range(1, count + 1):
                if not guessed:  # Triton's words (verbose log), which its qa and operators look for
                    logger.debug("model '%s' instance %s is running warmup sample '%s' for iteration %d",
                                 model_name, instance, name, iteration)
                try:
                    backend.run(prepared)
                except Exception as exc:
                    if guessed:
                        logger.warning("model %s: the default zero-filled warmup request failed on %s (%s: %s); "
                                       "serving the model anyway", model_name, backend.device,
                                       type(exc).__name__, exc)
                        return runs
                    logger.debug("model '%s' instance %s failed to run warmup sample '%s' (on %s)",
                                 model_name, instance, name, backend.device)
                    said = str(exc) if isinstance(exc, GpuserveError) else f"{type(exc).__name__}: {exc}"
                    # Triton's words: the model stays unavailable with them as its reason
                    raise ModelLoadError(f"failed to run warmup sample '{name}': {said}; ") from exc
                runs += 1
    return runs
