"""What a model may put into its answer's headers (`response_headers`, MLServer's `parameters.headers`).

The transports write these as they are, so a value from the request (a tracking id a model echoes) holding
CR or LF would split the answer into headers of the client's choosing (response header injection), and a
name or value with other control characters makes an answer no HTTP client reads. Such a header fails the
request (500, as uvicorn's protocol check fails it under KServe). Content-Length and Transfer-Encoding are
the transport's to write for the body it sends: a model's own are left out.
"""

from __future__ import annotations

import re
from typing import Dict

from gpuserve.errors import InferenceError

_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # RFC 9110's token
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a field value may hold tab, not these
FRAMING = frozenset(("content-length", "transfer-encoding"))


def checked_headers(model: str, headers: Dict[str, str]) -> Dict[str, str]:
    out = {}
    for name, value in headers.items():
        name, value = str(name), str(value)
        if not _NAME.match(name):
            raise InferenceError(f"model '{model}' set a response header named {name[:80]!r}, which is not an "
                                 f"HTTP header name")
        if _CONTROL.search(value) or not value.isascii() and not _latin1(value):
            raise InferenceError(f"model '{model}' set response header '{name}' to a value holding CR, LF or "
                                 f"another control character (or a character outside Latin-1)")
        if name.lower() not in FRAMING:
            out[name] = value
    return out


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
        return True
    except UnicodeEncodeError:
        return False
