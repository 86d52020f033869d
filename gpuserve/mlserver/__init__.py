"""MLServer's Python API on gpuserve: runtimes written for MLServer run unchanged.

    from mlserver import MLModel                     # where MLServer is not installed: this package
    from mlserver.types import InferenceRequest      # (gpuserve/mlserver/alias.py), also importable as
    from mlserver.codecs import decode_args          # gpuserve.mlserver, gpuserve.mlserver.types, ...

`MLModel` runtimes named by `implementation` in `model-settings.json` are served through an
adapter (`gpuserve.mlserver.model.MLModelAdapter`); `types` are MLServer's pydantic payloads,
converted to gpuserve's NumPy-backed types at the edge; `codecs` are MLServer's codec classes and
registry over gpuserve's codecs; `settings` holds `ModelSettings` and MLServer's server `Settings`;
`logging`, `metrics`, `utils`, `version` and, for clients, `grpc` (the V2 stubs and MLServer's converters)
import by MLServer's paths too; `MLServer` (the server class, gpuserve/mlserver/server.py) is imported when
first named. Importing this package costs pydantic (already loaded by gpuserve's settings) and nothing heavier.
"""

from gpuserve.mlserver import codecs, errors, settings, types
from gpuserve.mlserver.model import MLModel, MLModelAdapter
from gpuserve.mlserver.settings import ModelSettings, Settings
from gpuserve.mlserver.version import __version__
from gpuserve.metrics import log, register

__all__ = ["MLModel", "MLModelAdapter", "MLServer", "ModelSettings", "Settings", "codecs", "errors", "settings",
           "types", "log", "register", "__version__"]


def __getattr__(name: str):
    if name == "MLServer":  # the server itself: loaded only by those who start one from Python
        from gpuserve.mlserver.server import MLServer

        return MLServer
    raise AttributeError(f"module 'gpuserve.mlserver' has no attribute {name!r}")
