"""TorchServe's model store and `config.properties`, read into gpuserve ModelSettings.

Repository forms (gpuserve/repository.py asks here):
- KServe's layout, which its TorchServe runtime mounts: `config/config.properties` + `model-store/*.mar`. Models
  come from `models=` (TorchServe's JSON `{"NAME": {"1.0": {"marName": ..., "batchSize": ...}}}`) or KServe's
  `model_snapshot=` (the same under "models"), else from `load_models=` (`all`, `NAME`, `NAME=FILE.mar`), else
  every archive in the store; `model_store=` is used where that folder exists (KServe writes /mnt/models/...),
  else the layout's own `model-store/`. Served under the config's key (or the archive's modelName).
- A bare `NAME.mar` (or an extracted archive folder) in the repository root: the archive's modelName.
- `NAME/NAME.mar`, an extracted archive in `NAME/`, or `NAME/<n>/*.mar`: the folder's name, as every other
  gpuserve folder form; `<n>` is then the (integer) version.

Versions: the manifest's `modelVersion` text ("1.0", TorchServe's default) is the gpuserve version as it is, so
`/predictions/NAME/1.0` and V2's `/v2/models/NAME/versions/1.0` both reach it, and a request naming no version
gets the default one (the only one, or the highest).

Batching: `batchSize` > 1 becomes `max_batch_size`, `maxBatchDelay` (ms, TorchServe's default 100) becomes
`max_batch_time`, so gpuserve's adaptive batcher hands one `handle` call the requests that arrive together.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from gpuserve.errors import GpuserveError, InvalidSettings
from gpuserve.settings import ModelSettings
from gpuserve.torchserve.archive import DEFAULT_VERSION, MANIFEST, is_archive_folder, read_config_file, read_manifest

CONFIG = Path("config") / "config.properties"
STORE = "model-store"
DEFAULT_BATCH_DELAY_MS = 100  # TorchServe's maxBatchDelay when a model sets none
_LINE = re.compile(r"^\s*([^=:\s#!][^=:]*?)\s*[=:]\s*(.*?)\s*$")


def read_properties(path: Path) -> Dict[str, str]:
    """A Java properties file as TorchServe's config.properties is written: `key=value`, `#`/`!` comments."""
    found = {}
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def is_kserve_layout(root: Path) -> bool:
    return (root / CONFIG).is_file() and (root / STORE).is_dir()


# model-config.yaml's keys that take the place of config.properties' (TorchServe's ModelManager: the archive's
# value where it is above 0, unless the register API or a snapshot gave one)
YAML_OVER = ("batchSize", "maxBatchDelay", "responseTimeout", "startupTimeout")


def settings_for_archive(source: Path, name: Optional[str] = None, version: Optional[str] = None,
                         options: Optional[Dict[str, Any]] = None, folder: Optional[Path] = None,
                         given: Tuple[str, ...] = ()) -> ModelSettings:
    """A model's settings from one archive (its manifest and model-config.yaml read, nothing extracted); broken
    ones say why. `given`: the option keys the register API or a snapshot set, which the yaml does not replace."""
    options = dict(options or {})
    try:
        manifest = read_manifest(source)
        _apply_config_file(options, read_config_file(source, manifest), given)
        model = manifest["model"]
        name = name or model.get("modelName") or source.stem
        version = version or str(model.get("modelVersion") or DEFAULT_VERSION)
        batch = int(options.get("batchSize") or 1)
        delay = float(options.get("maxBatchDelay", DEFAULT_BATCH_DELAY_MS))
        workers = int(options["minWorkers"]) if options.get("minWorkers") is not None else 1
        if batch < 1:
            raise InvalidSettings(f"model '{name}': batchSize is {batch}; it is 1 or more")
        if workers < 0:
            raise InvalidSettings(f"model '{name}': minWorkers is {workers}; it is 0 or more")
    except (GpuserveError, ValueError, TypeError) as exc:
        reason = str(exc) if isinstance(exc, GpuserveError) else f"invalid TorchServe settings: {exc}"
        return ModelSettings(name=name or source.stem, implementation="torchserve", folder=str(folder or source.parent),
                             parameters={"uri": str(source), "version": version}, _broken=reason)
    options.setdefault("marName", source.name)
    # minWorkers > 1: that many worker processes (gpuserve/parallel.py), each with the handler loaded, as
    # TorchServe's workers; one runs in the server process, on a thread of its own; 0: registered, not loaded
    # (TorchServeModel.load), its requests answered 503 until the scale workers API adds one
    return ModelSettings(name=name, implementation="torchserve", folder=str(folder or source.parent),
                         **({"device": "cpu"} if options.get("deviceType") == "cpu" else {}),
                         parallel_workers=workers if workers > 1 else None,
                         max_batch_size=batch if batch > 1 else None,
                         max_batch_time=delay / 1000.0 if batch > 1 else 0.0,
                         parameters={"uri": str(source), "version": version, "extra": {"torchserve": options}})


def _apply_config_file(options: Dict[str, Any], config: Dict[str, Any], given: Tuple[str, ...]) -> None:
    """TorchServe's precedence for an archive's model-config.yaml: its batchSize, maxBatchDelay and timeouts
    where above 0 and not `given`; its minWorkers/maxWorkers where 0 < min <= max (over initial_workers too,
    unless a snapshot gave them); deviceType "cpu" keeps the model off the GPU."""
    for key in YAML_OVER:
        if key not in given and int(config.get(key) or 0) > 0:
            options[key] = int(config[key])
    least, most = int(config.get("minWorkers") or 0), int(config.get("maxWorkers") or 0)
    if "minWorkers" not in given and 0 < least <= most:
        options["minWorkers"], options["maxWorkers"] = least, most
    if str(config.get("deviceType") or "").lower() in ("cpu", "gpu"):
        options["deviceType"] = str(config["deviceType"]).lower()


def _models_json(properties: Dict[str, str]) -> Optional[Dict[str, Any]]:
    if properties.get("models"):
        return json.loads(properties["models"])
    if properties.get("model_snapshot"):
        return json.loads(properties["model_snapshot"]).get("models") or {}
    return None


def scan_kserve_layout(root: Path) -> List[ModelSettings]:
    """Every model KServe's TorchServe layout at `root` names, each version its own settings."""
    try:
        properties = read_properties(root / CONFIG)
        store = _store_of(root, properties)
        models = _models_json(properties)
        from_snapshot = not properties.get("models") and bool(properties.get("model_snapshot"))
    except (OSError, ValueError, AttributeError) as exc:
        return [ModelSettings(name=root.name, folder=str(root), _broken=f"invalid {CONFIG.as_posix()}: {exc}")]
    found = []
    if models:
        for name, versions in models.items():
            for version, options in (versions or {}).items():
                options = dict(options or {})
                if from_snapshot:  # TorchServe restores these rather than loading them at startup (describe says so)
                    options["fromSnapshot"] = True
                source = store / options.get("marName", f"{name}.mar")
                # a snapshot's values stand over the archive's model-config.yaml; models= JSON's do not
                given = tuple(options) if from_snapshot else ()
                found.append(settings_for_archive(source, name, str(version), options, folder=store, given=given))
        return found
    wanted = properties.get("load_models", "all").strip() or "all"
    if wanted in ("all", "ALL"):
        sources = {None: p for p in sorted(store.iterdir()) if p.suffix == ".mar" or is_archive_folder(p)}
        return [settings_for_archive(p, folder=store) for p in sources.values()]
    for item in (w.strip() for w in wanted.split(",") if w.strip()):
        name, _, file = item.partition("=")
        found.append(settings_for_archive(store / (file or f"{name}.mar"), name, options={}, folder=store))
    return found


def root_archives(root: Path) -> List[ModelSettings]:
    """Bare archives in a repository root: `NAME.mar` files (served under their modelName)."""
    return [settings_for_archive(p, folder=root) for p in sorted(root.glob("*.mar")) if p.is_file()]


def folder_archives(folder: Path) -> List[ModelSettings]:
    """A model folder holding an archive: extracted in place, `NAME.mar`, or `<n>/*.mar` version folders."""
    if is_archive_folder(folder):
        return [settings_for_archive(folder, folder.name, folder=folder)]
    own = folder / f"{folder.name}.mar"
    if own.is_file():
        return [settings_for_archive(own, folder.name, folder=folder)]
    found = []
    for sub in sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        archives = sorted(sub.glob("*.mar")) or ([sub] if (sub / MANIFEST).is_file() else [])
        if archives:
            found.append(settings_for_archive(archives[0], folder.name, sub.name, folder=folder))
    return found


def over_disk(found: Dict[str, List[ModelSettings]], archives: Dict[Tuple[str, str], Optional[ModelSettings]]
              ) -> Dict[str, List[ModelSettings]]:
    """A repository scan with TorchServe's management writes applied (`archives`: (name, version) -> settings,
    None when unregistered): a version registered or scaled at run time replaces what the disk says of it, one
    unregistered is left out, so a reload, the repository index and poll mode see what the API made."""
    if not archives:
        return found
    out: Dict[str, List[ModelSettings]] = {}
    for name, group in found.items():
        kept = [s for s in group if (name, str(s.parameters.version)) not in archives]
        if kept:
            out[name] = kept
    for (name, _), settings in archives.items():
        if settings is not None:  # a copy: building a model fills in its settings (device, workers)
            out.setdefault(name, []).append(settings.model_copy(deep=True))
    return out


def store_folder(root: Path) -> Path:
    """Where TorchServe's register API finds and downloads archives: KServe's layout's model store (its
    `model_store=` where that folder exists), else the repository folder itself."""
    return _store_of(root, server_properties(root)) if is_kserve_layout(root) else root


def _store_of(root: Path, properties: Dict[str, str]) -> Path:
    configured = properties.get("model_store")
    return Path(configured) if configured and Path(configured).is_dir() else root / STORE


def server_properties(root: Path) -> Dict[str, str]:
    """KServe's layout's config.properties (TorchServe's server keys: enable_model_api, allowed_urls,
    default_workers_per_model); empty for other repositories or an unreadable file."""
    try:
        return read_properties(root / CONFIG) if is_kserve_layout(root) else {}
    except (OSError, UnicodeDecodeError):
        return {}
