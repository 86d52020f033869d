"""`mlserver_huggingface.settings`: what a HuggingFace model reads from its settings and environment.

As MLServer 1.7.1: the fields come from `parameters.extra`; a field the extra does not set comes from
`MLSERVER_MODEL_HUGGINGFACE_<FIELD>` (pydantic-settings: given values win over the environment); Seldon Core
v1's `PREDICTIVE_UNIT_PARAMETERS` (a JSON list of `{name, value, type}`) overrides both. The task is checked
against transformers' tasks at load (gpuserve.huggingface.common), where transformers is imported.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

import orjson
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpuserve.huggingface.errors import InvalidModelParameter, InvalidModelParameterType, MissingHuggingFaceSettings

ENV_PREFIX_HUGGINGFACE_SETTINGS = "MLSERVER_MODEL_HUGGINGFACE_"
PARAMETERS_ENV_NAME = "PREDICTIVE_UNIT_PARAMETERS"


class HuggingFaceSettings(BaseSettings):
    """Parameters that apply only to HuggingFace models (MLServer's fields, names and defaults)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX_HUGGINGFACE_SETTINGS, extra="ignore",
                                      protected_namespaces=())

    task: str = ""  # the transformers pipeline task, e.g. "text-generation"
    task_suffix: str = ""  # appended to "translation" only: "translation" + "_en_to_fr"
    pretrained_model: Optional[str] = None  # a hub name or a local folder; wins over parameters.uri
    model_kwargs: Optional[dict] = None
    pretrained_tokenizer: Optional[str] = None  # default: the pretrained_model (else the model folder's own)
    framework: Optional[str] = None  # "pt" or "tf"
    optimum_model: bool = False  # load through optimum.onnxruntime
    # MLServer's: -1 or "cpu", a GPU ordinal, "cuda:1", "mps". None: gpuserve's model-level `device` decides
    device: Optional[Union[int, str]] = None
    inter_op_threads: Optional[int] = None
    intra_op_threads: Optional[int] = None

    @property
    def task_name(self) -> str:
        if self.task == "translation":
            return f"{self.task}{self.task_suffix}"
        return self.task


_TRUE = {"y", "yes", "t", "true", "on", "1"}
_FALSE = {"n", "no", "f", "false", "off", "0"}


def _to_bool(value: Any) -> bool:
    """distutils' strtobool, which MLServer uses (gone from Python 3.12)."""
    text = str(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"invalid truth value {value!r}")


EXTRA_TYPE_DICT = {"INT": int, "FLOAT": float, "DOUBLE": float, "STRING": str, "BOOL": _to_bool}


def parse_parameters_from_env() -> Dict[str, Any]:
    """Seldon Core v1's parameters (`PREDICTIVE_UNIT_PARAMETERS`), typed; {} without them."""
    parsed: Dict[str, Any] = {}
    for param in orjson.loads(os.environ.get(PARAMETERS_ENV_NAME, "[]")):
        name, value, type_ = param.get("name"), param.get("value"), param.get("type")
        convert = EXTRA_TYPE_DICT.get(type_)
        if convert is None:
            raise InvalidModelParameterType(type_)
        try:
            parsed[name] = convert(value)
        except ValueError:
            raise InvalidModelParameter(name, value, type_) from None
    return parsed


def merge_huggingface_settings_extra(model_settings: Any, env_params: Dict[str, Any]) -> Dict[str, Any]:
    """The settings' `extra` with the Seldon Core parameters over it (MLServer writes them into the
    settings' own dict; so does this)."""
    parameters = getattr(model_settings, "parameters", None)
    extra = parameters.extra if parameters is not None else None
    if extra is None and not env_params:
        raise MissingHuggingFaceSettings()
    extra = extra if extra is not None else {}
    extra.update(env_params)
    return extra


def get_huggingface_settings(model_settings: Any) -> HuggingFaceSettings:
    """The HuggingFace settings of a model (the task is checked when the model loads)."""
    return HuggingFaceSettings(**merge_huggingface_settings_extra(model_settings, parse_parameters_from_env()))


__all__ = ["HuggingFaceSettings", "ENV_PREFIX_HUGGINGFACE_SETTINGS", "PARAMETERS_ENV_NAME", "EXTRA_TYPE_DICT",
           "parse_parameters_from_env", "merge_huggingface_settings_extra", "get_huggingface_settings"]
