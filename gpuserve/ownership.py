"""Who may still write an answer's arrays while the transports send them.

Large answers leave as views of their output arrays (gpuserve.datatypes.wire_raw) and stay referenced until a
slow client has read them. The built-in backends (ONNX Runtime, torch, TensorRT, the classic runtimes) hand
over fresh arrays per batch, so their views are safe. Model code written by users may keep one output array
and refill it on every call; Triton's Python stub copies outputs into shared memory when execute returns or
send() is called, so a Triton user never sees an answer change under them. Such outputs are copied here once,
at that moment, unless they are views of the request's own inputs (an identity model), which nothing rewrites.
Whether an array is shared is not guessed from reference counts: a model may hold it through any object.
"""

from __future__ import annotations

import copy
from typing import Iterable, Set

import numpy as np

from gpuserve.datatypes import VIEW_BYTES


def memory_of(array):
    """The object whose memory an array's data lies in (the array itself when it owns its data)."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array


def roots(arrays: Iterable) -> Set[int]:
    return {id(memory_of(a)) for a in arrays if isinstance(a, np.ndarray)}


def owned(array, inputs: Set[int]):
    """`array`, or a copy of it when its memory may be rewritten by the model later (not a request input's)."""
    if not isinstance(array, np.ndarray) or id(memory_of(array)) in inputs:
        return array
    return array.copy()


def own_outputs(response, request) -> None:
    """A user model's answer (InferResponse) with its large outputs copied, as new InferOutput objects: the
    model may keep and refill its own. Small ones, BYTES and JSON are copied by the encoders anyway."""
    outputs = getattr(response, "outputs", None)
    if not outputs:
        return
    inputs, changed = None, None
    for index, output in enumerate(outputs):
        array = getattr(output, "_array", None)
        if not isinstance(array, np.ndarray) or array.dtype == object or array.nbytes < VIEW_BYTES:
            continue
        if inputs is None:
            inputs = roots(getattr(tensor, "_array", None) for tensor in request.inputs)
        mine = owned(array, inputs)
        if mine is array:
            continue
        if changed is None:
            changed = list(outputs)
        fresh = copy.copy(output)
        if fresh._data is array:
            fresh._data = mine
        fresh._array = mine
        fresh.parameters = dict(output.parameters)
        changed[index] = fresh
    if changed is not None:
        response.outputs = changed
