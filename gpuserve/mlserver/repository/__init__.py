"""`mlserver.repository`: the model repository interface MLServer's `model_repository_implementation` setting
names a class of, the default implementation, and the factory that builds the configured one."""

from gpuserve.mlserver.repository.factory import ModelRepositoryFactory
from gpuserve.mlserver.repository.repository import (
    DEFAULT_MODEL_SETTINGS_FILENAME,
    ModelRepository,
    SchemalessModelRepository,
)

__all__ = ["ModelRepository", "SchemalessModelRepository", "DEFAULT_MODEL_SETTINGS_FILENAME",
           "ModelRepositoryFactory"]
