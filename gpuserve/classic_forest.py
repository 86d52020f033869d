"""scikit-learn forests predicted with NumPy, every tree at once, answers bit-identical to theirs.

Why: a served random forest is slow in scikit-learn for the few rows a request carries. Its `predict`
walks the trees one after another, each through a Python call with its own input checks and a
joblib dispatch (50 trees of depth 8 on 32 features, 2-core VM: 2.5-2.8 ms for one row or 64;
benchmarks/RESULTS.md session 7). Here the trees are stacked into padded arrays at load and walked
together, one NumPy step per level for all trees and rows: 0.1 ms for one row, 0.35 ms for 64.

Exactness: rows are cast to float32 as scikit-learn casts them and split with `x <= threshold` (float64)
as its Cython does; a classifier's leaf values are those `DecisionTreeClassifier.predict_proba` gives
(normalised per node where this scikit-learn's does so), summed over the trees in their order before one
division, as `ForestClassifier.predict_proba` / `ForestRegressor.predict` do (a sequential sum:
`np.cumsum`, not NumPy's pairwise `sum`). Anything else goes to scikit-learn: other estimator types
(subclasses and single trees too), several outputs, inputs that are not 2-D numeric arrays of the right
width, non-finite values (scikit-learn decides whether to accept them), or more than `max_rows` rows (its
per-row Cython is quicker there).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
MAX_NODES = 2_000_000  # padded nodes over all trees (~60 MB for two classes); larger forests stay as they are


class ForestPredictor:
    max_rows = 512  # 50 trees, depth 8: 512 rows 2.5 vs 3.9 ms; much beyond, scikit-learn's walk is quicker

    def __init__(self, estimator: Any, trees: list, normalize: bool):
        self.estimator = estimator
        self.count = len(trees)
        self.classifier = hasattr(estimator, "classes_")
        self.classes = getattr(estimator, "classes_", None)
        self.features = int(estimator.n_features_in_)
        self.depth = max(max(int(tree.max_depth) for tree in trees), 1)
        size = max(tree.node_count for tree in trees)
        shape = (self.count, size)
        self.left = np.zeros(shape, np.int32)
        self.right = np.zeros(shape, np.int32)
        self.feature = np.zeros(shape, np.int32)
        self.threshold = np.zeros(shape, np.float64)
        values = []
        for i, tree in enumerate(trees):
            n = tree.node_count
            own = np.arange(n, dtype=np.int32)
            leaf = tree.children_left[:n] == -1
            self.left[i, :n] = np.where(leaf, own, tree.children_left[:n])  # a leaf points to itself, so
            self.right[i, :n] = np.where(leaf, own, tree.children_right[:n])  # shallower trees wait there
            self.feature[i, :n] = np.where(leaf, 0, tree.feature[:n])
            self.threshold[i, :n] = tree.threshold[:n]
            value = np.asarray(tree.value[:n, 0, :], dtype=np.float64)
            if self.classifier:  # as DecisionTreeClassifier.predict_proba
                value = value[:, :len(self.classes)]
                if normalize:
                    normalizer = value.sum(axis=1, keepdims=True)
                    normalizer[normalizer == 0.0] = 1.0
                    value = value / normalizer
            values.append(np.pad(value, ((0, size - n), (0, 0))))
        self.values = np.stack(values)  # trees x nodes x classes (regressors: one column)
        self._trees = np.arange(self.count)[:, None]

    @classmethod
    def for_estimator(cls, estimator: Any) -> Optional["ForestPredictor"]:
        """A predictor for a fitted single-output forest of scikit-learn's own classes, else None."""
        try:
            from sklearn import ensemble
        except ImportError:
            return None
        forests = (ensemble.RandomForestClassifier, ensemble.RandomForestRegressor,
                   ensemble.ExtraTreesClassifier, ensemble.ExtraTreesRegressor)
        try:
            if type(estimator) not in forests or getattr(estimator, "n_outputs_", 1) != 1:
                return None
            trees = [member.tree_ for member in estimator.estimators_]
            if not trees or len(trees) * max(t.node_count for t in trees) > MAX_NODES:
                return None
            normalize = _tree_normalizes()
            if normalize is None:
                return None
            return cls(estimator, trees, normalize)
        except AttributeError:  # not fitted, or another scikit-learn than the one this mirrors
            return None

    def _rows(self, x: Any) -> Optional[np.ndarray]:
        """`x` as scikit-learn would predict on it (float32), or None where scikit-learn must answer."""
        if not takes(x, self.features, self.max_rows):
            return None
        rows = x.astype(np.float32, copy=False)
        if not np.isfinite(rows).all():
            return None
        return rows

    def _mean(self, rows: np.ndarray) -> np.ndarray:
        leaves = walk(rows, self.feature, self.threshold, self.left, self.right, self.depth)
        per_tree = self.values[self._trees, leaves]  # trees x rows x classes
        total = np.cumsum(per_tree, axis=0)[-1] if self.count > 1 else per_tree[0]
        return total / self.count

    def run(self, output: str, x: Any) -> Optional[np.ndarray]:
        """`estimator.<output>(x)`, or None where scikit-learn must answer."""
        if output not in (PREDICT, PREDICT_PROBA) or (output == PREDICT_PROBA and not self.classifier):
            return None
        rows = self._rows(x)
        if rows is None:
            return None
        mean = self._mean(rows)
        if output == PREDICT_PROBA:
            return mean
        if self.classifier:
            return self.classes.take(np.argmax(mean, axis=1), axis=0)
        return mean[:, 0]


def takes(x: Any, features: int, max_rows: int) -> bool:
    """Whether the NumPy walk takes `x`: a 2-D numeric array of `features` columns and 1 to `max_rows` rows."""
    return (type(x) is np.ndarray and x.ndim == 2 and x.shape[1] == features and 0 < x.shape[0] <= max_rows
            and x.dtype.kind in "fiub")


def walk(rows: np.ndarray, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray, right: np.ndarray,
         depth: int, missing_left: Optional[np.ndarray] = None) -> np.ndarray:
    """The leaf each row reaches in each tree (trees x rows): every tree and row one level a step, `x <=
    threshold` going left, a missing value (NaN) the node's `missing_left` way when given. Nodes are
    (trees x nodes) arrays; a leaf's children are itself, so rows that arrive early wait there, and the
    walk ends once a step moves no row. Indexes are flat (`take`), which NumPy gathers fastest."""
    count, size = feature.shape
    base = (np.arange(count, dtype=np.intp) * size)[:, None]
    row_base = (np.arange(rows.shape[0], dtype=np.intp) * rows.shape[1])[None, :]
    flat_rows = rows.ravel()
    features, thresholds = feature.ravel(), threshold.ravel()
    children = np.concatenate([right.ravel(), left.ravel()]).astype(np.intp)  # [right..., left...]
    half = count * size
    at = np.broadcast_to(base, (count, rows.shape[0])).copy()  # flat index of each (tree, row)'s node
    for _ in range(depth):
        value = flat_rows.take(features.take(at) + row_base)
        go_left = value <= thresholds.take(at)
        if missing_left is not None:
            missing = np.isnan(value)
            if missing.any():
                go_left = np.where(missing, missing_left.ravel().take(at), go_left)
        moved = children.take(at + go_left * half) + base
        if np.array_equal(moved, at):
            break
        at = moved
    return (at - base).astype(np.int32)


def _tree_normalizes() -> Optional[bool]:
    """Whether this scikit-learn's DecisionTreeClassifier.predict_proba divides the leaf values by their sum
    (releases before 1.4 stored counts in `tree_.value` and did; later ones store fractions and do not);
    None when its source cannot be read to tell."""
    import inspect

    from sklearn.tree import DecisionTreeClassifier

    try:
        source = inspect.getsource(DecisionTreeClassifier.predict_proba)
    except (OSError, TypeError):
        return None
    return "normalizer" in source
