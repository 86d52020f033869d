"""A Triton FIL-backend `config.pbtxt` (`backend: "fil"`) read as FIL reads it.

FIL users bring XGBoost, LightGBM and Treelite forests with a config whose `parameters` steer both what
the model answers (`is_classifier` or the older `output_class`, `predict_proba`, `threshold`) and how
FIL lays the trees out on a GPU. gpuserve runs such models on its CPU tree runtimes
(gpuserve/triton_fil.py), so only the first kind changes anything here; the layout and device ones
are accepted so that the config serves unchanged. Values are read as FIL's parameter reader reads
them (a word `true`/`false`, a number at the start of the string); the refusals use FIL's own words
where FIL has them, so a broken config says the same thing on both servers.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from gpuserve.errors import InvalidSettings

logger = logging.getLogger("gpuserve.triton_config")

# FIL's serialization formats and the file each looks for in a version folder (FIL's model_config.md).
MODEL_FILES = {"xgboost": "xgboost.model", "xgboost_json": "xgboost.json", "xgboost_ubj": "xgboost.ubj",
               "lightgbm": "model.txt", "treelite_checkpoint": "checkpoint.tl"}
# Parameters that only steer FIL's GPU layout, its host threads or its loader: accepted, without effect here
# (the older names too: FIL 25.09 renamed algo -> layout and threads_per_tree -> chunk_size).
IGNORED = ("storage_type", "threads_per_tree", "algo", "blocks_per_sm", "transfer_threshold",
           "use_experimental_optimizations", "layout", "chunk_size", "cpu_nthread", "xgboost_allow_unknown_field")
INPUT, OUTPUT, SHAP_OUTPUT = "input__0", "output__0", "treeshap_output"
_NUMBER = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class FilOptions:
    """What a FIL config asks of the model's answers."""

    model_type: str
    is_classifier: bool
    predict_proba: bool
    threshold: float
    features: int  # input__0's one dimension
    output_dims: List[int]  # output__0's dims as written

    @property
    def output_width(self) -> int:
        width = 1
        for dim in self.output_dims:
            width *= int(dim)
        return width


def _text(parameters: Dict[str, Any], key: str) -> Optional[str]:
    entry = parameters.get(key)
    if entry is None:
        return None
    return str(entry.get("string_value", "")) if isinstance(entry, dict) else str(entry)


def _flag(name: str, parameters: Dict[str, Any], key: str, default: Optional[bool]) -> bool:
    """A boolean as FIL reads one: the word `true` or `false`; anything else is the default, or refused
    where there is none."""
    text = _text(parameters, key)
    word = text.split()[0] if text and text.split() else ""
    if word in ("true", "false"):
        return word == "true"
    if default is None:
        what = "Required parameter" if text is None else "Bad input for parameter"
        raise InvalidSettings(f"model '{name}' (backend fil): {what} {key}"
                              + (" not found in config" if text is None else f" ({text!r})"))
    if text is not None:
        logger.warning("model '%s': parameters '%s' is %r, not true or false; FIL reads it as %s", name, key,
                       text, str(default).lower())
    return default


def _number(name: str, parameters: Dict[str, Any], key: str, default: float) -> float:
    text = _text(parameters, key)
    if text is None:
        return default
    match = _NUMBER.match(text)
    if not match:
        raise InvalidSettings(f"model '{name}' (backend fil): Bad input for parameter {key} ({text!r})")
    return float(match.group(0))


def fil_options(config: Dict[str, Any]) -> FilOptions:
    """The config's FIL options, or InvalidSettings saying what FIL would refuse (and what gpuserve cannot
    serve: a SHAP output)."""
    name = config.get("name", "?")
    parameters = config.get("parameters") or {}
    model_type = (_text(parameters, "model_type") or "xgboost").strip()
    if model_type not in MODEL_FILES:
        raise InvalidSettings(f"model '{name}' (backend fil): {model_type} not recognized as a valid serialization "
                              f"format (model_type is one of {', '.join(MODEL_FILES)}; scikit-learn and cuML "
                              "forests are served as Treelite checkpoints, as in FIL)")
    if _text(parameters, "output_class") is not None and _text(parameters, "is_classifier") is None:
        is_classifier = _flag(name, parameters, "output_class", None)  # FIL before 25.09
    else:
        is_classifier = _flag(name, parameters, "is_classifier", None)
    # FIL's documentation: "If unset, an implicit threshold of 0.5 is used for binary classifiers."
    threshold = _number(name, parameters, "threshold", 0.5) if is_classifier else 0.5
    predict_proba = _flag(name, parameters, "predict_proba", False)
    if int(config.get("max_batch_size", 0) or 0) <= 0:
        raise InvalidSettings(f"model '{name}' (backend fil): max_batch_size must be set above 0 (FIL takes rows "
                              "of features with a batch dimension)")
    inputs, outputs = config.get("input") or [], config.get("output") or []
    if len(inputs) != 1 or inputs[0].get("name") != INPUT:
        raise InvalidSettings(f"model '{name}' (backend fil): FIL models take one input named '{INPUT}', "
                              f"not {[e.get('name') for e in inputs]}")
    dims = [int(d) for d in inputs[0].get("dims") or []]
    if len(dims) != 1 or dims[0] <= 0:
        raise InvalidSettings(f"model '{name}' (backend fil): input '{INPUT}' dims must be [number of features], "
                              f"not {dims}")
    names = [e.get("name") for e in outputs]
    if SHAP_OUTPUT in names:
        raise InvalidSettings(f"model '{name}' (backend fil): the '{SHAP_OUTPUT}' output (FIL's GPU TreeSHAP) is "
                              "not served by gpuserve; remove it from the config to serve the predictions")
    if names != [OUTPUT]:
        raise InvalidSettings(f"model '{name}' (backend fil): FIL models give one output named '{OUTPUT}', "
                              f"not {names}")
    for entry in (inputs[0], outputs[0]):
        if entry.get("data_type") != "TYPE_FP32":
            raise InvalidSettings(f"model '{name}' (backend fil): '{entry.get('name')}' must be TYPE_FP32 (FIL "
                                  f"reads and writes 32-bit floats), not {entry.get('data_type')}")
    return FilOptions(model_type, is_classifier, predict_proba, threshold, dims[0],
                      [int(d) for d in outputs[0].get("dims") or []])


def fil_settings(config: Dict[str, Any], settings: Dict[str, Any], where: Path) -> None:
    """Complete the model settings of one version of a FIL model folder: its runtime, the file FIL would
    load (model_type's default name unless default_model_filename says otherwise) and the options."""
    options = fil_options(config)
    filename = config.get("default_model_filename") or MODEL_FILES[options.model_type]
    settings["implementation"] = "fil"  # gpuserve.triton_fil.FilModel, a built-in runtime
    settings["parameters"]["uri"] = str(where / filename)
    settings["triton_fil"] = asdict(options)
    if config.get("default_model_filename"):
        settings.setdefault("triton_shown", {})["default_model_filename"] = config["default_model_filename"]
    ignored = [key for key in IGNORED if key in (config.get("parameters") or {})]
    if ignored:
        logger.info("model '%s': FIL parameters %s steer FIL's GPU layout or loader and are not used by "
                    "gpuserve's CPU tree runtimes", config.get("name"), ", ".join(ignored))
