"""`mlserver.types.dataplane`, the path some runtimes and clients import MLServer's payload types from."""

from gpuserve.mlserver.types import *  # noqa: F401,F403
from gpuserve.mlserver.types import __all__  # noqa: F401
