"""Built-in runtimes for classic ML artefacts: scikit-learn, XGBoost and LightGBM.

Model folders written for MLServer name `mlserver_sklearn.SKLearnModel`,
`mlserver_xgboost.XGBoostModel` or `mlserver_lightgbm.LightGBMModel` as their `implementation`;
these gpuserve `Model`s answer to those names (mlserver itself need not be installed) and behave as
MLServer's runtimes do:

- the artefact is `parameters.uri`, or a well-known file name in the model's folder
  (`model.joblib`, `model.pickle`, `model.pkl`; `model.bst`, `model.json`, `model.ubj`);
- the request is decoded by its content type (or the model's), else its only input as a NumPy array;
- the outputs are the requested ones among `predict`, `predict_proba` (and `transform` for
  scikit-learn), by default `predict` (or `parameters.extra.predict_fn`); a 1-D result [N] is sent
  as [N, 1], as MLServer's NumPy codec does.

V1 bodies (`{"instances": [...]}`) are answered too, with the default output as `predictions`.
Frameworks are imported on first load; one that is not installed fails that load with the package
to install, and the other models keep serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from gpuserve import codecs
from gpuserve.classic_fast import use_teams
from gpuserve.errors import InferenceError, InvalidInput, ModelLoadError, ModelMissingError
from gpuserve.hooks import off_loop
from gpuserve.model import Model
from gpuserve.settings import ModelSettings
from gpuserve.types import InferOutput, InferRequest, InferResponse

logger = logging.getLogger("gpuserve")

# Predictions expected under this much CPU time run on the event loop. Higher than the engine's 100 us
# (engine/batcher.py), which protects batches forming: these models have no engine batching, and a
# hand-off to their thread costs 60-120 us here plus a cold core (XGBoost, 1 row: 196 us on the loop,
# 287 us on the thread). MLServer runs them wholly on its loop; forests of ~2 ms stay off it.
INLINE_BELOW_S = 300e-6
# Where a call runs changes what it costs: the first calls on a core that was idle run cold (XGBoost, 16
# rows: 240 us a call on the loop when every call runs there, 355-600 us on the model's thread, ~400 us
# on the loop right after thread calls). Timed only where it ran, a model near the limit stays wherever it
# started. So a model whose cost is within twice the limit is now and then timed on the loop: a probe of
# PROBE_RUN calls in a row there, the last one (warm) deciding; the first probe comes after the first
# call, later ones after PROBE_EVERY calls, the gap doubling (to PROBE_MAX) while probes keep finding the
# model too slow for the loop.
# A lone client (no other call of the model outstanding, and hardly any lately) may take the loop for
# longer: nothing else waits on it meanwhile, and the hand-off would only add to its latency (the
# engine's lone-client rule, engine/batcher.py).
INLINE_ALONE_BELOW_S = 2e-3
PROBE_RUN = 3
PROBE_EVERY = 16
PROBE_MAX = 1024
PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
TRANSFORM = "transform"


def _import(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelLoadError(f"{package} is not installed ({exc}); pip install {package}") from None


def _rows(payload: Any) -> int:
    """Rows in a V2 request (its first input's first dimension) or a V1 body; 0 when unknown."""
    if isinstance(payload, InferRequest):
        shape = payload.inputs[0].shape if payload.inputs else None
        return int(shape[0]) if shape else 0
    instances = payload.get("instances") if isinstance(payload, dict) else None
    return len(instances) if isinstance(instances, list) else 0


def _average(old: float, new: float) -> float:
    """The moving average of a call's time per row (0: none yet, so the first sample is taken whole)."""
    return new if not old else 0.8 * old + 0.2 * new


def _is_dataframe(value: Any) -> bool:
    import sys

    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _outputs_of(name: str, value: Any) -> List[InferOutput]:
    """One framework result as response outputs, shaped as MLServer's NumPy codec shapes them."""
    if type(value) is not np.ndarray:  # the usual result skips these checks
        if _is_dataframe(value):
            return list(codecs.PandasCodec.encode_response("", value).outputs)
        if hasattr(value, "toarray"):  # scipy.sparse from transform
            value = value.toarray()
    array = np.asarray(value)
    if array.dtype.kind in "US":
        array = array.astype(object)
    if array.ndim <= 1:
        array = array.reshape(-1, 1) if array.ndim == 1 else array.reshape(1)
    return [InferOutput.from_numpy(name, array, {"content_type": "np"})]


class ClassicModel(Model):
    """Loading, request decoding and output choice shared by the classic-ML runtimes."""

    plain_predict = True  # the data plane may await predict directly while no pipeline hook is overridden
    generates_ids = True  # as MLServer's runtimes: a V2 answer always has an id (made up) and parameters
    platform = ""
    package = ""  # what to pip install
    wellknown: Sequence[str] = ()
    valid_outputs: Sequence[str] = (PREDICT,)

    def __init__(self, name: str, settings: Optional[ModelSettings] = None):
        super().__init__(name)
        self.settings = settings or ModelSettings(name=name)
        self.version = self.settings.parameters.version
        self.model: Any = None
        self._loop_per_row = 0.0  # moving average of a prediction's CPU time per row on the loop; 0: none yet
        self._thread_per_row = 0.0  # the same on the model's own thread
        self._probing = 0  # calls left in the current probe on the loop (PROBE_RUN)
        self._probe_gap = PROBE_EVERY  # calls between probes; doubles while probes find the model too slow
        self._since_probe = 0
        self._outstanding = 0  # calls in predict now
        self._load = 0.0  # moving average of _outstanding as each call found it
        self._thread: Optional[ThreadPoolExecutor] = None  # made on the first slow call

    # lifecycle ----------------------------------------------------------------------------------
    def artefact(self) -> Path:
        path = self.settings.resolve_uri()
        if path is None:
            if not self.settings.folder:
                raise ModelMissingError(f"model '{self.name}' has no parameters.uri naming its artefact")
            path = Path(self.settings.folder)
        if path.is_dir():
            for filename in self.wellknown:
                if (path / filename).is_file():
                    return path / filename
            raise ModelMissingError(f"model '{self.name}': none of {', '.join(self.wellknown)} in {path}")
        if not path.is_file():
            raise ModelMissingError(f"model '{self.name}': {path} does not exist")
        return path

    def read_artefact(self, path: Path) -> Any:
        raise NotImplementedError

    def load(self) -> bool:
        self.model = self.read_artefact(self.artefact())
        self.ready = True
        logger.info("model %s: %s loaded (%s)", self.name, self.platform, type(self.model).__name__)
        return True

    def stop(self) -> None:
        super().stop()
        self.model = None
        self.ready = False
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    # MLServer's runtimes answer metadata from model-settings.json alone: its `platform` and `versions`
    # ("" and [] unless written; parameters.version is not listed) and `parameters` with the model's
    # content type ({} without one); the data plane keeps these versions (`settings_metadata`).
    settings_metadata = True

    def metadata(self) -> Dict[str, Any]:
        def tensor(t: Any) -> Dict[str, Any]:
            return t.model_dump(exclude=None if t.parameters else {"parameters"})

        parameters = {"content_type": self.settings.parameters.content_type}
        return {"name": self.name, "versions": list(self.settings.versions), "platform": self.settings.platform,
                "inputs": [tensor(t) for t in self.settings.inputs],
                "outputs": [tensor(t) for t in self.settings.outputs],
                "parameters": {k: v for k, v in parameters.items() if v is not None}}

    def get_input_types(self) -> List[Dict]:
        return [t.model_dump(exclude={"parameters"}) for t in self.settings.inputs]

    def get_output_types(self) -> List[Dict]:
        return [t.model_dump(exclude={"parameters"}) for t in self.settings.outputs]

    # inference ----------------------------------------------------------------------------------
    def default_output(self) -> str:
        return str(self.settings.parameters.extra.get("predict_fn") or PREDICT)

    def check_outputs(self, names: List[str]) -> None:
        for name in names:
            if name not in self.valid_outputs:
                known = ", ".join(repr(o) for o in self.valid_outputs)
                raise InvalidInput(f"{type(self).__name__} only supports {known} as outputs ('{name}' was requested)")

    def run(self, output: str, features: Any) -> Any:
        method = getattr(self.model, output, None)
        if method is None:
            raise InvalidInput(f"model '{self.name}' ({type(self.model).__name__}) has no '{output}'")
        try:
            return method(features)
        except (ValueError, TypeError) as exc:  # wrong feature count, dtype, rank: the request's fault
            raise InvalidInput(f"model '{self.name}' rejected the input for '{output}': {exc}") from None

    def decode_features(self, request: InferRequest) -> Any:
        """The request's content type, else the model's, else its only input as a NumPy array."""
        content_type = codecs.content_type_of(request.parameters, "request") or self.settings.parameters.content_type
        if content_type:
            return codecs.decode_request(request, content_type)
        if len(request.inputs) != 1:
            raise InvalidInput(f"model '{self.name}' takes one input tensor, got {len(request.inputs)}; "
                               f"to send columns, name content type 'pd'")
        tensor = request.inputs[0]
        return codecs.decode_input(tensor, self._default_content_type(tensor.name))

    async def predict(self, payload: Any, headers: Optional[Dict[str, str]] = None,
                      response_headers: Optional[Dict[str, str]] = None) -> Any:
        """Quick calls (rows x recent time per row under INLINE_BELOW_S) run on the event loop: a
        thread hand-off costs 60-120 us here, as much as a small tree ensemble's whole prediction.
        Others run on the model's own thread, one at a time: from the default executor's several
        threads a 2 ms scikit-learn forest predict took 3.4-4.7 ms (its Python-heavy work moving
        between threads and cores, and concurrent calls fighting over the GIL); from one thread 2.5 ms
        (2-core VM, benchmarks/RESULTS.md 2026-11-25 session 3). A lone client's calls up to
        INLINE_ALONE_BELOW_S run on the loop too, and probes keep the loop's own timing current
        (PROBE_EVERY: a call timed on a cold thread looks slower than it is)."""
        rows = _rows(payload)
        self._load += 0.1 * (self._outstanding - self._load)
        if rows and (self._loop_per_row or self._thread_per_row):
            cost = (self._loop_per_row or self._thread_per_row) * rows
            if self._probing and cost < 2 * INLINE_BELOW_S:
                return self._timed(payload, rows, True)
            if self._loop_per_row and cost < INLINE_BELOW_S:
                return self._timed(payload, rows, True)
            if cost < INLINE_ALONE_BELOW_S and not self._outstanding and self._load < 0.5:
                # Counted as outstanding until one turn after the call, so that requests which arrived with
                # this one (their tasks run in that turn) go to the thread and raise the load: a crowd
                # does not take turns on the loop.
                self._outstanding += 1
                try:
                    result = self._timed(payload, rows, True)
                    await asyncio.sleep(0)
                    return result
                finally:
                    self._outstanding -= 1
            if cost < 2 * INLINE_BELOW_S:
                self._since_probe += 1
                if not self._loop_per_row or self._since_probe >= self._probe_gap:
                    self._since_probe = 0
                    self._probing = PROBE_RUN
                    return self._timed(payload, rows, True)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"gpuserve-{self.name}")
        self._outstanding += 1
        try:
            return await off_loop(self._thread, self._timed, payload, rows, False)
        finally:
            self._outstanding -= 1

    def _timed(self, payload: Any, rows: int, on_loop: bool) -> Any:
        # The thread's CPU time, not the wall clock: on an executor thread the wall clock also counts
        # the waits for the GIL held by the loop, which would keep every call off the loop for good.
        start = time.thread_time()
        with use_teams(not on_loop):  # OpenMP teams on the model's thread only: classic_fast.py says why
            result = self._predict(payload)
        if rows:
            per_row = (time.thread_time() - start) / rows
            if not on_loop:
                self._thread_per_row = _average(self._thread_per_row, per_row)
            elif self._probing:  # a probe: each call's time replaces the last, so the warm one decides
                self._probing -= 1
                self._loop_per_row = per_row
                if not self._probing:  # too slow for the loop still: probe less often
                    self._probe_gap = min(self._probe_gap * 2, PROBE_MAX) if per_row * rows >= INLINE_BELOW_S \
                        else PROBE_EVERY
            else:
                self._loop_per_row = _average(self._loop_per_row, per_row)
        return result

    def _predict(self, payload: Any) -> Any:
        if isinstance(payload, InferRequest):
            return self._predict_v2(payload)
        if isinstance(payload, dict) and "instances" in payload:
            return self._predict_v1(payload)
        raise InvalidInput("expected a V2 inference request or a V1 body with 'instances'")

    def _predict_v2(self, request: InferRequest) -> InferResponse:
        wanted = [o.name for o in request.request_outputs] if request.request_outputs else [self.default_output()]
        self.check_outputs(wanted)
        features = self.decode_features(request)
        outputs: List[InferOutput] = []
        for name in wanted:
            result = self.run(name, features)
            if len(wanted) > 1 and _is_dataframe(result):
                raise InferenceError(f"'{name}' returned a DataFrame and {wanted} were requested; "
                                     f"columnar results cannot share a response with other outputs")
            outputs += _outputs_of(name, result)
        return InferResponse(request.id, self.name, outputs, model_version=self.version)

    def _predict_v1(self, body: dict) -> dict:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise InvalidInput("'instances' must be a list")
        if instances and all(isinstance(row, dict) for row in instances):
            import pandas as pd

            features: Any = pd.DataFrame(instances)
        else:
            features = np.asarray(instances)
            if features.dtype == object:
                raise InvalidInput("'instances' must be rows of numbers of equal length (or objects of columns)")
        output = self.default_output()
        self.check_outputs([output])
        result = self.run(output, features)
        if _is_dataframe(result):
            return {"predictions": result.to_dict(orient="records")}
        if hasattr(result, "toarray") and not isinstance(result, np.ndarray):
            result = result.toarray()
        result = np.asarray(result)
        return {"predictions": result.tolist() if result.dtype.kind in "OUS" else result}


class SKLearnModel(ClassicModel):
    """A scikit-learn estimator or pipeline saved with joblib (or pickle)."""

    platform = "sklearn"
    package = "scikit-learn"
    wellknown = ("model.joblib", "model.pickle", "model.pkl")
    valid_outputs = (PREDICT, PREDICT_PROBA, TRANSFORM)

    def read_artefact(self, path: Path) -> Any:
        _import("sklearn", "scikit-learn")
        joblib = _import("joblib", "joblib")
        return joblib.load(path)

    def check_outputs(self, names: List[str]) -> None:
        super().check_outputs(names)
        if PREDICT_PROBA in names:
            final = self.model
            steps = getattr(final, "steps", None)
            if steps:  # a Pipeline: its last step decides
                final = steps[-1][-1]
            if not hasattr(final, PREDICT_PROBA):
                raise InvalidInput(f"{type(final).__name__} models do not support '{PREDICT_PROBA}'")

    def load(self) -> bool:
        super().load()
        self._trees = TreeShortcut.for_model(self.model)
        return True

    def stop(self) -> None:
        super().stop()
        self._trees = None

    def run(self, output: str, features: Any) -> Any:
        """Random forests and HistGradientBoosting models walk all their trees at once in NumPy
        (gpuserve/classic_forest.py, classic_boosting.py say why), with scikit-learn's own answers;
        anything that path does not take goes to the estimator."""
        trees = getattr(self, "_trees", None)
        if trees is None:
            return super().run(output, features)
        try:
            result = trees.run(output, features)
        except (ValueError, TypeError) as exc:  # what the pipeline would have rejected: the request's fault
            raise InvalidInput(f"model '{self.name}' rejected the input for '{output}': {exc}") from None
        return result if result is not None else super().run(output, features)


class TreeShortcut:
    """A scikit-learn tree ensemble (random/extra-trees forest, HistGradientBoosting), alone or ending a
    Pipeline, whose `predict` and `predict_proba` gpuserve answers by walking all its trees at once; the
    same answers as the estimator's own (gpuserve/classic_forest.py, classic_boosting.py)."""

    def __init__(self, trees: Any, prefix: Any):
        self.trees, self.prefix = trees, prefix

    @classmethod
    def for_model(cls, model: Any) -> Optional["TreeShortcut"]:
        from gpuserve.classic_boosting import BoostingPredictor
        from gpuserve.classic_forest import ForestPredictor

        steps = getattr(model, "steps", None)
        final = steps[-1][-1] if steps else model
        trees = ForestPredictor.for_estimator(final) or BoostingPredictor.for_estimator(final)
        return None if trees is None else cls(trees, model[:-1] if steps else None)

    def run(self, output: str, features: Any) -> Any:
        """`model.<output>(features)`, or None where the model itself must answer."""
        if output not in (PREDICT, PREDICT_PROBA):
            return None
        if self.prefix is None:
            return self.trees.run(output, features)
        # as Pipeline.predict: the steps before the last transform, the last one predicts
        transformed = self.prefix.transform(features)
        result = self.trees.run(output, transformed)
        return result if result is not None else getattr(self.trees.estimator, output)(transformed)


class XGBoostModel(ClassicModel):
    """An XGBoost model saved with `save_model` (.json, .ubj or the older .bst)."""

    platform = "xgboost"
    package = "xgboost"
    wellknown = ("model.bst", "model.json", "model.ubj")
    valid_outputs = (PREDICT, PREDICT_PROBA)

    def read_artefact(self, path: Path) -> Any:
        """As MLServer: the scikit-learn interface, a regressor unless the file says it was saved from an
        XGBClassifier. A Booster saved with `save_model` thus answers `predict` as `Booster.predict`
        does (probabilities for binary:logistic), and only XGBClassifier files offer predict_proba."""
        xgb = _import("xgboost", "xgboost")
        try:
            estimator = xgb.XGBRegressor()
            estimator.load_model(str(path))
        except TypeError:  # "Loading an estimator with different type": saved from a classifier
            estimator = xgb.XGBClassifier()
            estimator.load_model(str(path))
        except xgb.core.XGBoostError as exc:
            raise ModelLoadError(f"model '{self.name}': {path.name} is not an XGBoost model: {exc}") from None
        return estimator

    def check_outputs(self, names: List[str]) -> None:
        super().check_outputs(names)
        if PREDICT_PROBA in names and not hasattr(self.model, PREDICT_PROBA):
            raise InvalidInput(f"{type(self.model).__name__} models do not support '{PREDICT_PROBA}'")

    def load(self) -> bool:
        super().load()
        from gpuserve.classic_fast import XGBoostPredictor

        self._booster_api = XGBoostPredictor.for_estimator(self.model)
        return True

    def stop(self) -> None:
        super().stop()
        self._booster_api = None

    def run(self, output: str, features: Any) -> Any:
        """NumPy features go through the Booster API (gpuserve/classic_fast.py says why), with the
        wrapper's outputs; DataFrames and anything else go to the wrapper itself."""
        fast = getattr(self, "_booster_api", None)
        if fast is None or type(features) is not np.ndarray or features.ndim != 2:
            return super().run(output, features)
        try:
            return fast.run(output, features)
        except ValueError as exc:  # wrong feature count: the request's fault, as the wrapper's
            raise InvalidInput(f"model '{self.name}' rejected the input for '{output}': {exc}") from None
        except TypeError:  # a type inplace_predict does not take: the wrapper falls back to a DMatrix
            return super().run(output, features)


class LightGBMModel(ClassicModel):
    """A LightGBM booster saved with `save_model` (model.bst by default)."""

    platform = "lightgbm"
    package = "lightgbm"
    wellknown = ("model.bst", "model.txt")
    valid_outputs = (PREDICT,)

    def read_artefact(self, path: Path) -> Any:
        lgb = _import("lightgbm", "lightgbm")
        try:
            return lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise ModelLoadError(f"model '{self.name}': {path.name} is not a LightGBM model: {exc}") from None

    def load(self) -> bool:
        super().load()
        from gpuserve.classic_fast import LightGBMPredictor

        self._booster_api = LightGBMPredictor.for_booster(self.model)
        return True

    def stop(self) -> None:
        fast, self._booster_api = getattr(self, "_booster_api", None), None
        if fast is not None:
            fast.close()
        super().stop()

    def run(self, output: str, features: Any) -> Any:
        """2-D float arrays go through LightGBM's C API (gpuserve/classic_fast.py says why), with the
        booster's own answers; anything else (and a wrong feature count, which it words) through
        `Booster.predict`."""
        import lightgbm

        from gpuserve.classic_fast import lightgbm_threads

        try:
            if output == PREDICT:
                fast = getattr(self, "_booster_api", None)
                result = fast.predict(features) if fast is not None else None
                if result is not None:
                    return result
                if hasattr(features, "shape"):  # one thread for a few rows: classic_fast.py
                    return self.model.predict(features, **lightgbm_threads(features.shape[0]))
            return super().run(output, features)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"model '{self.name}' rejected the input for '{output}': {exc}") from None
        except lightgbm.basic.LightGBMError as exc:  # e.g. the wrong number of features: the request's fault
            raise InvalidInput(f"model '{self.name}' rejected the input for '{output}': {exc}") from None


class CatboostModel(ClassicModel):
    """A CatBoost model saved with `save_model` (model.cbm or model.bin), as MLServer's mlserver_catboost serves
    it: a classifier's `predict` answers class labels. Beyond MLServer's runtime (which loads every file as a
    CatBoostClassifier and answers `predict` whatever was asked): `predict_proba` for classifiers, regressors
    answered as regressors, and an output it cannot give refused by name."""

    platform = "catboost"
    package = "catboost"
    wellknown = ("model.cbm", "model.bin")
    valid_outputs = (PREDICT, PREDICT_PROBA)
    _CLASSIFYING = ("Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll")

    def read_artefact(self, path: Path) -> Any:
        catboost = _import("catboost", "catboost")
        try:
            model = catboost.CatBoost()
            model.load_model(str(path))
        except catboost.CatBoostError as exc:
            raise ModelLoadError(f"model '{self.name}': {path.name} is not a CatBoost model: {exc}") from None
        loss = str(model.get_all_params().get("loss_function", "")).split(":")[0]
        kind = catboost.CatBoostClassifier if loss in self._CLASSIFYING or not loss else catboost.CatBoostRegressor
        estimator = kind()
        estimator.load_model(str(path))
        return estimator

    def check_outputs(self, names: List[str]) -> None:
        super().check_outputs(names)
        if PREDICT_PROBA in names and not hasattr(self.model, PREDICT_PROBA):
            raise InvalidInput(f"{type(self.model).__name__} models do not support '{PREDICT_PROBA}'")

    def run(self, output: str, features: Any) -> Any:
        import catboost

        try:
            return super().run(output, features)
        except catboost.CatBoostError as exc:  # e.g. the wrong number of features: the request's fault
            raise InvalidInput(f"model '{self.name}' rejected the input for '{output}': {exc}") from None


# The `implementation` names that reach these runtimes (merged into gpuserve.runtimes.BUILTIN_RUNTIMES).
CLASSIC_RUNTIMES = {
    "mlserver_sklearn.SKLearnModel": SKLearnModel,
    "sklearn": SKLearnModel,
    "mlserver_xgboost.XGBoostModel": XGBoostModel,
    "xgboost": XGBoostModel,
    "mlserver_lightgbm.LightGBMModel": LightGBMModel,
    "lightgbm": LightGBMModel,
    "mlserver_catboost.CatboostModel": CatboostModel,
    "catboost": CatboostModel,
    "gpuserve.runtimes_classic.CatboostModel": CatboostModel,
    "gpuserve.runtimes_classic.SKLearnModel": SKLearnModel,
    "gpuserve.runtimes_classic.XGBoostModel": XGBoostModel,
    "gpuserve.runtimes_classic.LightGBMModel": LightGBMModel,
}
