"""Served scikit-learn forests (gpuserve/classic_forest.py: every tree walked at once in NumPy) answer
exactly what scikit-learn answers: classifiers (two and three classes, string labels) and regressors,
random and extra trees, deep and shallow, float64/int inputs, missing values (NaN) where scikit-learn takes
them; anything the NumPy path does not take (infinities, the wrong width, many rows, other estimators,
several outputs, NaN for a forest that refuses it) goes to scikit-learn itself."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
                              RandomForestClassifier, RandomForestRegressor)

from gpuserve.classic_forest import ForestPredictor
from conftest import serve_sklearn
from gpuserve.errors import InvalidInput
from gpuserve.runtimes_classic import SKLearnModel
from gpuserve.settings import ModelSettings
from gpuserve.types import InferRequest, RequestedOutput

RNG = np.random.default_rng(11)
X = RNG.normal(size=(400, 12)).astype(np.float32)
Q = RNG.normal(size=(300, 12)).astype(np.float32)
Y2 = (X[:, 0] + X[:, 1] > 0).astype(int)
Y3 = np.array(["low", "mid", "high"])[(X[:, 0] > 0).astype(int) + (X[:, 2] > 0.3)]
YR = X[:, 0] * 2 - X[:, 3] + RNG.normal(scale=0.1, size=len(X))

ESTIMATORS = {
    "forest-2": lambda: RandomForestClassifier(n_estimators=25, max_depth=6, random_state=0).fit(X, Y2),
    "forest-3-deep": lambda: RandomForestClassifier(n_estimators=10, random_state=1).fit(X, Y3),
    "weighted": lambda: RandomForestClassifier(n_estimators=8, max_depth=5, random_state=2,
                                               class_weight="balanced").fit(X, Y2),
    "extra-3": lambda: ExtraTreesClassifier(n_estimators=15, random_state=3).fit(X, Y3),
    "forest-reg": lambda: RandomForestRegressor(n_estimators=12, max_depth=9, random_state=4).fit(X, YR),
    "extra-reg": lambda: ExtraTreesRegressor(n_estimators=6, random_state=5).fit(X, YR),
    "one-tree": lambda: RandomForestClassifier(n_estimators=1, max_depth=3, random_state=6).fit(X, Y2),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return serve_sklearn(tmp_path_factory.mktemp("forests"), ESTIMATORS)


@pytest.mark.parametrize("kind", list(ESTIMATORS))
@pytest.mark.parametrize("rows", [1, 7, 64])
def test_forest_answers_equal_scikit_learns(served, kind, rows):
    estimator, model = served[kind]
    assert model._trees is not None
    outputs = ["predict", "predict_proba"] if hasattr(estimator, "classes_") else ["predict"]
    for q in (Q[:rows], Q[:rows].astype(np.float64), (Q[:rows] * 3).astype(np.int64)):
        for output in outputs:
            want = getattr(estimator, output)(q)
            got = model._trees.run(output, q)
            assert got is not None, (output, q.dtype)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(model.run(output, q), want)


def _with_nan(q, share=0.3, seed=0):
    q = q.astype(np.float64)
    q[np.random.default_rng(seed).random(q.shape) < share] = np.nan
    return q


@pytest.mark.parametrize("kind", list(ESTIMATORS))
def test_missing_values_take_scikit_learns_side(served, kind):
    estimator, model = served[kind]
    if not model._trees.trees.takes_nan:
        pytest.skip("this scikit-learn's forests refuse NaN: it goes to scikit-learn (next tests)")
    outputs = ["predict", "predict_proba"] if hasattr(estimator, "classes_") else ["predict"]
    for q in (_with_nan(Q[:64]), _with_nan(Q[:1], share=1.0), _with_nan(Q[:9], share=0.8, seed=3)):
        for output in outputs:
            got = model._trees.run(output, q)
            assert got is not None
            np.testing.assert_array_equal(got, getattr(estimator, output)(q))


def test_a_forest_trained_with_missing_values():
    x = _with_nan(X, share=0.15, seed=7)
    estimator = RandomForestClassifier(n_estimators=9, max_depth=7, random_state=8).fit(x, Y3)
    forest = ForestPredictor.for_estimator(estimator)
    if not forest.takes_nan:
        pytest.skip("this scikit-learn's forests refuse NaN")
    q = _with_nan(Q[:50], share=0.25, seed=9)
    np.testing.assert_array_equal(forest.run("predict_proba", q), estimator.predict_proba(q))
    np.testing.assert_array_equal(forest.run("predict", q), estimator.predict(q))


def test_nan_goes_to_scikit_learn_where_it_refuses_it_or_answers_otherwise():
    refusing = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, Y2)
    own = refusing.predict

    def predict(q):
        if np.isnan(q).any():
            raise ValueError("Input X contains NaN.")
        return own(q)

    refusing.predict = predict  # as a release or setting without missing-value support answers
    forest = ForestPredictor.for_estimator(refusing)
    assert forest is not None and not forest.takes_nan and forest.run("predict", _with_nan(Q[:4])) is None
    assert forest.run("predict", Q[:4]) is not None
    differing = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, Y2)
    proba = differing.predict_proba
    differing.predict_proba = lambda q: proba(np.nan_to_num(q, nan=5.0))  # NaN taken, but not our way
    forest = ForestPredictor.for_estimator(differing)
    assert forest is not None and not forest.takes_nan


def test_what_the_numpy_path_does_not_take_goes_to_scikit_learn(served):
    estimator, model = served["forest-2"]
    forest = model._trees.trees
    with_inf = Q[:3].copy()
    with_inf[1, 4] = np.inf
    huge = Q[:3].astype(np.float64)
    huge[0, 2] = 1e300  # inf once cast to float32, as scikit-learn casts it
    many = np.repeat(Q, 2, axis=0)[:ForestPredictor.max_rows + 1]
    for q in (with_inf, huge, many, Q[:3, :5], Q[:0], Q[:3].astype(object)):
        assert forest.run("predict", q) is None
    np.testing.assert_array_equal(model.run("predict", many), estimator.predict(many))
    with pytest.raises(InvalidInput, match="rejected the input"):
        model.run("predict", with_inf)
    with pytest.raises(InvalidInput, match="rejected the input"):
        model.run("predict", Q[:2, :5])  # scikit-learn words the error
    assert forest.run("transform", Q[:2]) is None


def test_only_scikit_learns_own_single_output_forests():
    class MyForest(RandomForestClassifier):
        pass

    assert ForestPredictor.for_estimator(MyForest(n_estimators=2).fit(X, Y2)) is None
    assert ForestPredictor.for_estimator(GradientBoostingClassifier(n_estimators=2).fit(X, Y2)) is None
    two_outputs = RandomForestClassifier(n_estimators=2).fit(X, np.stack([Y2, Y2], 1))
    assert ForestPredictor.for_estimator(two_outputs) is None
    assert ForestPredictor.for_estimator(RandomForestClassifier()) is None  # not fitted


def test_v2_request_through_the_forest(served):
    estimator, model = served["forest-3-deep"]
    request = InferRequest.from_numpy("forest-3-deep", {"input": Q[:4]})
    request.request_outputs = [RequestedOutput("predict"), RequestedOutput("predict_proba")]
    response = model._predict_v2(request)
    np.testing.assert_array_equal(response.outputs[0].as_numpy().ravel(), estimator.predict(Q[:4]))
    np.testing.assert_array_equal(response.outputs[1].as_numpy(), estimator.predict_proba(Q[:4]))


def _pipeline_model(tmp_path, pipeline):
    joblib.dump(pipeline, tmp_path / "model.joblib")
    model = SKLearnModel("pipe", ModelSettings(name="pipe", parameters={"uri": str(tmp_path / "model.joblib")}))
    model.load()
    return model


def test_a_pipeline_ending_in_a_forest_predicts_as_the_pipeline(tmp_path):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=12, random_state=0)).fit(X, Y3)
    model = _pipeline_model(tmp_path, pipeline)
    assert model._trees is not None and model._trees.prefix is not None
    for q in (Q[:1], Q[:20].astype(np.float64)):
        for output in ("predict", "predict_proba"):
            np.testing.assert_array_equal(model.run(output, q), getattr(pipeline, output)(q))
    with pytest.raises(InvalidInput, match="rejected the input"):
        model.run("predict", Q[:2, :5])


def test_a_pipeline_whose_steps_give_what_numpy_does_not_take_still_answers(tmp_path):
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.DataFrame({"colour": np.array(["red", "green", "blue"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0)],
                          "size": X[:, 2]})
    encode = make_column_transformer((OneHotEncoder(), ["colour"]), remainder="passthrough")  # sparse output
    pipeline = make_pipeline(encode, ExtraTreesRegressor(n_estimators=5, random_state=0)).fit(frame, YR)
    model = _pipeline_model(tmp_path, pipeline)
    np.testing.assert_array_equal(model.run("predict", frame[:9]), pipeline.predict(frame[:9]))
    plain = make_pipeline(GradientBoostingClassifier(n_estimators=3)).fit(X, Y2)
    assert _pipeline_model(tmp_path, plain)._trees is None  # not a forest at the end: scikit-learn alone
