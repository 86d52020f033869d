"""Which endpoint groups Triton's `--http-restricted-api` / `--grpc-restricted-protocol` put behind a header,
read from their `GROUP[,GROUP...]:KEY=VALUE` specs. Read with the settings, so a bad spec stops the start
in Triton's words; the transports apply them (server/restricted.py).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

from gpuserve.errors import InvalidSettings

CATEGORIES = ("health", "metadata", "inference", "shared-memory", "model-config", "model-repository",
              "statistics", "trace", "logging")
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"

Restrictions = Dict[str, Tuple[str, str]]  # category -> (header, value)


def parse_restrictions(specs: Iterable[str], flag: str, feature: str, prefix: str = "") -> Restrictions:
    """`CATEGORY[,CATEGORY...]:KEY=VALUE` specs, each category in one group at most; a bad spec is a start-up
    error in Triton's words ("unknown restricted api 'X'", "... can not be specified in multiple config
    groups")."""
    restrictions: Restrictions = {}
    for spec in specs or ():
        names, colon, setting = spec.partition(":")
        key, equals, value = setting.partition("=")
        if not colon or not equals or not names or not key or not value:
            raise InvalidSettings(f"--{flag} option format is '<{feature}s>:<key>=<value>'. Got {spec}")
        for name in names.split(","):
            if name not in CATEGORIES:
                raise InvalidSettings(f"unknown restricted {feature} '{name}' (known: {', '.join(CATEGORIES)})")
            if name in restrictions:
                raise InvalidSettings(f"restricted {feature} '{name}' can not be specified in multiple config groups")
            restrictions[name] = (prefix + key, value)
    return restrictions


def http_rules(specs: List[str]) -> Restrictions:
    return parse_restrictions(specs, "http-restricted-api", "api")


def grpc_rules(specs: List[str]) -> Restrictions:
    return parse_restrictions(specs, "grpc-restricted-protocol", "protocol", GRPC_HEADER_PREFIX)
