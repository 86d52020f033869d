"""MLServer's Python API on gpuserve: runtimes written for MLServer run with only the imports changed.

    from gpuserve.mlserver import MLModel                     # was: from mlserver import MLModel
    from gpuserve.mlserver.types import InferenceRequest      # was: from mlserver.types import ...
    from gpuserve.mlserver.codecs import decode_args, NumpyCodec

`MLModel` runtimes named by `implementation` in `model-settings.json` are served through an
adapter (`gpuserve.mlserver.model.MLModelAdapter`); `types` are MLServer's pydantic payloads,
converted to gpuserve's NumPy-backed types at the edge; `codecs` are MLServer's codec classes and
registry over gpuserve's codecs; `settings` holds `ModelSettings` and MLServer's server `Settings`.
Importing this package costs pydantic (already loaded by gpuserve's settings) and nothing heavier.
"""

from gpuserve.mlserver import codecs, errors, settings, types
from gpuserve.mlserver.model import MLModel, MLModelAdapter
from gpuserve.mlserver.settings import ModelSettings, Settings
from gpuserve.metrics import log, register

__all__ = ["MLModel", "MLModelAdapter", "ModelSettings", "Settings", "codecs", "errors", "settings", "types",
           "log", "register"]
