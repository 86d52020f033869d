"""Triton's Python-backend execution environments: a model config's `EXECUTION_ENV_PATH` parameter names a
conda-pack tarball (or an unpacked environment folder), `$$TRITON_MODEL_DIRECTORY` standing for the model's
folder.

As Triton's environment manager: a tarball is unpacked once per server into a folder of its own and again
only when its modification time changes (each unpacking logs "Extracting Python execution env PATH"); an
entry that would land outside that folder (`..`, an absolute name, a write through a link leading out) fails
the model's load in libarchive's words; names are checked before anything is written.

Triton starts the model's stub with the environment's interpreter; gpuserve runs Python models in its own
process, so an environment built for the server's Python version has its site-packages put on `sys.path`
after the server's own (a package the server lacks is found there; one it has stays the server's), and
one built for another version is unpacked and checked but not used, which the log says.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import threading
from pathlib import Path, PurePosixPath
from typing import Dict, Optional, Tuple

from gpuserve.errors import ModelLoadError

logger = logging.getLogger("gpuserve")

_lock = threading.Lock()
_unpacked: Dict[str, Tuple[str, float]] = {}  # canonical tarball -> (folder, modification time)
_base: Dict[str, str] = {}


def environment_for(model: str, config: dict, folder: Path) -> Optional[str]:
    """The environment folder of a model whose config names one, unpacked if need be; None without one."""
    entry = (config.get("parameters") or {}).get("EXECUTION_ENV_PATH") or {}
    value = entry.get("string_value") if isinstance(entry, dict) else entry
    if not value:
        return None
    path = os.path.realpath(str(value).replace("$$TRITON_MODEL_DIRECTORY", str(folder)))
    if not os.path.exists(path):
        raise ModelLoadError(f"Failed to get the canonical path for {value}.")
    if os.path.isdir(path):
        logger.debug("Returning canonical path since EXECUTION_ENV_PATH does not contain compressed path. "
                     "Path: %s", path)
        return path
    return _unpack(path)


def _unpack(tarball: str) -> str:
    modified = os.stat(tarball).st_mtime
    with _lock:
        known = _unpacked.get(tarball)
        if known is not None and known[1] == modified:
            return known[0]
        target = known[0] if known is not None else os.path.join(_base_folder(), str(len(_unpacked)))
        shutil.rmtree(target, ignore_errors=True)
        logger.debug("Extracting Python execution env %s", tarball)
        os.makedirs(target)
        try:
            _extract(tarball, target)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            _unpacked.pop(tarball, None)
            raise
        _unpacked[tarball] = (target, modified)
        return target


def _base_folder() -> str:
    if "path" not in _base:  # as Triton's environment manager: one folder per server, removed at its exit
        _base["path"] = tempfile.mkdtemp(prefix="python_env_")
        atexit.register(shutil.rmtree, _base["path"], True)
    return _base["path"]


def _extract(tarball: str, into: str) -> None:
    try:
        with tarfile.open(tarball, "r:*") as archive:
            members = archive.getmembers()
            for member in members:  # every entry checked before the first is written
                problem = _unsafe(member)
                if problem:
                    raise ModelLoadError(f"archive_write_header() failed with error code = -25 error message is "
                                         f"{problem}")
            # a link may point anywhere (a venv's bin/python does), but nothing is written through one
            archive.extractall(into, members=members, filter="tar")
    except (tarfile.TarError, OSError) as exc:
        raise ModelLoadError(f"failed to extract the Python execution env {tarball}: {exc}") from None


def _unsafe(member: tarfile.TarInfo) -> str:
    """libarchive's refusal of an entry's name under Triton's ARCHIVE_EXTRACT_SECURE_* flags, or '' (a write
    through a link leading out is refused by tarfile's tar filter, as by SECURE_SYMLINKS)."""
    name = PurePosixPath(member.name)
    if name.is_absolute():
        return "Path is absolute"
    if ".." in name.parts:
        return "Path contains '..'"
    return ""


def use(model: str, environment: str) -> None:
    """Make an environment's packages importable to the model, as far as one interpreter allows."""
    here = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = Path(environment) / "lib" / here / "site-packages"
    if site.is_dir():
        if str(site) not in sys.path:
            sys.path.append(str(site))
        logger.info("model %s: execution environment %s: its packages are found after the server's own "
                    "(gpuserve runs Python models in its own interpreter)", model, environment)
        return
    others = sorted(p.name for p in (Path(environment) / "lib").glob("python3.*")) if \
        (Path(environment) / "lib").is_dir() else []
    logger.warning("model %s: execution environment %s is for %s, not the server's %s: gpuserve runs Python "
                   "models in its own interpreter, so its packages are not used", model, environment,
                   ", ".join(others) or "no Python version it shows", here)
