"""Triton's generate extension (`POST /v2/models/NAME[/versions/V]/generate` and `generate_stream`): a
flat JSON object in, flat JSON objects out, for text models such as decoupled LLM pipelines.

As Triton maps it: a request field (top level, or inside `parameters`) named like a model input becomes
that input, a string as a BYTES element, a number or list as the input's datatype, shaped [1] (or the
list's shape) with leading 1s up to the input's rank; every other field is a request parameter. Each
response becomes `{"model_name", "model_version", OUTPUT: value, ...}`, a single element as a scalar
(BYTES decoded as UTF-8 text) and more as a flat list.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Dict, List, Optional

import numpy as np

from gpuserve.datatypes import to_numpy_dtype
from gpuserve.errors import InvalidInput
from gpuserve.types import InferInput, InferRequest, InferResponse


def _tensor(name: str, value: Any, spec: Dict[str, Any]) -> InferInput:
    datatype = spec["datatype"]
    try:
        if datatype == "BYTES":
            items = np.asarray(value, dtype=object)
            array = np.empty(items.shape, dtype=object)
            for index in np.ndindex(items.shape):
                item = items[index]
                array[index] = item.encode("utf-8") if isinstance(item, str) else str(item).encode("utf-8")
        else:
            array = np.asarray(value, dtype=to_numpy_dtype(datatype))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"generate: field '{name}' does not fit input datatype {datatype}: {exc}") from None
    if array.ndim == 0:
        array = array.reshape(1)
    rank = len(spec.get("shape") or [])
    while array.ndim < rank:
        array = array[np.newaxis]
    return InferInput(name, list(array.shape), datatype, array)


def generate_request(model: str, version: Optional[str], body: Any, inputs: List[Dict[str, Any]]) -> InferRequest:
    if not isinstance(body, dict):
        raise InvalidInput("generate: the request body must be a JSON object")
    specs = {spec["name"]: spec for spec in inputs}
    tensors: Dict[str, InferInput] = {}
    parameters: Dict[str, Any] = {}
    nested = body.get("parameters") or {}
    if not isinstance(nested, dict):
        raise InvalidInput("generate: 'parameters' must be a JSON object")
    fields = [(k, v) for k, v in body.items() if k != "parameters"] + list(nested.items())
    for key, value in fields:
        if key in specs:
            tensors[key] = _tensor(key, value, specs[key])
        elif isinstance(value, (str, bool, int, float)):
            parameters[key] = value
        else:
            raise InvalidInput(f"generate: field '{key}' is not an input of model '{model}' and a parameter must be "
                               "a string, number or boolean")
    return InferRequest(model, list(tensors.values()), parameters=parameters, model_version=version)


def _value(array: np.ndarray, datatype: str):
    flat = array.ravel()
    if datatype == "BYTES" or array.dtype == object:
        values = [v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v for v in flat.tolist()]
    else:
        values = flat.tolist()
    return values[0] if len(values) == 1 else values


def generate_response(response: InferResponse, model: str, version: Optional[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"model_name": response.model_name or model,
                           "model_version": str(response.model_version or version or "")}
    for output in response.outputs:
        out[output.name] = _value(output.as_numpy(), output.datatype)
    return out


async def responses_of(result: Any) -> AsyncIterator[Any]:
    """Each response of an inference result: one, or a decoupled model's stream (errors included)."""
    if not hasattr(result, "__aiter__"):
        yield result
        return
    try:
        async for item in result:
            if isinstance(item, InferResponse) and not item.outputs and \
                    item.parameters.get("triton_final_response"):
                continue  # the bare final flag carries nothing to show
            yield item
    finally:
        await result.aclose()  # a client that left: the model's senders see is_cancelled()
