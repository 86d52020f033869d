"""The repository interface of MLServer's `model_repository_implementation`: `list()` names every model that
can be loaded (the repository index and the start-up load read it) and `find(name)` the settings of one model's
versions (a load reads it). gpuserve's own disk scan does not go through this: a server whose settings name an
implementation asks that class instead of reading the folder (gpuserve/repository.py)."""

from __future__ import annotations

import abc
import glob
import logging
import os
from typing import List

from gpuserve.mlserver.errors import ModelNotFound
from gpuserve.mlserver.repository.load import load_model_settings
from gpuserve.mlserver.settings import ModelSettings

DEFAULT_MODEL_SETTINGS_FILENAME = "model-settings.json"
logger = logging.getLogger("gpuserve")


class ModelRepository(metaclass=abc.ABCMeta):
    @abc.abstractmethod
    async def list(self) -> List[ModelSettings]:
        raise NotImplementedError

    @abc.abstractmethod
    async def find(self, name: str) -> List[ModelSettings]:
        raise NotImplementedError


class SchemalessModelRepository(ModelRepository):
    """Every `model-settings.json` below `root`; with none, the one model `MLSERVER_MODEL_*` describes."""

    def __init__(self, root: str):
        self._root = root

    async def list(self) -> List[ModelSettings]:
        found = []
        if self._root:
            pattern = os.path.join(os.path.abspath(self._root), "**", DEFAULT_MODEL_SETTINGS_FILENAME)
            for path in sorted(glob.glob(pattern, recursive=True)):
                try:
                    found.append(load_model_settings(path))
                except Exception:  # one broken file spoils only its own model, as in MLServer
                    logger.exception("Failed load model settings at %s.", path)
        if not found:  # MLServer's single-model form: the model MLSERVER_MODEL_* variables describe, if any
            default = ModelSettings.from_env(self._root or ".")
            if default is not None:
                found.append(default)
        return found

    async def find(self, name: str) -> List[ModelSettings]:
        selected = [settings for settings in await self.list() if settings.name == name]
        if not selected:
            raise ModelNotFound(name)
        return selected
