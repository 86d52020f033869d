"""Python lists <-> BYTES tensors of shape [N, 1], shared by the str, base64 and datetime codecs.

Each list element is one row, as MLServer lays them out, so a batch of N strings splits into N
requests. Elements arrive as `str` from JSON and as `bytes` from binary and gRPC raw data; decoders
accept both so a model sees the same values whichever transport carried them.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from gpuserve.codecs.base import with_content_type
from gpuserve.errors import InvalidInput


def is_list_of(payload: Any, types: type | tuple[type, ...], allow_empty: bool = False) -> bool:
    if not isinstance(payload, (list, tuple)):
        return False
    if not payload:
        return allow_empty
    return all(isinstance(item, types) for item in payload)


def require_list(payload: Any, codec: str, what: str) -> list:
    if not isinstance(payload, (list, tuple)):
        raise InvalidInput(f"{codec} encodes a list of {what}, got {type(payload).__name__}")
    return list(payload)


def object_column(items: Iterable[Any]) -> np.ndarray:
    """A [N, 1] object array; built element-wise so NumPy never splits strings or bytes."""
    items = list(items)
    flat = np.empty(len(items), dtype=object)
    flat[:] = items
    return flat.reshape(len(items), 1)


def bytes_tensor(cls: type, name: str, items: list, content_type: str, parameters: Any = None):
    return cls(name, [len(items), 1], "BYTES", object_column(items),
               with_content_type(parameters, content_type))


def elements(tensor: Any, codec: str) -> list:
    """The flat elements of a BYTES tensor, row-major; any other datatype is the client's error."""
    if tensor.datatype != "BYTES":
        raise InvalidInput(
            f"content type '{codec}' needs a BYTES tensor, but '{tensor.name}' is {tensor.datatype}")
    return list(np.asarray(tensor.as_numpy(), dtype=object).ravel())


def decode_each(tensor: Any, codec: str, decode: Callable[[Any], Any], what: str) -> list:
    out = []
    for index, item in enumerate(elements(tensor, codec)):
        if not isinstance(item, (str, bytes)):
            raise InvalidInput(
                f"'{tensor.name}' element {index}: content type '{codec}' needs {what}, "
                f"got {type(item).__name__}")
        try:
            out.append(decode(item))
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                f"'{tensor.name}' element {index} is not {what}: {_preview(item)} ({exc})") from None
    return out


def _preview(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 60 else text[:57] + "..."
