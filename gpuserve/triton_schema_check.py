"""A config.pbtxt (or a config given at load time) read against ModelConfig's field types before anything
uses it, as Triton's protobuf parser reads it: a field the message does not have, a value of the wrong type
(`input: 5`, `max_batch_size: "x"`, `kind: KIND_TPU`) or out of its integer's range is refused with the
field's path, where a later reader would have failed with Python's words (`'int' object has no attribute
'get'`) or served a config that says one thing and does another.

Lenient where Triton's JSON form is (a load request's config): integers may be strings of digits, floats
"NaN"/"Infinity", a repeated field given once may be its one value, and a single field its one-item list.
"""

from __future__ import annotations

import math
from typing import Any

from gpuserve.errors import InvalidSettings
from gpuserve.triton_schema import ENUMS, MESSAGES, ROOT

_RANGES = {"i32": (-(2 ** 31), 2 ** 31 - 1), "i64": (-(2 ** 63), 2 ** 63 - 1), "u32": (0, 2 ** 32 - 1),
           "u64": (0, 2 ** 64 - 1)}
_TRUTH = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}
_DEPTH = 64  # ModelConfig nests 6 deep; anything deeper is not a config


def check_config(config: Any) -> None:
    """Raise InvalidSettings naming the first field that ModelConfig cannot hold."""
    if not isinstance(config, dict):
        raise InvalidSettings(f"config.pbtxt: a model config is a message of fields; found {_shown(config)}")
    _message(config, ROOT, "", 0)


def _message(fields: dict, name: str, path: str, depth: int) -> None:
    if depth > _DEPTH:
        raise InvalidSettings(f"config.pbtxt: '{path}' nests too deeply")
    spec = MESSAGES[name]
    for key, value in fields.items():
        where = f"{path}.{key}" if path else str(key)
        field = spec.get(key)
        if field is None:
            raise InvalidSettings(f"config.pbtxt: unknown field '{where}' ({name.split('.', 1)[-1]} has no field "
                                  f"'{key}')")
        if field[0] == "map":
            if not isinstance(value, dict):
                raise InvalidSettings(f"config.pbtxt: '{where}' must be a map of entries; found {_shown(value)}")
            for entry_key, entry in value.items():
                _value(entry_key, field[1], f"{where} key", depth)
                _value(entry, field[2], f"{where}[{entry_key!r}]", depth)
        elif field[0] == "repeated":
            for index, item in enumerate(value if isinstance(value, list) else [value]):
                _value(item, field[1], f"{where}[{index}]", depth)
        else:
            if isinstance(value, list) and len(value) == 1:  # written once in brackets (the reader lists
                value = value[0]  # some names wherever they appear: ensemble_scheduling)
            elif isinstance(value, list):
                raise InvalidSettings(f"config.pbtxt: '{where}' takes one value; found a list of {len(value)}")
            _value(value, field[1], where, depth)


def _value(value: Any, kind: Any, where: str, depth: int) -> None:
    if isinstance(kind, tuple):
        if kind[0] == "msg":
            if not isinstance(value, dict):
                raise InvalidSettings(f"config.pbtxt: '{where}' must be a message {{ ... }}; found {_shown(value)}")
            _message(value, kind[1], where, depth + 1)
            return
        names = ENUMS[kind[1]]
        if (isinstance(value, str) and value in names) or (
                isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names)):
            return
        raise InvalidSettings(f"config.pbtxt: '{where}' must be one of {', '.join(names)}; found {_shown(value)}")
    if kind == "str":
        if not isinstance(value, str):
            raise InvalidSettings(f"config.pbtxt: '{where}' must be a string; found {_shown(value)}")
    elif kind == "bool":
        if not (isinstance(value, bool) or value in (0, 1) or (isinstance(value, str) and value.lower() in _TRUTH)):
            raise InvalidSettings(f"config.pbtxt: '{where}' must be true or false; found {_shown(value)}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or not _is_float(value):
            raise InvalidSettings(f"config.pbtxt: '{where}' must be a number; found {_shown(value)}")
    else:
        number = _integer(value)
        if number is None:
            raise InvalidSettings(f"config.pbtxt: '{where}' must be an integer; found {_shown(value)}")
        low, high = _RANGES[kind]
        if not low <= number <= high:
            typename = {"i32": "int32", "i64": "int64", "u32": "uint32", "u64": "uint64"}[kind]
            raise InvalidSettings(f"config.pbtxt: '{where}' {number} is out of range ({typename}: {low} to {high})")


def _integer(value: Any):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit() and text.isascii():
            return int(text)
    return None


def _is_float(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    try:
        float(value)
    except ValueError:
        return False
    return True


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
