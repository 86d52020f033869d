"""Triton's generate extension (`POST /v2/models/NAME[/versions/V]/generate` and `generate_stream`): a
flat JSON object in, flat JSON objects out, for text models such as decoupled LLM pipelines.

As Triton maps it: a request field (top level, or inside `parameters`) named like a model input becomes
that input, a string as a BYTES element, a number or list as the input's datatype, shaped [1] (or the
list's shape) with leading 1s up to the input's rank; a string `id` is the request's ID (echoed as `id`
in each response when not empty); every other field is a request parameter. Each response becomes
`{"model_name", "model_version", OUTPUT: value, ...}`, a single element as a scalar (BYTES decoded as
UTF-8 text) and more as a flat list.

Refusals are worded as Triton 2.51's (its JSON reader's words), so a client that matches on them works
unchanged: an input named twice, an element of the wrong JSON type for the input's datatype, a
parameter that is not a string, number or boolean, a `parameters` or `id` of the wrong type.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import numpy as np

from gpuserve.datatypes import to_numpy_dtype
from gpuserve.errors import InvalidInput
from gpuserve.types import InferInput, InferRequest, InferResponse

ONE_RESPONSE = ("generate expects model to produce exactly 1 response, use generate stream for model that "
                "generates various number of responses")
_PARAMETER_TYPE = "parameter '{}' has invalid type. It should be either 'int', 'bool', or 'string'."


class Fields(dict):
    """A JSON object that also keeps its members in order, repeats included (`pairs`): Python's dict
    keeps only the last of a repeated key, and Triton refuses an input given twice."""

    def __init__(self, pairs: List[Tuple[str, Any]]):
        super().__init__(pairs)
        self.pairs = pairs


def parse_body(raw: bytes) -> Any:
    """The request body as `Fields` (nested objects too); None when it is not JSON (the caller's
    own parser then words the refusal)."""
    try:
        return json.loads(raw, object_pairs_hook=Fields)
    except (ValueError, UnicodeDecodeError):
        return None
    except RecursionError:  # nested deeper than Python's parser goes: the client's
        raise InvalidInput("generate: the request body nests too deeply to read") from None


def _json_kind(datatype: str) -> Tuple[Any, str]:
    """(test for one JSON element, Triton's words for a wrong one) for an input's datatype."""
    if datatype == "BYTES":
        return (lambda v: isinstance(v, str)), "Unable to parse JSON bytes array: attempt to access JSON non-string as string"
    if datatype == "BOOL":
        return (lambda v: isinstance(v, bool)), "Unable to parse 'data': attempt to access JSON non-boolean as boolean"
    if datatype.startswith("UINT"):
        return ((lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
                "Unable to parse 'data': attempt to access JSON non-unsigned-integer as unsigned-integer")
    if datatype.startswith("INT"):
        return ((lambda v: isinstance(v, int) and not isinstance(v, bool)),
                "Unable to parse 'data': attempt to access JSON non-signed-integer as signed-integer")
    return ((lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
            "Unable to parse 'data': attempt to access JSON non-number as double")


def _check_elements(value: Any, datatype: str) -> None:
    fits, words = _json_kind(datatype)
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif not fits(item):
            raise InvalidInput(words)


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
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # e.g. 2**31 for an INT32 input
        raise InvalidInput(f"generate: field '{name}' does not fit input datatype {datatype}: {exc}") from None
    if array.ndim == 0:
        array = array.reshape(1)
    rank = len(spec.get("shape") or [])
    while array.ndim < rank:
        array = array[np.newaxis]
    return InferInput(name, list(array.shape), datatype, array)


def generate_request(model: str, version: Optional[str], body: Any, inputs: List[Dict[str, Any]]) -> InferRequest:
    if not isinstance(body, dict):
        raise InvalidInput("attempt to get members for non-object")
    specs = {spec["name"]: spec for spec in inputs}
    tensors: Dict[str, InferInput] = {}
    parameters: Dict[str, Any] = {}
    request_id = ""

    def take(fields: List[Tuple[str, Any]], prefix: str) -> None:
        for key, value in fields:
            if key in specs:
                if key in tensors:
                    raise InvalidInput(f"{prefix}input '{key}' already exists in request")
                _check_elements(value, specs[key]["datatype"])
                tensors[key] = _tensor(key, value, specs[key])
            elif isinstance(value, (str, bool, int, float)):
                parameters[key] = value
            else:
                raise InvalidInput(prefix + _PARAMETER_TYPE.format(key))

    top = getattr(body, "pairs", None) or list(body.items())
    nested = None
    for key, value in top:
        if key == "parameters":
            if not isinstance(value, dict):
                raise InvalidInput("Expected JSON object for keyword: 'parameters': attempt to access JSON "
                                   "non-object as object")
            nested = value
        elif key == "id":
            if not isinstance(value, str):
                raise InvalidInput("Unable to parse 'id': attempt to access JSON non-string as string")
            request_id = value
        else:
            take([(key, value)], "")
    if nested is not None:
        take(getattr(nested, "pairs", None) or list(nested.items()), "Converting keyword: 'parameters': ")
    return InferRequest(model, list(tensors.values()), parameters=parameters, model_version=version,
                        request_id=request_id or None)


def _value(array: np.ndarray, datatype: str):
    flat = array.ravel()
    if datatype == "BYTES" or array.dtype == object:
        values = [v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v for v in flat.tolist()]
    else:
        values = flat.tolist()
    return values[0] if len(values) == 1 else values


def generate_response(response: InferResponse, model: str, version: Optional[str],
                      request_id: Optional[str] = None) -> Dict[str, Any]:
    out: Dict[str, Any] = {"model_name": response.model_name or model,
                           "model_version": str(response.model_version or version or "")}
    if request_id:
        out["id"] = request_id
    for output in response.outputs:
        out[output.name] = _value(output.as_numpy(), output.datatype)
    return out


async def responses_of(result: Any, trace: Any = None) -> AsyncIterator[Any]:
    """Each response of an inference result: one, or a decoupled model's stream (errors included).
    A traced request's responses are stamped as Triton 2.51's generate routes stamp them:
    INFER_RESPONSE_COMPLETE for each (the final flag included) and HTTP_SEND_START/END with ns 0."""
    if not hasattr(result, "__aiter__"):
        if trace is not None:  # its INFER_RESPONSE_COMPLETE is the data plane's
            trace.stamp("HTTP_SEND_START", 0)
            trace.stamp("HTTP_SEND_END", 0)
        yield result
        return
    final = False
    try:
        async for item in result:
            final = isinstance(item, InferResponse) and bool(item.parameters.get("triton_final_response"))
            if trace is not None:
                trace.stamp("INFER_RESPONSE_COMPLETE")
            if isinstance(item, InferResponse) and not item.outputs and final:
                continue  # the bare final flag carries nothing to show
            if trace is not None:
                trace.stamp("HTTP_SEND_START", 0)
                trace.stamp("HTTP_SEND_END", 0)
            yield item
        if trace is not None and not final:  # the bare final flag, not passed on
            trace.stamp("INFER_RESPONSE_COMPLETE")
    finally:
        await result.aclose()  # a client that left: the model's senders see is_cancelled()
