"""Triton's repository agents (`model_repository_agents` in config.pbtxt), run before a model loads.

Triton looks each agent up as a shared library and refuses the model when one is missing; the only agent
NVIDIA ships is `checksum`, which refuses a model whose files do not hash to the values its parameters
give (`key: "MD5:<path relative to the model folder>"`, `value: "<hex digest>"`). gpuserve does the same
check itself, with the checksum agent's wording, so a repository that relies on it to catch a corrupted
or half-copied model file is protected here too; any other agent refuses the model, as a Triton without
that library would, instead of loading it unchecked.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Dict

from gpuserve.errors import InvalidSettings

_ALGORITHMS = {"md5": ("MD5", hashlib.md5)}


def run_repository_agents(folder: Path, config: Dict[str, Any]) -> None:
    """Raises InvalidSettings (the model stays unavailable, with this reason) where an agent refuses, said in the
    log in tritonserver's line for it (its repository poll failed there), which deployment scripts grep for."""
    try:
        _run(folder, config)
    except InvalidSettings as exc:
        if _SAID.get(folder) != str(exc):  # once, though the start-up reads the repository twice
            logging.getLogger("gpuserve").error("Poll failed for model directory '%s': %s", folder.name, exc)
        _SAID[folder] = str(exc)
        raise
    _SAID.pop(folder, None)


_SAID: Dict[Path, str] = {}  # each folder's refusal last said in the log


def _run(folder: Path, config: Dict[str, Any]) -> None:
    agents = (config.get("model_repository_agents") or {}).get("agents") or []
    for agent in agents if isinstance(agents, list) else [agents]:
        name = str((agent or {}).get("name", ""))
        if name != "checksum":
            raise InvalidSettings(f"model '{config.get('name', folder.name)}': repository agent '{name}' is not "
                                  "available (gpuserve runs only Triton's 'checksum' agent)")
        for key, expected in sorted(((agent or {}).get("parameters") or {}).items()):
            _check(folder, str(key), str(expected))


def _check(folder: Path, key: str, expected: str) -> None:
    algorithm, sep, relative = key.partition(":")
    if not sep:
        raise InvalidSettings(f"failed to parse key: {key}")
    if algorithm.lower() not in _ALGORITHMS:
        raise InvalidSettings(f"Unsupported checksum algorithm: {key}")
    label, factory = _ALGORITHMS[algorithm.lower()]
    digest = factory()
    try:
        with open(folder / relative, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise InvalidSettings(f"failed to open text file for read {relative}: {exc.strerror}") from None
    got = digest.hexdigest()
    if got != expected:
        raise InvalidSettings(f"Mismatched {label} hash for file {relative}, expect: {expected}, got: {got}")

