"""Triton core's normalisation of a request (InferenceRequest::Normalize): its checks, in its order, in its
words (gpuserve/triton_refusals.py). Config.pbtxt models of every backend run it before their own decoding,
so a request wrong in several ways is refused for the same reason Triton gives, naming the same input.
"""

from __future__ import annotations

import math
from typing import Collection, Mapping, Optional, Sequence

from gpuserve.datatypes import check_input_byte_size, shape_fits
from gpuserve.triton_input_order import checked_order
from gpuserve.triton_refusals import (batch_mismatch, batch_too_large, check_input_count, no_batch_dim,
                                      string_count_mismatch, unknown_input, wrong_datatype, wrong_shape)


def check_request(request, model: str, specs: Mapping, optional: Collection[str], max_batch_size: int) -> None:
    """Triton core's normalisation of a request, its checks in its order and words, on the declared shapes:
    the input count; each input known and, for a batching model, with a batch dimension that agrees with
    the others (the first input of non-zero rows sets it); the batch limit; then each input's datatype and
    shape, and the bytes of an input of zero rows (a request of zero rows is one row short, as Triton counts
    it). Inputs are walked in Triton's order, so where several are wrong the same one is named. `specs` maps
    the model's input names to specs with `datatype` and `shape` (batch dimension included, -1 for any)."""
    check_input_count(request, model, specs, optional)
    tensors = request.inputs
    if len(tensors) > 1:
        by_name = {tensor.name: tensor for tensor in tensors}
        tensors = [by_name[name] for name in checked_order([tensor.name for tensor in tensors])]
    batch = 0
    for tensor in tensors:
        if tensor.name not in specs:
            raise unknown_input(model, tensor.name)
        if max_batch_size > 0:
            if not tensor.shape:
                raise no_batch_dim(request.id, model, tensor.name)
            if not batch:
                batch = tensor.shape[0]
            elif tensor.shape[0] != batch:
                raise batch_mismatch(request.id, model, tensor.name)
    if max_batch_size > 0 and batch > max_batch_size:
        raise batch_too_large(request.id, model, max_batch_size)
    for tensor in tensors:
        spec = specs[tensor.name]
        if tensor.datatype != spec.datatype:
            raise wrong_datatype(request.id, model, tensor.name, tensor.datatype, spec.datatype)
        if not shape_fits(spec.shape, tensor.shape):
            raise wrong_shape(request.id, model, tensor.name, spec.shape, tensor.shape, max_batch_size > 0)
        if max_batch_size > 0 and not tensor.shape[0]:  # Triton measures it against the batch's rows, or one
            _check_empty(request.id, model, tensor, ([batch] if batch else []) + list(tensor.shape[1:]))


def _check_empty(request_id: Optional[str], model: str, tensor, expected: Sequence[int]) -> None:
    """An input of zero rows measured against the shape Triton expects of it."""
    if tensor.datatype == "BYTES":
        count = math.prod(expected)
        if count:
            raise string_count_mismatch(request_id, model, tensor.name, count, 0)
    else:
        check_input_byte_size(tensor.name, tensor.datatype, expected, 0, model, request_id)
