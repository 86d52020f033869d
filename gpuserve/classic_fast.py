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
  more than the trees cost for one row, and `inplace_predict` itself spends ~100 us more in Python
  around its one C call (session 7). `XGBoostPredictor` makes that C call (XGBoosterPredictFromDense,
  arguments prepared at load) for float arrays, `inplace_predict` for anything else, and turns the
  values into the wrapper's answers exactly as xgboost 3.x's sklearn.py does (labels, class
  probabilities, multi:softmax, multi-label); anything it does not cover goes to the wrapper.
- LightGBM's `Booster.predict`. Its Python costs ~15 us a call, twice the trees of a 50-tree model on one
  row; `LightGBMPredictor` makes the same C calls with everything but the data prepared at load.
- One OpenMP team per process. A team (libgomp) belongs to the thread that started it; once a second
  thread has started one, more threads exist than cores and libgomp stops spinning for all of them,
  so every later parallel call pays the wake-ups: after one call from another thread, the same
  calls took 2x as long for good (LightGBM 16 rows 52 -> 104-154 us; XGBoost 64 rows 280-350 -> 460-580
  us; session 7). Served calls run on the event loop or on the model's own thread, so only the model's
  thread may use a team (`use_teams`, set by the runtime around each call); calls on the loop use one
  thread.

The single-thread XGBoost booster is a copy (memory of the trees twice): `nthread` is a booster
parameter, and changing it while other threads predict is not safe.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional

import numpy as np

_PLACE = threading.local()


def teams_allowed() -> bool:
    """Whether a call on this thread may use an OpenMP team (see the module's docstring); yes unless the
    runtime said otherwise for the call running here."""
    return getattr(_PLACE, "teams", True)


class use_teams:
    """`with use_teams(False): ...` runs the calls inside with one thread."""

    def __init__(self, allowed: bool):
        self.allowed = allowed

    def __enter__(self):
        self.before, _PLACE.teams = teams_allowed(), self.allowed

    def __exit__(self, *exc):
        _PLACE.teams = self.before


PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
_TYPESTR = {np.dtype("<f4"): b"<f4", np.dtype("<f8"): b"<f8"}  # what XGBoost reads in place


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
        self._lib = None
        try:
            self._prepare_c_api()
        except (AttributeError, ImportError, TypeError, ValueError):  # another xgboost: inplace_predict only
            self._lib = None

    def _prepare_c_api(self) -> None:
        """The arguments of XGBoosterPredictFromDense that do not change between calls.

        `inplace_predict` is that C call plus ~100 us of Python per call (JSON of its arguments, checks, a
        class built per call to wrap the result): one row 189 vs 78 us here (session 7). The data's array
        interface is the only JSON left to build per call."""
        import ctypes
        import json

        from xgboost import core

        begin, end = self.iteration_range
        missing = float("nan") if self.missing is None else float(self.missing)
        self._args = {margin: json.dumps({"type": 1 if margin else 0, "training": False,
                                          "iteration_begin": int(begin), "iteration_end": int(end),
                                          "missing": missing, "strict_shape": False, "cache_id": 0}).encode()
                      for margin in (False, True)}
        self._features = int(self.parallel.num_features())
        self._ctypes = ctypes
        self._error = core.XGBoostError
        self._lib = core._LIB
        self._lib.XGBoosterPredictFromDense  # noqa: B018 - missing in another xgboost: AttributeError here

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
        team = x.shape[0] >= self.single_thread_below_rows and teams_allowed()
        booster = self.parallel if team else self.single
        if not x.flags.aligned:  # a tensor read from a binary body at an offset XGBoost refuses ("misalignment")
            x = x.copy()
        typestr = _TYPESTR.get(x.dtype) if self._lib is not None else None
        if typestr is not None and x.ndim == 2 and x.shape[0] and x.flags.c_contiguous:
            return self._dense(booster, x, typestr, margin)
        return booster.inplace_predict(x, iteration_range=self.iteration_range,
                                       predict_type="margin" if margin else "value",
                                       missing=self.missing, validate_features=True)

    def _dense(self, booster: Any, x: np.ndarray, typestr: bytes, margin: bool) -> np.ndarray:
        """`booster.inplace_predict(x, ...)` for a C-contiguous 2-D float array, as one C call."""
        if x.shape[1] != self._features:  # as inplace_predict with validate_features
            raise ValueError(f"Feature shape mismatch, expected: {self._features}, got {x.shape[1]}")
        ctypes = self._ctypes
        interface = b'{"data": [%d, true], "shape": [%d, %d], "strides": null, "typestr": "%s", "version": 3}' % (
            x.ctypes.data, x.shape[0], x.shape[1], typestr)
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()
        values = ctypes.POINTER(ctypes.c_float)()
        if self._lib.XGBoosterPredictFromDense(booster.handle, interface, self._args[margin], None,
                                               ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(values)):
            raise self._error(self._lib.XGBGetLastError().decode("utf-8", "replace"))
        out_shape = tuple(int(shape[i]) for i in range(dims.value))
        count = int(np.prod(out_shape)) if out_shape else 1
        # the values live in the booster's per-thread buffer until its next call: copied out at once
        return np.ctypeslib.as_array(values, shape=(count,)).reshape(out_shape).copy()

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
    return {"num_threads": 1} if rows < 32 or not teams_allowed() else {}


class LightGBMPredictor:
    """`Booster.predict(x)` (default arguments) for a 2-D float array through LightGBM's C API.

    The wrapper spends more than the trees do on few rows: per call it deep-copies its keyword
    arguments, builds an `_InnerPredictor` (two C calls), asks the C library how many values to
    expect and converts every argument with ctypes (2-core VM, 50 trees on 1024 features: 23-31 us a
    row, of which the trees ~8 us; benchmarks/RESULTS.md session 7). Here the constants are worked out
    once at load, one row goes through LightGBM's own serving entry point
    (`LGBM_BoosterPredictForMatSingleRowFast`, a prepared configuration per input dtype), and more rows
    through `LGBM_BoosterPredictForMat`, the wrapper's own call, with the same parameters (one thread
    below `lightgbm_threads`' limit). Other inputs (DataFrames, sparse, other dtypes) return None: the
    caller uses the wrapper.
    """

    NORMAL = 0  # C_API_PREDICT_NORMAL
    DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}  # C_API_DTYPE_FLOAT32 / FLOAT64

    def __init__(self, booster: Any):
        import ctypes

        from lightgbm import basic

        self._ctypes = ctypes
        self._lib = basic._LIB
        self._error = basic.LightGBMError
        self._booster = booster  # owns the handle: it must outlive every call made with it
        self._handle = booster._handle
        self.features = booster.num_feature()
        # As Booster.predict with num_iteration=None and start_iteration=0: the best iteration (or -1: all).
        self._iterations = ctypes.c_int(int(booster.best_iteration))
        per_row = ctypes.c_int64(0)
        self._check(self._lib.LGBM_BoosterCalcNumPredict(self._handle, ctypes.c_int(1), ctypes.c_int(self.NORMAL),
                                                         ctypes.c_int(0), self._iterations, ctypes.byref(per_row)))
        self.per_row = int(per_row.value)
        self._configs: Dict[int, Any] = {}
        self._closed = False  # configurations freed; the booster (and its handle) lives as long as this
        self._lock = threading.Lock()  # a prepared single-row configuration holds its own buffers
        self._args = (ctypes.c_int(self.NORMAL), ctypes.c_int(0), self._iterations)
        self._one_thread = ctypes.c_char_p(b"num_threads=1")
        self._team = ctypes.c_char_p(b"")

    @classmethod
    def for_booster(cls, booster: Any) -> Optional["LightGBMPredictor"]:
        try:
            return cls(booster)
        except (AttributeError, ImportError, OSError):  # another lightgbm than the one this mirrors
            return None

    def _check(self, code: int) -> None:
        if code != 0:
            raise self._error(self._lib.LGBM_GetLastError().decode("utf-8", "replace"))

    def _single_row_config(self, dtype: int) -> Any:
        config = self._configs.get(dtype)
        if config is None:
            ctypes = self._ctypes
            config = ctypes.c_void_p()
            self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                self._handle, *self._args, ctypes.c_int(dtype), ctypes.c_int32(self.features), self._one_thread,
                ctypes.byref(config)))
            self._configs[dtype] = config
        return config

    def predict(self, x: np.ndarray) -> Optional[np.ndarray]:
        """The booster's prediction for `x`, or None where the wrapper must answer (it also words the
        errors: a wrong feature count goes to it)."""
        dtype = self.DTYPES.get(x.dtype) if type(x) is np.ndarray else None
        if dtype is None or x.ndim != 2 or x.shape[1] != self.features or not x.shape[0]:
            return None
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        ctypes = self._ctypes
        rows = x.shape[0]
        out = np.empty(rows * self.per_row, dtype=np.float64)
        written = ctypes.c_int64(0)
        if rows == 1:
            with self._lock:
                if self._closed:  # unloaded meanwhile: the wrapper answers (or says the model is gone)
                    return None
                self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self._single_row_config(dtype), ctypes.c_void_p(x.ctypes.data), ctypes.byref(written),
                    ctypes.c_void_p(out.ctypes.data)))
        else:
            params = self._one_thread if lightgbm_threads(rows) else self._team
            self._check(self._lib.LGBM_BoosterPredictForMat(
                self._handle, ctypes.c_void_p(x.ctypes.data), ctypes.c_int(dtype), ctypes.c_int32(rows),
                ctypes.c_int32(self.features), ctypes.c_int(1), *self._args, params, ctypes.byref(written),
                ctypes.c_void_p(out.ctypes.data)))
        if written.value != out.size:
            raise self._error(f"LightGBM wrote {written.value} predictions where {out.size} were expected")
        return out if self.per_row == 1 else out.reshape(rows, self.per_row)

    def close(self) -> None:
        """Free the prepared configurations (before the booster they point into goes)."""
        with self._lock:
            configs, self._configs = self._configs, {}
            self._closed = True
            for config in configs.values():
                self._lib.LGBM_FastConfigFree(config)
