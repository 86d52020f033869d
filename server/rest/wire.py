"""Response heads as byte parts, shared by the HTTP server and its ASGI bridge."""

from __future__ import annotations

import http
from typing import List, Optional, Tuple


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1")


STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}


def head(status: int, headers: List[Tuple[bytes, bytes]], date: bytes, length: Optional[int],
         close: bool) -> List[bytes]:
    """Status line and headers as parts for one `b"".join` (`length` None: the caller frames the body)."""
    parts = [STATUS_LINES.get(status) or _status_line(status), date]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if length is not None:
        parts += (b"content-length: ", str(length).encode(), b"\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return parts
