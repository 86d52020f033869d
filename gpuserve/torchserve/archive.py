"""A TorchServe model archive: a `.mar` zip or a folder already extracted, described by MAR-INF/MANIFEST.json.

A zip is extracted once into a cache folder named by the archive's path, size and mtime, so a reload of an
unchanged archive reuses it and a changed one gets a fresh folder (TorchServe itself extracts to a temp dir
per load). The handler then runs with that folder as its `model_dir`, as TorchServe's worker does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from gpuserve.errors import InvalidSettings

MANIFEST = Path("MAR-INF") / "MANIFEST.json"
DEFAULT_VERSION = "1.0"  # torch-model-archiver's default --version
CACHE_ENV = "GPUSERVE_TORCHSERVE_CACHE"


@dataclass
class Archive:
    """What the manifest says about one model, and where its files are."""

    source: Path  # the .mar or the folder it was read from
    folder: Path  # the extracted files: the handler's model_dir
    manifest: Dict[str, Any]

    @property
    def model(self) -> Dict[str, Any]:
        return self.manifest.get("model") or {}

    @property
    def name(self) -> Optional[str]:
        return self.model.get("modelName")

    @property
    def version(self) -> str:
        return str(self.model.get("modelVersion") or DEFAULT_VERSION)

    @property
    def handler(self) -> Optional[str]:
        return self.model.get("handler")

    @property
    def envelope(self) -> Optional[str]:
        return self.model.get("envelope")


def is_archive_folder(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def read_manifest(source: Path) -> Dict[str, Any]:
    """The manifest of a .mar or an extracted folder, without extracting anything (the repository scan)."""
    try:
        if source.is_dir():
            text = (source / MANIFEST).read_text()
        else:
            with zipfile.ZipFile(source) as zf:
                text = zf.read(MANIFEST.as_posix()).decode()
        manifest = json.loads(text)
    except KeyError:
        raise InvalidSettings(f"'{source.name}' is not a TorchServe model archive: it has no {MANIFEST.as_posix()}")
    except zipfile.BadZipFile:
        raise InvalidSettings(f"'{source.name}' is not a TorchServe model archive: not a zip file") from None
    except (OSError, ValueError) as exc:
        raise InvalidSettings(f"cannot read the manifest of '{source.name}': {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("model"), dict):
        raise InvalidSettings(f"the manifest of '{source.name}' has no 'model' object")
    return manifest


def read_config_file(source: Path, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """The archive's `configFile` (model-config.yaml: batchSize, minWorkers, deviceType, ...), read without
    extracting anything; empty where it names none. A file that does not parse is an InvalidSettings."""
    name = (manifest.get("model") or {}).get("configFile")
    if not name:
        return {}
    try:
        if source.is_dir():
            text = (source / name).read_text()
        else:
            with zipfile.ZipFile(source) as zf:
                text = zf.read(name).decode()
        import yaml

        found = yaml.safe_load(text) or {}
    except (KeyError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidSettings(f"cannot read '{name}' of '{source.name}': {exc}") from None
    except Exception as exc:  # yaml's own errors
        raise InvalidSettings(f"'{name}' of '{source.name}' is not YAML: {exc}") from None
    if not isinstance(found, dict):
        raise InvalidSettings(f"'{name}' of '{source.name}' is not a YAML mapping")
    return found


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "gpuserve-torchserve")


def _extracted(source: Path) -> Path:
    stat = source.stat()
    key = hashlib.blake2b(f"{source.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode(), digest_size=8)
    target = cache_root() / f"{source.stem}-{key.hexdigest()}"
    if (target / MANIFEST).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{source.stem}-", dir=target.parent))
    try:
        with zipfile.ZipFile(source) as zf:
            for member in zf.namelist():  # no member may land outside the folder (a zip-slip archive)
                if not (scratch / member).resolve().is_relative_to(scratch.resolve()):
                    raise InvalidSettings(f"'{source.name}' holds a file outside its folder: {member}")
            zf.extractall(scratch)
        try:
            os.rename(scratch, target)  # atomic: two loads at once never see a half-extracted folder
        except OSError:  # another load won the race
            shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target


def open_archive(source: str | Path) -> Archive:
    """The archive at `source`, a zip extracted (once) to the cache; a folder is used where it is."""
    source = Path(source)
    manifest = read_manifest(source)
    folder = source if source.is_dir() else _extracted(source)
    return Archive(source=source, folder=folder, manifest=manifest)
