"""The runtime: its settings, the explainer's load (built or saved; predictor or model), and each explanation on
the model's own thread (see the package's docstring for what is MLServer's and what differs)."""

from __future__ import annotations

import functools
from importlib import import_module
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
from alibi.saving import load_explainer
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpuserve.mlserver.codecs import NumpyRequestCodec, StringCodec
from gpuserve.mlserver.errors import InferenceError, MLServerError
from gpuserve.mlserver.handlers import custom_handler
from gpuserve.mlserver.model import MLModel
from gpuserve.mlserver.settings import ModelSettings
from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, Parameters
from gpuserve.mlserver.utils import get_model_uri
from gpuserve.model_thread import ModelThread, close_thread
from gpuserve.runtimes_alibi_explain.compat import alibi_on_numpy2, explanation_json, shap_as_lists
from gpuserve.runtimes_alibi_explain.remote import RemoteModel

alibi_on_numpy2()

ENV_PREFIX_ALIBI_EXPLAIN_SETTINGS = "MLSERVER_MODEL_ALIBI_EXPLAIN_"  # MLServer's, so its deployments' variables work
EXPLAIN_PARAMETERS_TAG = "explain_parameters"
BLACK_BOX, WHITE_BOX, KERAS = "black_box", "white_box", "keras"
# explainer_type -> how the explainer reaches the model, and its alibi class (MLServer's table)
EXPLAINERS = {
    "anchor_image": (BLACK_BOX, "alibi.explainers.AnchorImage"),
    "anchor_tabular": (BLACK_BOX, "alibi.explainers.AnchorTabular"),
    "anchor_text": (BLACK_BOX, "alibi.explainers.AnchorText"),
    "kernel_shap": (BLACK_BOX, "alibi.explainers.KernelShap"),
    "integrated_gradients": (KERAS, "alibi.explainers.IntegratedGradients"),
    "tree_shap": (WHITE_BOX, "alibi.explainers.TreeShap"),
    "tree_partial_dependence": (WHITE_BOX, "alibi.explainers.TreePartialDependence"),
    "tree_partial_dependence_variance": (WHITE_BOX, "alibi.explainers.PartialDependenceVariance"),
}


class AlibiExplainSettings(BaseSettings):
    """The runtime's own settings, from `parameters.extra` (pydantic-settings' default `extra="forbid"`, as
    MLServer's: a misspelt key fails the load instead of being ignored)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX_ALIBI_EXPLAIN_SETTINGS)

    infer_uri: str
    """The inference model's V2 infer URL (black box), its joblib file (tree explainers) or its Keras file
    (`integrated_gradients`: `.keras`, or `.h5`)."""
    explainer_type: str
    explainer_batch: Optional[bool] = False
    """Explain the whole request at once; otherwise only its first row."""
    infer_output: Optional[str] = None
    """The inference model's output to explain (default: the first its metadata lists)."""
    init_parameters: Optional[dict] = None
    """Build the explainer with these keywords instead of loading it from `parameters.uri`."""
    ssl_verify_path: Optional[str] = None


class AlibiExplainRuntime(MLModel):
    """An alibi explainer behind the V2 protocol; the model it explains is reached at `infer_uri`."""

    def __init__(self, settings: ModelSettings):
        super().__init__(settings)
        parameters = self._settings.parameters
        extra = (parameters.extra or {}) if parameters is not None else {}
        self.alibi_explain_settings = AlibiExplainSettings(**extra)  # a ValidationError: the model does not load
        explainer_type = self.alibi_explain_settings.explainer_type
        if explainer_type not in EXPLAINERS:
            raise MLServerError(f"Invalid explainer_type '{explainer_type}' for model {self.name}: one of "
                                f"{', '.join(EXPLAINERS)}")
        self._kind, self._alibi_class = EXPLAINERS[explainer_type]
        self.infer_uri = self.alibi_explain_settings.infer_uri
        self._remote: Optional[RemoteModel] = None
        self._thread: Optional[ModelThread] = None
        self._model: Any = None
        self._keras_model: Any = None  # integrated_gradients: the Keras model, called for its predicted class

    async def load(self) -> bool:
        self._thread = ModelThread(f"gpuserve-explain-{self.name}")
        try:
            self._model = await self._thread.run(self._load_explainer, await self._explainer_uri())
        except BaseException:
            self._close()
            raise
        return True

    async def _explainer_uri(self) -> Optional[str]:
        """None with `init_parameters`; else `parameters.uri` (the model's folder when it names none)."""
        if self.alibi_explain_settings.init_parameters is not None:
            return None
        return await get_model_uri(self._settings)

    def _load_explainer(self, uri: Optional[str]):
        """On the model's thread: the predictor (black box) or the model (white box), then the explainer built
        with it or loaded from `uri`. alibi's own refusals become the model's reason, named."""
        if self._kind == BLACK_BOX:
            settings = self.alibi_explain_settings
            target = self._remote = RemoteModel(self.infer_uri, settings.infer_output, settings.ssl_verify_path)
            self._remote.loading = True  # AnchorTabular, AnchorImage and KernelShap call it as they load
        elif self._kind == KERAS:
            target = self._keras_model = self._load_keras_model()
        else:
            target = self._inference_model()
        try:
            if uri is None:
                module, _, name = self._alibi_class.rpartition(".")
                explainer_class = getattr(import_module(module), name)
                try:
                    return explainer_class(target, **self.alibi_explain_settings.init_parameters)
                except MLServerError:
                    raise
                except Exception as exc:
                    raise MLServerError(f"Invalid init_parameters for {name} (model {self.name}): "
                                        f"{type(exc).__name__}: {exc}") from None
            try:
                return load_explainer(uri, predictor=target)
            except MLServerError:
                raise
            except Exception as exc:
                raise MLServerError(f"Invalid explainer at {uri} for model {self.name}: "
                                    f"{type(exc).__name__}: {exc}") from None
        finally:
            if self._remote is not None:
                self._remote.loading = False

    def _inference_model_path(self) -> Path:
        """A white-box explainer's model file: `infer_uri`, beside model-settings.json when relative and not
        found from the working directory (MLServer: from the working directory only)."""
        path = Path(self.infer_uri)
        if not path.is_absolute() and not path.exists() and self._settings.folder:
            path = Path(self._settings.folder) / path
        return path

    def _inference_model(self) -> Any:
        """A tree explainer's model: the joblib file at `infer_uri`."""
        import joblib

        try:
            return joblib.load(self._inference_model_path())
        except Exception as exc:
            raise MLServerError(f"Invalid URI {self.infer_uri} for model {self.name}: {exc}") from None

    def _load_keras_model(self) -> Any:
        """IntegratedGradients' model, as MLServer's `tf.keras.models.load_model(infer_uri)`: a `.keras` file,
        or `.h5` (Keras 3, TensorFlow's `tf.keras` since 2.16, loads no SavedModel folder; under
        TF_USE_LEGACY_KERAS=1 with tf-keras installed, Keras 2 does). TensorFlow is imported here, on the
        model's thread, and only for this explainer."""
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise MLServerError(f"explainer_type 'integrated_gradients' explains a TensorFlow/Keras model and needs "
                                f"tensorflow: pip install 'gpuserve[tensorflow]' (model {self.name}: {exc})") from None
        path = self._inference_model_path()
        if not path.exists():
            raise MLServerError(f"Invalid URI {self.infer_uri} for model {self.name}: no such file or folder (a "
                                f"Keras model file: .keras or .h5)")
        try:
            return tf.keras.models.load_model(str(path))
        except Exception as exc:
            raise MLServerError(f"Invalid URI {self.infer_uri} for model {self.name}: not a Keras model that "
                                f"tf.keras {getattr(tf.keras, '__version__', '')} loads: "
                                f"{type(exc).__name__}: {exc}") from None

    def _predicted_class(self, input_data: Any) -> np.ndarray:
        try:
            return np.asarray(self._keras_model(input_data)).argmax(axis=1)
        except (ValueError, IndexError, TypeError) as exc:
            raise InferenceError(f"model {self.name} cannot explain this input: {type(exc).__name__}: {exc}") \
                from None

    async def unload(self) -> bool:
        self._close()
        self._model = self._keras_model = None
        return True

    def _close(self) -> None:
        close_thread(self)
        if self._remote is not None:
            self._remote.close()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """An explanation of the request's data (MLServer treats the explainer as the model)."""
        input_data = self.decode_request(payload, default_codec=NumpyRequestCodec)
        if type(input_data).__name__ == "DataFrame":
            input_data = np.array(input_data)
        explain_parameters = {}
        if payload.parameters is not None:
            explain_parameters = payload.parameters.model_dump().get(EXPLAIN_PARAMETERS_TAG) or {}
        if not isinstance(explain_parameters, dict):
            raise InferenceError(f"{EXPLAIN_PARAMETERS_TAG} must be an object, not {explain_parameters!r}")
        explanation = await self._thread.run(self._explain_impl, input_data, explain_parameters)
        output = StringCodec.encode_output(payload=[explanation_json(explanation)], name="explanation")
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[output],
                                 parameters=Parameters(headers={"x-seldon-alibi-type": "explanation",
                                                                "x-seldon-alibi-method": self.alibi_method}))

    def _explain_impl(self, input_data: Any, explain_parameters: Dict):
        if self._kind == BLACK_BOX and not self.alibi_explain_settings.explainer_batch:
            if len(input_data) == 0:
                raise InferenceError(f"model {self.name}: nothing to explain (no rows)")
            input_data = input_data[0]  # anchors explain one instance; a request always has a batch axis
        if self._kind == KERAS and "target" not in explain_parameters:
            # as MLServer's: the class the model predicts for each row (a request's own `target` wins; MLServer
            # passes both and fails)
            explain_parameters = {**explain_parameters, "target": self._predicted_class(input_data)}
        shap_as_lists(self._model)
        try:
            return self._model.explain(input_data, **explain_parameters)
        except (ValueError, IndexError) as exc:
            raise InferenceError(f"model {self.name} cannot explain this input: {type(exc).__name__}: {exc}") \
                from None

    @custom_handler(rest_path="/explain")
    async def explain_v1_output(self, request: InferenceRequest):
        """MLServer's `/explain`: the explanation as plain JSON (its legacy answer; one model per server)."""
        from fastapi import Response

        answer = await self.predict(request)
        data = answer.outputs[0].data
        explanation = list(data.root if hasattr(data, "root") else data)[0]
        if isinstance(explanation, bytes):
            explanation = explanation.decode("utf-8")
        return Response(content=explanation, media_type="application/json")

    @functools.cached_property
    def alibi_method(self) -> str:
        """The explainer's module, e.g. `anchor_tabular` for alibi.explainers.anchors.anchor_tabular."""
        return type(self._model).__module__.split(".")[-1]
