"""The served XGBoost and LightGBM paths (gpuserve/classic_fast.py: XGBoost through
Booster.inplace_predict, one thread for few rows) answer exactly what the library's own wrapper
answers: binary, multi-class, multi:softmax, multi-label, regression, early-stopped and dart models,
predict and predict_proba, below and above the single-thread row limit, and through a V2 request."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

from gpuserve.classic_fast import XGBoostPredictor
from gpuserve.runtimes_classic import LightGBMModel, XGBoostModel
from gpuserve.settings import ModelSettings
from gpuserve.types import InferRequest, RequestedOutput

RNG = np.random.default_rng(5)
X = RNG.normal(size=(300, 6)).astype(np.float32)
Y_BINARY = (X[:, 0] + X[:, 1] > 0).astype(int)
Y_MULTI = (X[:, 0] > 0).astype(int) + (X[:, 2] > 0.3).astype(int)
Y_REG = (X[:, 0] * 2 - X[:, 3]).astype(np.float32)
ROWS = [1, 7, XGBoostPredictor.single_thread_below_rows + 30]  # one thread, then the booster's team
Q = RNG.normal(size=(max(ROWS), 6)).astype(np.float32)
Q[3, 2] = np.nan  # missing values follow the model's default directions


def _xgb_models():
    small = {"n_estimators": 8, "max_depth": 3}
    stopped = xgb.XGBClassifier(n_estimators=60, max_depth=3, early_stopping_rounds=2, eval_metric="logloss")
    stopped.fit(X[:200], Y_BINARY[:200], eval_set=[(X[200:], Y_BINARY[200:])], verbose=False)
    assert stopped.best_iteration < 59  # so the iteration range matters
    return {
        "binary": xgb.XGBClassifier(**small).fit(X, Y_BINARY),
        "multi": xgb.XGBClassifier(**small).fit(X, Y_MULTI),
        "softmax": xgb.XGBClassifier(objective="multi:softmax", **small).fit(X, Y_MULTI),
        "multilabel": xgb.XGBClassifier(tree_method="hist", **small).fit(X, np.stack([Y_BINARY, Y_MULTI > 0], 1)),
        "dart": xgb.XGBClassifier(booster="dart", **small).fit(X, Y_MULTI),
        "stopped": stopped,
        "regressor": xgb.XGBRegressor(**small).fit(X, Y_REG),
        "linear": xgb.XGBRegressor(booster="gblinear", n_estimators=8).fit(X, Y_REG),
    }


def _served(cls, tmp_path, name, save):
    path = tmp_path / name
    save(str(path))
    model = cls(name, ModelSettings(name=name, parameters={"uri": str(path)}))
    model.load()
    return model


@pytest.fixture(scope="module")
def xgb_served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("xgb")
    return {kind: (est, _served(XGBoostModel, folder, f"{kind}.json", est.save_model))
            for kind, est in _xgb_models().items()}


@pytest.mark.parametrize("kind", ["binary", "multi", "softmax", "multilabel", "dart", "stopped", "regressor",
                                  "linear"])
@pytest.mark.parametrize("rows", ROWS)
def test_xgboost_outputs_equal_the_wrapper(xgb_served, kind, rows):
    trained, model = xgb_served[kind]
    assert (model._booster_api is None) == (kind == "linear")  # gblinear: the wrapper, as it uses a DMatrix
    q = Q[:rows]
    outputs = ["predict", "predict_proba"] if hasattr(trained, "predict_proba") else ["predict"]
    for output in outputs:
        want = getattr(trained, output)(q)
        got = model.run(output, q)
        assert got.dtype == want.dtype and got.shape == want.shape, (output, got.dtype, want.dtype)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, getattr(model.model, output)(q))  # the loaded wrapper too


@pytest.mark.parametrize("kind", ["binary", "multi", "softmax", "stopped", "regressor"])
def test_xgboost_c_api_path_answers_what_inplace_predict_does(xgb_served, kind, monkeypatch):
    trained, model = xgb_served[kind]
    fast = model._booster_api
    assert fast._lib is not None
    for q in (Q[:9], Q[:9].astype(np.float64), Q[:1]):
        for margin in (False, True):
            want = fast.single.inplace_predict(q, iteration_range=fast.iteration_range, missing=fast.missing,
                                               predict_type="margin" if margin else "value")
            got = fast.values(q, margin=margin)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
    # the C path is what ran: with inplace_predict gone, float arrays still predict; others cannot
    monkeypatch.setattr(type(fast.single), "inplace_predict", lambda *a, **k: pytest.fail("inplace_predict ran"))
    fast.values(Q[:3])
    with pytest.raises(pytest.fail.Exception):
        fast.values(np.asfortranarray(Q[:3]))  # not C-contiguous: inplace_predict's business


def test_xgboost_v2_request_both_outputs(xgb_served):
    trained, model = xgb_served["multi"]
    request = InferRequest.from_numpy("multi", {"input": Q[:4]})
    request.request_outputs = [RequestedOutput("predict"), RequestedOutput("predict_proba")]
    response = model._predict_v2(request)
    np.testing.assert_array_equal(response.outputs[0].as_numpy(), trained.predict(Q[:4]).reshape(-1, 1))
    np.testing.assert_array_equal(response.outputs[1].as_numpy(), trained.predict_proba(Q[:4]))


def test_xgboost_wrong_feature_count_is_invalid_input(xgb_served):
    from gpuserve.errors import InvalidInput

    with pytest.raises(InvalidInput, match="rejected the input"):
        xgb_served["binary"][1].run("predict", Q[:2, :4])


def test_xgboost_dataframes_go_to_the_wrapper(xgb_served):
    import pandas as pd

    trained, model = xgb_served["regressor"]
    frame = pd.DataFrame(Q[:5], columns=[f"f{i}" for i in range(6)])
    np.testing.assert_array_equal(model.run("predict", frame), trained.predict(Q[:5]))


@pytest.mark.parametrize("objective", ["binary", "multiclass", "regression"])
def test_lightgbm_outputs_equal_the_booster(tmp_path, objective):
    params = {"objective": objective, "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1}
    label = {"binary": Y_BINARY, "multiclass": Y_MULTI, "regression": Y_REG}[objective]
    if objective == "multiclass":
        params["num_class"] = 3
    booster = lgb.train(params, lgb.Dataset(X, label=label), num_boost_round=6)
    model = _served(LightGBMModel, tmp_path, "model.txt", booster.save_model)
    assert model._booster_api is not None  # the C API path, not the wrapper
    for rows in (1, 16, 200):
        for q in (Q[:rows], Q[:rows].astype(np.float64), np.asfortranarray(Q[:rows]),
                  np.nan_to_num(Q[:rows]).astype(np.int32)):
            got, want = model.run("predict", q), booster.predict(q)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(model._booster_api.predict(q) if q.dtype.kind == "f" else want, want)


def test_lightgbm_predictor_honours_the_best_iteration():
    from gpuserve.classic_fast import LightGBMPredictor

    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(X, label=Y_BINARY), num_boost_round=8)
    booster.best_iteration = 3  # as early stopping leaves it: Booster.predict then uses 3 trees of 8
    fast = LightGBMPredictor(booster)
    for rows in (1, 9):
        want = booster.predict(Q[:rows])
        assert not np.array_equal(want, booster.predict(Q[:rows], num_iteration=-1))  # so the bound shows
        np.testing.assert_array_equal(fast.predict(Q[:rows]), want)
    fast.close()


def test_lightgbm_bad_input_is_invalid_input_and_stop_frees_the_fast_path(tmp_path):
    from gpuserve.errors import InvalidInput

    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}, lgb.Dataset(X, label=Y_BINARY),
                        num_boost_round=3)
    model = _served(LightGBMModel, tmp_path, "model.txt", booster.save_model)
    for bad in (Q[:1, :4], Q[:3, :4], Q[:2, :, None]):
        with pytest.raises(InvalidInput, match="rejected the input"):
            model.run("predict", bad)
    fast = model._booster_api
    model.stop()
    assert fast.predict(Q[:1]) is None and not fast._configs  # closed: nothing prepared is left to use


class Recording:
    """A booster stand-in that records the thread of each call and passes it on."""

    def __init__(self, booster, calls):
        self.booster, self.calls = booster, calls

    def _record(self):
        import threading

        self.calls.append((self, threading.get_ident()))

    @property
    def handle(self):  # what the C API path reads, once a call
        self._record()
        return self.booster.handle

    def inplace_predict(self, *args, **kwargs):
        self._record()
        return self.booster.inplace_predict(*args, **kwargs)


async def test_openmp_teams_only_on_the_models_thread(xgb_served):
    import threading

    trained, model = xgb_served["binary"]
    fast = model._booster_api
    calls = []
    single, parallel = fast.single, fast.parallel
    fast.single, fast.parallel = Recording(single, calls), Recording(parallel, calls)
    try:
        rows = Q[:XGBoostPredictor.single_thread_below_rows + 30]  # enough rows for the team
        model._loop_per_row = model._thread_per_row = 0.0
        await model.predict(InferRequest.from_numpy("binary", {"input": rows}))  # unknown cost: the thread
        model._loop_per_row = 1e-9  # now quick enough for the loop
        response = await model.predict(InferRequest.from_numpy("binary", {"input": rows}))
        loop = threading.get_ident()
        assert [(who is fast.parallel, thread == loop) for who, thread in calls] == [(True, False), (False, True)]
        np.testing.assert_array_equal(response.outputs[0].as_numpy().ravel(), trained.predict(rows))
    finally:
        fast.single, fast.parallel = single, parallel


def test_lightgbm_one_thread_where_teams_are_not_allowed():
    from gpuserve.classic_fast import lightgbm_threads, use_teams

    assert lightgbm_threads(64) == {}
    with use_teams(False):
        assert lightgbm_threads(64) == {"num_threads": 1}
        with use_teams(True):
            assert lightgbm_threads(64) == {}
        assert lightgbm_threads(64) == {"num_threads": 1}
    assert lightgbm_threads(64) == {} and lightgbm_threads(8) == {"num_threads": 1}
