"""MLflow models (a folder with an `MLmodel` file), served as MLServer's MLflow runtime serves them.

A model-settings.json naming `mlserver_mlflow.MLflowRuntime` (or `mlflow`), or whose `parameters.uri` is
a folder holding `MLmodel`, loads the model with `mlflow.pyfunc.load_model`, so every flavour with a
pyfunc form serves (scikit-learn, XGBoost, PyTorch, a custom `PythonModel`, ...). As MLServer:
- the signature becomes the V2 metadata, and a request decodes by the content type it implies (a
  DataFrame for column signatures, an array or a dict of arrays for tensor ones; gpuserve/mlflow_schema.py);
- a request's custom parameters reach `predict(data, params=...)`;
- MLflow's own scoring protocol is served beside V2: `POST /invocations` (`dataframe_split`,
  `dataframe_records`, `instances`, `inputs`, CSV), `GET /ping`, `/health` and `/version`.
Where it differs, on purpose: a request with no content type for a model with no signature reaches
`predict` as an array (one input) or a dict of arrays (MLServer passes its request object); `predict`
runs on a thread of the model's own (one, so a pyfunc model that is not thread-safe is called as MLServer
calls it, one request at a time), never on the event loop; an answer that is a pandas Series or a list
goes out as one tensor (MLServer has no codec for either and fails the request); a model error MLflow
blames on the input (schema enforcement) is a 400 in MLflow's words, any other a 500 (MLServer: 500 for
both); /invocations answers as MLflow's own scoring server (415 for a content type it does not read, 400 with
MLflow's error fields for a body that is not JSON) where MLServer answers 400 and 500.
benchmarks/peers/mlflow_conformance.py asks both the same.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import numpy as np

from gpuserve.errors import InvalidInput, ModelLoadError
from gpuserve.mlserver.codecs import NumpyRequestCodec
from gpuserve.mlserver.handlers import custom_handler
from gpuserve.mlserver.model import MLModel
from gpuserve.mlserver.settings import ModelParameters
from gpuserve.mlserver.types import InferenceRequest, InferenceResponse
from gpuserve.mlserver.utils import get_model_uri
from gpuserve.model_thread import ModelThread, close_thread

try:
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
except ImportError as exc:  # the repository says so as the model's reason
    raise ImportError(f"serving an MLflow model needs MLflow: pip install 'gpuserve[mlflow]' ({exc})") from None

from fastapi import Request, Response  # noqa: E402  (after the MLflow check, which names the fix)

from gpuserve.mlflow_schema import (  # noqa: E402
    INPUT_PREFIX,
    OUTPUT_PREFIX,
    TensorDictCodec,
    metadata_tensors,
    request_content_type,
)

logger = logging.getLogger("gpuserve")


def _input_fault(exc: BaseException) -> bool:
    """Whether MLflow blames the caller's data: its schema checks raise these codes."""
    return isinstance(exc, MlflowException) and exc.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")


class MLflowRuntime(MLModel):
    """An MLflow pyfunc model behind the V2 protocol and MLflow's own scoring routes."""

    # `params` apply to a whole predict call: with adaptive batching, only requests asking with the same
    # parameters share a batch, which gets them as they are (not gpuserve's lists of each request's value)
    batches_by_parameters = True

    async def load(self) -> bool:
        uri = await get_model_uri(self._settings)
        self._thread = ModelThread(f"gpuserve-mlflow-{self.name}")
        try:
            self._model = await self._thread.run(_load_one_at_a_time, uri)
        except BaseException as exc:
            close_thread(self)  # no unload follows a failed load: its thread goes now
            if isinstance(exc, MlflowException):
                raise ModelLoadError(f"MLflow cannot load '{uri}': {exc.message}") from None
            raise
        self._input_schema = self._model.metadata.get_input_schema()
        self._adopt_signature(self._model.metadata.signature)
        _walk_trees_here(self._model)
        return True

    def _adopt_signature(self, signature: Any) -> None:
        """The signature's inputs, outputs and request content type replace what the settings said, as in
        MLServer (which warns; so does this)."""
        if signature is None:
            return
        if self.inputs or self.outputs:
            logger.warning("model '%s': its MLflow signature replaces the inputs and outputs in its settings",
                           self.name)
        self.inputs = metadata_tensors(signature.inputs, INPUT_PREFIX)
        self.outputs = metadata_tensors(signature.outputs, OUTPUT_PREFIX)
        if self._settings.parameters is None:
            self._settings.parameters = ModelParameters()
        content_type = request_content_type(signature.inputs)
        if self._settings.parameters.content_type and self._settings.parameters.content_type != content_type:
            logger.warning("model '%s': its MLflow signature sets the request content type to '%s'", self.name,
                           content_type)
        self._settings.parameters.content_type = content_type

    async def unload(self) -> bool:
        close_thread(self)
        self._model = None
        return True

    # V2 -----------------------------------------------------------------------------------------
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # Without a content type (no signature, none sent) MLServer hands the model the request object
        # itself, which no pyfunc model reads: here one input is an array, several a dict of arrays.
        data = self.decode_request(payload, default_codec=NumpyRequestCodec if len(payload.inputs) == 1
                                   else TensorDictCodec)
        # `content_type` and `headers` are declared fields of Parameters, so never among the model's params
        params = (payload.parameters.model_extra or None) if payload.parameters is not None else None
        try:
            output = await self._thread.run(self._model.predict, data, params=params)
        except MlflowException as exc:
            if _input_fault(exc):
                raise InvalidInput(f"model '{self.name}': {exc.message}") from None
            raise
        return self.encode_response(_encodable(output), default_codec=TensorDictCodec)

    # MLflow's scoring server --------------------------------------------------------------------
    @custom_handler(rest_path="/ping", rest_method="GET")
    async def ping(self) -> Response:
        return Response(content="\n", media_type="application/json")

    @custom_handler(rest_path="/health", rest_method="GET")
    async def health(self) -> Response:
        return Response(content="\n", media_type="application/json")

    @custom_handler(rest_path="/version", rest_method="GET")
    async def mlflow_version(self) -> Response:
        return Response(content=mlflow.__version__, media_type="application/json")

    @custom_handler(rest_path="/invocations")
    async def invocations(self, request: Request) -> Response:
        """MLflow's own parsing and answer (mlflow.pyfunc.scoring_server.invocations), so a client of
        `mlflow models serve` gets what it gets there: `{"predictions": ...}`, 415 for a content type it
        does not read, and MLflow's `{"error_code", "message"}` for bad input; every refusal also carries
        gpuserve's `error` (MLflow writes the 415 as plain text; here it is `{"error": ...}`)."""
        from mlflow.pyfunc import scoring_server

        body = await request.body()
        content_type = request.headers.get("content-type", "")
        try:
            answer = await self._thread.run(scoring_server.invocations, body, content_type, self._model,
                                            self._input_schema)
        except MlflowException as exc:
            status = exc.get_http_status_code() if _input_fault(exc) else 500
            error = json.loads(exc.serialize_as_json())
            return Response(content=json.dumps({"error": exc.message, **error}), status_code=status,
                            media_type="application/json")
        except RecursionError:  # JSON nested deeper than MLflow's parser goes: the client's body
            return Response(content=json.dumps({"error": "the request body nests too deeply to read"}),
                            status_code=400, media_type="application/json")
        if answer.status >= 400:  # MLflow writes these as plain text; gpuserve's REST errors are JSON
            return Response(content=json.dumps({"error": answer.response}), status_code=answer.status,
                            media_type="application/json")
        return Response(content=answer.response, status_code=answer.status, media_type=answer.mimetype)


# MLflow swaps a stand-in `dbutils` module into sys.modules while it loads a model saved from code, and puts
# back what it found: two such loads at once (a repository's models load together) leave a stand-in there for
# good, which breaks code that walks sys.modules (clean-clone CI: hypothesis). One load at a time.
_LOADING = threading.Lock()


def _load_one_at_a_time(uri: str) -> Any:
    with _LOADING:
        return mlflow.pyfunc.load_model(uri)


def _encodable(output: Any) -> Any:
    """A pandas Series or a list as one array; what MLServer's codecs take as it is."""
    if isinstance(output, list):
        return np.asarray(output)
    to_numpy = getattr(output, "to_numpy", None)
    if to_numpy is not None and getattr(output, "ndim", 0) == 1:  # a Series (a DataFrame has its own codec)
        return to_numpy()
    return output


def _walk_trees_here(model: Any) -> None:
    """A scikit-learn tree ensemble saved by MLflow predicts through gpuserve's walk of all its trees at once,
    as `mlserver_sklearn.SKLearnModel` folders do here (gpuserve/runtimes_classic.py): the same answers, one
    forest row 2.5-6 ms -> 0.1 ms. MLflow's own path is kept around it (schema checks, output handling); only
    the estimator its scikit-learn flavour calls is replaced. Other flavours, and MLflow releases without that
    wrapper, are served as they are."""
    from gpuserve.runtimes_classic import TreeShortcut

    wrapper = getattr(model, "_model_impl", None)
    estimator = getattr(wrapper, "sklearn_model", None)
    if estimator is None or isinstance(estimator, _Walked):
        return
    shortcut = TreeShortcut.for_model(estimator)
    if shortcut is not None:
        wrapper.sklearn_model = _Walked(estimator, shortcut)


class _Walked:
    """The estimator, its `predict` and `predict_proba` answered by the tree walk where it takes the input;
    everything else (and every other input) the estimator's own."""

    def __init__(self, estimator: Any, shortcut: Any):
        self._estimator, self._shortcut = estimator, shortcut

    def predict(self, x, *args, **kwargs):
        result = None if args or kwargs else self._shortcut.run("predict", x)
        return result if result is not None else self._estimator.predict(x, *args, **kwargs)

    def predict_proba(self, x, *args, **kwargs):
        result = None if args or kwargs else self._shortcut.run("predict_proba", x)
        return result if result is not None else self._estimator.predict_proba(x, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._estimator, name)
