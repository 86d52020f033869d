"""`kserve.context`: the process's predictor configuration, set by `ModelServer` from its
`predictor_config` argument or the `--predictor_*` flags. A `Model` built without its own
`predictor_config` falls back to this one (KServe 0.16 reads it from here only).

A plain module global rather than KServe's ContextVar: gpuserve serves on an event loop that may run
in another thread than the one that built the `ModelServer` (the tests do), and a ContextVar set there
would not be seen."""

from __future__ import annotations

from typing import Optional

from gpuserve.predictor_config import PredictorConfig

_predictor_config: Optional[PredictorConfig] = None


def set_predictor_config(config: Optional[PredictorConfig]) -> None:
    global _predictor_config
    _predictor_config = config


def get_predictor_config() -> Optional[PredictorConfig]:
    return _predictor_config
