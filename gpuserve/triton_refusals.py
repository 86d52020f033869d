"""Triton core's words for a request it refuses before any backend runs it (its request normalisation):
the input count, an input's batch dimension, datatype and shape, the batch size, a tensor named twice.

Each begins with the request's id, `[request id: ID] ` (`<id_unknown>` without one), in HTTP and gRPC answers
and in a BLS caller's error alike; lists are written without spaces, the inputs sent in the order Triton
walks them (gpuserve/triton_input_order.py), the missing ones in the config's order. Where several inputs are
wrong, the one named is the first in that walk (gpuserve/triton_request_check.py checks in Triton's order).
Checked against Triton 2.51: clients and scripts that migrate match on the whole text. A name the model does
not have is refused without the id, as Triton does.
"""

from __future__ import annotations

from typing import Collection, Iterable, Optional, Sequence

from gpuserve.errors import InvalidInput
from gpuserve.triton_input_order import checked_order

# what Triton adds to a shape refusal for a model with a non-zero max_batch_size (without one: nothing)
SHAPE_NOTE = ("NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be "
              "prepended to each input shape. If you want to specify the full shape including the batch dim in "
              "your input dims config, try setting max_batch_size to zero. See the model configuration docs for "
              "more info on max_batch_size.")


def request_prefix(request_id: Optional[str]) -> str:
    return f"[request id: {request_id or '<id_unknown>'}] "


def dims(shape: Iterable) -> str:
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def wrong_shape(request_id: Optional[str], model: str, name: str, expected: Sequence, got: Sequence,
                batching: bool) -> InvalidInput:
    return InvalidInput(f"{request_prefix(request_id)}unexpected shape for input '{name}' for model '{model}'. "
                        f"Expected {dims(expected)}, got {dims(got)}. " + (SHAPE_NOTE if batching else ""))


def wrong_datatype(request_id: Optional[str], model: str, name: str, got: str, expected: str) -> InvalidInput:
    return InvalidInput(f"{request_prefix(request_id)}inference input '{name}' data-type is '{got}', but model "
                        f"'{model}' expects '{expected}'")


def batch_too_large(request_id: Optional[str], model: str, limit: int) -> InvalidInput:
    return InvalidInput(f"{request_prefix(request_id)}inference request batch-size must be <= {limit} for "
                        f"'{model}'")


def no_batch_dim(request_id: Optional[str], model: str, name: str) -> InvalidInput:
    return InvalidInput(f"{request_prefix(request_id)}input '{name}' has no shape but model requires batch "
                        f"dimension for '{model}'")


def batch_mismatch(request_id: Optional[str], model: str, name: str) -> InvalidInput:
    return InvalidInput(f"{request_prefix(request_id)}input '{name}' batch size does not match other inputs for "
                        f"'{model}'")


def byte_size_mismatch(request_id: Optional[str], model: str, name: str, expected: int, got: int) -> InvalidInput:
    return InvalidInput(f"{request_prefix(request_id)}input byte size mismatch for input '{name}' for model "
                        f"'{model}'. Expected {expected}, got {got}")


def string_count_mismatch(request_id: Optional[str], model: str, name: str, expected: int, got: int
                          ) -> InvalidInput:
    return InvalidInput(f"{request_prefix(request_id)}expected {expected} string elements for inference input "
                        f"'{name}' for model '{model}', got {got}")


def named_twice(request_id: Optional[str], kind: str, name: str) -> InvalidInput:
    """`kind` input or output."""
    return InvalidInput(f"{request_prefix(request_id)}{kind} '{name}' already exists in request")


def unknown_input(model: str, name: str) -> InvalidInput:
    return InvalidInput(f"unexpected inference input '{name}' for model '{model}'")


def missing_inputs(request_id: Optional[str], model: str, got: Sequence[str], missing: Sequence[str],
                   required: int, total: int) -> InvalidInput:
    """The input count refused (too few, or more than the model has)."""
    expected = (f"expected {required} inputs" if required == total else
                f"expected number of inputs between {required} and {total}")
    return InvalidInput(f"{request_prefix(request_id)}{expected} but got {len(got)} inputs for model '{model}'. "
                        f"Got input(s) {_listed(got)}, but missing required input(s) {_closed(missing)}. Please "
                        "provide all required input(s).")


def check_input_count(request, model: str, names: Collection[str], optional: Collection[str]) -> None:
    """Triton core's first check: as many inputs as the model's required ones at least and all its inputs at
    most (`names` the model's, `optional` those it may go without)."""
    required, given = len(names) - len(optional), request.inputs
    if not required <= len(given) <= len(names):
        sent = [tensor.name for tensor in given]
        raise missing_inputs(request.id, model, sent, [n for n in names if n not in sent and n not in optional],
                             required, len(names))


def _listed(names: Sequence[str]) -> str:
    """The inputs sent, in the order Triton walks them."""
    return "[" + ",".join(f"'{name}'" for name in checked_order(names)) + "]"


def _closed(names: Sequence[str]) -> str:
    """Triton's list of missing inputs, in the config's order: each name quoted with a comma after it, the
    last comma made the closing bracket, so an empty one (an input too many) is written `]`."""
    text = "[" + "".join(f"'{name}'," for name in names)
    return text[:-1] + "]"
