"""Triton FIL-backend models served on the CPU tree runtimes, with the answers FIL gives.

A FIL model is a Triton model like any other (dynamic batching, instance groups, version folders,
statistics), so it is a `FrameworkModel` whose backend is a forest: the engine batches rows of
`input__0` and this backend scores them with the library that wrote the file, through the fast paths
the classic runtimes use (gpuserve/classic_fast.py: XGBoost's and LightGBM's C calls prepared at load),
or Treelite's GTIL for Treelite checkpoints (what FIL itself runs on the CPU). The library's own
scores are then turned into FIL's `output__0`:

- `predict_proba`: a probability per class; a binary model (one score) gives [1 - p, p] where
  output__0 has two values a row, else p alone;
- `is_classifier` without `predict_proba`: the class index as a float, the most probable class of a
  multi-class model, or `p > threshold` for a binary one;
- otherwise the model's own output (regression values, or the transformed score).

The shape is FIL's: the batch dimension and output__0's dims with every 1 left out (dims [1] gives
[N]). NaN inputs are missing values, as in every one of these libraries.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from gpuserve.backends.base import TensorSpec
from gpuserve.classic_fast import teams_allowed, use_teams
from gpuserve.errors import ModelLoadError
from gpuserve.runtimes import FrameworkModel
from gpuserve.triton_fil_config import INPUT, OUTPUT, FilOptions

logger = logging.getLogger("gpuserve")

_TEAM_ROWS = 256  # Treelite's GTIL: one thread below this many rows (as XGBoostPredictor.single_thread_below_rows)


def _softmax(margins: np.ndarray) -> np.ndarray:
    shifted = np.exp(margins - margins.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _library(module: str, name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelLoadError(f"model '{name}': {module} is not installed ({exc}); pip install {module}") from None


class _XGBoostScores:
    """XGBoost JSON, UBJSON and binary files through the Booster's C call (classic_fast.XGBoostPredictor),
    every tree counted: FIL reads the whole forest, not the early-stopping best iteration the scikit-learn
    wrapper would stop at."""

    def __init__(self, path: Path, name: str):
        import json

        xgb = _library("xgboost", name)
        from gpuserve.classic_fast import XGBoostPredictor

        data = bytearray(path.read_bytes())  # by content, not by the file's extension (.model holds UBJSON)
        try:
            try:
                estimator = xgb.XGBRegressor()
                estimator.load_model(data)
            except TypeError:  # saved from an XGBClassifier
                estimator = xgb.XGBClassifier()
                estimator.load_model(data)
        except xgb.core.XGBoostError as exc:
            raise ModelLoadError(f"model '{name}': {path.name} is not an XGBoost model XGBoost "
                                 f"{xgb.__version__} reads: {str(exc).splitlines()[0]}") from None
        booster = estimator.get_booster()
        learner = json.loads(booster.save_config())["learner"]
        params = learner.get("learner_model_param", {})
        if int(params.get("num_target", 1) or 1) > 1:
            raise ModelLoadError(f"model '{name}': Multi-target model not supported (as in FIL)")
        self.classes = max(int(params.get("num_class", 0) or 0), 1)
        self.softmax = learner.get("objective", {}).get("name") == "multi:softmax"
        self.booster = booster
        self.fast = XGBoostPredictor.for_estimator(estimator)
        if self.fast is not None and tuple(self.fast.iteration_range) != (0, 0):
            self.fast.iteration_range = (0, 0)
            self.fast._prepare_c_api()

    def scores(self, x: np.ndarray, proba: bool) -> np.ndarray:
        margin = self.softmax  # multi:softmax answers class indices: its probabilities are the margins' softmax
        if self.fast is not None:
            values = self.fast.values(x, margin=margin)
        else:
            values = self.booster.inplace_predict(x, predict_type="margin" if margin else "value")
        values = np.asarray(values, dtype=np.float32).reshape(x.shape[0], -1)
        return _softmax(values) if margin else values


class _LightGBMScores:
    """LightGBM's text model through its C API (classic_fast.LightGBMPredictor), `Booster.predict`'s answers."""

    def __init__(self, path: Path, name: str):
        lgb = _library("lightgbm", name)
        from gpuserve.classic_fast import LightGBMPredictor

        try:
            self.booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise ModelLoadError(f"model '{name}': {path.name} is not a LightGBM model: {exc}") from None
        self.classes = int(self.booster.num_model_per_iteration())
        self.fast = LightGBMPredictor.for_booster(self.booster)

    def scores(self, x: np.ndarray, proba: bool) -> np.ndarray:
        from gpuserve.classic_fast import lightgbm_threads

        values = self.fast.predict(x) if self.fast is not None else None
        if values is None:
            values = self.booster.predict(x, **lightgbm_threads(x.shape[0]))
        return np.asarray(values, dtype=np.float32).reshape(x.shape[0], -1)

    def close(self) -> None:
        if self.fast is not None:
            self.fast.close()


class _TreeliteScores:
    """A Treelite checkpoint (how FIL takes scikit-learn and cuML forests) through Treelite's GTIL, what FIL
    runs on the CPU; also XGBoost's legacy binary files that XGBoost 3 no longer reads."""

    MULTI_CLASS = 2  # treelite::TaskType::kMultiClf

    def __init__(self, path: Path, name: str, legacy_xgboost: bool = False):
        treelite = _library("treelite", name)
        try:
            if legacy_xgboost:
                self.model = treelite.frontend.load_xgboost_model_legacy_binary(str(path))
            else:
                self.model = treelite.Model.deserialize(str(path))
        except Exception as exc:  # treelite.TreeliteError and the loader's own
            raise ModelLoadError(f"model '{name}': {path.name} is not a Treelite "
                                 f"{'XGBoost legacy binary' if legacy_xgboost else 'checkpoint'}: {exc}") from None
        self.gtil = treelite.gtil
        header = self.model.get_header_accessor()
        if int(header.get_field("num_target")[0]) != 1:
            raise ModelLoadError(f"model '{name}': Multi-target model not supported (as in FIL)")
        self.classes = int(header.get_field("num_class")[0])
        multi = int(header.get_field("task_type")[0]) == self.MULTI_CLASS
        per_leaf = int(header.get_field("leaf_vector_shape")[1])
        post = str(header.get_field("postprocessor"))
        # As FIL: probabilities of a multi-class model are the softmax of its margins (one class per tree),
        # or the plain average of its leaf vectors (a random forest), whatever postprocessor the file names.
        self.margin_softmax = multi and per_leaf == 1 and post != "softmax"
        self.margin_average = multi and per_leaf > 1 and post != "identity_multiclass"

    def scores(self, x: np.ndarray, proba: bool) -> np.ndarray:
        nthread = -1 if x.shape[0] >= _TEAM_ROWS and teams_allowed() else 1
        margin = proba and (self.margin_softmax or self.margin_average)
        values = self.gtil.predict(self.model, x, nthread=nthread, pred_margin=margin)
        values = np.asarray(values, dtype=np.float32).reshape(x.shape[0], -1)
        return _softmax(values) if proba and self.margin_softmax else values


def load_scores(path: Path, model_type: str, name: str) -> Any:
    if model_type == "lightgbm":
        return _LightGBMScores(path, name)
    if model_type == "treelite_checkpoint":
        return _TreeliteScores(path, name)
    try:
        return _XGBoostScores(path, name)
    except ModelLoadError as exc:
        if model_type != "xgboost":
            raise
        first = exc  # FIL's `xgboost` is the legacy binary format, which XGBoost 3 no longer reads: Treelite may
    try:
        import treelite  # noqa: F401
    except ImportError:
        raise ModelLoadError(f"{first} (an XGBoost legacy binary file needs treelite: pip install treelite)") from None
    try:
        return _TreeliteScores(path, name, legacy_xgboost=True)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{first}; {str(exc).split(': ', 1)[-1]}") from None


def fil_answer(scores: np.ndarray, options: FilOptions) -> np.ndarray:
    """FIL's output__0 for a batch's scores [N, classes] (the module's docstring says what it is)."""
    rows, classes = scores.shape
    if options.predict_proba:
        if classes == 1 and options.output_width == 2:
            out = np.empty((rows, 2), dtype=np.float32)
            out[:, 0] = 1.0 - scores[:, 0]
            out[:, 1] = scores[:, 0]
            values = out
        else:
            values = scores
    elif options.is_classifier:
        if classes > 1:
            values = np.argmax(scores, axis=1).astype(np.float32)
        else:
            values = (scores[:, 0] > np.float32(options.threshold)).astype(np.float32)
    else:
        values = scores
    return np.ascontiguousarray(values, dtype=np.float32).reshape(
        (rows, *[d for d in options.output_dims if d != 1]))


def expected_width(options: FilOptions, classes: int) -> Sequence[int]:
    """The values a row that output__0 may declare for a model of `classes` scores."""
    if options.predict_proba:
        return (1, 2) if classes == 1 else (classes,)
    if options.is_classifier:
        return (1,)
    return (classes,)


class FilBackend:
    """One instance of a FIL model: the forest and the shape of its answers."""

    device = "cpu"
    max_concurrency = 1

    def __init__(self, path: Path, options: FilOptions, name: str):
        self.options = options
        self.inputs = [TensorSpec(INPUT, "FP32", [-1, options.features])]
        self.outputs = [TensorSpec(OUTPUT, "FP32", [-1, *options.output_dims])]
        self._scores = load_scores(path, options.model_type, name)
        widths = expected_width(options, self._scores.classes)
        if options.output_width not in widths:
            kind = "probabilities" if options.predict_proba else "a class index" if options.is_classifier \
                else "scores"
            raise ModelLoadError(
                f"model '{name}': output '{OUTPUT}' dims {options.output_dims} do not fit {kind} of this "
                f"{self._scores.classes}-class model: {' or '.join(str(w) for w in widths)} value(s) a row")
        features = self._features()
        if features is not None and features != options.features:
            raise ModelLoadError(f"model '{name}': input '{INPUT}' dims [{options.features}] but the model file "
                                 f"has {features} features")

    def _features(self) -> Optional[int]:
        scores = self._scores
        if isinstance(scores, _XGBoostScores):
            return int(scores.booster.num_features())
        if isinstance(scores, _LightGBMScores):
            return int(scores.booster.num_feature())
        return int(scores.model.num_feature)

    def run(self, inputs: Dict[str, np.ndarray], output_names: Optional[Sequence[str]] = None
            ) -> Dict[str, np.ndarray]:
        x = inputs[INPUT]
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        # OpenMP teams only off the event loop (a batch may run inline there): classic_fast.py says why
        with use_teams(threading.current_thread() is not threading.main_thread()):
            scores = self._scores.scores(x, self.options.predict_proba)
        return {OUTPUT: fil_answer(scores, self.options)}

    def unload(self) -> None:
        scores, self._scores = getattr(self, "_scores", None), None
        if scores is not None and hasattr(scores, "close"):
            scores.close()


class FilModel(FrameworkModel):
    """A Triton model folder with `backend: "fil"` (gpuserve/triton_fil_config.py reads its config)."""

    platform = "fil"
    describes_itself = False  # the config's tensors are the model's (FIL's files declare none)

    def make_backend(self, path: Path, device: str, threads: int):
        extra = self.settings.model_extra or {}
        options = FilOptions(**extra["triton_fil"])
        if device != "cpu":
            logger.info("model %s: FIL forests run on gpuserve's CPU tree runtimes (device %s not used)",
                        self.name, device)
        return FilBackend(path, options, self.name)

