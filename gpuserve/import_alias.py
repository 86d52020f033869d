"""A package name that means one of gpuserve's, for code written against KServe or MLServer.

A module `NAME.X` is gpuserve's `TARGET.X`, the same module object (so registries and classes are shared
with the ones gpuserve uses), when gpuserve has one. Installed only where the real package is not importable:
where KServe or MLServer is installed, its names keep meaning its own classes. A runtime package whose
gpuserve counterpart is one module (e.g. `mlserver_alibi_detect`, gpuserve/runtimes_alibi_detect.py) names
its submodules in `modules`, each meaning a gpuserve module of its own.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Dict, Optional


class PackageAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, name: str, target: str, modules: Optional[Dict[str, str]] = None) -> None:
        self.name, self.target, self.modules = name, target, dict(modules or {})

    def _target_of(self, fullname: str) -> str:
        mapped = self.modules.get(fullname[len(self.name) + 1:])
        return mapped or self.target + fullname[len(self.name):]

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name and not fullname.startswith(self.name + "."):
            return None
        try:
            found = importlib.util.find_spec(self._target_of(fullname))
        except ModuleNotFoundError:
            found = None
        if found is None:
            return None  # the real package has it, gpuserve does not: the usual "No module named ..." follows
        package = found.submodule_search_locations is not None or (fullname == self.name and bool(self.modules))
        return importlib.util.spec_from_loader(fullname, self, is_package=package)

    def create_module(self, spec):
        return importlib.import_module(self._target_of(spec.name))

    def exec_module(self, module) -> None:
        pass  # gpuserve's module ran when create_module imported it


def install(name: str, target: str, modules: Optional[Dict[str, str]] = None) -> bool:
    """Make `name` mean `target` unless the real `name` is importable; True when it does. `modules` maps a
    submodule of `name` (e.g. "runtime") to the gpuserve module it means, where `target` is a module."""
    if any(isinstance(finder, PackageAlias) and finder.name == name for finder in sys.meta_path):
        return True
    if name in sys.modules or importlib.util.find_spec(name) is not None:
        return False
    sys.meta_path.insert(0, PackageAlias(name, target, modules))
    return True
