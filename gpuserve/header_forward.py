"""Triton's `--http-header-forward-pattern` / `--grpc-header-forward-pattern`: request headers whose name the
pattern finds (anywhere in the name, case-insensitively unless the pattern starts with `(?-i)`) reach the
model as string request parameters, so a Python model reads e.g. a tenant id from `request.parameters()`
without the client putting it in the body. A matching header named like a reserved parameter (priority,
timeout, sequence_id, ... or any `triton_` name) would steer the server itself: it is refused with Triton's
400 "Header 'NAME' is reserved for Triton usage and cannot be forwarded." instead.
"""

from __future__ import annotations

import re
from typing import Dict, Optional

from gpuserve.errors import InvalidInput, InvalidSettings

RESERVED = frozenset(("sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "headers",
                      "binary_data_output"))
CASE_SENSITIVE = "(?-i)"


class HeaderForward:
    def __init__(self, pattern: str, flag: str = "header-forward-pattern"):
        sensitive = pattern.startswith(CASE_SENSITIVE)
        try:
            self.regex = re.compile(pattern[len(CASE_SENSITIVE):] if sensitive else pattern,
                                    0 if sensitive else re.IGNORECASE)
        except re.error as exc:
            raise InvalidSettings(f"--{flag} '{pattern}' is not a regular expression: {exc}") from None

    def apply(self, parameters: dict, headers: Dict[str, str]) -> None:
        """Add the matching headers to a request's `parameters`."""
        search = self.regex.search
        for key, value in headers.items():
            if search(key) is None:
                continue
            if key in RESERVED or key.startswith("triton_"):
                raise InvalidInput(f"Header '{key}' is reserved for Triton usage and cannot be forwarded.")
            parameters[key] = value


def header_forward(pattern: Optional[str], flag: str) -> Optional[HeaderForward]:
    return HeaderForward(pattern, flag) if pattern else None
