"""The repository a server's settings ask for: `model_repository_implementation` (a class, or its dotted path
as settings.json gives it) built with `root=` the repository folder and `model_repository_implementation_args`."""

from __future__ import annotations

from typing import Any

from gpuserve.mlserver.repository.repository import ModelRepository, SchemalessModelRepository


class ModelRepositoryFactory:
    @staticmethod
    def resolve_model_repository(settings: Any) -> ModelRepository:
        implementation = getattr(settings, "model_repository_implementation", None) or SchemalessModelRepository
        if isinstance(implementation, str):
            from gpuserve.repository import import_class

            implementation = import_class(implementation, None)
        args = getattr(settings, "model_repository_implementation_args", None) or {}
        return implementation(root=settings.model_repository_root, **args)
