"""scikit-learn's HistGradientBoosting models predicted with NumPy, every tree at once, bit-identical.

Why: `HistGradientBoostingClassifier.predict` makes one Cython call per tree after its input checks
(100 iterations, 32 features, 2-core VM: 1.0-1.1 ms for one row, 1.3 ms for 64; benchmarks/RESULTS.md
session 7). Here the trees are stacked at load and walked together (`classic_forest.TreeStack`): 0.28 ms for
one row, 0.38 ms for 16, 0.78 ms for 64.

Exactness: rows become float64 as scikit-learn makes them; a split sends `x <= num_threshold` left and a
missing value (NaN) the node's `missing_go_to_left` way, as its Cython does; the raw score starts at
the baseline and adds each tree's leaf value in iteration order (`np.cumsum` over [baseline, tree 1,
tree 2, ...], the same additions as its `raw_predictions[:, k] += ...`), and scikit-learn's own loss
object turns raw scores into probabilities or predictions. Models with categorical features, inputs that
are not 2-D numeric arrays of the right width, and more than `max_rows` rows go to scikit-learn.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from gpuserve.classic_forest import MAX_NODES, PREDICT_PROBA, TreeStack, answers, takes


class BoostingPredictor:
    max_rows = 128  # 100 trees up to depth 15: 128 rows 1.3 vs 1.6 ms, 256 rows 2.7 vs 1.6 ms

    def __init__(self, estimator: Any):
        self.estimator = estimator
        self.classifier = hasattr(estimator, "classes_")
        self.features = int(estimator.n_features_in_)
        per_iteration = int(estimator.n_trees_per_iteration_)
        trees = [predictor.nodes for iteration in estimator._predictors for predictor in iteration]
        self.outputs = per_iteration
        self.iterations = len(trees) // per_iteration
        self.stack = TreeStack([(nodes["left"], nodes["right"], nodes["feature_idx"], nodes["num_threshold"],
                                 nodes["is_leaf"], nodes["missing_go_to_left"]) for nodes in trees],
                               depth=max(int(nodes["depth"].max()) for nodes in trees))
        self.values = self.stack.pad([nodes["value"] for nodes in trees])
        self.baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(1, per_iteration)

    @classmethod
    def for_estimator(cls, estimator: Any) -> Optional["BoostingPredictor"]:
        """A predictor for a fitted HistGradientBoosting model of scikit-learn's own classes without
        categorical features, else None."""
        try:
            from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        except ImportError:
            return None
        if type(estimator) not in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
            return None
        try:
            if getattr(estimator, "_preprocessor", None) is not None or not estimator._predictors:
                return None  # categorical features: their encoder and bitsets stay scikit-learn's
            nodes = [p.nodes for iteration in estimator._predictors for p in iteration]
            if any(n["is_categorical"].any() for n in nodes) or len(nodes) * max(len(n) for n in nodes) > MAX_NODES:
                return None
            return cls(estimator)
        except (AttributeError, KeyError, ValueError):  # not fitted, or another scikit-learn than this mirrors
            return None

    def _raw(self, x: Any) -> Optional[np.ndarray]:
        """The raw scores (rows x outputs) scikit-learn's `_raw_predict` gives, or None where it must answer."""
        if not takes(x, self.features, self.max_rows):
            return None
        rows = x.astype(np.float64, copy=False)
        per_tree = self.values.take(self.stack.leaves(rows))  # trees x rows, iteration-major
        per_tree = per_tree.reshape(self.iterations, self.outputs, rows.shape[0]).transpose(0, 2, 1)
        start = np.broadcast_to(self.baseline, (1, rows.shape[0], self.outputs))
        # rows x outputs, in Fortran order as scikit-learn allocates it (its loss reduces along rows)
        return np.asfortranarray(np.cumsum(np.concatenate([start, per_tree]), axis=0)[-1])

    def run(self, output: str, x: Any) -> Optional[np.ndarray]:
        """`estimator.<output>(x)`, or None where scikit-learn must answer."""
        if not answers(output, self.classifier):
            return None
        raw = self._raw(x)
        if raw is None:
            return None
        loss = self.estimator._loss
        if output == PREDICT_PROBA:
            return loss.predict_proba(raw)
        if not self.classifier:
            return loss.link.inverse(raw.ravel())
        encoded = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return self.estimator.classes_[encoded]
