"""Served HistGradientBoosting models (gpuserve/classic_boosting.py: every tree walked at once in NumPy)
answer exactly what scikit-learn answers: binary and multi-class classifiers (string labels), squared-error
and Poisson regressors, missing values in training and in requests; categorical models, wrong widths and
many rows go to scikit-learn itself."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from gpuserve.classic_boosting import BoostingPredictor
from conftest import serve_sklearn
from gpuserve.errors import InvalidInput

RNG = np.random.default_rng(21)
X = RNG.normal(size=(600, 10))
X[RNG.random(X.shape) < 0.05] = np.nan  # missing values while training: the splits learn a side for them
Q = RNG.normal(size=(300, 10))
Q[RNG.random(Q.shape) < 0.1] = np.nan
Y2 = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) > 0).astype(int)
Y3 = np.array(["a", "b", "c"])[(np.nan_to_num(X[:, 0]) > 0).astype(int) + (np.nan_to_num(X[:, 2]) > 0.3)]
YR = np.nan_to_num(X[:, 0]) * 2 - np.nan_to_num(X[:, 3])

ESTIMATORS = {
    "binary": lambda: HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, Y2),
    "multi": lambda: HistGradientBoostingClassifier(max_iter=20, max_depth=4, random_state=0).fit(X, Y3),
    "regressor": lambda: HistGradientBoostingRegressor(max_iter=25, random_state=0).fit(X, YR),
    "poisson": lambda: HistGradientBoostingRegressor(loss="poisson", max_iter=15, random_state=0).fit(
        X, np.exp(YR / 4)),
    "stopped": lambda: HistGradientBoostingClassifier(max_iter=200, early_stopping=True, n_iter_no_change=3,
                                                      random_state=0).fit(X, Y2),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return serve_sklearn(tmp_path_factory.mktemp("hgb"), ESTIMATORS)


@pytest.mark.parametrize("kind", list(ESTIMATORS))
@pytest.mark.parametrize("rows", [1, 9, 64])
def test_boosting_answers_equal_scikit_learns(served, kind, rows):
    estimator, model = served[kind]
    assert isinstance(model._trees.trees, BoostingPredictor)
    outputs = ["predict", "predict_proba"] if hasattr(estimator, "classes_") else ["predict"]
    for q in (Q[:rows], Q[:rows].astype(np.float32), np.nan_to_num(Q[:rows] * 3).astype(np.int64)):
        for output in outputs:
            want = getattr(estimator, output)(q)
            got = model._trees.run(output, q)
            assert got is not None and got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(model.run(output, q), want)


def test_what_the_numpy_path_does_not_take_goes_to_scikit_learn(served, tmp_path):
    estimator, model = served["multi"]
    many = np.repeat(Q, 2, axis=0)[:BoostingPredictor.max_rows + 1]
    assert model._trees.run("predict", many) is None
    np.testing.assert_array_equal(model.run("predict", many), estimator.predict(many))
    with pytest.raises(InvalidInput, match="rejected the input"):
        model.run("predict", Q[:2, :5])
    categorical = np.column_stack([RNG.integers(0, 4, size=len(X)), np.nan_to_num(X[:, 1:3])])
    with_categories = HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]).fit(categorical, Y2)
    assert BoostingPredictor.for_estimator(with_categories) is None
    assert BoostingPredictor.for_estimator(HistGradientBoostingClassifier()) is None  # not fitted
