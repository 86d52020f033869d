"""alibi 0.9 on NumPy 2 and shap >= 0.45, which its pins (numpy<2, shap<0.44) rule out and gpuserve runs on.

Three places in alibi meet them, each adapted here with the same numbers as alibi on its own pins gives
(checked against MLServer 1.7.1 on numpy 1.26 and shap 0.43: benchmarks/peers/alibi_explain_conformance.py):
- `Explanation.to_json()`'s encoder names `np.float_` (gone in NumPy 2): `explanation_json` writes the same text;
- a partial dependence's deciles call `np.percentile(interpolation=)` (NumPy 2: `method=`): `alibi_on_numpy2`;
- KernelShap / TreeShap expect one [rows, features] array per output where shap >= 0.45 answers one array
  [rows, features, outputs]: `shap_as_lists`.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np


def explanation_json(explanation: Any) -> str:
    """`Explanation.to_json()`'s text: the attrs fields through `json.dumps`, NumPy values as numbers and lists."""
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


def _quantiles(values: np.ndarray, num_quantiles: int = 11, interpolation="linear") -> np.ndarray:
    """alibi.explainers.ale.get_quantiles with NumPy 2's keyword."""
    return np.percentile(values, np.linspace(0, 100, num=num_quantiles), axis=0, method=interpolation)


def alibi_on_numpy2() -> None:
    """The two alibi modules that name `get_quantiles` get one that says `method=` (under NumPy 2 only)."""
    if int(np.__version__.split(".")[0]) < 2:
        return
    import alibi.explainers.ale as ale
    import alibi.explainers.partial_dependence as partial_dependence

    ale.get_quantiles = partial_dependence.get_quantiles = _quantiles


def shap_as_lists(explainer: Any) -> None:
    """Wrap, once, the shap explainer inside a KernelShap / TreeShap so that a multi-output model's values
    reach alibi as the list of per-output arrays it builds its explanation from (anything else passes)."""
    inner = getattr(explainer, "_explainer", None)
    if inner is None or getattr(inner, "_gpuserve_lists", False):
        return
    for name, depth in (("get_explanation", 3), ("shap_values", 3), ("shap_interaction_values", 4)):
        method = getattr(inner, name, None)
        if method is None:
            continue

        @functools.wraps(method)
        def as_lists(*args, _method=method, _depth=depth, **kwargs):
            values = _method(*args, **kwargs)
            if isinstance(values, np.ndarray) and values.ndim == _depth:
                return [values[..., k] for k in range(values.shape[-1])]
            return values

        setattr(inner, name, as_lists)
    inner._gpuserve_lists = True
