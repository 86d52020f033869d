"""TorchServe model archives (KServe's PyTorch runtime is TorchServe) served by gpuserve.

- archive.py: a `.mar` (a zip) or an extracted folder, its MAR-INF/MANIFEST.json; zips extracted once to a cache.
- store.py: TorchServe's `config.properties` (`models=`/`model_snapshot=`, `load_models=`, `model_store=`) and
  the repository forms (KServe's `config/` + `model-store/`, a bare `NAME.mar`, `NAME/NAME.mar`, `NAME/1/*.mar`).
- context.py: the `Context` handed to handlers (TorchServe's own when installed, else a compatible one).
- handler.py: finding a handler as TorchServe's worker does (built-in name, `handler.py`, `handler.py:fn`).
- model.py: the gpuserve model that runs `initialize(context)` once and `handle(data, context)` per batch.

Nothing here imports torch or torchserve at import time: a handler does, when its model loads.
"""

from gpuserve.torchserve.archive import Archive, open_archive
from gpuserve.torchserve.store import is_kserve_layout, scan_kserve_layout, settings_for_archive

__all__ = ["Archive", "open_archive", "is_kserve_layout", "scan_kserve_layout", "settings_for_archive"]
