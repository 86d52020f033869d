"""The `datetime` content type: `datetime.datetime` values carried as ISO-8601 text.

ISO-8601 keeps the time zone offset and microseconds, so an aware datetime comes back as the same
instant and a naive one as the same wall-clock time. Strings are checked when encoded, so a bad
date fails on the side that produced it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from gpuserve.codecs.base import InputCodec, register_input_codec
from gpuserve.codecs.bytes_lists import bytes_tensor, decode_each, is_list_of, require_list
from gpuserve.errors import InvalidInput
from gpuserve.types import InferInput, InferOutput


# An offset under one second, as isoformat writes it: CPython 3.11's fromisoformat reads it as UTC
_SUB_SECOND_OFFSET = re.compile(r"([+-])00:00:00\.(\d{1,6})$")


def _parse(item: Any) -> datetime:
    text = item.decode("utf-8") if isinstance(item, bytes) else item
    value = datetime.fromisoformat(text)
    if value.tzinfo is timezone.utc:
        match = _SUB_SECOND_OFFSET.search(text)
        if match is not None:
            micro = int(match.group(2).ljust(6, "0")) * (-1 if match.group(1) == "-" else 1)
            value = value.replace(tzinfo=timezone(timedelta(microseconds=micro)))
    return value


def _encode_datetimes(cls: type, name: str, payload: Any, use_bytes: bool, parameters: Any):
    items = require_list(payload, "content type 'datetime'", "datetime")
    out = []
    for index, item in enumerate(items):
        if isinstance(item, datetime):
            text = item.isoformat()
        elif isinstance(item, str):
            try:
                _parse(item)
            except ValueError:
                raise InvalidInput(f"'{name}' element {index} is not an ISO-8601 datetime: {item!r}") from None
            text = item
        else:
            raise InvalidInput(
                f"'{name}' element {index}: content type 'datetime' encodes datetime or ISO-8601 str, "
                f"got {type(item).__name__}")
        out.append(text.encode("utf-8") if use_bytes else text)
    return bytes_tensor(cls, name, out, DatetimeCodec.ContentType, parameters)


def _decode_datetimes(tensor: Any) -> list[datetime]:
    return decode_each(tensor, DatetimeCodec.ContentType, _parse, "an ISO-8601 datetime")


@register_input_codec
class DatetimeCodec(InputCodec):
    """A list of datetime as a [N, 1] BYTES tensor of ISO-8601 text."""

    ContentType = "datetime"

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return is_list_of(payload, datetime)

    @classmethod
    def encode_output(cls, name: str, payload: list, use_bytes: bool = True,
                      parameters: Optional[dict] = None, **kwargs) -> InferOutput:
        return _encode_datetimes(InferOutput, name, payload, use_bytes, parameters)

    @classmethod
    def decode_output(cls, response_output: InferOutput) -> list[datetime]:
        return _decode_datetimes(response_output)

    @classmethod
    def encode_input(cls, name: str, payload: list, use_bytes: bool = True,
                     parameters: Optional[dict] = None, **kwargs) -> InferInput:
        return _encode_datetimes(InferInput, name, payload, use_bytes, parameters)

    @classmethod
    def decode_input(cls, request_input: InferInput) -> list[datetime]:
        return _decode_datetimes(request_input)
