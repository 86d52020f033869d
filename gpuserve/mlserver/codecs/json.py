"""`mlserver.codecs.json`: the JSON helpers MLServer's codecs and runtimes import (bytes written as text where
they decode, NumPy arrays and scalars as lists and numbers, JSON-encoded tensor elements read back)."""

from __future__ import annotations

import json
from typing import Any, List, Union

import numpy as np
import orjson

from gpuserve.mlserver.codecs.lists import as_list
from gpuserve.mlserver.codecs.string import decode_str


def _bytes_as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return decode_str(value)  # best effort, as MLServer's
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def encode_to_json_bytes(v: Any) -> bytes:
    """`v` as compact JSON bytes; bytes values are written as their text."""
    return orjson.dumps(v, default=_bytes_as_text)


def decode_from_bytelike_json_to_dict(v: Union[bytes, str]) -> dict:
    return orjson.loads(v)


class JSONEncoderWithArray(json.JSONEncoder):
    """json's encoder that writes NumPy arrays as lists and NumPy scalars as numbers."""

    def default(self, obj):
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        return json.JSONEncoder.default(self, obj)


def encode_to_json(v: Any, use_bytes: bool = True) -> Union[str, bytes]:
    text = json.dumps(v, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"),
                      cls=JSONEncoderWithArray)
    return text.encode("utf-8") if use_bytes else text


def decode_json_input_or_output(input_or_output: Any) -> List[Any]:
    """Each element of a BYTES tensor read as the JSON it holds."""
    data = input_or_output.data
    packed = getattr(data, "root", data)
    return [json.loads(item) for item in as_list(packed)]


__all__ = ["encode_to_json_bytes", "decode_from_bytelike_json_to_dict", "JSONEncoderWithArray", "encode_to_json",
           "decode_json_input_or_output"]
