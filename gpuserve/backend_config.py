"""Triton's --backend-config: `<backend>,<setting>=<value>` for one backend, `<setting>=<value>` for all.

Triton hands each backend the settings for it (the global ones, then its own over them) plus a few of its
own (auto-complete-config, min-compute-capability, backend-directory), and fills in default-max-batch-size
(4) where none was given. gpuserve acts on default-max-batch-size: the max_batch_size an ONNX model without
a config.pbtxt (or without max_batch_size in it) is completed with when it batches, as Triton's ONNX Runtime
backend completes it (0 turns batching off). The rest is shown as Triton's backends log it, and not used.
"""

from __future__ import annotations

import json
import logging
from typing import Dict, Iterable, Optional, Tuple

logger = logging.getLogger("gpuserve")

DEFAULT_MAX_BATCH_SIZE = "default-max-batch-size"
_DEFAULTS = {DEFAULT_MAX_BATCH_SIZE: "4"}
_FORMAT = "--backend-config option format is '<backend name>,<setting>=<value>'. Got "

# {backend name ("" for every backend): {setting: value}}, as the command line gave them
_given: Dict[str, Dict[str, str]] = {}
_auto_complete = True
_said: set = set()  # backends whose configuration has been logged (Triton logs it as each backend starts)


def parse(values: Optional[Iterable[str]]) -> Dict[str, Dict[str, str]]:
    """The --backend-config flags by backend; a malformed one raises ValueError in Triton's words."""
    given: Dict[str, Dict[str, str]] = {}
    for arg in values or ():
        backend, setting, value = _one(arg)
        given.setdefault(backend, {})[setting] = value
    return given


def _one(arg: str) -> Tuple[str, str, str]:
    comma = arg.find(",")
    if comma == 0:
        raise ValueError("No backend specified. --backend-config option format is <backend name>,<setting>=<value> "
                         f"or <setting>=<value>. Got {arg}")
    backend = arg[:comma] if comma > 0 else ""
    rest = arg[comma + 1:]
    setting, equals, value = rest.partition("=")
    if not equals or not setting or not value:
        raise ValueError(_FORMAT + arg)
    return backend, setting, value


def configure(given: Dict[str, Dict[str, str]], auto_complete: bool = True) -> None:
    """What this server was started with (gpuserve/cli.py); a fresh start forgets what was logged."""
    global _given, _auto_complete
    _given, _auto_complete = given, auto_complete
    _said.clear()


def settings_for(backend: str) -> Dict[str, str]:
    """A backend's settings as Triton resolves them: the global ones, its own over them, in name order,
    then the defaults it was not given."""
    merged = {"auto-complete-config": "true" if _auto_complete else "false",
              "backend-directory": "/opt/tritonserver/backends", "min-compute-capability": "6.000000",
              **_given.get("", {})}
    merged.update(_given.get(backend, {}))
    resolved = dict(sorted(merged.items()))
    for key, value in _DEFAULTS.items():
        resolved.setdefault(key, value)
    return resolved


def default_max_batch_size(backend: str) -> int:
    """default-max-batch-size for `backend`, said in Triton's verbose words as each model of it loads."""
    given = {**_given.get("", {}), **_given.get(backend, {})}
    if DEFAULT_MAX_BATCH_SIZE in given:
        logger.debug("Found overwritten default setting: %s,%s", DEFAULT_MAX_BATCH_SIZE, given[DEFAULT_MAX_BATCH_SIZE])
    else:
        logger.debug("Adding default backend config setting: %s,%s", DEFAULT_MAX_BATCH_SIZE,
                     _DEFAULTS[DEFAULT_MAX_BATCH_SIZE])
    value = settings_for(backend)[DEFAULT_MAX_BATCH_SIZE]
    try:
        return max(int(value), 0)
    except ValueError:
        return 0  # as Triton's backends read it: not a number, no batching


def say_configuration(backend: str) -> None:
    """Triton's backend log line, once per backend: 'backend configuration:' and the settings as JSON, on one
    line with the newline escaped, as Triton writes it."""
    if backend in _said:
        return
    _said.add(backend)
    logger.debug("backend configuration:\\n%s", json.dumps({"cmdline": settings_for(backend)},
                                                            separators=(",", ":")))
