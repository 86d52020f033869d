"""TensorFlow Serving's HandleReloadConfigRequest: the served TFServing models become the ones a new
model_config_list names, while the server runs (TFServing's ServerCore::ReloadConfig, the RPC its users' model
managers call).

The list replaces the one the server serves now (the repository's models.config at start, else the last list
given): listed models that are new, or whose chosen versions changed, load beside what serves (a failed load
leaves a loaded model as it was); listed models whose only change is their version labels get the new labels
without a reload; models the old list named and the new one does not are unloaded, after the loads. Models the
repository holds in other forms (Triton folders, model-settings.json, archives) are not TFServing's list and
stay, where TFServing, which serves nothing else, would have unloaded everything unlisted.

TFServing's checks and words are kept, since its clients match them: a model listed twice, a relative base path
(TFServing takes absolute paths or URIs; gpuserve reads local folders), a model_platform missing or changed, a
version label on a version not served now (FAILED_PRECONDITION: TFServing moves labels only onto loaded versions),
a custom_model_config or no config (INVALID_ARGUMENT); a listed model that does not load answers UNKNOWN "N
model(s) did not become available: ...". A refused list changes nothing. With `--workers N`, every worker applies
the list; where the repository is polled (tensorflow_model_server's default), the poll starts again from the
repository as the list left it, so nothing loads twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Dict, List, Optional

from gpuserve.dataplane import CONTROL_OFF
from gpuserve.errors import GpuserveError, InvalidInput, ModelControlDisabled, ModelNotFound
from gpuserve.server.tfserving_api import FailedPrecondition
from gpuserve.tfserving_config import settings_of

logger = logging.getLogger("gpuserve")

NOT_A_LIST = ("ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently "
              "supported")


class NotAvailable(GpuserveError):
    """TFServing's answer when listed models did not load (absl's UNKNOWN)."""

    http, grpc = 500, "UNKNOWN"


def platform_of(config: Dict[str, Any]) -> str:
    """A config's platform as TFServing's GetPlatform reads it: model_platform, or the deprecated model_type's."""
    name, platform, kind = config.get("name", ""), config.get("model_platform") or "", config.get("model_type") or 0
    if kind:
        if platform:
            raise InvalidInput("Illegal setting both ModelServerConfig::model_type (deprecated) and "
                               f"ModelServerConfig::model_platform, model name is {name}")
        if kind != 1:  # TENSORFLOW
            raise InvalidInput(f"ModelServerConfig::model_type choice {kind} not supported.")
        return "tensorflow"
    if not platform:
        raise InvalidInput("Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                           f"ModelServerConfig::model_platform, model name is {name}")
    return platform


def check(configs: List[Dict[str, Any]], old: List[Dict[str, Any]]) -> None:
    """TFServing's checks of a new list against the one served (ValidateModelConfigList and
    ValidateNoModelsChangePlatforms), in its order and words."""
    seen = set()
    for config in configs:
        if config["name"] in seen:
            raise InvalidInput(f"Illegal to list model {config['name']} multiple times in config list")
        seen.add(config["name"])
    for config in configs:
        path = config.get("base_path") or ""
        if not os.path.isabs(path) and "://" not in path:
            raise InvalidInput(f"Expected model {config['name']} to have an absolute path or URI; got "
                               f"base_path()={path}")
    before = {}
    for config in old:
        try:
            before[config.get("name")] = platform_of(config)
        except InvalidInput:  # a models.config gpuserve read leniently (no platform: tensorflow)
            before[config.get("name")] = "tensorflow"
    for config in configs:
        platform = platform_of(config)
        if config["name"] in before and before[config["name"]] != platform:
            raise InvalidInput(f"Illegal to change a model's platform. For model {config['name']} platform was "
                               f"{before[config['name']]} and new platform requested is {platform}")
        if platform != "tensorflow":  # TFServing's own build serves this one platform
            raise InvalidInput(f"Model {config['name']} requests unsupported platform {platform}")


def _served_versions(plane, name: str) -> Dict[int, Any]:
    """The versions of `name` serving now (ready), by number."""
    return {int(v): m for v, m in plane.repository.versions(name).items()
            if v is not None and str(v).isdigit() and getattr(m, "ready", False)}


def _check_labels(plane, configs: List[Dict[str, Any]]) -> None:
    for config in configs:
        served = _served_versions(plane, config["name"])
        for label, version in (config.get("version_labels") or {}).items():
            if int(version) not in served:
                raise FailedPrecondition(f"Request to assign label to version {version} of model {config['name']}, "
                                         "which is not currently available for inference")


def _uris(settings) -> Dict[int, str]:
    return {int(s.parameters.version): str(s.parameters.uri) for s in settings if s.parameters.version}


async def reload_config(plane, configs: Optional[List[Dict[str, Any]]], everywhere: bool = True) -> None:
    """Serve the TFServing models `configs` lists (None: a request whose config was not a model_config_list); one
    reload at a time, as TFServing holds its config lock through one."""
    lock = plane.__dict__.setdefault("_tfserving_reload", asyncio.Lock())
    async with lock:
        await _reload(plane, configs, everywhere)


async def _reload(plane, configs: Optional[List[Dict[str, Any]]], everywhere: bool) -> None:
    if configs is None:
        raise InvalidInput(NOT_A_LIST)
    disk = getattr(plane.repository, "disk", None)
    if disk is None:
        raise FailedPrecondition("HandleReloadConfigRequest needs a model repository folder (gpuserve start FOLDER)")
    if not plane.model_control:
        raise ModelControlDisabled(CONTROL_OFF)
    old = await asyncio.to_thread(disk.tfserving_configs)
    check(configs, old)
    _check_labels(plane, configs)
    disk.tfserving = [dict(c) for c in configs]
    failed: List[str] = []
    for config in configs:
        name, labels = config["name"], dict(config.get("version_labels") or {})
        settings = await asyncio.to_thread(settings_of, disk.root, [config], "HandleReloadConfigRequest")
        served = _served_versions(plane, name)
        if served and _uris(settings) == {v: str(m.settings.parameters.uri) for v, m in served.items()}:
            for model in served.values():  # the same versions: only the labels may have moved
                parameters = model.settings.parameters
                if parameters.extra is None:
                    parameters.extra = {}
                parameters.extra.setdefault("tfserving", {})["version_labels"] = labels
            continue
        try:
            await plane.load_model(name, everywhere=False)
        except GpuserveError as exc:
            versions = sorted(_uris(settings)) or [0]
            failed.append(f"{{{{name: {name} version: {versions[-1]}}} due to error: {exc}}}, ")
    listed = {config["name"] for config in configs}
    for config in old:
        name = config.get("name")
        if name and name not in listed:
            try:
                await plane.unload_model(name, everywhere=False)
            except ModelNotFound:
                pass
    poller = getattr(plane.repository, "poller", None)
    if poller is not None:  # the repository as the list left it is the poll's baseline: nothing loads twice
        poller.seen = await asyncio.to_thread(plane.repository.fingerprints)
    if everywhere and plane.peers is not None:
        await plane.peers.tell("tfserving_reload", {"configs": configs})
    if failed:
        raise NotAvailable(f"{len(failed)} model(s) did not become available: {{{''.join(failed)}}}")
    logger.info("Finished reloading config: %d TFServing model(s) listed", len(configs))
