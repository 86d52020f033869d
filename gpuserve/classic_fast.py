"""Faster calls for served tree ensembles, with the outputs of the library's own wrapper.

Why (measured on the 2-core VM, 50-tree models on 1024 features, benchmarks/RESULTS.md 2026-11-25
session 3):

- Thread count. A booster loaded from a file predicts with an OpenMP team of every core. On a worker
  thread (where a served call runs) that team costs ~2x for a few rows: its threads spin after each
  call and compete with the event loop for the two cores (XGBoost 1 row: 329 vs 157 us; LightGBM 1
  row: 81 vs 29 us). So calls below a number of rows use one thread; bigger ones keep the team,
  which pays for itself there (XGBoost 512 rows: 660 vs 869 us; LightGBM 512 rows: 1.1 vs 2.1 ms).
- XGBoost's scikit-learn wrapper. `XGBClassifier.predict` is `Booster.inplace_predict` plus ~80 us
  per call (a JSON get/set of the global config in `config_context`, the best-iteration lookup),
  more than the trees cost for one row. `XGBoostPredictor` calls `inplace_predict` itself and turns
  its values into the wrapper's answers exactly as xgboost 3.x's sklearn.py does (labels, class
  probabilities, multi:softmax, multi-label); anything it does not cover goes to the wrapper.

The single-thread XGBoost booster is a copy (memory of the trees twice): `nthread` is a booster
parameter, and changing it while other threads predict is not safe.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"


class XGBoostPredictor:
    """`predict` / `predict_proba` of a loaded XGBClassifier or XGBRegressor through the Booster API."""

    single_thread_below_rows = 256  # XGBoost, worker thread: 128 rows 355 vs 408 us, 256 rows 840 vs 687 us

    def __init__(self, estimator: Any):
        import xgboost

        self.estimator = estimator
        self.classifier = isinstance(estimator, xgboost.XGBClassifier)
        self.parallel = estimator.get_booster()
        self.single = self.parallel.copy()
        self.single.set_param({"nthread": 1})
        # the wrapper works these out on every call; the loaded model does not change
        self.iteration_range = estimator._get_iteration_range(None)
        self.missing = estimator.missing
        self.objective = estimator.objective
        self.n_classes = estimator.n_classes_ if self.classifier else 0

    @classmethod
    def for_estimator(cls, estimator: Any) -> Optional["XGBoostPredictor"]:
        """A predictor when the wrapper itself would use inplace_predict (not gblinear), else None."""
        import xgboost

        if type(estimator) not in (xgboost.XGBClassifier, xgboost.XGBRegressor):
            return None  # subclasses (random forests, rankers, users' own) may predict differently
        try:
            if not estimator._can_use_inplace_predict():
                return None
            return cls(estimator)
        except AttributeError:  # another xgboost than the one this mirrors: keep the wrapper
            return None

    def values(self, x: np.ndarray, margin: bool = False) -> np.ndarray:
        booster = self.single if x.shape[0] < self.single_thread_below_rows else self.parallel
        return booster.inplace_predict(x, iteration_range=self.iteration_range,
                                       predict_type="margin" if margin else "value",
                                       missing=self.missing, validate_features=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """As `XGBModel.predict` (regressor) and `XGBClassifier.predict` (labels)."""
        probs = self.values(x)
        if not self.classifier:
            return probs
        if probs.ndim > 1 and self.n_classes != 2:  # multi-class: the most probable class
            return np.argmax(probs, axis=1)
        if probs.ndim > 1 and probs.shape[1] != 1:  # multi-label
            labels = np.zeros(probs.shape)
            labels[probs > 0.5] = 1
            return labels
        if self.objective == "multi:softmax":
            return probs.astype(np.int32)
        labels = np.repeat(0, probs.shape[0])
        labels[probs > 0.5] = 1
        return labels

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """As `XGBClassifier.predict_proba` (and its `_cls_predict_proba`)."""
        if self.objective == "multi:softmax":
            from scipy.special import softmax

            return softmax(self.values(x, margin=True), axis=1)
        probs = self.values(x)
        if probs.ndim == 2 and probs.shape[1] == self.n_classes:  # multi-class
            return probs
        if probs.ndim == 2 and self.n_classes == 2 and probs.shape[1] >= self.n_classes:  # multi-label
            return probs
        return np.vstack((1.0 - probs, probs)).transpose()

    def run(self, output: str, x: np.ndarray) -> Any:
        if output == PREDICT_PROBA and self.classifier:
            return self.predict_proba(x)
        if output == PREDICT:
            return self.predict(x)
        return getattr(self.estimator, output)(x)


def lightgbm_threads(rows: int) -> dict:
    """Booster.predict keyword arguments for `rows` rows: one thread for a few rows, else the default."""
    # LightGBM, worker thread: 16 rows 74 vs 93 us with one thread; 64 rows 202 vs 172 us (the team wins)
    return {"num_threads": 1} if rows < 32 else {}
