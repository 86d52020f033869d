"""`import mlserver` for runtimes written against MLServer, in a process without MLServer.

A runtime folder brought from MLServer says `from mlserver import MLModel`, `from mlserver.codecs import
NumpyCodec`, ... . Where the real `mlserver` package is not installed, those names resolve to
gpuserve.mlserver's modules (the same module objects, so codec registries and classes are shared with
the ones gpuserve uses), and the runtime runs with no line changed. Where MLServer is installed it is
left alone: its names then mean MLServer's own classes. Installed before gpuserve imports a model
folder's implementation (gpuserve/repository.py), in the server and in parallel-worker processes.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_PREFIX = "mlserver"


class _MLServerAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != _PREFIX and not fullname.startswith(_PREFIX + "."):
            return None
        try:
            found = importlib.util.find_spec(f"gpuserve.{fullname}")
        except ModuleNotFoundError:
            found = None
        if found is None:
            return None  # MLServer has it, gpuserve does not: the usual "No module named ..." follows
        return importlib.util.spec_from_loader(fullname, self, is_package=found.submodule_search_locations is not None)

    def create_module(self, spec):
        return importlib.import_module(f"gpuserve.{spec.name}")

    def exec_module(self, module) -> None:
        pass  # gpuserve's module ran when create_module imported it


def install() -> bool:
    """Make `mlserver` mean gpuserve.mlserver unless MLServer itself is importable; True when it does."""
    if any(isinstance(finder, _MLServerAlias) for finder in sys.meta_path):
        return True
    if _PREFIX in sys.modules or importlib.util.find_spec(_PREFIX) is not None:
        return False
    sys.meta_path.insert(0, _MLServerAlias())
    return True
