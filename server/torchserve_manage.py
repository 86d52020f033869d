"""TorchServe's management writes over the data plane, free of any transport: register an archive, scale its
workers, set a model's default version, unregister. REST (server/rest/torchserve.py) and gRPC
(server/grpc/torchserve.py) answer with them; with `gpuserve start --workers N` every worker does the same
(server/peers.py, op "torchserve"), so each serves what the API made.

As TorchServe 0.12 (its frontend's ApiUtils and ModelManager; words and statuses checked against a run of it,
benchmarks/peers/torchserve_conformance.py):
- Register and unregister only with its model API enabled (`enable_model_api`, off by default since 0.11):
  gpuserve's `--enable-model-api` or setting torchserve_model_api, KServe's config.properties
  `enable_model_api=true`, or TorchServe's env TS_ENABLE_MODEL_API=true; otherwise REST answers 405
  MethodNotAllowedException and gRPC PERMISSION_DENIED "Model API disabled". Scaling and set-default are always
  served, as there.
- Register's `url`: an archive (or extracted folder) in the model store, found by its file name (KServe's layout's
  model store, else the repository folder); or a file:// or http(s):// URL matching `allowed_urls` (TorchServe's
  default `file://.*|http(s)?://.*`), downloaded into the store and removed again when unregistered. A version of
  a name registered already is 409; the first version of a name becomes its default.
- Workers: `initial_workers` (default `default_workers_per_model`, else 0) loads the archive with that many
  (gpuserve's: one in the server process, more as worker processes); 0 registers it unloaded, its requests 503
  until scaled. `synchronous` (REST's default true, gRPC's false) waits for the load; otherwise 202 "Processing
  worker updates..." and the load goes on in the background. A load that fails unregisters the model again (500).
- Scale: a model object with the new count loads beside the serving one, then takes its place (no gap in
  service); 0 stops it. What the API made lives in the repository's scan (DiskRepository.archives), so a V2
  reload, the repository index and poll mode see it too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple

from gpuserve.model_repository import run_load, stop_model
from gpuserve.server.torchserve_api import TorchServeError, archive_options, find, not_found, of_archive
from gpuserve.torchserve.store import server_properties, settings_for_archive, store_folder

logger = logging.getLogger("gpuserve")

DEFAULT_ALLOWED_URLS = r"file://.*|http(s)?://.*"  # TorchServe's allowed_urls
DOWNLOAD_TIMEOUT_S = 300.0
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)  # what TorchServe treats as a URL, not a store name
DISABLED = "Model API disabled"
NOT_ALLOWED = "Requested method is not allowed, please refer to API document."


class Done(NamedTuple):
    status: int  # HTTP (200, or 202 for work still under way)
    message: str  # TorchServe's StatusResponse text: REST's {"status": ...}, gRPC's ManagementResponse.msg


def model_api_enabled(plane) -> bool:
    if getattr(plane, "torchserve_model_api", False) or os.environ.get("TS_ENABLE_MODEL_API", "").lower() == "true":
        return True
    disk = getattr(plane.repository, "disk", None)
    return disk is not None and server_properties(disk.root).get("enable_model_api", "").lower() == "true"


def _disk(plane):
    disk = getattr(plane.repository, "disk", None)
    if disk is None:
        raise TorchServeError(400, "BadRequestException", "TorchServe's management API needs a model repository "
                              "folder (gpuserve start FOLDER)")
    return disk


def number(value: Any, default: int) -> int:
    """An integer parameter as TorchServe reads one: absent or unparsable is the default."""
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def flag(value: Any, default: bool) -> bool:
    """A boolean parameter as Java's Boolean.parseBoolean reads one: only "true" (any case) is true."""
    return default if value is None else value is True or str(value).lower() == "true"


def _archive_model(plane, name: str, version: Optional[str]):
    """The archive a write names, or TorchServe's 404; a model that is no archive is not its to change."""
    model = find(plane, name, version)
    if not of_archive(model):
        raise TorchServeError(400, "BadRequestException", f"model '{name}' is not a TorchServe archive: load and "
                              "unload it through the V2 repository API")
    return model


# fetching an archive ------------------------------------------------------------------------------------------

def fetch_archive(url: str, store: Path, allowed: str) -> Tuple[Path, bool]:
    """(the archive's path, whether it was downloaded) for register's `url`, with TorchServe's errors."""
    if ".." in url:
        raise TorchServeError(404, "ModelNotFoundException", f"Relative path is not allowed in url: {url}")
    is_url = bool(_URL.match(url))
    name = os.path.basename(urllib.parse.urlparse(url).path if is_url else url)
    target = store / name
    if is_url:
        patterns = [p.strip() for p in allowed.split(",") if p.strip()]
        if not any(re.fullmatch(p, url, re.IGNORECASE) for p in patterns):
            raise TorchServeError(404, "ModelNotFoundException", f"Given URL {url} does not match any allowed URL(s)")
        if target.exists():
            raise TorchServeError(500, "InternalServerException", f"Model file already exists {name}")
        _download(url, target)
        return target, True
    if target.exists():
        return target, False
    if Path(url).is_dir():  # an extracted archive named by its path
        return Path(url), False
    raise TorchServeError(404, "ModelNotFoundException", f"Model not found at: {url}")


def _download(url: str, target: Path) -> None:
    partial = target.with_name(f".{target.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as answer, open(partial, "wb") as out:
            shutil.copyfileobj(answer, out, 1 << 20)
        os.replace(partial, target)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        partial.unlink(missing_ok=True)
        logger.error("TorchServe register: %s did not download: %s", url, exc)
        raise TorchServeError(400, "DownloadArchiveException", f"Failed to download archive from: {url}") from None


# register --------------------------------------------------------------------------------------------------

async def register(plane, params: Dict[str, Any], everywhere: bool = True) -> Done:
    """`POST /models` / RegisterModel; `params` the request's (strings from a query, values from JSON or gRPC)."""
    if not model_api_enabled(plane):
        raise disabled()
    url = params.get("url") or None
    if not url:
        raise TorchServeError(400, "BadRequestException", "Parameter url is required.")
    runtime = params.get("runtime") or None
    if runtime is not None and runtime not in ("python", "python3"):
        raise TorchServeError(400, "BadRequestException", f"runtime '{runtime}': gpuserve runs TorchServe's Python "
                              "handlers only")
    disk = _disk(plane)
    properties = server_properties(disk.root)
    allowed = properties.get("allowed_urls") or DEFAULT_ALLOWED_URLS
    source, downloaded = await asyncio.to_thread(fetch_archive, str(url), store_folder(disk.root), allowed)
    workers = max(number(params.get("initial_workers"), number(properties.get("default_workers_per_model"), 0)), 0)
    options: Dict[str, Any] = {"marName": str(url), "registered": True, "minWorkers": workers, "maxWorkers": workers}
    if downloaded:
        options["downloaded"] = True  # unregister removes it again, as TorchServe
    for key, option in (("batch_size", "batchSize"), ("max_batch_delay", "maxBatchDelay"),
                        ("response_timeout", "responseTimeout"), ("startup_timeout", "startupTimeout")):
        value = number(params.get(key), -1)
        if value > 0:
            options[option] = value
    if params.get("handler"):
        options["handler"] = str(params["handler"])
    given = tuple(k for k in ("batchSize", "maxBatchDelay", "responseTimeout", "startupTimeout") if k in options)
    try:
        return await register_archive(plane, source, params.get("model_name") or None, options,
                                      flag(params.get("synchronous"), True), everywhere, given)
    except BaseException:
        if downloaded:
            source.unlink(missing_ok=True)
        raise


async def register_archive(plane, source: Path, name: Optional[str], options: Dict[str, Any], synchronous: bool,
                           everywhere: bool = True, given: Tuple[str, ...] = ()) -> Done:
    """Register one archive already in place (each worker's part of a register); `given`: the options the request
    set, which the archive's model-config.yaml does not replace (its workers do: TorchServe's precedence)."""
    registry, disk = plane.repository, _disk(plane)
    settings = settings_for_archive(source, name, options=options, folder=source.parent, given=given)
    broken = (settings.model_extra or {}).get("_broken")
    if broken:
        raise TorchServeError(400, "InvalidModelException", broken)
    name, version = settings.name, str(settings.parameters.version)
    if not name.strip() or "/" in name or name.strip() in (".", ".."):  # no REST path could name it
        raise TorchServeError(400, "BadRequestException", f"invalid model name '{name}': a model name is not blank "
                              "and holds no '/'")
    held = registry.versions(name)
    if held and not all(of_archive(m) for m in held.values()):
        raise TorchServeError(409, "ConflictStatusException", f"Model {name} is served already, and is no TorchServe "
                              "archive")
    if version in held:
        raise TorchServeError(409, "ConflictStatusException",
                              f"Model version {version} is already registered for model {name}")
    options = settings.parameters.extra["torchserve"]  # (with the yaml's values)
    workers = int(options["minWorkers"])
    disk.archives[(name, version)] = settings
    model = disk.model_for(settings.model_copy(deep=True))
    # TorchServe: a name's first version is its default, and stays so when others are registered
    registry.defaults.setdefault(name, str(registry.get_model(name).version) if held else version)
    model.reason = "loading"
    registry.update(model)

    async def load() -> Done:
        # with no worker, load() leaves the model registered and not ready (TorchServeModel.load)
        loaded = await run_load(model, getattr(registry, "load_retries", 0))
        if registry.versions(name).get(version) is not model:  # unregistered while it loaded
            await stop_model(model)
            raise TorchServeError(409, "ConflictStatusException", f"model {name} version {version} was "
                                  "unregistered while it loaded")
        if not loaded and workers > 0:
            logger.error("TorchServe register of '%s' version %s failed: %s", name, version, model.reason)
            await _forget(plane, name, version, model)
            raise TorchServeError(500, "InternalServerException",
                                  f"Failed to start workers for model {name} version: {version}")
        await _tell(plane, everywhere, "register", source=str(source), name=name, options=options,
                    given=list(options))
        if workers == 0:
            return Done(200, f'Model "{name}" Version: {version} registered with 0 initial workers. Use scale '
                             "workers API to add workers for the model.")
        return Done(200, f'Model "{name}" Version: {version} registered with {workers} initial workers')

    return await _run(load, synchronous or workers == 0)


async def _run(work, synchronous: bool) -> Done:
    """The work's answer, or 202 at once with the work going on (its failure logged, as TorchServe's)."""
    if synchronous:
        return await work()
    task = asyncio.ensure_future(work())
    task.add_done_callback(_logged)
    return Done(202, "Processing worker updates...")


def _logged(task: "asyncio.Future") -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("TorchServe management work failed: %s", task.exception())


async def _forget(plane, name: str, version: str, model) -> None:
    """Undo one version's registration: out of the registry and of the scan, its download removed."""
    _disk(plane).archives.pop((name, version), None)
    await plane.repository.drop_version(name, version)
    options = archive_options(model)
    if options.get("downloaded"):
        Path(model.settings.parameters.uri).unlink(missing_ok=True)


# scale ---------------------------------------------------------------------------------------------------

async def scale(plane, name: str, version: Optional[str], least: int, most: int, synchronous: bool,
                everywhere: bool = True) -> Done:
    """`PUT /models/NAME[/VERSION]` / ScaleWorker: the model serves with `least` workers (its maxWorkers `most`)."""
    if most < least:
        raise TorchServeError(400, "BadRequestException", "max_worker cannot be less than min_worker.")
    if least < 0:
        raise TorchServeError(400, "BadRequestException", f"min_worker is {least}; it is 0 or more")
    if not plane.repository.versions(name):
        raise not_found(name)
    model = _archive_model(plane, name, version)
    if getattr(model, "settings", None) is None:  # an archive that could not even be read: nothing to scale
        raise TorchServeError(500, "InternalServerException", f"model {name} cannot be scaled: "
                              f"{getattr(model, 'reason', '') or 'it was not built'}")
    shown = f"Workers scaled to {least} for model: {name}" + (f", version: {version}" if version else "")
    current = archive_options(model)
    options = {**current, "minWorkers": least, "maxWorkers": most}
    if int(current.get("minWorkers", _workers(model))) == least and (model.ready or least == 0):
        await _tell(plane, everywhere, "scale", name=name, version=version, least=least, most=most)
        return Done(200 if synchronous else 202, shown if synchronous else "Processing worker updates...")
    disk = _disk(plane)
    folder = model.settings.folder
    settings = settings_for_archive(Path(model.settings.parameters.uri), name, str(model.version), options,
                                    folder=Path(folder) if folder else None, given=tuple(options))

    async def swap() -> Done:
        fresh = disk.model_for(settings.model_copy(deep=True))
        # (with no worker, load() leaves it registered and not ready: TorchServeModel.load)
        if not await run_load(fresh, getattr(plane.repository, "load_retries", 0)) and least > 0:
            raise TorchServeError(500, "InternalServerException", f"Failed to start workers for model {name} "
                                  f"version: {model.version}: {fresh.reason}")
        if plane.repository.versions(name).get(str(model.version)) is not model:  # unregistered or scaled meanwhile
            await stop_model(fresh)
            raise TorchServeError(409, "ConflictStatusException", f"model {name} version {model.version} changed "
                                  "while its workers were scaled")
        disk.archives[(name, str(model.version))] = settings
        plane.repository.update(fresh)
        await stop_model(model)
        await _tell(plane, everywhere, "scale", name=name, version=version, least=least, most=most)
        return Done(200, shown)

    return await _run(swap, synchronous)


def _workers(model) -> int:
    return int(getattr(model.settings, "parallel_workers", None) or 1)


# default version and unregister -------------------------------------------------------------------------------

async def set_default(plane, name: str, version: str, everywhere: bool = True) -> Done:
    """`PUT /models/NAME/VERSION/set-default` / SetDefault."""
    versions = plane.repository.versions(name)
    if not versions:
        raise not_found(name)
    if version not in versions:
        raise TorchServeError(404, "ModelVersionNotFoundException",
                              f"Model version {version} does not exist for model {name}")
    plane.repository.set_default(name, version)
    await _tell(plane, everywhere, "set_default", name=name, version=version)
    return Done(200, f'Default version successfully updated for model "{name}" to "{version}"')


async def unregister(plane, name: str, version: Optional[str], everywhere: bool = True) -> Done:
    """`DELETE /models/NAME[/VERSION]` / UnregisterModel: that version, or the default one when it is the last."""
    if not model_api_enabled(plane):
        raise disabled()
    if not name:  # (TorchServe's gRPC words: REST paths always name one)
        raise TorchServeError(400, "BadRequestException", "Parameter url is required.")
    model = _archive_model(plane, name, version)
    version = str(model.version)
    if len(plane.repository.versions(name)) > 1 and plane.repository.get_model(name) is model:
        raise TorchServeError(403, "InvalidModelVersionException", f"Cannot remove default version for model {name}")
    await _forget(plane, name, version, model)
    disk = _disk(plane)
    if any(str(s.parameters.version) == version for s in (await asyncio.to_thread(disk.scan)).get(name, [])):
        disk.archives[(name, version)] = None  # on disk (a config's model): left out of later scans
    await _tell(plane, everywhere, "unregister", name=name, version=version)
    return Done(200, f'Model "{name}" unregistered')


def disabled() -> TorchServeError:
    return TorchServeError(405, "MethodNotAllowedException", NOT_ALLOWED)


# the other workers ----------------------------------------------------------------------------------------------

async def _tell(plane, everywhere: bool, action: str, **args) -> None:
    if everywhere and plane.peers is not None:
        await plane.peers.tell("torchserve", {"action": action, **args})


async def apply(plane, args: Dict[str, Any]) -> None:
    """Another worker's write, done here (server/peers.py): with the archive that worker found or downloaded."""
    action = args["action"]
    if action == "register":
        await register_archive(plane, Path(args["source"]), args["name"], args["options"], True, everywhere=False,
                               given=tuple(args.get("given") or ()))
    elif action == "scale":
        await scale(plane, args["name"], args.get("version"), args["least"], args["most"], True, everywhere=False)
    elif action == "set_default":
        await set_default(plane, args["name"], args["version"], everywhere=False)
    elif action == "unregister":
        await unregister(plane, args["name"], args["version"], everywhere=False)
    else:
        raise ValueError(f"unknown TorchServe management action {action!r}")
