"""Find a model's handler the way TorchServe 0.12's worker does (ts/model_loader.py, read for its rules):

- `handler` names a module (`handler.py`, `handler`, or `handler.py:fn` for a function other than `handle`):
  the archive's own file first, else an importable module, else TorchServe's built-in `ts.torch_handler.<name>`
  (image_classifier, base_handler, text_classifier, ...), which needs torchserve installed.
- A module with the function (`handle` unless named) is a function handler: TorchServe initializes it by calling
  `handle(None, context)` once, and so do we. Otherwise the module must define exactly one class, which is built
  with no arguments and gets `initialize(context)` once and `handle(data, context)` per batch.

An archive's file is imported under a name of its own per model (every archive calls it handler.py, and all of
them run in this one process), with the archive's folder first on sys.path for the files it imports.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Callable, Tuple

from gpuserve.errors import InvalidSettings
from gpuserve.import_path import move_on_path

INSTALL = "pip install 'gpuserve[torchserve]'"


def _own_file(model_dir: Path, module_name: str, model_name: str):
    path = model_dir / f"{module_name}.py"
    if not path.is_file():
        return None
    unique = "gpuserve_torchserve_" + re.sub(r"\W", "_", f"{model_name}_{model_dir.name}_{module_name}")
    spec = importlib.util.spec_from_file_location(unique, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module  # (dataclasses and pickling look their module up)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(unique, None)
        raise
    return module


def _builtin(name: str):
    try:
        import ts.torch_handler  # noqa: F401
    except ImportError:
        raise InvalidSettings(f"handler '{name}' is one of TorchServe's built-in handlers, which need the torchserve "
                              f"package: {INSTALL} (torch is installed separately)") from None
    try:
        return importlib.import_module(f"ts.torch_handler.{name}")
    except ImportError as exc:
        raise InvalidSettings(f"cannot import TorchServe's handler 'ts.torch_handler.{name}': {exc}") from None


def import_handler(handler: str, model_dir: Path, model_name: str) -> Tuple[Any, str]:
    """(the handler's module, the function name asked for or "")."""
    if not handler:
        raise InvalidSettings(f"model '{model_name}': the archive's manifest names no handler")
    module_name, _, function = handler.partition(":")
    module_name = module_name[:-3] if module_name.endswith(".py") else module_name
    module_name = module_name.split("/")[-1]
    move_on_path(str(model_dir), first=True)  # the archive's other files, imported by its handler
    module = _own_file(model_dir, module_name, model_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            module = _builtin(module_name)
    return module, function


def _classes(module) -> list:
    return [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]


def load_handler(handler: str, model_dir: Path, model_name: str) -> Tuple[Callable, Callable, Any]:
    """(entry point `handle(data, context)`, `initialize(context)`, the handler object or module)."""
    module, function = import_handler(handler, model_dir, model_name)
    name = function or "handle"
    if hasattr(module, name):
        entry = getattr(module, name)
        return entry, (lambda context: entry(None, context)), module
    if function:
        raise InvalidSettings(f"handler '{handler}': module '{module.__name__}' has no function '{function}'")
    classes = _classes(module)
    if len(classes) != 1:
        raise InvalidSettings(f"handler '{handler}': expected only one class in custom service code or a function "
                              f"entry point, found {[c.__name__ for c in classes]}")
    service = classes[0]()
    if not hasattr(service, "handle"):
        raise InvalidSettings(f"handler '{handler}': class {classes[0].__name__} has no handle method")
    initialize = getattr(service, "initialize", None) or (lambda context: None)
    return service.handle, initialize, service
