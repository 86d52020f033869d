"""`mlserver.codecs.utils`, the import path MLServer runtimes use; the code is in `content_types`."""

from gpuserve.mlserver.codecs.content_types import *  # noqa: F401,F403
from gpuserve.mlserver.codecs.content_types import __all__  # noqa: F401
