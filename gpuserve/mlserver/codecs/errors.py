"""The codec errors MLServer runtimes catch or raise; all are client errors (400) unless said."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from gpuserve.mlserver.errors import MLServerError


class CodecError(MLServerError):
    def __init__(self, msg: str):
        super().__init__(f"There was an error encoding / decoding the payload: {msg}")


class CodecNotFound(MLServerError):
    def __init__(self, name: Optional[str] = None, payload_type: Optional[str] = None,
                 is_input: bool = False, is_request: bool = False):
        what = {(True, True): "input request", (True, False): "input field",
                (False, True): "output response", (False, False): "output field"}[(is_input, is_request)]
        detail = ""
        if name:
            detail = f" with name '{name}'" + (f" and type {payload_type}" if payload_type else "")
        elif payload_type:
            detail = f" with type {payload_type}"
        super().__init__(f"Codec not found for {what}{detail}")


class InputsNotFound(MLServerError):
    def __init__(self, inputs: Iterable[Any], input_hints: Dict[str, Any]):
        names = ", ".join(f"'{getattr(i, 'name', i)}'" for i in inputs)
        known = ", ".join(f"'{n}'" for n in input_hints)
        super().__init__(f"Input {names} was not found. Available inputs are {known}.")


class InputsMissing(MLServerError):
    """gpuserve addition: a required argument of a `@decode_args` predict has no input."""

    def __init__(self, names: List[str], received: List[str]):
        wanted = ", ".join(f"'{n}'" for n in names)
        got = ", ".join(f"'{n}'" for n in received) or "none"
        super().__init__(f"Request lacks input {wanted}; it sent {got}.")


class OutputNotFound(MLServerError):
    def __init__(self, output_idx: int, output_type: Any, output_hints: List[Any]):
        expected = ", ".join(f"'{h}'" for h in output_hints)
        super().__init__(f"Unexpected output value at position '{output_idx}' ({output_type}). "
                         f"Expected outputs are {expected} outputs.", status_code=500)
