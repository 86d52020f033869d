"""A repository load that brings its own config or files: Triton's load parameters `config` and `file:<path>`.

tritonclient's `load_model(name, config=JSON, files={"file:1/model.onnx": bytes})`: the config replaces the
model's config.pbtxt for this load; files, when given, replace the model's folder altogether (Triton then
requires the config too, and the model need not exist in the repository). Either way gpuserve builds a
scratch model folder (the given files, or links to the repository folder's entries, plus the config as
config.pbtxt) and loads it as any Triton folder, so the Python backend, ensembles and the config endpoints
read the override where they always read a config. The scratch folder goes when its model unloads or is
replaced. The repository folder itself is never written: a later load without parameters reads it again.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Optional, Tuple

from gpuserve.errors import InvalidInput, ModelLoadError
from gpuserve.triton_config import to_pbtxt

FILE_PREFIX = "file:"


def scratch_folder(name: str, original: Optional[Path], config: Optional[str], files: Dict[str, bytes]) -> Path:
    """The folder `<scratch>/<name>` to load `name` from; the caller owns `<scratch>` (its parent)."""
    if files and config is None:
        raise InvalidInput(f"failed to load '{name}', failed to poll from model repository: files given without "
                           "a 'config' parameter (Triton needs both)")
    parsed = _config(name, config) if config is not None else None
    if not files and original is None:
        raise InvalidInput(f"model '{name}' is not in the repository; give its files as 'file:<path>' parameters")
    # the folder's own name is the model's (checked below); its scratch folder's keeps only what any file system takes
    scratch = Path(tempfile.mkdtemp(prefix=f"gpuserve-load-{re.sub(r'[^A-Za-z0-9_.-]', '_', name[:40])}-"))
    try:
        folder = scratch / name
        try:
            folder.mkdir()
        except (OSError, ValueError) as exc:  # a name the file system cannot hold: Triton's words, and why
            raise ModelLoadError(f"failed to load '{name}', failed to poll from model repository: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
        if files:
            for key, data in files.items():
                target = folder / _relative(name, key)
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                except OSError as exc:  # e.g. a name too long: Triton's words, and the server's fault (500)
                    raise ModelLoadError(f"failed to load '{name}', failed to poll from model repository: "
                                         f"{exc.strerror or type(exc).__name__}") from None
        else:
            for entry in original.iterdir():
                if entry.name not in ("config.pbtxt", "model-settings.json"):
                    (folder / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
        if parsed is not None:
            (folder / "config.pbtxt").write_text(to_pbtxt(parsed))
        return folder
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


_BARE_KEY = re.compile(r'("(?:\\.|[^"\\])*")|([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)(\s*:)')


def _loads(text: str):
    """JSON, with object keys also unquoted: protobuf's JSON parser, which reads Triton's override, takes
    them (qa/L0_iterative_sequence loads `direct: {...}` so)."""
    try:
        return json.loads(text)
    except ValueError:
        if not isinstance(text, str):
            raise
        quoted = _BARE_KEY.sub(lambda m: m.group(1) or f'{m.group(2)}"{m.group(3)}"{m.group(4)}', text)
        if quoted == text:
            raise
        try:
            return json.loads(quoted)
        except ValueError:
            pass
        raise


def _config(name: str, text: str) -> dict:
    try:
        config = _loads(text)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"failed to load '{name}': Invalid config override: the 'config' parameter is not "
                           f"valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidInput(f"failed to load '{name}': the 'config' parameter must be a JSON object (a ModelConfig)")
    given = config.setdefault("name", name)
    if given != name:
        raise InvalidInput(f"failed to load '{name}': the config names the model '{given}'")
    return config


def _relative(name: str, key: str) -> PurePosixPath:
    """As Triton joins a file parameter's path to the model folder: a leading '/' stays inside it
    ('file:/1/model.py' is 1/model.py), and what normalizes to outside it is refused."""
    given = key[len(FILE_PREFIX):] if key.startswith(FILE_PREFIX) else key
    path = PurePosixPath(posixpath.normpath(given.lstrip("/") or "."))
    if not path.parts or path.parts[0] == "..":
        raise InvalidInput(f"failed to load '{name}': Invalid file parameter '{key}' with normalized path '{path}' "
                           "must stay within model directory.")
    return path


def load_parameters(parameters: Dict[str, Any], files_in_base64: bool) -> Tuple[Optional[str], Dict[str, bytes]]:
    """(config, files) from a load request's parameters: REST carries files in base64, gRPC as bytes."""
    config: Optional[str] = None
    files: Dict[str, bytes] = {}
    for key, value in parameters.items():
        if key == "config":
            if not isinstance(value, str):
                raise InvalidInput("load parameter 'config' must be a string holding the model config as JSON")
            config = value
        elif key.startswith(FILE_PREFIX):
            if files_in_base64:
                try:
                    value = base64.b64decode(value, validate=True)
                except (TypeError, ValueError, binascii.Error):
                    raise InvalidInput(f"load parameter '{key}' must be the file's bytes in base64") from None
            elif not isinstance(value, bytes):
                raise InvalidInput(f"load parameter '{key}' must hold the file's bytes (bytes_param)")
            files[key] = value
        else:
            raise InvalidInput(f"unknown load parameter '{key}' (Triton's are 'config' and 'file:<path>')")
    return config, files
