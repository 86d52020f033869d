"""Alibi-Detect detectors (a folder written by `alibi_detect.saving.save_detector`), served as MLServer's
`mlserver_alibi_detect.AlibiDetectRuntime` serves them.

A model-settings.json naming `mlserver_alibi_detect.AlibiDetectRuntime` (or `alibi_detect`) loads the folder
at `parameters.uri` with `load_detector`, so any drift or outlier detector alibi-detect can save serves. As
MLServer's runtime (1.6.1 = 1.7.1), which this one was checked against on the same folders and requests:
- `parameters.extra` holds `predict_parameters` (keywords for `detector.predict`), `batch_size` and
  `state_save_freq`, also read from `MLSERVER_MODEL_ALIBI_DETECT_*` variables; any other key fails the load;
- a request decodes by its content type, else as one NumPy array (one input only);
- each key of the answer's `data` becomes an output (NumPy-encoded, with a leading axis of one per `predict`
  run), its `meta` the answer's parameters, with the headers `x-seldon-alibi-type` / `-method`;
- with `batch_size`, requests are kept (answered with no outputs) until that many arrived, and the one that
  fills the batch gets the detector's answer for all of them merged;
- an online detector (one with `save_state`) ignores `batch_size`, sees each row of a request in turn, and
  its state is written to `<uri>/state` every `state_save_freq` steps (where `load_detector` reads it back);
- `is_drift` is recorded in the `seldon_model_drift` metric;
- a detector raising ValueError or IndexError (wrong width, bad `predict_parameters` values) is a 400.
TensorFlow detectors (a `backend='tensorflow'` drift detector, a TensorFlow `preprocess_fn`) serve as any other,
their models called on the model's thread; those alibi-detect saves in its legacy format with Keras 2 weights
(OutlierAE, OutlierVAE, ...) load only where `tf.keras` is Keras 2 (TF_USE_LEGACY_KERAS=1 with tf-keras; under
Keras 3 the reason says so).
Where it differs, on purpose: `detector.predict` runs on a thread of the model's own (one, so requests still reach
a stateful detector one at a time and in order) rather than on the event loop; an online detector's None values
(`distance`, `p_val`) go over gRPC as the bytes b"None" (MLServer fails that call: INTERNAL); a broken detector
folder is a 500 from the repository's load (MLServer 400), as any model's failed load here.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Dict, List, Optional

import numpy as np
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpuserve.metrics import log, register
from gpuserve.mlserver.batching.requests import BatchedRequests
from gpuserve.mlserver.codecs import NumpyCodec, NumpyRequestCodec
from gpuserve.mlserver.errors import InferenceError, MLServerError
from gpuserve.mlserver.model import MLModel
from gpuserve.mlserver.settings import ModelSettings
from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput
from gpuserve.mlserver.utils import get_model_uri
from gpuserve.model_thread import ModelThread, close_thread

try:
    from alibi_detect.saving import load_detector
except ImportError as exc:  # the repository says so as the model's reason
    raise ImportError(f"serving an Alibi-Detect detector needs alibi-detect: pip install 'gpuserve[alibi-detect]' "
                      f"({exc})") from None

logger = logging.getLogger("gpuserve")

ENV_PREFIX_ALIBI_DETECT_SETTINGS = "MLSERVER_MODEL_ALIBI_DETECT_"  # MLServer's, so its deployments' variables work
DRIFT_METRIC = "seldon_model_drift"
# alibi_detect.<cd|od|ad>.<method>: the first part names the detector's kind in the answer's headers
ALIBI_MODULE_NAMES = {"cd": "drift", "od": "outlier", "ad": "adversarial"}


class AlibiDetectSettings(BaseSettings):
    """The runtime's own settings, from `parameters.extra` (pydantic-settings' default `extra="forbid"`, as
    MLServer's: a misspelt key fails the load instead of being ignored)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX_ALIBI_DETECT_SETTINGS)

    predict_parameters: dict = {}
    """Keywords for the detector's `predict`."""

    batch_size: Optional[int] = None
    """Run the detector once this many requests arrived; the others are answered with no outputs (not held,
    unlike adaptive batching). Ignored by online detectors."""

    state_save_freq: Optional[int] = Field(100, gt=0)
    """An online detector's state is saved after every this many steps."""


class AlibiDetectRuntime(MLModel):
    """An alibi-detect detector behind the V2 protocol."""

    def __init__(self, settings: ModelSettings):
        super().__init__(settings)
        parameters = self._settings.parameters
        extra = (parameters.extra or {}) if parameters is not None else {}
        self._ad_settings = AlibiDetectSettings(**extra)  # a ValidationError: the model does not load
        self._batch: List[InferenceRequest] = []
        self._model: Any = None
        self._online = False

    async def load(self) -> bool:
        self._model_uri = await get_model_uri(self._settings)
        self._thread = ModelThread(f"gpuserve-alibi-{self.name}")
        try:
            self._model = await self._thread.run(load_detector, self._model_uri)
        except (ValueError, FileNotFoundError, EOFError, NotImplementedError, ValidationError) as exc:
            close_thread(self)
            # MLServer's words and status (400 from the repository's load; the model stays not ready)
            raise MLServerError(f"Invalid configuration for model {self.name}: {exc}{_keras2_hint(exc)}") from None
        except BaseException:
            close_thread(self)
            raise
        register(DRIFT_METRIC, "Drift metrics")
        self._online = hasattr(self._model, "save_state")  # online drift detectors keep state between calls
        return True

    async def unload(self) -> bool:
        close_thread(self)
        self._model = None
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if self._online or not self._ad_settings.batch_size:
            return await self._thread.run(self._detect, payload)  # (in the request's context: the metric's labels)
        # The batch is only touched here, on the event loop, so concurrent requests cannot interleave in it
        if len(self._batch) < self._ad_settings.batch_size:
            self._batch.append(payload)
        if len(self._batch) >= self._ad_settings.batch_size:
            batched = BatchedRequests({str(i): request for i, request in enumerate(self._batch)}).merged_request
            self._batch = []
            return await self._thread.run(self._detect, batched)
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[])

    def _detect(self, payload: InferenceRequest) -> InferenceResponse:
        decoded = self.decode_request(payload, default_codec=NumpyRequestCodec)
        X = np.array(decoded)
        # An online detector takes one instance per step: each row of the request in turn. Any other takes
        # the whole array at once.
        runs = [X] if not self._online or len(decoded) == 1 else X
        predictions = []
        for x in runs:
            try:
                prediction = self._model.predict(x, **self._ad_settings.predict_parameters)
            except (ValueError, IndexError) as exc:
                raise InferenceError(f"Invalid predict parameters for model {self.name}: {exc}") from None
            predictions.append(prediction)
            _log_drift(prediction)
            if self._online and self._model.t > 0 and self._model.t % self._ad_settings.state_save_freq == 0:
                self._save_state()
        return self._encode(predictions)

    def _encode(self, predictions: List[dict]) -> InferenceResponse:
        """One output per key of `data`, each the list of that key's values over the `predict` runs (so a
        leading axis of one for a single run), and `meta` (the detector's own) as the parameters."""
        data: Dict[str, list] = {key: [p["data"][key] for p in predictions] for key in predictions[0]["data"]}
        meta = predictions[0]["meta"]
        meta["headers"] = {"x-seldon-alibi-type": self.alibi_type, "x-seldon-alibi-method": self.alibi_method}
        outputs = [_encode_output(key, np.array(values)) for key, values in data.items()]
        return InferenceResponse(model_name=self.name, model_version=self.version, parameters=meta, outputs=outputs)

    def _save_state(self) -> None:
        try:
            self._model.save_state(os.path.join(self._model_uri, "state"))
        except Exception as exc:
            raise MLServerError(f"Error whilst attempting to save state for model {self.name}: {exc}") from None

    @functools.cached_property
    def alibi_method(self) -> str:
        """The detector's module, e.g. `ks` for alibi_detect.cd.ks.KSDrift."""
        return type(self._model).__module__.split(".")[-1]

    @functools.cached_property
    def alibi_type(self) -> str:
        parts = type(self._model).__module__.split(".")
        return ALIBI_MODULE_NAMES.get(parts[-2] if len(parts) > 1 else "", "unknown")


def _encode_output(name: str, values: np.ndarray) -> ResponseOutput:
    """NumPy-encoded, as MLServer's; an online detector's `distance` and `p_val` are None (an object array),
    which MLServer's codec sends as BYTES elements that are JSON nulls: so here too, where gpuserve's NumPy
    codec would refuse them as not bytes."""
    if values.dtype != object or not any(item is None for item in values.flat):
        return NumpyCodec.encode_output(name=name, payload=values)
    shape = list(values.shape) + ([1] if values.ndim == 1 else [])  # as the codec: a column for one axis
    return ResponseOutput(name=name, shape=shape, datatype="BYTES", data=values.ravel().tolist(),
                          parameters=Parameters(content_type=NumpyCodec.ContentType))


def _keras2_hint(exc: BaseException) -> str:
    """What to do when Keras 3 refuses a TensorFlow checkpoint: alibi-detect's legacy format (every outlier and
    adversarial detector with a TensorFlow model: OutlierAE, OutlierVAE, ...) saves its weights with Keras 2's
    `save_weights` (`model/*.ckpt`), which Keras 3 (`tf.keras` from TensorFlow 2.16 on) neither writes nor reads."""
    if "Keras 3" not in str(exc) or ".ckpt" not in str(exc):
        return ""
    return (" (a TensorFlow checkpoint written by Keras 2, alibi-detect's legacy format: serve it with tf-keras "
            "installed and TF_USE_LEGACY_KERAS=1 set before gpuserve starts, so that tf.keras is Keras 2)")


def _log_drift(prediction: dict) -> None:
    """Each `is_drift` value (one, or one per feature) as an observation of the drift metric."""
    is_drift = prediction.get("data", {}).get("is_drift")
    if is_drift is None:
        return
    for value in ([is_drift] if isinstance(is_drift, int) else is_drift):
        log(**{DRIFT_METRIC: value})


__all__ = ["AlibiDetectRuntime", "AlibiDetectSettings"]
