"""Spark MLlib models (a folder written by `model.save(sc, path)`, RDD-based `pyspark.mllib`), served as MLServer's
`mlserver_mllib.MLlibModel` serves them.

A model-settings.json naming `mlserver_mllib.MLlibModel` (or `mllib`) loads the folder at `parameters.uri` with
the `load` of the class `parameters.format` names: LogisticRegression, NaiveBayes, SVM, KMeans,
IsotonicRegression, LinearRegression, Lasso, RidgeRegression, DecisionTree, GradientBoostedTrees or RandomForest
(MLServer's table, mlserver-mllib 1.7.1); a missing or other format fails the load ("Invalid MLlib format for
model <name>", MLServer's words, here with the format and the known ones). As MLServer's runtime: one input only
(else a 400 with its words), one output `predict`, FP32.

Where MLServer 1.7.1's runtime is broken, this one does what it plainly meant:
- MLServer hands the model the input's `TensorData` object, which `pyspark.mllib` refuses ("Cannot convert type
  ... into Vector": a 500 on every request but IsotonicRegression's). Here the input is a NumPy array: a 1-D
  input is one feature vector (output shape [1], MLServer's declared shape), a [n, ...] input n of them (output
  shape [n]); IsotonicRegression predicts each element. A width the model refuses, or BYTES data, is a 400.
- MLServer starts a SparkContext per model, so a second MLlib model in one server fails to load (one
  SparkContext per JVM). Here every MLlib model in the process shares one (`SPARK`), reusing one already running
  (a user's own); the last model's unload stops the context this module started and ends its JVM, so unloading
  (or stopping the server) leaves no JVM behind. The Spark UI is off unless `spark.ui.enabled` is set.
- Loads and predictions run on a thread of the model's own, never on the event loop (Spark's calls block:
  a tree model's predict is a round trip to the JVM).
- A folder Spark cannot read is a load failure with Spark's first line as the reason (the model not ready, the
  others serving on), not a Py4J traceback.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from typing import Any, Callable, Dict, Optional

import numpy as np

from gpuserve.mlserver.errors import InferenceError, MLServerError
from gpuserve.mlserver.model import MLModel
from gpuserve.mlserver.settings import ModelSettings
from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from gpuserve.mlserver.utils import get_model_uri
from gpuserve.model_thread import ModelThread

try:
    from py4j.protocol import Py4JError, Py4JJavaError
    from pyspark import SparkConf, SparkContext
    from pyspark.mllib.classification import LogisticRegressionModel, NaiveBayesModel, SVMModel
    from pyspark.mllib.clustering import KMeansModel
    from pyspark.mllib.linalg import DenseVector
    from pyspark.mllib.regression import (IsotonicRegressionModel, LassoModel, LinearRegressionModel,
                                          RidgeRegressionModel)
    from pyspark.mllib.tree import DecisionTreeModel, GradientBoostedTreesModel, RandomForestModel
except ImportError as exc:  # the repository says so as the model's reason
    raise ImportError(f"serving a Spark MLlib model needs pyspark (and Java 17+): pip install 'gpuserve[mllib]' "
                      f"({exc})") from None

logger = logging.getLogger("gpuserve")

# `parameters.format` -> the class whose `load(sc, path)` reads the folder (MLServer's names)
MODEL_DICT: Dict[str, Callable[[SparkContext, str], Any]] = {
    "LogisticRegression": LogisticRegressionModel.load,
    "NaiveBayes": NaiveBayesModel.load,
    "SVM": SVMModel.load,
    "KMeans": KMeansModel.load,
    "IsotonicRegression": IsotonicRegressionModel.load,
    "LinearRegression": LinearRegressionModel.load,
    "Lasso": LassoModel.load,
    "RidgeRegression": RidgeRegressionModel.load,
    "DecisionTree": DecisionTreeModel.load,
    "GradientBoostedTrees": GradientBoostedTreesModel.load,
    "RandomForest": RandomForestModel.load,
}
OUTPUT = "predict"  # MLServer's output name
# Errors a model's predict raises for a vector it cannot take: a width the weights refuse (AssertionError,
# "dimension mismatch"), NumPy's (ValueError), a tree's index past the vector (the JVM's, via Py4J)
_INPUT_ERRORS = (AssertionError, ValueError, IndexError, TypeError, Py4JError)


class InvalidMLlibFormat(MLServerError):
    """MLServer's error (and message) for a missing or unknown `parameters.format`."""

    def __init__(self, name: str, model_uri: Optional[str] = None, detail: str = ""):
        msg = f"Invalid MLlib format for model {name}"
        if model_uri:
            msg += f" ({model_uri})"
        super().__init__(msg + detail)


class SharedSparkContext:
    """One SparkContext for the process, counted by its users (the loaded MLlib models). The first user starts
    it, unless one is already running (then it is borrowed and never stopped here); the last to leave stops the
    one started here and its JVM (pyspark keeps the JVM for the process's lifetime otherwise)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._context: Optional[SparkContext] = None
        self._owned = False

    def acquire(self) -> SparkContext:
        with self._lock:
            if self._context is None or getattr(self._context, "_jsc", None) is None:
                active = SparkContext._active_spark_context
                if active is not None:
                    self._context, self._owned = active, False
                else:
                    # MLServer's conf (the driver on loopback); no UI port nor progress bars unless asked for
                    conf = (SparkConf().setAppName("MLlibModel").set("spark.driver.host", "127.0.0.1")
                            .setIfMissing("spark.ui.enabled", "false")
                            .setIfMissing("spark.ui.showConsoleProgress", "false"))
                    try:
                        self._context, self._owned = SparkContext(conf=conf), True
                    except Exception as exc:  # no java, or one too old: pyspark's words are about a gateway
                        raise MLServerError(f"cannot start Spark for the MLlib models (pyspark 4 needs Java 17+ "
                                            f"on PATH or JAVA_HOME): {type(exc).__name__}: {exc}", 500) from None
                    logger.info("started a SparkContext (%s) for the MLlib models", self._context.master)
            self._users += 1
            return self._context

    def release(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users or self._context is None:
                return
            context, owned, self._context = self._context, self._owned, None
            if owned:
                _stop_with_jvm(context)

    @property
    def users(self) -> int:
        return self._users


def _stop_with_jvm(context: SparkContext) -> None:
    """Stop the context, then its JVM: the gateway's JVM exits when its stdin closes (PythonGatewayServer
    reads stdin until EOF). pyspark's class-level gateway is cleared so a later load starts a fresh one."""
    gateway = SparkContext._gateway
    context.stop()
    if gateway is None:
        return
    with SparkContext._lock:
        SparkContext._gateway = None
        SparkContext._jvm = None
    gateway.shutdown()
    proc = getattr(gateway, "proc", None)
    if proc is None:
        return
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    logger.info("stopped the MLlib models' SparkContext and its JVM")


SPARK = SharedSparkContext()


async def get_mllib_load(settings: ModelSettings) -> Callable[[SparkContext, str], Any]:
    """The `load` that `parameters.format` names (MLServer's function, its name kept for runtimes importing it)."""
    parameters = settings.parameters
    mllib_format = getattr(parameters, "format", None) if parameters is not None else None
    if mllib_format not in MODEL_DICT:
        given = f"'{mllib_format}' is not one of" if mllib_format else "parameters.format names none of"
        raise InvalidMLlibFormat(settings.name, detail=f": {given} {', '.join(MODEL_DICT)}")
    return MODEL_DICT[mllib_format]


class MLlibModel(MLModel):
    """A `pyspark.mllib` model behind the V2 protocol."""

    _model: Any = None
    _thread: Optional[ModelThread] = None
    _holds_spark = False

    async def load(self) -> bool:
        model_uri = await get_model_uri(self._settings)
        model_load = await get_mllib_load(self._settings)
        self._thread = ModelThread(f"gpuserve-mllib-{self.name}")
        try:
            self._model = await self._run(self._load, model_load, model_uri)
        except BaseException:
            await self.unload()
            raise
        self._pointwise = isinstance(self._model, IsotonicRegressionModel)
        return True

    def _load(self, model_load, model_uri: str):
        context = SPARK.acquire()
        self._holds_spark = True
        try:
            return model_load(context, model_uri)
        except Py4JJavaError as exc:
            raise MLServerError(f"Invalid MLlib model for model {self.name} ({model_uri}): {_java_reason(exc)}",
                                500) from None

    async def unload(self) -> bool:
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        await thread.run(self._let_go)  # after the calls queued before it, on the thread that made the model
        thread.close()
        return True

    def _let_go(self) -> None:
        """The model first (a tree model's JVM object is released through the gateway), then the context."""
        self._model = None
        if self._holds_spark:
            self._holds_spark = False
            SPARK.release()

    async def _run(self, fn, *args):
        if self._thread is None:
            raise MLServerError(f"Model {self.name} is not loaded", 503)
        return await self._thread.run(fn, *args)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        payload = self._check_request(payload)
        predictions = await self._run(self._predict, _as_array(payload))
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[ResponseOutput(name=OUTPUT, shape=[len(predictions)], datatype="FP32",
                                    data=np.asarray(predictions, dtype=np.float32))],
        )

    def _predict(self, values: np.ndarray) -> list:
        if self._pointwise:  # IsotonicRegression: one prediction per number
            rows = values.ravel()
        else:  # one feature vector, or one per row
            rows = [values.ravel()] if values.ndim <= 1 else values.reshape(values.shape[0], -1)
        model = self._model
        try:
            return [float(model.predict(row if self._pointwise else DenseVector(row))) for row in rows]
        except Py4JJavaError as exc:
            raise InferenceError(f"MLlibModel {self.name} could not predict: {_java_reason(exc)}") from None
        except _INPUT_ERRORS as exc:
            raise InferenceError(f"MLlibModel {self.name} could not predict: {exc or type(exc).__name__}") from None

    def _check_request(self, payload: InferenceRequest) -> InferenceRequest:
        if len(payload.inputs) != 1:
            raise InferenceError("MLlibModel only supports a single input tensor "
                                 f"({len(payload.inputs)} were received)")
        return payload


def _as_array(payload: InferenceRequest) -> np.ndarray:
    """The one input as float64 in its declared shape; BYTES (or anything not numbers) is the client's fault."""
    tensor = payload.inputs[0]
    if tensor.datatype == "BYTES":
        raise InferenceError(f"MLlibModel takes numbers; input {tensor.name} is BYTES")
    data = tensor.data.root if hasattr(tensor.data, "root") else tensor.data
    try:
        values = np.asarray(data, dtype=np.float64)
        return values.reshape(tensor.shape) if tensor.shape else values
    except (TypeError, ValueError) as exc:
        raise InferenceError(f"MLlibModel cannot read input {tensor.name}: {exc}") from None


def _java_reason(exc: Py4JJavaError) -> str:
    """The Java exception's first line, not the Py4J wrapper's traceback."""
    try:
        return str(exc.java_exception.toString()).splitlines()[0]
    except Exception:
        return str(exc).strip().splitlines()[-1]


__all__ = ["MLlibModel", "InvalidMLlibFormat", "MODEL_DICT", "SPARK", "SharedSparkContext", "get_mllib_load"]
