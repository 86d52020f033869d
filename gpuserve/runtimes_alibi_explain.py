"""Alibi-Explain explainers served as MLServer's `mlserver_alibi_explain.AlibiExplainRuntime` serves them.

A model-settings.json naming `mlserver_alibi_explain.AlibiExplainRuntime` (or `alibi_explain`) serves one
explainer; `parameters.extra` (or `MLSERVER_MODEL_ALIBI_EXPLAIN_*` variables) says which (`explainer_type`)
and where the model it explains is (`infer_uri`). As MLServer's runtime (1.7.1, read and compared):
- a black-box explainer (`anchor_tabular`, `anchor_text`, `anchor_image`, `kernel_shap`) asks the inference
  model over V2 REST at `infer_uri`: one GET of its metadata (`infer_uri` less `/infer`: the first input's
  name, the first output unless `infer_output` names one), then a POST per predictor call, the array
  NumPy-encoded (strings for AnchorText), the answer's first output decoded with a trailing axis of one
  dropped;
- a white-box explainer (`tree_shap`, `tree_partial_dependence`, `tree_partial_dependence_variance`) gets the
  model itself: `infer_uri` is then the path of a joblib file (an sklearn-API tree model);
- the explainer is built from `init_parameters` (with the predictor or model first; not fitted) or, without
  them, loaded from `parameters.uri` with `alibi.saving.load_explainer`;
- a request decodes as one NumPy array (or by its content type); unless `explainer_batch`, only its first row
  is explained; the request's `parameters.explain_parameters` are the keywords of `explain` (settings hold
  none: MLServer's settings refuse unknown keys, and so do these);
- the answer is one BYTES output `explanation`, shape [1, 1], content type `str`: `Explanation.to_json()`,
  with the headers `x-seldon-alibi-type: explanation` and `x-seldon-alibi-method` (the explainer's module);
  `POST /explain` answers the same explanation as plain JSON.
Where it differs, on purpose: each explanation runs on a thread of the model's own (one, so an explainer's
state is never shared by two requests), never on the event loop, so an `infer_uri` on this same server is
answered while the explainer waits for it; every remote call has a timeout (`INFER_TIMEOUT_S`, or
`GPUSERVE_ALIBI_EXPLAIN_TIMEOUT`), so an unreachable model is an error answer (502, the reason named) and not a
hang; while the explainer loads (AnchorTabular and KernelShap call their predictor then) an inference model that
is not loaded yet is waited for (`LOAD_WAIT_S`; a refused connection `CONNECT_WAIT_S`), so both can load
together from one folder; the explainer's own refusals of the
input (ValueError, IndexError) and the inference model's 4xx are a 400.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import re
import time
import uuid
from importlib import import_module
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpuserve.datatypes import from_numpy_dtype, to_numpy_dtype
from gpuserve.mlserver.codecs import NumpyRequestCodec, StringCodec
from gpuserve.mlserver.errors import InferenceError, MLServerError
from gpuserve.mlserver.handlers import custom_handler
from gpuserve.mlserver.model import MLModel
from gpuserve.mlserver.settings import ModelSettings
from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, Parameters
from gpuserve.mlserver.utils import get_model_uri

try:
    import httpx
    from alibi.saving import load_explainer
except ImportError as exc:  # the repository says so as the model's reason
    raise ImportError(f"serving an Alibi-Explain explainer needs alibi: pip install 'gpuserve[alibi-explain]' "
                      f"({exc})") from None

logger = logging.getLogger("gpuserve")


def _quantiles(values: np.ndarray, num_quantiles: int = 11, interpolation="linear") -> np.ndarray:
    """alibi.explainers.ale.get_quantiles with NumPy 2's keyword (`method`; `interpolation` is gone)."""
    return np.percentile(values, np.linspace(0, 100, num=num_quantiles), axis=0, method=interpolation)


def _alibi_on_numpy2() -> None:
    """alibi 0.9 computes a partial dependence's deciles with `np.percentile(interpolation=)`, which NumPy 2
    removed: the two modules that name that helper get one that says `method=` (the same numbers)."""
    if int(np.__version__.split(".")[0]) < 2:
        return
    import alibi.explainers.ale as ale
    import alibi.explainers.partial_dependence as partial_dependence

    ale.get_quantiles = partial_dependence.get_quantiles = _quantiles


_alibi_on_numpy2()

ENV_PREFIX_ALIBI_EXPLAIN_SETTINGS = "MLSERVER_MODEL_ALIBI_EXPLAIN_"  # MLServer's, so its deployments' variables work
EXPLAIN_PARAMETERS_TAG = "explain_parameters"
SELDON_SKIP_LOGGING_HEADER = "Seldon-Skip-Logging"
DEFAULT_INPUT_NAME = "predict"  # what the inference model's input is called when its metadata names none
INFER_TIMEOUT_S = float(os.environ.get("GPUSERVE_ALIBI_EXPLAIN_TIMEOUT", 60))
LOAD_WAIT_S = 60.0  # how long a load waits for an inference model that answers "not (yet) loaded": 404, 503
CONNECT_WAIT_S = 5.0  # ... and for one whose server refuses the connection (not listening yet)

BLACK_BOX, WHITE_BOX = "black_box", "white_box"
# explainer_type -> how the explainer reaches the model, and its alibi class (MLServer's table)
EXPLAINERS = {
    "anchor_image": (BLACK_BOX, "alibi.explainers.AnchorImage"),
    "anchor_tabular": (BLACK_BOX, "alibi.explainers.AnchorTabular"),
    "anchor_text": (BLACK_BOX, "alibi.explainers.AnchorText"),
    "kernel_shap": (BLACK_BOX, "alibi.explainers.KernelShap"),
    "integrated_gradients": ("tensorflow", "alibi.explainers.IntegratedGradients"),
    "tree_shap": (WHITE_BOX, "alibi.explainers.TreeShap"),
    "tree_partial_dependence": (WHITE_BOX, "alibi.explainers.TreePartialDependence"),
    "tree_partial_dependence_variance": (WHITE_BOX, "alibi.explainers.PartialDependenceVariance"),
}


class AlibiExplainSettings(BaseSettings):
    """The runtime's own settings, from `parameters.extra` (pydantic-settings' default `extra="forbid"`, as
    MLServer's: a misspelt key fails the load instead of being ignored)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX_ALIBI_EXPLAIN_SETTINGS)

    infer_uri: str
    """The inference model's V2 infer URL (black box), or its joblib file (white box)."""
    explainer_type: str
    explainer_batch: Optional[bool] = False
    """Explain the whole request at once; otherwise only its first row."""
    infer_output: Optional[str] = None
    """The inference model's output to explain (default: the first its metadata lists)."""
    init_parameters: Optional[dict] = None
    """Build the explainer with these keywords instead of loading it from `parameters.uri`."""
    ssl_verify_path: Optional[str] = None


class RemoteInferenceError(MLServerError):
    """The inference model answered with an error (MLServer's words; its status is kept when a 4xx)."""

    def __init__(self, code: int, reason: str):
        super().__init__(f"Remote inference call failed with {code}, {reason}", 400 if code < 500 else 502)


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
        self._metadata: Optional[dict] = None
        self._http: Optional[httpx.Client] = None
        self._loading = False
        self._model: Any = None

    async def load(self) -> bool:
        if self._kind == "tensorflow":
            raise MLServerError(f"explainer_type '{self.alibi_explain_settings.explainer_type}' needs a TensorFlow "
                                f"model, which gpuserve does not serve (model {self.name})")
        verify = self.alibi_explain_settings.ssl_verify_path or True
        self._http = httpx.Client(timeout=INFER_TIMEOUT_S, verify=verify)
        self._calls = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"gpuserve-explain-{self.name}")
        try:
            self._model = await self._run(self._load_explainer, await self._explainer_uri())
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
        with it or loaded from `uri`. Alibi's own refusals become the model's reason, named."""
        target = self._infer_impl if self._kind == BLACK_BOX else self._inference_model()
        self._loading = True
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
            self._loading = False

    def _inference_model(self) -> Any:
        """A white-box explainer's model: the joblib file at `infer_uri` (beside model-settings.json when
        relative and not found from the working directory)."""
        import joblib

        path = Path(self.infer_uri)
        if not path.is_absolute() and not path.exists() and self._settings.folder:
            path = Path(self._settings.folder) / path
        try:
            return joblib.load(path)
        except Exception as exc:
            raise MLServerError(f"Invalid URI {self.infer_uri} for model {self.name}: {exc}") from None

    async def unload(self) -> bool:
        self._close()
        self._model = None
        return True

    def _close(self) -> None:
        calls = getattr(self, "_calls", None)
        if calls is not None:
            calls.shutdown(wait=False)
        if self._http is not None:
            self._http.close()
            self._http = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._calls, functools.partial(fn, *args))

    # -- explaining --------------------------------------------------------------------------------------------

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
        explanation = await self._run(self._explain_impl, input_data, explain_parameters)
        output = StringCodec.encode_output(payload=[explanation_json(explanation)], name="explanation")
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[output],
                                 parameters=Parameters(headers={"x-seldon-alibi-type": "explanation",
                                                                "x-seldon-alibi-method": self.alibi_method}))

    def _explain_impl(self, input_data: Any, explain_parameters: Dict):
        if self._kind == BLACK_BOX and not self.alibi_explain_settings.explainer_batch:
            if len(input_data) == 0:
                raise InferenceError(f"model {self.name}: nothing to explain (no rows)")
            input_data = input_data[0]  # anchors explain one instance; a request always has a batch axis
        _shap_as_lists(self._model)
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

    # -- the black-box predictor: the inference model over V2 REST ---------------------------------------------

    def _infer_impl(self, input_data: Union[np.ndarray, List[str]]) -> np.ndarray:
        """What alibi calls, many times per explanation, on the model's thread: one V2 infer call."""
        if self._metadata is None and "/v2/pipelines/" not in self.infer_uri:
            self._metadata = self._call("GET", re.sub(r"/infer$", "", self.infer_uri))
        answer = self._call("POST", self.infer_uri, self._v2_request(input_data))
        outputs = answer.get("outputs") or []
        if not outputs:
            raise RemoteInferenceError(200, f"no outputs in the answer of {self.infer_uri}")
        decoded = _decode(outputs[0])
        if decoded.ndim > 1 and decoded.shape[-1] == 1:
            decoded = decoded.squeeze(axis=decoded.ndim - 1)  # [N, 1] -> [N], as alibi expects
        return decoded

    def _v2_request(self, input_data: Union[np.ndarray, List[str]]) -> dict:
        """As MLServer's `to_v2_inference_request`: the metadata's first input name, its first output (or
        `infer_output`), NumPy-encoded (a list of strings: `str`)."""
        metadata = self._metadata or {}
        input_name = (metadata.get("inputs") or [{}])[0].get("name", DEFAULT_INPUT_NAME)
        outputs: List[dict] = []
        if self.alibi_explain_settings.infer_output:
            outputs = [{"name": self.alibi_explain_settings.infer_output}]
        elif metadata.get("outputs"):
            first = metadata["outputs"][0]
            outputs = [{"name": first["name"], "parameters": first.get("parameters")}]
        if isinstance(input_data, list):
            content_type = StringCodec.ContentType
            tensor = {"name": input_name, "shape": [len(input_data), 1], "datatype": "BYTES",
                      "data": [str(item) for item in input_data]}
        else:
            content_type = "np"
            array = np.asarray(input_data)
            if array.ndim == 1:
                array = array.reshape(-1, 1)
            tensor = {"name": input_name, "shape": list(array.shape), "datatype": from_numpy_dtype(array.dtype),
                      "data": array.ravel().tolist()}
        tensor["parameters"] = {"content_type": content_type}
        return {"id": str(uuid.uuid4()), "parameters": {"content_type": content_type}, "inputs": [tensor],
                "outputs": outputs}

    def _call(self, method: str, url: str, body: Optional[dict] = None) -> dict:
        """One call to the inference model. While the explainer loads, an inference model that is not up yet
        (refused connection, 404, 503) is waited for; after that every failure is an error answer."""
        started = time.monotonic()
        while True:
            waited = time.monotonic() - started
            try:
                response = self._http.request(method, url, json=body, headers={SELDON_SKIP_LOGGING_HEADER: "true"})
            except httpx.TimeoutException as exc:
                raise RemoteInferenceError(504, f"no answer from {url} within {INFER_TIMEOUT_S:g} s "
                                                f"({type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                if self._loading and waited < CONNECT_WAIT_S:
                    time.sleep(0.2)
                    continue
                raise RemoteInferenceError(502, f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
            if response.status_code in (404, 503) and self._loading and waited < LOAD_WAIT_S:
                time.sleep(0.2)
                continue
            if response.status_code != 200:
                raise RemoteInferenceError(response.status_code, f"{response.reason_phrase}: {response.text[:500]}")
            return response.json()


def explanation_json(explanation: Any) -> str:
    """`Explanation.to_json()`'s text (the attrs fields through `json.dumps`, NumPy values as numbers and
    lists), written here because alibi 0.9's encoder names `np.float_`, which NumPy 2 removed."""
    import attr

    return json.dumps(attr.asdict(explanation), cls=_NumpyEncoder)


class _NumpyEncoder(json.JSONEncoder):
    def default(self, obj):
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        return json.JSONEncoder.default(self, obj)


def _shap_as_lists(explainer: Any) -> None:
    """shap 0.45 and later answer a multi-output model's values as one array [rows, features, outputs] where
    alibi (0.9, and its master that MLServer pins) expects a list with one [rows, features] array per output
    (shap before 0.45, which does not run on NumPy 2). The shap explainer inside KernelShap / TreeShap is
    wrapped once so alibi gets the list it builds its explanation from."""
    inner = getattr(explainer, "_explainer", None)
    if inner is None or getattr(inner, "_gpuserve_lists", False):
        return
    for name in ("get_explanation", "shap_values", "shap_interaction_values"):
        method = getattr(inner, name, None)
        if method is None:
            continue

        @functools.wraps(method)
        def as_lists(*args, _method=method, _depth=3 if name != "shap_interaction_values" else 4, **kwargs):
            values = _method(*args, **kwargs)
            if isinstance(values, np.ndarray) and values.ndim == _depth:
                return [values[..., k] for k in range(values.shape[-1])]
            return values

        setattr(inner, name, as_lists)
    inner._gpuserve_lists = True


def _decode(output: dict) -> np.ndarray:
    """A JSON V2 output as NumPy (MLServer's NumpyCodec.decode_output)."""
    datatype = output["datatype"]
    data = output.get("data") or []
    if datatype == "BYTES":
        return np.array(data, dtype=object).reshape(output["shape"])
    return np.asarray(data, dtype=to_numpy_dtype(datatype)).reshape(output["shape"])


__all__ = ["AlibiExplainRuntime", "AlibiExplainSettings", "RemoteInferenceError"]
