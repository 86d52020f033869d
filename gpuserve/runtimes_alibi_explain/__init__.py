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
- `integrated_gradients` gets a Keras model, `tf.keras.models.load_model(infer_uri)` (`.keras` or `.h5` under
  Keras 3), and explains every row for the class the model predicts for it (`target`);
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
answered while the explainer waits for it (TensorFlow too is imported by this runtime on that thread, and a
missing one is the model's reason, naming `gpuserve[tensorflow]`); a request's `target` replaces IntegratedGradients'
predicted class (MLServer passes both to alibi and fails); a relative white-box `infer_uri` is also looked for
beside model-settings.json; every remote call has a timeout (remote.py
`INFER_TIMEOUT_S`, or `GPUSERVE_ALIBI_EXPLAIN_TIMEOUT`), so an unreachable model is an error answer (502, the
reason named) and not a hang; while the explainer loads (AnchorTabular, AnchorImage and KernelShap call their
predictor then) an inference model that is not loaded yet is waited for (`LOAD_WAIT_S`; a refused connection
`CONNECT_WAIT_S`), so both can load together from one folder; the explainer's own refusals of the input
(ValueError, IndexError) and the inference model's 4xx are a 400. alibi runs here on NumPy 2 and shap >= 0.45,
which its pins rule out: compat.py adapts the three places that meet them.

Modules: runtime.py (settings, load, explain), remote.py (the black-box predictor over V2 REST), compat.py.
"""

from __future__ import annotations

try:
    import alibi  # noqa: F401
    import httpx  # noqa: F401
except ImportError as exc:  # the repository says so as the model's reason
    raise ImportError(f"serving an Alibi-Explain explainer needs alibi: pip install 'gpuserve[alibi-explain]' "
                      f"({exc})") from None

from gpuserve.runtimes_alibi_explain.compat import explanation_json  # noqa: E402
from gpuserve.runtimes_alibi_explain.remote import RemoteInferenceError, RemoteModel  # noqa: E402
from gpuserve.runtimes_alibi_explain.runtime import (  # noqa: E402
    EXPLAINERS,
    AlibiExplainRuntime,
    AlibiExplainSettings,
)

__all__ = ["AlibiExplainRuntime", "AlibiExplainSettings", "EXPLAINERS", "RemoteInferenceError", "RemoteModel",
           "explanation_json"]
