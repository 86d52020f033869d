"""The registry of served models (KServe's `ModelRepository`), with versions and load failures.

Every name maps to its versions; the highest version (numeric where it can be) is the default that
un-versioned requests reach, unless one was chosen (TorchServe's set-default). A model that failed to load stays
registered, not ready, with its reason, so the repository index can say why instead of the model silently
vanishing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from gpuserve.engine.instance import on_daemon_thread
from gpuserve.errors import GpuserveError, InvalidInput, ModelNotFound, ModelNotReady, VersionNotReady
from gpuserve.hooks import guarded, in_executor
from gpuserve.model import BaseKServeModel
from gpuserve.namespacing import SEP, ambiguity, copies, registry_for, settle

logger = logging.getLogger("gpuserve")

DUPLICATED = "model appears in two or more repositories"  # Triton's words, in the index and load errors


def _version_key(version: Optional[str]):
    if version is None:
        return (0, 0, "")
    return (1, int(version), "") if str(version).isdigit() else (1, -1, str(version))


async def run_load(model: BaseKServeModel, retries: int = 0) -> bool:
    """Call `model.load()` (sync in a thread, async awaited) and settle `ready` and `reason`; while it fails,
    again up to `retries` times (Triton's --model-load-retry-count: a model that needs a moment, a file still
    being written or a device still busy, loads on a later try).

    `True` or `None` with `ready` set means ready; `False` means not ready; an exception is kept
    as the reason.
    """
    bind_loop = getattr(model, "bind_loop", None)  # a model that calls the server while it loads (Triton BLS)
    if bind_loop is not None:
        bind_loop(asyncio.get_running_loop())
    for attempt in range(max(retries, 0) + 1):
        if await _load_once(model) or attempt == retries:
            break
        logger.warning("model '%s' failed to load (%s); trying again (%d of %d retries)", model.name,
                       model.reason, attempt + 1, retries)
        model.reason = ""
    return bool(model.ready)


async def _load_once(model: BaseKServeModel) -> bool:
    try:
        # model code raising past Exception (sys.exit(), StopIteration on the thread) fails this load as any
        # error does (gpuserve/hooks.py), where it would stop the event loop or never answer
        if inspect.iscoroutinefunction(model.load):
            result = await guarded(model.load())
        else:
            result = await in_executor(model.load)
            if inspect.isawaitable(result):
                result = await guarded(result)
        if result is True:
            model.ready = True
        elif result is False:
            model.ready = False
        if model.ready:
            model.reason = ""
            if hasattr(model, "start_engine") and getattr(model, "engine", False):
                await model.start_engine()
        elif not model.reason:
            model.reason = "load() did not make the model ready"
    except Exception as exc:  # a broken model must never take the server down
        model.ready = False
        model.reason = f"{type(exc).__name__}: {exc}"
        logger.exception("model '%s' failed to load", model.name)
    return bool(model.ready)


class ModelRepository:
    def __init__(self, models_dir: Optional[str] = None):
        self.models_dir = models_dir
        self.load_retries = 0  # Triton's --model-load-retry-count, for loads through the repository API
        self.models: Dict[str, BaseKServeModel] = {}
        self._versions: Dict[str, Dict[Optional[str], BaseKServeModel]] = {}
        # Set by the disk repository: builds the model objects for a name found under models_dir.
        self.source: Optional[Callable[[str], list]] = None
        # Set by the disk repository with `source`: what a plain load of a name reads from disk (the whole
        # repository's configs), done in a thread; `source(name, found=...)` then builds on the loop.
        self.finder: Optional[Callable[[str], Any]] = None
        # Set by the disk repository: every model name under models_dir with its versions ("" for none),
        # so the repository index lists models that are on disk but not loaded, as Triton and MLServer do.
        self.catalog: Optional[Callable[[], Dict[str, List[str]]]] = None
        # Set by the disk repository: per model on disk, a digest of its files (poll mode compares them).
        self.fingerprints: Optional[Callable[[], Dict[str, str]]] = None
        # Set by the disk repository: the names on disk in MLServer's form (model-settings.json), which
        # answer an unload of a model that is not loaded as MLServer does (not found), not as Triton.
        self.mlserver_names: Optional[Callable[[], Set[str]]] = None
        self.unloaded: set = set()  # names unloaded through the repository API since
        # Every version of a Triton-form model ever registered: as Triton, a model or version that went away
        # stays known, and a request for it is told it has no available versions, not that it is unknown
        self.known: Dict[str, Set[str]] = {}
        self.load_failures: Dict[str, str] = {}  # why the last load of a model failed
        self.versioned_failures: Set[str] = set()  # names whose load failure is told version by version
        # The config and files a loaded model was last loaded with: as Triton, a load without them reloads
        # what is serving (the override stays until the model is unloaded or loaded with others)
        self.overrides: Dict[str, tuple] = {}
        self.plane = None  # the DataPlane serving this registry, set by it (in-process calls go through it)
        self.loads: set = set()  # loads under way (tasks), which a shutdown waits for
        # name -> the version a request naming none gets, where set (TorchServe's set-default and its first
        # registered version); else the highest
        self.defaults: Dict[str, str] = {}

    # KServe's API -------------------------------------------------------------------------------
    def load_models(self) -> None:
        """KServe's: each subfolder of models_dir is a model, loaded by `load_model(name)` (its runtimes'
        repositories call this from their __init__)."""
        if not self.models_dir or not os.path.isdir(self.models_dir):
            return
        for name in sorted(os.listdir(self.models_dir)):
            if os.path.isdir(os.path.join(self.models_dir, name)):
                self.load_model(name)

    def load_model(self, name: str) -> bool:
        """KServe's hook for loading one model of models_dir: a subclass's own; nothing loads here."""
        return False

    def set_models_dir(self, models_dir: str) -> None:
        self.models_dir = models_dir

    def get_model(self, name: str, version: Optional[str] = None) -> Optional[BaseKServeModel]:
        if version in (None, ""):
            return self.models.get(name)
        versions = self._versions.get(name, {})
        model = versions.get(str(version))
        if model is None and list(versions) == [None]:
            # A model without versions (bare file, KServe object) answers any version a client names,
            # as tritonclient users pass model_version="1" by habit.
            model = versions[None]
        return model

    def get_models(self) -> Dict[str, BaseKServeModel]:
        return dict(self.models)

    def update(self, model: BaseKServeModel, name: Optional[str] = None) -> None:
        """Add or replace `model`, under its own name or `name` (KServe: one model served under more names)."""
        name = name or model.name
        version = getattr(model, "version", None)
        version = str(version) if version is not None else None
        versions = self._versions.setdefault(name, {})
        versions[version] = model
        if triton_form(model) and version is not None:
            self.known.setdefault(name, set()).add(version)
        if hasattr(model, "registry"):  # models that call others in process (Triton Python models' BLS)
            model.registry = registry_for(self, model)
        chosen = self.defaults.get(name)
        self.models[name] = versions[chosen] if chosen in versions else versions[max(versions, key=_version_key)]
        settle(self, name)  # --model-namespacing: a name another folder now holds too is ambiguous again

    async def infer(self, request, headers: Optional[dict] = None):
        """A request from one served model to another (BLS, ensemble steps): through the serving data plane
        when there is one (its batching, statistics and checks apply), else straight to the model."""
        if self.plane is not None:
            return await self.plane.infer(request, headers)
        return await self.resolve(request.model_name, request.model_version)(request, headers)

    async def is_model_ready(self, name: str, version: Optional[str] = None) -> bool:
        """Awaited as in KServe: the model's own `healthy()` decides (a ready flag where it has none)."""
        model = self.get_model(name, version)
        if model is None:
            return False
        healthy = getattr(model, "healthy", None)
        if healthy is None:
            return bool(model.ready)
        answer = healthy()
        if inspect.isawaitable(answer):
            answer = await answer
        return bool(answer)

    def load(self, name: str) -> bool:
        """Load (or reload) `name` from the models folder; blocking, for scripts and KServe parity."""
        if _in_loop():
            raise RuntimeError("ModelRepository.load() blocks; inside the event loop await load_async()")
        return asyncio.run(self.load_async(name))

    def unload(self, name: str) -> bool:
        if name not in self._versions:
            raise KeyError(f"model with name {name} does not exist")
        for model in self._versions.pop(name).values():
            _stop(model)
        self.models.pop(name, None)
        return True

    # gpuserve additions ------------------------------------------------------------------------
    def set_default(self, name: str, version: str) -> None:
        """Requests naming no version get `version` of `name` from now on (it is served already)."""
        self.defaults[name] = version
        self.models[name] = self._versions[name][version]

    async def drop_version(self, name: str, version: str) -> None:
        """Stop and forget one version of `name` (TorchServe's unregister), the others serving on; the default
        passes to the highest left, or the name goes when it was the last."""
        versions = self._versions.get(name, {})
        model = versions.pop(version, None)
        if not versions:
            self._versions.pop(name, None)
            self.models.pop(name, None)
            self.defaults.pop(name, None)
        elif self.models.get(name) is model:
            self.defaults.pop(name, None)
            self.models[name] = versions[max(versions, key=_version_key)]
        if model is not None:
            await stop_model(model)

    def versions(self, name: str) -> Dict[Optional[str], BaseKServeModel]:
        return dict(self._versions.get(name, {}))

    def all_versions(self):
        for name in sorted(self._versions):
            for version, model in sorted(self._versions[name].items(), key=lambda kv: _version_key(kv[0])):
                yield name, version, model

    def resolve(self, name: str, version: Optional[str] = None) -> BaseKServeModel:
        """The model a request names, ready to serve, or the error the client should get."""
        model = self.get_model(name, version)
        if model is None and SEP not in name:
            held = copies(self._versions, name)  # --model-namespacing: several folders hold the name
            if len(held) > 1:
                raise InvalidInput(ambiguity(name, len(held)))
        if model is not None and not model.ready and version in (None, "") and triton_form(model):
            # Triton's "latest": the highest version that is ready, when the highest one is not
            ready = [(v, m) for v, m in self._versions.get(name, {}).items() if m.ready]
            model = max(ready, key=lambda vm: _version_key(vm[0]))[1] if ready else model
        if model is None or (not model.ready and triton_form(model)):
            # Triton's words: a model or version that was loaded once stays known, not loaded
            if name not in self.known and (model is None or getattr(model, "reason", "") == DUPLICATED):
                # as Triton: a name two folders hold is no model at all; a missing version of a name that
                # serves others (MLServer's versions) is named, as MLServer and Triton name it
                named = version if model is None and version not in (None, "") and self._versions.get(name) else None
                raise ModelNotFound(name, named)
            if version not in (None, "") and (model is not None or version in self.known.get(name, ())):
                raise VersionNotReady(name, version)
            if version in (None, ""):
                raise ModelNotFound(name, reason=f"Request for unknown model: '{name}' has no available versions")
            raise ModelNotFound(name, version)
        if not model.ready:
            raise ModelNotReady(name, getattr(model, "reason", "") or None)
        return model

    def _lock(self, name: str) -> asyncio.Lock:
        """One load or unload of a name at a time, as Triton: an unload sent during a load waits for it."""
        loop = asyncio.get_running_loop()
        if self.__dict__.get("_locks_loop") is not loop:  # locks belong to one loop (load() runs its own)
            self.__dict__.update(_locks_loop=loop, _name_locks={})
        return self.__dict__["_name_locks"].setdefault(name, asyncio.Lock())

    async def load_async(self, name: str, config: Optional[str] = None, files: Optional[Dict[str, bytes]] = None,
                         *, _loading: Tuple[str, ...] = ()) -> bool:
        """Load or reload `name`; `config` (JSON) and `files` are Triton's load-time overrides."""
        # As Triton, a load runs to its end even when the client that asked leaves, and a shutdown waits
        # for the loads under way (server/shutdown.py) before it unloads everything
        load = asyncio.ensure_future(self._locked_load(name, config, files, _loading))
        loads = self.__dict__.setdefault("loads", set())
        loads.add(load)
        load.add_done_callback(_settled(loads))
        return await asyncio.shield(load)

    async def _locked_load(self, name: str, config: Optional[str], files: Optional[Dict[str, bytes]],
                           _loading: Tuple[str, ...]) -> bool:
        held: List[asyncio.Lock] = []  # the locks of an ensemble's steps, held until it has loaded
        try:
            async with self._lock(name):
                return await self._load_async(name, config, files, _loading, held)
        finally:
            for lock in held:
                lock.release()
            logger.debug("OnLoadFinal() '%s' for all version(s)", name)  # Triton's verbose line (qa greps it)

    async def _load_async(self, name: str, config: Optional[str], files: Optional[Dict[str, bytes]],
                          _loading: Tuple[str, ...], held: List[asyncio.Lock]) -> bool:
        if config is None and not files and name in self.overrides and self._versions.get(name):
            config, files, when = self.overrides[name]
            written = getattr(self, "config_written", None)
            if written is not None and await asyncio.to_thread(written, name) > when:
                config, files = None, None  # as Triton: a config.pbtxt written since is newer than the override
        override = config is not None or bool(files)
        own_load = _overridden(self, "load")
        if own_load is not None and not override:
            # KServe's pattern: a ModelRepository subclass whose load(name) (sync or async) finds and
            # registers the model itself; the repository endpoints call it. An exception or a False
            # answer means the model is not ready (503), as in KServe.
            try:
                loaded = own_load(name)
                if inspect.isawaitable(loaded):
                    loaded = await loaded
            except Exception as exc:
                raise ModelNotReady(name, f"Could not load model {name}: {exc}") from exc
            if not loaded:
                raise ModelNotReady(name)
            return True
        if self.source is None:
            if override:
                raise InvalidInput("a config or files given at load time need a repository folder (gpuserve start FOLDER)")
            model = self.models.get(name)
            if model is None:
                raise ModelNotFound(name)
            return await run_load(model, getattr(self, "load_retries", 0))
        if override:
            models = await asyncio.to_thread(self.source, name, config, files)
        elif self.finder is not None:  # the disk is read off the loop; the models are made on it (user code)
            models = self.source(name, found=await asyncio.to_thread(self.finder, name))
        else:
            models = self.source(name)
        if not models:  # Triton's words (its model control example checks for "failed to load")
            raise ModelNotFound(name, reason=f"failed to load '{name}', failed to poll from model repository")
        # The new versions load beside the old ones, which serve meanwhile; as Triton, a reload that fails
        # leaves a loaded model as it was, and one that succeeds replaces it with no gap in service.
        for dependency in sorted({d for model in models for d in composing_models(model)}):
            # as Triton: an ensemble's steps that are not loaded load first (a failure shows in its reason)
            if dependency in _loading or dependency == name or any(lock is self._lock(dependency) for lock in held):
                continue
            await self._lock(dependency).acquire()  # an unload of a step waits until the ensemble has loaded
            held.append(self._lock(dependency))
            loaded = self.get_model(dependency)
            if loaded is not None and loaded.ready:
                continue
            try:
                await self._load_async(dependency, None, None, (*_loading, name), held)
            except GpuserveError as exc:
                logger.error("model '%s': its step '%s' did not load: %s", name, dependency, exc)
        ok = True
        old = self._versions.get(name, {})
        models = [await _in_place(old, model) for model in models]
        in_place = {id(model) for model in models} & {id(model) for model in old.values()}  # loaded, serving
        for model in models:
            if hasattr(model, "registry"):  # an ensemble's readiness is its steps' (they are served here)
                model.registry = registry_for(self, model)
            if id(model) in in_place:
                continue
            if getattr(model, "ready", False) is False and not getattr(model, "reason", ""):
                ok = await run_load(model, getattr(self, "load_retries", 0)) and ok
            else:
                ok = bool(model.ready) and ok
        self.load_failures.pop(name, None)
        self.versioned_failures.discard(name)
        if not ok:
            failed = [m for m in models if id(m) not in in_place and not m.ready]
            await fail_together([m for m in models if id(m) not in in_place])
            if all(triton_form(m) and getattr(m, "version", None) is not None for m in failed):
                # Triton's words for a load of which some versions failed (clients match them)
                self.versioned_failures.add(name)
                for model in failed:
                    logger.error("failed to load '%s' version %s: %s", name, model.version, model.reason)
                self.load_failures[name] = "".join(f"version {m.version} is at UNAVAILABLE state: {m.reason};\n"
                                                   for m in failed)
            else:
                self.load_failures[name] = "; ".join(m.reason for m in failed if m.reason) or \
                    "load() did not make the model ready"
        if not ok and any(getattr(m, "ready", False) for m in old.values()):
            logger.error("model '%s': reload failed (%s); the loaded model keeps serving", name,
                         self.load_failures[name])
            for model in models:
                if id(model) not in in_place:
                    await stop_model(model)
            return False
        self._versions.pop(name, None)
        self.models.pop(name, None)
        if override:
            self.overrides[name] = (config, files, time.time())
        else:
            self.overrides.pop(name, None)
        for model in models:  # a namespaced key's copy keeps its key (its own name may be the plain one)
            self.update(model, name if SEP in name else None)
        for model in old.values():
            if id(model) not in in_place:
                await stop_model(model)
        self.unloaded.discard(name)
        await stamp_files(models)
        if ok and models and all(triton_form(m) for m in models):
            logger.info("successfully loaded '%s'", name)  # Triton's line for a load of all its versions
        return ok

    async def unload_async(self, name: str, unload_dependents: bool = False) -> bool:
        async with self._lock(name):
            if name in self._versions:
                logger.debug("AsyncUnload() '%s'", name)
            done = await self._unload_async(name, unload_dependents)
        # as Triton: the ensembles that call it are unloaded with it (not failed, not back later); after its
        # lock is let go, since such an ensemble's load holds its own lock while it waits for its steps'
        users = sorted(other for other, versions in list(self._versions.items()) if other != name and
                       any(name in composing_models(m) for m in versions.values()))
        for user in users:
            await self.unload_async(user)
        return done

    async def _unload_async(self, name: str, unload_dependents: bool) -> bool:
        own_unload = _overridden(self, "unload")
        if own_unload is not None:  # a subclass's own unload, as KServe's repository endpoint calls it
            try:
                result = own_unload(name)
                if inspect.isawaitable(result):
                    result = await result
            except KeyError:
                raise ModelNotFound(name) from None
            return bool(result)
        if name not in self._versions:
            if self.catalog is not None and name in await asyncio.to_thread(self.catalog):
                if self.mlserver_names is not None and name in await asyncio.to_thread(self.mlserver_names):
                    raise ModelNotFound(name, reason=f"Model {name} not found")  # MLServer: not in its registry
                self.unloaded.add(name)  # on disk and not loaded: already as asked (Triton answers success)
                return True
            if self.mlserver_names is None or await asyncio.to_thread(self.mlserver_names):
                raise ModelNotFound(name)  # MLServer's answer, in a repository of model-settings.json models
            return True  # Triton: unloading a model it never heard of leaves nothing to do, and says success
        models = self._versions.pop(name).values()
        self.models.pop(name, None)
        self.overrides.pop(name, None)
        self.defaults.pop(name, None)
        self.unloaded.add(name)
        steps = sorted({step for model in models for step in composing_models(model)}) if unload_dependents else []
        for model in models:
            await stop_model(model)
        for step in steps:  # Triton's unload_dependents: an ensemble's steps go with it
            if step != name and step in self._versions:
                await self.unload_async(step, unload_dependents=True)
        return True


def composing_models(model: BaseKServeModel) -> List[str]:
    """The models an ensemble's steps call, from its config (none for other models)."""
    settings = getattr(model, "settings", None)
    if getattr(settings, "implementation", None) != "ensemble" or not getattr(settings, "folder", None):
        return []
    from gpuserve.triton_config import read_config

    try:
        config = read_config(Path(settings.folder))
    except Exception:  # a config that cannot be read fails the ensemble's own load, with its reason
        return []
    scheduling = config.get("ensemble_scheduling") or {}
    if isinstance(scheduling, list):  # the config reader keeps a message field as a list of one
        scheduling = scheduling[0] if scheduling else {}
    steps = scheduling.get("step") or [] if isinstance(scheduling, dict) else []
    own = getattr(model, "namespace_names", None) or {}  # its own folder's copy of a name several folders hold
    return [own.get(step["model_name"], step["model_name"]) for step in steps
            if isinstance(step, dict) and step.get("model_name") and isinstance(step["model_name"], str)]


def triton_form(model: BaseKServeModel) -> bool:
    """Whether the model was read from a config.pbtxt (its errors then speak Triton's words). Asked per request
    (JSON NaN literals): kept on the model after the first answer, since a settings object without the field
    answers through pydantic's __getattr__ and an exception (~2 us a request measured)."""
    known = getattr(model, "_triton_form_known", None)
    if known is not None:
        return known
    known = getattr(getattr(model, "settings", None), "triton_version_policy", None) is not None or \
        bool(getattr(model, "triton_form", False))
    try:
        model._triton_form_known = known
    except AttributeError:  # a model that takes no new attributes: asked afresh each time
        pass
    return known


async def stamp_files(models: List[BaseKServeModel]) -> None:
    """Note, for each loaded Python model, the files a later reload compares (triton_instance_update.files_stamp),
    once the whole load of its name is over: what its versions wrote into their folders while they loaded (a
    log, a marker) is theirs, not a change."""
    from gpuserve.triton_instance_update import files_stamp

    for model in models:
        if getattr(model, "ready", False) and getattr(model, "loaded_from", None) is not None:
            model.files_stamp = await asyncio.to_thread(files_stamp, model)


async def fail_together(models: List[BaseKServeModel]) -> None:
    """Triton loads a model's versions as one: when one fails, the ones that loaded are unloaded, and a
    request for the model finds no available version. Models read from a config.pbtxt only (MLServer's
    versions load each on its own)."""
    failed = [m for m in models if not m.ready]
    if not failed or not all(triton_form(m) for m in models):
        return
    for model in models:
        if model.ready:
            await stop_model(model)
            model.reason = "unloaded"  # Triton's word for it in the repository index


async def _in_place(old: Dict[Optional[str], BaseKServeModel], model: BaseKServeModel) -> BaseKServeModel:
    """The loaded model of `model`'s version when it can take the reload by updating its instances alone
    (gpuserve/triton_instance_update.py), updated; else `model`, to be loaded."""
    version = getattr(model, "version", None)
    prior = old.get(str(version) if version is not None else None)
    if prior is None or getattr(prior, "loaded_from", None) is None:
        return model
    from gpuserve.triton_instance_update import in_place_config, update_instances

    config = await asyncio.to_thread(in_place_config, prior, model)
    if config is None:
        return model
    await update_instances(prior, config)
    scratch = getattr(model, "scratch_folder", None)
    if scratch:  # the folder made for a load with a config (load_override.py); the model built there is unused
        await asyncio.to_thread(shutil.rmtree, scratch, True)
    return prior


async def stop_model(model: BaseKServeModel) -> None:
    """Stop a model from the event loop: engine-backed models drain their batcher first; the requests others took
    are answered first too (`_quiesce`), as Triton lets an unloaded or replaced version finish its in-flight work."""
    serving = bool(getattr(model, "ready", False))
    if serving:
        await _quiesce(model)
    batcher = getattr(model, "_adaptive_batcher", None)
    if batcher is not None:
        await batcher.stop()
    aclose = getattr(model, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            logger.exception("model '%s' failed to close its engine", model.name)
    await on_daemon_thread(_stop, model)
    if serving and triton_form(model):  # Triton's log line (its qa counts them)
        logger.info("successfully unloaded '%s' version %s", model.name, getattr(model, "version", None))
    scratch = getattr(model, "scratch_folder", None)
    if scratch:  # a folder made for a load with a config or files (load_override.py)
        await asyncio.to_thread(shutil.rmtree, scratch, True)


async def _quiesce(model: BaseKServeModel) -> None:
    """Until the requests `model` took are answered (its adaptive batcher's, its worker processes', a TorchServe
    handler's), for at most its stop_timeout (5 s by default): a reload or scale swaps a model while a load
    generator runs, and none of the requests the old one took may fail for it. Requests that found it a moment
    ago get one loop turn to reach it."""
    await asyncio.sleep(0)
    deadline = time.monotonic() + float(getattr(model, "stop_timeout", 5.0))
    while time.monotonic() < deadline:
        batcher = getattr(model, "_adaptive_batcher", None)
        if not (batcher is not None and batcher.busy()) and not getattr(model, "inflight", 0):
            return
        await asyncio.sleep(0.005)


def _stop(model: BaseKServeModel) -> None:
    try:
        model.stop()
        if getattr(model, "engine", False):
            model.stop_engine()
    except BaseException:  # (on its own thread) whatever model code raises, the unload and the server go on
        logger.exception("model '%s' failed to stop cleanly", model.name)
    model.ready = False


def _settled(loads: set) -> Callable[[asyncio.Future], None]:
    def settled(load: asyncio.Future) -> None:
        loads.discard(load)
        if not load.cancelled():
            load.exception()  # taken here too: its client may have left (the error was logged by the load)
    return settled


def _overridden(repository: ModelRepository, hook: str):
    """A subclass's own `load`/`unload` (bound), or None where it keeps the repository's."""
    if getattr(type(repository), hook) is getattr(ModelRepository, hook):
        return None
    return getattr(repository, hook)


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False
