"""MLServer's custom environments: a model's `parameters.environment_tarball` (a conda-pack tarball) or
`parameters.environment_path` (an environment already on disk), used by that model's parallel workers.

As in MLServer 1.7.1, a tarball is unpacked under `environments_dir` in a folder named by the SHA-256 of
its bytes, so a second model with the same tarball, or the next start of the server, finds it there and
does not unpack it again. Unlike MLServer, the folder appears only once complete (unpacked beside it,
then renamed): MLServer creates it first and unpacks into it, so a second model started meanwhile, or
the next start after a broken tarball, takes a half-filled folder for the environment. Unpacking refuses
any member that would land outside the folder (`../`, absolute names, links leading out, devices);
MLServer's unfiltered `extractall` writes them wherever they point.

The workers run the server's own interpreter (MLServer's documented rule; its code in fact starts the
environment's `bin/python`, so a tarball without one cannot start a worker there) with the
environment's `lib/pythonX.Y/site-packages` first on `sys.path` and its `bin` first on `PATH`. The
environment's standard library is not put ahead of the interpreter's own, as MLServer does for the
environment's interpreter: under the server's interpreter it would mix two patch releases. The paths
reach a spawned worker in multiprocessing's preparation data, which sets `sys.path` before the worker
imports anything (the server's entry script included), so the environment's packages win over the
server's for everything the worker imports, as in MLServer. The server process itself never sees them.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.spawn
import os
import shutil
import sys
import tarfile
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from gpuserve.errors import ModelLoadError

logger = logging.getLogger("gpuserve")

DEFAULT_ENVIRONMENTS_DIR = ".envs"  # MLServer's default, under the working directory
SERVER_TARBALL_VARIABLE = "MLSERVER_ENV_TARBALL"


@dataclass(frozen=True)
class Environment:
    """An unpacked environment: what a worker puts first on `sys.path` and `PATH`."""

    folder: str
    sys_path: tuple
    bin: str

    @classmethod
    def at(cls, folder: str | os.PathLike) -> "Environment":
        """Only the running interpreter's `lib/pythonX.Y` counts: another version's compiled packages would
        not load under it, so an environment for another version is refused here rather than failing in
        whatever the runtime imports first."""
        folder = os.path.abspath(folder)
        lib = os.path.join(folder, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}")
        paths: tuple = ()
        if os.path.isdir(lib):
            paths = (os.path.join(lib, "site-packages"),)
        else:
            others = sorted(p.name for p in Path(folder, "lib").glob("python*") if p.is_dir())
            if others:
                raise ModelLoadError(
                    f"the environment in {folder} is for {', '.join(others)}; the server runs "
                    f"python{sys.version_info.major}.{sys.version_info.minor}, and custom environments run with "
                    "the server's own Python (as in MLServer)")
            logger.warning("the environment in %s has no lib/python%d.%d: it adds only its bin to PATH",
                           folder, sys.version_info.major, sys.version_info.minor)
        return cls(folder, paths, os.path.join(folder, "bin"))


@dataclass(frozen=True)
class EnvironmentSource:
    """Where a model's environment comes from: a tarball to unpack, or a folder to use as it is."""

    tarball: Optional[str] = None
    path: Optional[str] = None
    environments_dir: str = DEFAULT_ENVIRONMENTS_DIR

    def prepare(self) -> Environment:
        """The environment, unpacked if need be; ModelLoadError with the reason if it cannot be."""
        if self.path is not None:
            if not os.path.isdir(self.path):
                raise ModelLoadError(f"environment_path '{self.path}' is not a folder")
            return Environment.at(self.path)
        return Environment.at(unpack(self.tarball, self.environments_dir))

    def describe(self) -> str:
        return f"environment_path '{self.path}'" if self.path is not None else f"environment_tarball '{self.tarball}'"


def source_for(parameters, folder: Optional[str], environments_dir: str,
               server_tarball: Optional[str] = None) -> Optional[EnvironmentSource]:
    """The model's environment from its settings' parameters, as MLServer resolves them: environment_path
    (user and variables expanded, relative to the working directory) before environment_tarball (relative
    to the model's folder); `server_tarball` (MLSERVER_ENV_TARBALL) where the model names neither."""
    extra = getattr(parameters, "model_extra", None) or {}
    path = getattr(parameters, "environment_path", None) or extra.get("environment_path")
    if path:
        return EnvironmentSource(path=os.path.abspath(os.path.expanduser(os.path.expandvars(path))),
                                 environments_dir=environments_dir)
    tarball = getattr(parameters, "environment_tarball", None) or extra.get("environment_tarball")
    if tarball:
        if folder and not os.path.isabs(tarball):
            tarball = os.path.join(folder, tarball)
        return EnvironmentSource(tarball=os.path.normpath(os.path.abspath(tarball)),
                                 environments_dir=environments_dir)
    if server_tarball:
        return EnvironmentSource(tarball=os.path.abspath(server_tarball), environments_dir=environments_dir)
    return None


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_UNPACKING: Dict[str, threading.Lock] = {}
_UNPACKING_LOCK = threading.Lock()


def unpack(tarball: str, environments_dir: str) -> str:
    """The folder `environments_dir/<sha256 of tarball>` holding the tarball's files, unpacked now or
    found from before. Two models of this process with one tarball unpack it once (the second waits);
    two server processes may both unpack it, and the first rename wins."""
    if not os.path.isfile(tarball):
        raise ModelLoadError(f"environment_tarball '{tarball}' does not exist")
    try:
        name = file_digest(tarball)
    except OSError as exc:
        raise ModelLoadError(f"environment_tarball '{tarball}' cannot be read: {exc}") from None
    root = os.path.abspath(environments_dir)
    target = os.path.join(root, name)
    with _UNPACKING_LOCK:
        lock = _UNPACKING.setdefault(target, threading.Lock())
    with lock:
        if os.path.isdir(target):
            logger.info("environment_tarball %s: using %s, unpacked before", tarball, target)
            return target
        os.makedirs(root, exist_ok=True)
        partial = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=root)
        try:
            os.chmod(partial, 0o755)  # mkdtemp's 0o700 would hide the environment from other users
            _extract(tarball, partial)
            try:
                os.rename(partial, target)
            except OSError:
                if not os.path.isdir(target):  # not another server process's rename: a real failure
                    raise
        except ModelLoadError:
            raise
        except OSError as exc:
            raise ModelLoadError(f"environment_tarball '{tarball}' could not be unpacked into {root}: {exc}") from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        logger.info("environment_tarball %s: unpacked into %s", tarball, target)
        return target


_HAS_FILTERS = hasattr(tarfile, "data_filter")  # Python 3.10.12+, 3.11.4+
_FILTER_ERRORS = (tarfile.FilterError,) if _HAS_FILTERS else ()


def _extract(tarball: str, into: str) -> None:
    """Every member into `into`, or ModelLoadError naming the first member refused; what was written
    stays in `into`, which the caller removes."""
    try:
        archive = tarfile.open(tarball, "r:*")  # gzip as conda-pack writes; bz2, xz and plain tar as MLServer's "r"
    except tarfile.TarError as exc:
        raise ModelLoadError(f"environment_tarball '{tarball}' is not a tar archive: "
                             f"{str(exc).splitlines()[0]}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise ModelLoadError(f"environment_tarball '{tarball}' is damaged: {exc}") from None
    with archive:
        try:
            members = archive.getmembers()
            for member in members:
                _check(member)
            if _HAS_FILTERS:
                # the data filter also follows links already written, which a look at names cannot
                archive.extractall(into, members=members, filter="data")
            else:
                archive.extractall(into, members=members)
        except _Refused as exc:
            raise ModelLoadError(f"environment_tarball '{tarball}' was refused: {exc}") from None
        except _FILTER_ERRORS as exc:
            raise ModelLoadError(f"environment_tarball '{tarball}' was refused: {exc}") from None
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise ModelLoadError(f"environment_tarball '{tarball}' is damaged: {exc}") from None


class _Refused(Exception):
    pass


def _escapes(name: str) -> bool:
    return os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in Path(name.replace("\\", "/")).parts


def _check(member: tarfile.TarInfo) -> None:
    """A refusal before anything is written, naming the member, for what every Python refuses; older ones
    without tarfile's filters also refuse every link that names `..` or an absolute path."""
    if _escapes(member.name):
        raise _Refused(f"member '{member.name}' would be written outside the environment folder")
    if member.isdev():
        raise _Refused(f"member '{member.name}' is a device or pipe")
    if (member.issym() or member.islnk()) and not _HAS_FILTERS and _escapes(member.linkname):
        raise _Refused(f"link '{member.name}' -> '{member.linkname}' leads outside the environment folder")


# --- starting workers inside an environment -----------------------------------------------------

_launching = threading.local()


def _with_environment(prepare):
    """multiprocessing's preparation data with the launching thread's environment paths first."""

    def get_preparation_data(name):
        data = prepare(name)
        paths = getattr(_launching, "sys_path", None)
        if paths:
            data["sys_path"] = [*paths, *[p for p in data["sys_path"] if p not in paths]]
        return data

    get_preparation_data.gpuserve_environment = True
    return get_preparation_data


_INSTALL_LOCK = threading.Lock()


def _install() -> None:
    with _INSTALL_LOCK:
        if not getattr(multiprocessing.spawn.get_preparation_data, "gpuserve_environment", False):
            multiprocessing.spawn.get_preparation_data = _with_environment(multiprocessing.spawn.get_preparation_data)


class _EnvironmentProcess(multiprocessing.context.SpawnProcess):
    environment_sys_path: tuple = ()

    @staticmethod
    def _Popen(process_obj):
        _launching.sys_path = process_obj.environment_sys_path
        try:
            return multiprocessing.context.SpawnProcess._Popen(process_obj)
        finally:
            _launching.sys_path = None


class EnvironmentContext(multiprocessing.context.SpawnContext):
    """A spawn context whose processes start with `environment`'s paths first on `sys.path`; only the
    thread starting one of them sees the change to multiprocessing's preparation data."""

    def __init__(self, environment: Environment):
        _install()
        self.environment = environment

    def Process(self, *args, **kwargs):  # noqa: N802 - multiprocessing's name
        process = _EnvironmentProcess(*args, **kwargs)
        process.environment_sys_path = self.environment.sys_path
        return process


def activate_in_worker(environment: Environment) -> None:
    """In a worker: the environment's bin first on PATH (programs the runtime starts), and its paths on
    `sys.path` should the worker have been started some other way."""
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != environment.bin:
        os.environ["PATH"] = os.pathsep.join([environment.bin, path]) if path else environment.bin
    missing = [p for p in environment.sys_path if p not in sys.path]
    if missing:
        sys.path = [*missing, *sys.path]


def server_tarball(environ: Optional[Dict[str, str]] = None) -> Optional[str]:
    """MLSERVER_ENV_TARBALL: MLServer's Docker image unpacks and activates it before `mlserver start`."""
    environ = os.environ if environ is None else environ
    return environ.get(SERVER_TARBALL_VARIABLE) or None
