"""`kserve.constants`: `from gpuserve.constants import constants` as in KServe (the names are also here)."""

from gpuserve.constants import constants
from gpuserve.constants.constants import *  # noqa: F401,F403
