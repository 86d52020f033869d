"""`datetime`: a list of `datetime.datetime` carried as ISO-8601 text."""

from __future__ import annotations

from datetime import datetime
from typing import List

from gpuserve import codecs as native_codecs
from gpuserve.mlserver.codecs.base import NativeInputCodec, register_input_codec


@register_input_codec
class DatetimeCodec(NativeInputCodec):
    """Codec that converts to / from a datetime input."""

    ContentType = "datetime"
    TypeHint = List[datetime]
    Native = native_codecs.DatetimeCodec
