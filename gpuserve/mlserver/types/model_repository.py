"""`mlserver.types.model_repository`: the repository index's request and answer types."""

from gpuserve.mlserver.types import (  # noqa: F401
    RepositoryIndexRequest,
    RepositoryIndexResponse,
    RepositoryIndexResponseItem,
    State,
)

__all__ = ["RepositoryIndexRequest", "RepositoryIndexResponse", "RepositoryIndexResponseItem", "State"]
