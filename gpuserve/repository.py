"""A model repository on disk: find models in a folder, build their model objects, reload by name.

Forms, detected per model folder:
- MLServer: `model-settings.json` (anywhere below the root, as MLServer scans).
- Bare artefact: `model.onnx` (or `.pt`, `.pt2`, `.plan`) in the folder, or in numbered version folders
  (`1/model.onnx`), which is also how a Triton repository lays out its versions; a TensorFlow SavedModel
  (`saved_model.pb`, TFServing's `NAME/1/` layout) likewise.
- TorchServe: KServe's `config/config.properties` + `model-store/` at the root, a bare `NAME.mar` in the root, or
  `NAME/NAME.mar`, `NAME/<n>/*.mar`, an extracted archive folder (gpuserve/torchserve/store.py).
A model that cannot be built is registered not ready with the reason, never raised.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import importlib
import inspect
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Collection, Dict, List, Optional, Set, Tuple

from gpuserve.errors import GpuserveError, InvalidSettings, ModelNotReady
from gpuserve.import_path import move_on_path
from gpuserve.load_override import scratch_folder
from gpuserve.model import BaseKServeModel
from gpuserve.model_repository import DUPLICATED, ModelRepository, composing_models
from gpuserve.namespacing import SEP, copies, namespaced, plain
from gpuserve.runtimes import ARTEFACT_RUNTIMES, BUILTIN_RUNTIMES
from gpuserve.runtimes_tensorflow import is_savedmodel  # no tensorflow import: a path test
from gpuserve.ensemble import EnsembleModel
from gpuserve.tfserving_config import MODEL_CONFIG_FILE, parse, read_model_config, settings_of
from gpuserve.torchserve.store import folder_archives, is_kserve_layout, over_disk, root_archives, scan_kserve_layout
from gpuserve.environments import DEFAULT_ENVIRONMENTS_DIR, source_for
from gpuserve.triton_python import TritonPythonBackendModel
from gpuserve.settings import MODEL_SETTINGS_FILE, ModelSettings
from gpuserve.triton_config import chosen_versions, read_config, settings_from_config, use_config_name
from gpuserve.triton_validate import checked_config

logger = logging.getLogger("gpuserve")


class UnavailableModel(BaseKServeModel):
    """Stands in for a model that could not even be built, so the index can report why."""

    def __init__(self, name: str, reason: str, version: Optional[str] = None):
        super().__init__(name)
        self.reason = reason
        self.version = version

    def load(self) -> bool:
        return False

    def metadata(self) -> Dict[str, Any]:
        """Nothing is known of a model that was never built: its metadata and config requests get why."""
        raise ModelNotReady(self.name, self.reason)


def _artefact(folder: Path) -> Optional[Path]:
    for suffix in ARTEFACT_RUNTIMES:
        candidate = folder / f"model{suffix}"
        if candidate.exists():
            return candidate
    return _tensorflow_artefact(folder)


def _tensorflow_artefact(folder: Path) -> Optional[Path]:
    """A TensorFlow SavedModel in `folder`: TFServing's layout (the folder itself holds saved_model.pb) or
    Triton's (model.savedmodel/). A GraphDef is not recognised bare: it cannot name its tensors."""
    if is_savedmodel(folder):
        return folder
    candidate = folder / "model.savedmodel"
    return candidate if is_savedmodel(candidate) else None


def _version_folders(folder: Path) -> Dict[str, Path]:
    return {p.name: p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and _artefact(p)}


def _listed(read, tries: int = 3) -> list:
    """A folder's listing, read again when a folder inside it goes away while it is walked (another process
    adding and removing models); after `tries` such misses, what could be read (nothing)."""
    for _ in range(tries):
        try:
            return read()
        except FileNotFoundError:
            continue
    return []


def _reason(exc: Exception, what: str) -> str:
    """Why a model folder is not served: our words where we raised, else the reader's error named as such."""
    if isinstance(exc, GpuserveError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return f"invalid {what}: it nests too deeply to read"
    if isinstance(exc, (ValueError, KeyError)):
        return f"invalid {what}: {exc}"
    logger.warning("reading %s failed", what, exc_info=exc)  # unexpected here: the trace is ours to read
    return f"invalid {what}: {type(exc).__name__}: {exc}"


def _python_without_config(folder: Path) -> bool:
    """Triton serves a model folder with no config.pbtxt whose versions hold `model.py` on its Python backend
    (the model's `auto_complete_config` supplies the config): Triton's auto_complete example has no config."""
    return any(p.is_dir() and p.name.isdigit() and (p / "model.py").is_file() and _artefact(p) is None
               for p in folder.iterdir())


def import_class(dotted: str, folder: Optional[Path]):
    """Import `pkg.module.Class`, with the model's own folder first on the path (as MLServer does)."""
    module_name, _, class_name = dotted.rpartition(".")
    if not module_name:
        raise InvalidSettings(f"implementation '{dotted}' must be a dotted path like my_module.MyModel")
    if folder is not None:
        where = str(folder)
        # First on the path, even when already on it further down: a spawned worker inherits the parent's
        # path, where every model folder holding a `models.py` is, and must import its own folder's module.
        if not sys.path or sys.path[0] != where:
            move_on_path(where, first=True)  # a new list: imports on other threads walk the old one
        top = module_name.split(".")[0]
        loaded = sys.modules.get(top)
        local = folder / f"{top}.py"
        if loaded is not None and local.exists() and Path(getattr(loaded, "__file__", "") or "").parent != folder:
            for key in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
                del sys.modules[key]
            move_on_path(where, first=True)
    from gpuserve.mlserver.alias import install

    install()  # `from mlserver import MLModel` in a runtime brought from MLServer, where MLServer is absent
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidSettings(f"cannot import '{module_name}' for implementation '{dotted}': {exc}") from None
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise InvalidSettings(f"module '{module_name}' has no class '{class_name}'") from None


def instantiate(cls, settings: ModelSettings) -> BaseKServeModel:
    """Build a model, passing only what its constructor takes (name, settings, uri)."""
    adapter = getattr(cls, "__gpuserve_adapter__", None)
    if adapter is not None:  # gpuserve.mlserver.MLModel runtimes are served through an adapter
        return adapter(settings)
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    offered = {"name": settings.name, "settings": settings, "model_settings": settings,
               "uri": str(settings.resolve_uri()) if settings.parameters.uri else None,
               "model_dir": settings.folder}
    kwargs = {k: v for k, v in offered.items() if k in params}
    if not kwargs and params:
        model = cls(settings.name)
    else:
        model = cls(**kwargs)
    if not isinstance(model, BaseKServeModel):
        raise InvalidSettings(f"{cls.__name__} is not a gpuserve Model")
    if not getattr(model, "name", None):
        model.name = settings.name
    if getattr(model, "settings", None) is None:
        model.settings = settings
    if getattr(model, "version", None) is None and settings.parameters.version is not None:
        model.version = settings.parameters.version
    return model


def _builtin_runtime(implementation: str):
    if implementation in ("fil", "gpuserve.triton_fil.FilModel"):  # Triton's FIL backend (a built-in: no import path
        from gpuserve.triton_fil import FilModel  # puts the model's folder on sys.path)

        return FilModel
    optional = OPTIONAL_RUNTIMES.get(implementation) or OPTIONAL_RUNTIMES.get(implementation.lower())
    if optional is not None:
        return _optional_runtime(*optional)
    runtimes = {**BUILTIN_RUNTIMES, "triton_python": TritonPythonBackendModel, "ensemble": EnsembleModel}
    return runtimes.get(implementation) or runtimes.get(implementation.lower())


MLFLOW_FILE = "MLmodel"  # what makes a folder an MLflow model


def _optional_names(short: str, module: str, cls: str, *mlserver: str) -> dict:
    """The `implementation` names of a runtime whose framework is an optional extra: ours, the short one, and
    MLServer's (its package's class path, and its module's), each -> (module, class)."""
    names = (short, f"{module}.{cls}", *mlserver)
    return {name: (module, cls) for name in names}


# Runtimes imported on first use, as their frameworks are optional (MLflow, transformers, alibi, pyspark): an
# import that fails leaves the model not ready with the extra to install as its reason
OPTIONAL_RUNTIMES = {
    **_optional_names("mlflow", "gpuserve.runtimes_mlflow", "MLflowRuntime", "mlserver_mlflow.MLflowRuntime"),
    **_optional_names("huggingface", "gpuserve.huggingface", "HuggingFaceRuntime",
                      "mlserver_huggingface.HuggingFaceRuntime", "gpuserve.huggingface.runtime.HuggingFaceRuntime"),
    **_optional_names("alibi_detect", "gpuserve.runtimes_alibi_detect", "AlibiDetectRuntime",
                      "mlserver_alibi_detect.AlibiDetectRuntime", "mlserver_alibi_detect.runtime.AlibiDetectRuntime"),
    **_optional_names("alibi_explain", "gpuserve.runtimes_alibi_explain", "AlibiExplainRuntime",
                      "mlserver_alibi_explain.AlibiExplainRuntime",
                      "mlserver_alibi_explain.runtime.AlibiExplainRuntime",
                      "gpuserve.runtimes_alibi_explain.runtime.AlibiExplainRuntime"),
    **_optional_names("mllib", "gpuserve.runtimes_mllib", "MLlibModel", "mlserver_mllib.MLlibModel",
                      "mlserver_mllib.mllib.MLlibModel"),
    # TensorFlow (Triton's platforms and backend name, and the name the other frameworks' models have); its
    # module imports no tensorflow: a missing one fails the load, naming gpuserve[tensorflow]
    **_optional_names("tensorflow", "gpuserve.runtimes_tensorflow", "TensorFlowModel", "tensorflow_savedmodel",
                      "tensorflow_graphdef", "gpuserve.runtimes.TensorFlowModel"),
    # TorchServe archives: the handler imports torch (and torchserve for a built-in handler) when it loads
    **_optional_names("torchserve", "gpuserve.torchserve.model", "TorchServeModel"),
}


def _optional_runtime(module: str, cls: str):
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise InvalidSettings(str(exc)) from None


def runtime_for(settings: ModelSettings):
    implementation = settings.implementation
    if implementation:
        builtin = _builtin_runtime(implementation)
        if builtin is not None:
            return builtin
        return import_class(implementation, Path(settings.folder) if settings.folder else None)
    uri = settings.resolve_uri()
    if uri is None:
        raise InvalidSettings(f"model '{settings.name}' names no implementation and no parameters.uri")
    if uri.is_dir() and (uri / MLFLOW_FILE).is_file():
        return _optional_runtime(*OPTIONAL_RUNTIMES["mlflow"])
    if is_savedmodel(uri) or uri.suffix in (".savedmodel", ".graphdef"):
        return _optional_runtime(*OPTIONAL_RUNTIMES["tensorflow"])
    path = uri / "model.onnx" if uri.is_dir() else uri
    runtime = ARTEFACT_RUNTIMES.get(path.suffix)
    if runtime is None:
        raise InvalidSettings(f"model '{settings.name}': no runtime serves '{path.name}'; set 'implementation'")
    return runtime


class DiskRepository:
    """Scans `root` once per call; `build(name)` makes fresh model objects for a (re)load."""

    def __init__(self, root: str | Path, device: Optional[str] = None, parallel_workers: Optional[int] = 0,
                 environments_dir: str = DEFAULT_ENVIRONMENTS_DIR, server_tarball: Optional[str] = None,
                 more_roots: Collection[str | Path] = ()):
        self.root = Path(root).resolve()  # artefact uris are joined to folders; relative roots doubled them
        # Triton's repeated --model-repository: models from every folder, one name in two folders served from neither
        self.roots = [self.root] + [Path(r).resolve() for r in more_roots if Path(r).resolve() != self.root]
        self.device = device  # the server's default for models whose settings name none
        # The server's default (MLServer's settings.json); None: not given, which is 0 except for a model with a
        # custom environment, which gets MLServer's default of 1.
        self.parallel_workers = parallel_workers
        self.environments_dir = os.path.abspath(environments_dir)  # as MLServer, relative to the working directory
        self.server_tarball = server_tarball  # MLSERVER_ENV_TARBALL: every model's default environment_tarball
        for given in [root, *more_roots]:
            if not Path(given).is_dir():
                raise InvalidSettings(f"model repository folder '{given}' does not exist or is not a folder")
        self.renamed: Dict[Path, str] = {}  # model folder -> the name it is served under (register_repository)
        # TorchServe's management writes (server/torchserve_manage.py): (name, version) -> the settings an archive
        # was registered or scaled with, None for one unregistered; every scan sees them over the disk's
        self.archives: Dict[Tuple[str, str], Optional[ModelSettings]] = {}
        # TFServing's HandleReloadConfigRequest (server/tfserving_reload.py): the model_config_list it gave, served
        # in place of the root's models.config from then on; None until one came
        self.tfserving: Optional[List[Dict[str, Any]]] = None

    @classmethod
    def for_server(cls, root: str | Path, settings, more_roots: Collection[str | Path] = ()) -> "DiskRepository":
        """The repository with the server's defaults for its models (gpuserve's ServerSettings)."""
        repository = cls(root, device=settings.device, parallel_workers=settings.parallel_workers,
                         environments_dir=settings.environments_dir, server_tarball=settings.environment_tarball,
                         more_roots=more_roots)
        repository.auto_complete = settings.auto_complete_config
        repository.workers_timeout = settings.parallel_workers_timeout
        repository.metrics_dir = settings.metrics_dir
        use_config_name(settings.model_config_name)
        if settings.model_repository_implementation:
            repository.custom = custom_repository(settings.model_repository_implementation,
                                                  settings.model_repository_implementation_args, repository.root)
        return repository

    # MLServer's model_repository_implementation: asked for the models in place of reading the folder
    custom = None
    workers_timeout = 5.0  # MLServer's parallel_workers_timeout: how long a parallel model's stop waits
    metrics_dir: Optional[str] = None  # MLServer's metrics_dir: where parallel workers' metric files go

    def register_repository(self, root: str | Path, names: Dict[str, str]) -> None:
        """Triton's repository registration, which SageMaker's multi-model loads use: the models of one more
        folder, those in the subfolders `names` maps served under the names it gives."""
        from gpuserve.errors import AlreadyExists

        folder = Path(root).resolve()
        if not folder.is_dir():
            raise InvalidSettings(f"failed to register '{root}': not a folder")
        if folder in self.roots:
            raise AlreadyExists(f"model repository '{folder}' has already been registered")
        taken = set(self.scan())
        clash = sorted(set(names.values()) & taken)
        if clash:
            raise AlreadyExists(f"failed to register '{folder}', there is a conflicting mapping for '{clash[0]}'")
        self.roots.append(folder)
        self.renamed.update({folder / sub: name for sub, name in names.items()})

    def unregister_repository(self, root: str | Path) -> None:
        folder = Path(root).resolve()
        if folder == self.root or folder not in self.roots:
            raise InvalidSettings(f"failed to unregister '{root}': not a registered model repository")
        self.roots.remove(folder)
        self.renamed = {path: name for path, name in self.renamed.items() if path.parent != folder}

    # Triton's --model-namespacing=true: a name several folders hold is served from each (gpuserve/namespacing.py)
    namespacing = False

    def scan(self) -> Dict[str, List[ModelSettings]]:
        return over_disk(self._scan_all(), self.archives)

    def _scan_all(self) -> Dict[str, List[ModelSettings]]:
        if self.custom is not None:
            return _grouped(_awaited(self.custom.list(), "list()"))
        if len(self.roots) == 1:
            return self._scan_root(self.root)
        where: Dict[str, List[Tuple[int, List[ModelSettings]]]] = {}
        for index, root in enumerate(self.roots):
            for name, group in self._scan_root(root).items():
                where.setdefault(name, []).append((index, group))
        found: Dict[str, List[ModelSettings]] = {}
        for name, groups in where.items():
            if len(groups) == 1:
                found[name] = groups[0][1]
            elif self.namespacing:
                for index, group in groups:
                    for settings in group:
                        settings.name = namespaced(name, index)
                    found[namespaced(name, index)] = group
            else:  # Triton's words; the model loads again once only one folder holds it
                folder = next((Path(s.folder) for s in groups[0][1] if s.folder), self.root / name)
                found[name] = [_broken(folder, DUPLICATED, name)]
        return found

    def _with_namespace(self, models: List[BaseKServeModel], found: Dict[str, List[ModelSettings]]) -> list:
        """Each model from a namespaced repository learns which names its own folder holds under a key."""
        if not self.namespacing or len(self.roots) == 1:
            return models
        for model in models:
            folder = getattr(getattr(model, "settings", None), "folder", None)
            index = next((i for i, root in enumerate(self.roots) if folder and Path(folder).is_relative_to(root)),
                         None)
            if index is not None:
                model.namespace_index = index
                model.namespace_names = {plain(key): key for key in found
                                         if SEP in key and key.endswith(f"{SEP}{index}")}
        return models

    def _scan_root(self, root: Path) -> Dict[str, List[ModelSettings]]:
        found: Dict[str, List[ModelSettings]] = {}
        files = sorted(_listed(lambda: list(root.rglob(MODEL_SETTINGS_FILE))))
        for path in files:
            try:
                settings = ModelSettings.from_file(path)
            except Exception as exc:  # one folder's file, however broken, spoils only its own model
                found.setdefault(path.parent.name, []).append(_broken(path.parent, _reason(exc, MODEL_SETTINGS_FILE)))
                continue
            found.setdefault(settings.name, []).append(settings)
        if not files and root == self.root:  # as MLServer: no model-settings.json, a model from MLSERVER_MODEL_*
            try:
                settings = ModelSettings.from_env(self.root)
            except GpuserveError as exc:
                settings = _broken(self.root, str(exc))
            if settings is not None:
                found.setdefault(settings.name, []).append(settings)
        claimed = {Path(s.folder) for group in found.values() for s in group if s.folder}
        listed: List[ModelSettings] = []
        if root == self.root and self.tfserving is not None:  # the list a HandleReloadConfigRequest gave
            listed = settings_of(root, self.tfserving, "HandleReloadConfigRequest")
        elif (root / MODEL_CONFIG_FILE).is_file():  # TFServing's models.config: the models it lists, as listed
            listed = read_model_config(root / MODEL_CONFIG_FILE)
        for settings in listed:
            found.setdefault(settings.name, []).append(settings)
        claimed |= {Path(s.folder) for s in listed if s.folder and Path(s.folder) != root}
        torchserve = scan_kserve_layout(root) if is_kserve_layout(root) else []
        if torchserve:  # KServe's TorchServe layout: its config/ and model-store/ folders are no models
            claimed |= {root / "config", root / "model-store"}
        for settings in torchserve + root_archives(root):
            found.setdefault(settings.name, []).append(settings)
        for folder in sorted(p for p in _listed(lambda: list(root.iterdir())) if p.is_dir() and p not in claimed):
            try:
                models = self._folder(folder)
            except (FileNotFoundError, NotADirectoryError):  # removed or renamed while the scan read it: the
                continue  # next scan sees what is there
            except OSError as exc:  # unreadable (permissions): that model alone is not served, and says why
                models = [(folder.name, _broken(folder, f"cannot read the model folder: {exc}"))]
            for name, settings in models:
                found.setdefault(name, []).append(settings)
        return found

    def _folder(self, folder: Path) -> List[Tuple[str, ModelSettings]]:
        """(name, settings) of what one model folder without a model-settings.json serves."""
        if (folder / "config.pbtxt").is_file() or _python_without_config(folder):
            return [(settings.name, settings) for settings in self._triton(folder)]
        archives = folder_archives(folder)
        if archives:
            return [(settings.name, settings) for settings in archives]
        name, found = folder.name, []
        bare = _artefact(folder)
        if bare:
            found.append((name, ModelSettings(name=name, parameters={"uri": str(bare)}, folder=str(folder))))
        elif (folder / MLFLOW_FILE).is_file():  # an MLflow model folder as MLflow saved it
            return [(name, ModelSettings(name=name, implementation="mlflow", parameters={"uri": str(folder)},
                                         folder=str(folder)))]
        versions = _version_folders(folder)
        if versions:  # as Triton's completed config: version_policy latest 1 (the others stay on disk)
            version = max(versions, key=int)
            found.append((name, ModelSettings(name=name, folder=str(folder),
                                              parameters={"uri": str(_artefact(versions[version])), "version": version},
                                              triton_version_policy={"latest": {"num_versions": 1}})))
        elif not bare and folder not in _WARNED and any(p.name.isdigit() for p in folder.iterdir()):
            _WARNED.add(folder)  # version folders, no config, nothing gpuserve can serve: Triton's words, once
            logger.error("failed to open text file for read %s: No such file or directory", folder / "config.pbtxt")
        return found

    # Triton's --disable-auto-complete-config turns this off: a config's tensors are then checked as written
    auto_complete = True

    def _triton(self, folder: Path) -> List[ModelSettings]:
        """One ModelSettings per version that the config's version_policy picks."""
        try:
            if (folder / "config.pbtxt").is_file():
                config = read_config(folder)
            else:  # as Triton: a version's model.py makes a Python-backend model, its config auto-completed
                config = {"name": folder.name, "backend": "python"}
            if folder in self.renamed:  # served under another name: the folder's own is not checked
                config["name"] = folder.name
            config = checked_config(folder, config, self.auto_complete)  # before versions, as Triton
            config["name"] = self.renamed.get(folder, config["name"])
            versions = chosen_versions(config, _version_numbers(folder))
            if not versions:
                raise InvalidSettings(f"model '{config['name']}': no numbered version folder matches its "
                                      "version_policy")
            return [ModelSettings.model_validate({**settings_from_config(folder, config, v), "folder": str(folder)})
                    for v in versions]
        except Exception as exc:  # one folder's config, however broken, spoils only its own model
            return [_broken(folder, _reason(exc, "config.pbtxt"))]

    def find(self, name: str) -> Tuple[List[ModelSettings], Dict[str, List[ModelSettings]]]:
        """(the settings of `name`'s models on disk, the whole scan): files read and parsed only, so a load
        does it off the event loop (every folder's config is read: ~0.3 ms a model, 60 ms for 200)."""
        if self.custom is not None:  # as MLServer's load: the repository's find(name) alone (a whole scan is
            try:  # only for namespaced folders, which a custom repository has none of)
                return list(_awaited(self.custom.find(name), f"find('{name}')")), {}
            except Exception as exc:
                if type(exc).__name__ == "ModelNotFound":
                    return [], {}
                raise
        scanned = self.scan()
        found = scanned.get(name, [])
        if not found and self.namespacing:  # a name several folders hold: its copy in each of them
            found = [s for key in copies(scanned, name) for s in scanned[key]]
        return found, scanned

    def build(self, name: str, config: Optional[str] = None, files: Optional[Dict[str, bytes]] = None,
              found: Optional[Tuple[List[ModelSettings], Dict[str, List[ModelSettings]]]] = None
              ) -> List[BaseKServeModel]:
        """Fresh model objects for `name` (from `found`, what `find` read, when given); with a config or files
        given at load time (load_override.py), from a scratch folder that goes when the models stop."""
        found, scanned = found if found is not None else self.find(name)
        if config is None and not files:
            return self._with_namespace([self._build_one(s) for s in found], scanned)
        original = next((Path(s.folder) for s in found if s.folder), None)
        folder = scratch_folder(name, original, config, files or {})
        try:
            models = [self._build_one(s) for s in self._triton(folder)]
        except BaseException:
            shutil.rmtree(folder.parent, ignore_errors=True)  # no model took the folder: nothing else removes it
            raise
        for model in models:
            model.scratch_folder = str(folder.parent)
        return models

    def _build_one(self, settings: ModelSettings) -> BaseKServeModel:
        broken = settings.model_extra.get("_broken") if settings.model_extra else None
        if broken:
            return _unavailable(settings, broken)
        if settings.device is None and self.device:
            settings.device = self.device
        try:
            workers = settings.parallel_workers if settings.parallel_workers is not None else self.parallel_workers
            environment = source_for(settings.parameters, settings.folder, self.environments_dir, self.server_tarball)
            if environment is not None and workers is None:
                workers = 1  # MLServer's default parallel_workers, which a custom environment needs
            workers = workers or 0
            if workers < 0:
                raise InvalidSettings(f"model '{settings.name}': parallel_workers is {workers}; it is 0 (in the "
                                      "server's process) or more")
            if environment is not None and not workers:
                logger.warning("model '%s': %s is not used: parallel workers are off (parallel_workers 0), so the "
                               "model runs in the server's own environment, as in MLServer", settings.name,
                               environment.describe())
                environment = None
            if environment is not None and _user_runtime(settings):
                # never imported here: its module may need what only the environment holds
                settings.parallel_workers = workers
                return self._parallel(settings, workers, environment)
            runtime = runtime_for(settings)
            engine_backed = getattr(runtime, "engine_backed", False)
            if environment is not None and engine_backed:
                logger.warning("model '%s': %s is not used: its runtime runs in the server process, not in parallel "
                               "workers", settings.name, environment.describe())
                environment = None
            if workers and not engine_backed:
                settings.parallel_workers = workers
                return self._parallel(settings, workers, environment)
            return instantiate(runtime, settings)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, GpuserveError) else f"{type(exc).__name__}: {exc}"
            logger.error("model '%s' cannot be built: %s", settings.name, reason)
            return _unavailable(settings, reason)

    def model_for(self, settings: ModelSettings) -> BaseKServeModel:
        """The model object one model's settings describe (not loaded); not-ready with the reason when it cannot
        be built (mlserver.MLServer's start takes settings, not folders)."""
        return self._build_one(settings)

    def _parallel(self, settings: ModelSettings, workers: int, environment) -> BaseKServeModel:
        from gpuserve.parallel import ParallelModel

        model = ParallelModel(settings, workers, environment)
        model.stop_timeout = self.workers_timeout
        model.metrics_root = self.metrics_dir
        return model

    def tfserving_configs(self) -> List[Dict[str, Any]]:
        """The model_config_list served now: the last HandleReloadConfigRequest's, else the root's models.config's
        (none when it has none, or one that cannot be read)."""
        if self.tfserving is not None:
            return self.tfserving
        try:
            return parse((self.root / MODEL_CONFIG_FILE).read_text())
        except (OSError, UnicodeDecodeError, InvalidSettings):
            return []

    def mlserver_names(self) -> Set[str]:
        """Names of the models on disk described by model-settings.json, or by MLSERVER_MODEL_* alone (the
        one model of a root folder without any model-settings.json); every model of a custom repository."""
        if self.custom is not None:
            return set(self.scan())
        return {name for name, group in self.scan().items()
                if any(s.folder and (Path(s.folder) in self.roots or (Path(s.folder) / MODEL_SETTINGS_FILE).is_file())
                       for s in group)}

    def duplicates(self) -> Set[str]:
        """Names that more than one repository folder holds (served from none of them)."""
        return {name for name, group in self.scan().items()
                if len(group) == 1 and (group[0].model_extra or {}).get("_broken") == DUPLICATED}

    def config_written(self, name: str) -> float:
        """When the model's config.pbtxt was last written (0 where it has none): a load-time config stays for
        plain reloads only until the folder's own config is newer."""
        folder = next((Path(s.folder) for s in self.scan().get(name, []) if s.folder), None)
        try:
            return (folder / "config.pbtxt").stat().st_mtime if folder is not None else 0.0
        except OSError:
            return 0.0

    def catalog(self) -> Dict[str, List[str]]:
        """Every model name found on disk with its versions ("" for an unversioned one)."""
        return {name: [s.parameters.version or "" for s in group] for name, group in self.scan().items()}

    def fingerprints(self) -> Dict[str, str]:
        """Per model on disk, a digest of its files' paths, sizes and modification times, and of the
        versions its settings pick: what poll mode compares between two scans."""
        found: Dict[str, str] = {}
        for name, group in self.scan().items():
            digest = hashlib.blake2b(digest_size=16)
            digest.update(repr(sorted(s.parameters.version or "" for s in group)).encode())
            paths = set()
            for settings in group:
                if settings.folder:
                    paths.update(p for p in Path(settings.folder).rglob("*") if "__pycache__" not in p.parts)
                if settings.parameters.uri:
                    paths.add(Path(settings.parameters.uri))
            for path in sorted(paths):
                try:
                    stat = path.stat()
                except OSError:  # gone between the listing and now: the next scan sees the change
                    continue
                if not path.is_dir():
                    digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            found[name] = digest.hexdigest()
        return found

    def populate(self, registry: ModelRepository, only: Optional[Collection[str]] = None) -> ModelRepository:
        """Register the models on disk for loading at start-up: all of them, or those named in `only`
        (Triton's explicit mode); the rest stay in the catalog, loadable through the repository extension."""
        registry.models_dir = str(self.root)
        registry.source = self.build
        registry.finder = self.find
        registry.disk = self  # repositories registered at run time (SageMaker's multi-model loads)
        registry.catalog = self.catalog
        registry.mlserver_names = self.mlserver_names
        registry.fingerprints = self.fingerprints
        registry.duplicates = self.duplicates
        registry.config_written = self.config_written
        found = self.scan()
        for name in sorted(set(only or ()) - set(found)):
            logger.error("failed to load '%s': model not found in any model repository (named to load at "
                         "start-up)", name)
        chosen = set(found) if only is None else set(only) & set(found)
        pending = sorted(chosen)
        while pending:  # as Triton: an ensemble named to load brings its steps' models with it
            name = pending.pop()
            for settings in found[name]:
                model = self._with_namespace([self._build_one(settings)], found)[0]
                registry.update(model)
                for step in composing_models(model):
                    if step in found and step not in chosen:
                        chosen.add(step)
                        pending.append(step)
        return registry


def custom_repository(dotted: Any, args: Dict[str, Any], root: Path):
    """The MLServer repository class `dotted` names (importable from the repository folder, as MLServer's
    `mlserver start FOLDER` puts it on the path; or the class itself), built with root= the folder and `args`."""
    cls = import_class(dotted, root) if isinstance(dotted, str) else dotted
    try:
        return cls(root=str(root), **args)
    except Exception as exc:
        raise InvalidSettings(f"model_repository_implementation '{dotted}' cannot be built with root and "
                              f"{sorted(args)}: {type(exc).__name__}: {exc}") from None


def _awaited(result, what: str) -> list:
    """A custom repository's answer: its coroutine run to the end here (scans run off the event loop, in a
    thread of their own; a call from a thread whose loop runs gets one more thread)."""
    if inspect.isawaitable(result):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            result = asyncio.run(_value(result))
        else:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                result = pool.submit(asyncio.run, _value(result)).result()
    if not isinstance(result, (list, tuple)):
        raise InvalidSettings(f"the model repository's {what} answered {type(result).__name__}, not a list of "
                              "model settings")
    out = []
    for settings in result:
        if not isinstance(settings, ModelSettings):
            raise InvalidSettings(f"the model repository's {what} answered a {type(settings).__name__}, not "
                                  "ModelSettings")
        if not settings.name:
            raise InvalidSettings(f"the model repository's {what} answered model settings without a name")
        out.append(settings)
    return out


async def _value(awaitable):
    return await awaitable


def _grouped(found: List[ModelSettings]) -> Dict[str, List[ModelSettings]]:
    grouped: Dict[str, List[ModelSettings]] = {}
    for settings in found:
        grouped.setdefault(settings.name, []).append(settings)
    return grouped


def _user_runtime(settings: ModelSettings) -> bool:
    """Whether `implementation` names a class to import (not one of gpuserve's own runtimes)."""
    return bool(settings.implementation) and _builtin_runtime(settings.implementation) is None


def _unavailable(settings: ModelSettings, reason: str) -> UnavailableModel:
    model = UnavailableModel(settings.name, reason, settings.parameters.version)
    model.implementation = settings.implementation  # (TorchServe's model list names its broken archives too)
    model.triton_form = bool(settings.folder) and (Path(settings.folder) / "config.pbtxt").is_file()
    return model


_WARNED: Set[Path] = set()


def _version_numbers(folder: Path) -> List[int]:
    """The model's version folders, as Triton reads them: a name with leading zeros ('003') or not a number
    ('abc') is no version (said once per folder), so '003' never shadows version 3."""
    versions = []
    for path in folder.iterdir():
        if not path.is_dir():
            continue
        if not path.name.isdigit():
            why = "fails to convert to integral number"
        elif len(path.name) > 1 and path.name.startswith("0"):
            why = "contains leading zeros in its directory name"
        else:
            versions.append(int(path.name))
            continue
        if path not in _WARNED and path.name != "__pycache__":
            _WARNED.add(path)
            logger.warning("model '%s': ignore version directory '%s' which %s", folder.name, path.name, why)
    return versions


def _broken(folder: Path, reason: str, name: Optional[str] = None) -> ModelSettings:
    return ModelSettings(name=name or folder.name, folder=str(folder), _broken=reason)
