"""`mlserver.utils`, the import path MLServer runtimes use (`get_model_uri`, `generate_uuid`); the URI code is
in `model_uri`."""

import uuid

from gpuserve.mlserver.model_uri import get_model_uri


def generate_uuid() -> str:
    return str(uuid.uuid4())


__all__ = ["get_model_uri", "generate_uuid"]
