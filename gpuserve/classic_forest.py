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
width, infinities, or more than `max_rows` rows (its per-row Cython is quicker there). Missing values
(NaN) take each node's `missing_go_to_left` side as in scikit-learn's own walk, where that forest accepts
them: whether it does depends on the release and the estimator's parameters, so it is asked at load with
one all-NaN row, and a few NaN rows must then come out as scikit-learn's answers do; else NaN goes to
scikit-learn too (which answers or words the error).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
MAX_NODES = 2_000_000  # padded nodes over all trees (~60 MB for two classes); larger forests stay as they are


class ForestPredictor:
    max_rows = 512  # 50 trees, depth 8: 512 rows 2.5 vs 3.9 ms; much beyond, scikit-learn's walk is quicker

    def __init__(self, estimator: Any, trees: list, normalize: bool, missing: bool = False):
        self.estimator = estimator
        self.count = len(trees)
        self.classifier = hasattr(estimator, "classes_")
        self.classes = getattr(estimator, "classes_", None)
        self.features = int(estimator.n_features_in_)
        self.takes_nan = missing  # whether rows with NaN are walked here (see the module's docstring)
        self.stack = TreeStack([(tree.children_left, tree.children_right, tree.feature, tree.threshold,
                                 tree.children_left == -1, tree.missing_go_to_left if missing else None)
                                for tree in trees],
                               depth=max(int(tree.max_depth) for tree in trees))
        values = []
        for tree in trees:
            value = np.asarray(tree.value[:, 0, :], dtype=np.float64)
            if self.classifier:  # as DecisionTreeClassifier.predict_proba
                value = value[:, :len(self.classes)]
                if normalize:
                    normalizer = value.sum(axis=1, keepdims=True)
                    normalizer[normalizer == 0.0] = 1.0
                    value = value / normalizer
            values.append(value)
        self.values = self.stack.pad(values)  # (trees x nodes) x classes (regressors: one column)

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
            if all(hasattr(tree, "missing_go_to_left") for tree in trees) and _accepts_nan(estimator):
                predictor = cls(estimator, trees, normalize, missing=True)
                if predictor._agrees_on_nan():
                    return predictor
            return cls(estimator, trees, normalize)
        except AttributeError:  # not fitted, or another scikit-learn than the one this mirrors
            return None

    def _agrees_on_nan(self) -> bool:
        """Rows with NaN here and in scikit-learn: the same answers (else NaN stays scikit-learn's)."""
        rows = np.random.default_rng(0).normal(size=(8, self.features)).astype(np.float32)
        rows[np.random.default_rng(1).random(rows.shape) < 0.4] = np.nan
        rows[0] = np.nan
        output = PREDICT_PROBA if self.classifier else PREDICT
        try:
            want = getattr(self.estimator, output)(rows)
        except Exception:  # noqa: BLE001 - whatever scikit-learn does with them, it does it itself
            return False
        got = self.run(output, rows)
        return got is not None and got.shape == want.shape and np.array_equal(got, want)

    def _rows(self, x: Any) -> Optional[np.ndarray]:
        """`x` as scikit-learn would predict on it (float32), or None where scikit-learn must answer."""
        if not takes(x, self.features, self.max_rows):
            return None
        if x.dtype == np.float64:
            with np.errstate(over="ignore"):  # beyond float32: inf, which goes to scikit-learn below
                rows = x.astype(np.float32)
        else:
            rows = x.astype(np.float32, copy=False)
        if not np.isfinite(rows).all() and (not self.takes_nan or np.isinf(rows).any()):
            return None
        return rows

    def _mean(self, rows: np.ndarray) -> np.ndarray:
        per_tree = self.values[self.stack.leaves(rows)]  # trees x rows x classes
        total = np.cumsum(per_tree, axis=0)[-1] if self.count > 1 else per_tree[0]
        return total / self.count

    def run(self, output: str, x: Any) -> Optional[np.ndarray]:
        """`estimator.<output>(x)`, or None where scikit-learn must answer."""
        if not answers(output, self.classifier):
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


def answers(output: str, classifier: bool) -> bool:
    """Whether the NumPy walks answer this output: `predict`, and `predict_proba` for a classifier."""
    return output == PREDICT or (output == PREDICT_PROBA and classifier)


def takes(x: Any, features: int, max_rows: int) -> bool:
    """Whether the NumPy walk takes `x`: a 2-D numeric array of `features` columns and 1 to `max_rows` rows."""
    return (type(x) is np.ndarray and x.ndim == 2 and x.shape[1] == features and 0 < x.shape[0] <= max_rows
            and x.dtype.kind in "fiub")


class TreeStack:
    """Trees as padded (trees x nodes) arrays, made once at load, walked all at once by `leaves`.

    Each tree is given as per-node arrays (left child, right child, feature, threshold, is-leaf, and
    the side a missing value takes or None); a leaf's children become the leaf itself, so rows that
    arrive early wait there. Everything the walk reads is flattened here, not per call."""

    def __init__(self, trees: Sequence[tuple], depth: int):
        self.count, self.size = len(trees), max(len(tree[0]) for tree in trees)
        self.depth = max(depth, 1)
        shape = (self.count, self.size)
        left, right, feature = np.zeros(shape, np.intp), np.zeros(shape, np.intp), np.zeros(shape, np.intp)
        threshold = np.zeros(shape, np.float64)
        missing = np.zeros(shape, bool) if any(tree[5] is not None for tree in trees) else None
        for i, (lefts, rights, features, thresholds, leaf, missing_left) in enumerate(trees):
            n = len(lefts)
            leaf = np.asarray(leaf, dtype=bool)
            own = np.arange(n)
            left[i, :n] = np.where(leaf, own, lefts)
            right[i, :n] = np.where(leaf, own, rights)
            feature[i, :n] = np.where(leaf, 0, features)
            threshold[i, :n] = thresholds
            if missing_left is not None:
                missing[i, :n] = np.asarray(missing_left, dtype=bool)
        self._base = (np.arange(self.count, dtype=np.intp) * self.size)[:, None]  # each tree's first node
        self._features, self._thresholds = feature.ravel(), threshold.ravel()
        self._missing = None if missing is None else missing.ravel()
        self._children = np.concatenate([right.ravel() + self._base.repeat(self.size),  # [right..., left...],
                                         left.ravel() + self._base.repeat(self.size)])  # as flat indexes

    def pad(self, per_tree: Sequence[np.ndarray]) -> np.ndarray:
        """Per-node values of each tree (nodes first) as one array indexed like `leaves`' answer."""
        tail = per_tree[0].shape[1:]
        out = np.zeros((self.count * self.size,) + tail, np.float64)
        for i, values in enumerate(per_tree):
            out[i * self.size:i * self.size + len(values)] = values
        return out

    def leaves(self, rows: np.ndarray) -> np.ndarray:
        """The flat index of the leaf each row reaches in each tree (trees x rows): every tree and row one
        level a step, `x <= threshold` going left, a missing value (NaN) the node's way when the trees have
        one; the walk ends once a step moves no row. Flat indexes (`take`) are what NumPy gathers fastest."""
        row_base = (np.arange(rows.shape[0], dtype=np.intp) * rows.shape[1])[None, :]
        flat_rows = rows.ravel()
        half = self.count * self.size
        at = np.broadcast_to(self._base, (self.count, rows.shape[0])).copy()
        missing_sides = self._missing is not None and bool(np.isnan(flat_rows).any())  # once, not per level
        for _ in range(self.depth):
            value = flat_rows.take(self._features.take(at) + row_base)
            go_left = value <= self._thresholds.take(at)
            if missing_sides:
                missing = np.isnan(value)
                if missing.any():
                    go_left = np.where(missing, self._missing.take(at), go_left)
            moved = self._children.take(at + go_left * half)
            if np.array_equal(moved, at):
                break
            at = moved
        return at


def _accepts_nan(estimator: Any) -> bool:
    """Whether this forest's `predict` takes missing values (scikit-learn 1.4 and later, for the
    criteria and settings it supports them with), asked with one all-NaN row."""
    try:
        estimator.predict(np.full((1, int(estimator.n_features_in_)), np.nan, np.float32))
    except Exception:  # noqa: BLE001 - a ValueError in scikit-learn's words: NaN is not taken
        return False
    return True


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
