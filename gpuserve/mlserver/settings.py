"""`mlserver.settings`: model settings as MLServer runtimes read them, and MLServer's server settings.

`ModelSettings` is gpuserve's model settings (the same `model-settings.json` fields) with what only
MLServer has added: `version`, `implementation` given as a class, `parameters.environment_tarball` and
`environment_path`, `warm_workers`, `cache_enabled`, and metadata tensors as `MetadataTensor` objects. As
in MLServer, `parameters.uri` defaults to the model's folder; a relative uri is made absolute against that folder,
so a runtime can open `self.settings.parameters.uri` whatever the server's working directory.

As in MLServer, `ModelSettings` and `ModelParameters` take the fields they are not given from
`MLSERVER_MODEL_*` variables (`MLSERVER_MODEL_IMPLEMENTATION`, `MLSERVER_MODEL_URI`, ...; lists and
objects as JSON); gpuserve's repository applies the same to every `model-settings.json` and, where a
folder has none, serves the model those variables describe.

`mlserver_overrides(folder, environ)` reads a `settings.json` written for MLServer and `MLSERVER_*`
variables, and answers them under gpuserve's `ServerSettings` names. It is the lowest layer of the
server's settings: gpuserve's own names, in `settings.json`, `GPUSERVE_*` or on the command line,
win. Within it, as in MLServer, `settings.json` wins over `MLSERVER_*`. Fields gpuserve does not
have are logged as warnings and ignored.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpuserve.errors import InvalidSettings
from gpuserve.mlserver.types import MetadataTensor
from gpuserve.settings import ModelParameters as _NativeParameters
from gpuserve.settings import ModelSettings as _NativeSettings
from gpuserve.settings import MLSERVER_ENV_FILE, model_env, read_json_object, with_model_env

logger = logging.getLogger("gpuserve")

SETTINGS_FILE = "settings.json"
ENV_PREFIX = "MLSERVER_"


class ModelParameters(_NativeParameters):
    """As MLServer's (a pydantic BaseSettings): what is not given comes from MLSERVER_MODEL_URI,
    MLSERVER_MODEL_VERSION, MLSERVER_MODEL_CONTENT_TYPE, ..."""

    environment_tarball: Optional[str] = None
    environment_path: Optional[str] = None
    inference_pool_gid: Optional[str] = None
    autogenerate_inference_pool_gid: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_env(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {**model_env()[1], **data}
        return data


class ModelSettings(_NativeSettings):
    """gpuserve's `ModelSettings` with MLServer's additions (extra fields stay allowed)."""

    parameters: ModelParameters = Field(default_factory=ModelParameters)
    inputs: List[MetadataTensor] = Field(default_factory=list)  # type: ignore[assignment]
    outputs: List[MetadataTensor] = Field(default_factory=list)  # type: ignore[assignment]
    warm_workers: bool = False
    cache_enabled: bool = False
    max_batch_size: Optional[int] = 0  # MLServer's default (gpuserve's None means "choose for me")

    @model_validator(mode="before")
    @classmethod
    def _from_env(cls, data: Any) -> Any:
        """As MLServer's (a pydantic BaseSettings): fields not given come from MLSERVER_MODEL_*."""
        if isinstance(data, dict):
            return with_model_env(data)
        return data

    @field_validator("max_batch_size", mode="after")
    @classmethod
    def _no_batching_is_zero(cls, value: Optional[int]) -> int:
        """MLServer's default is 0 (a runtime may compare it: `if self.settings.max_batch_size > 1`)."""
        return 0 if value is None else value

    @field_validator("implementation", mode="before")
    @classmethod
    def _dotted(cls, value: Any) -> Any:
        """MLServer accepts the runtime class itself; gpuserve keeps its import path."""
        if isinstance(value, type):
            return f"{value.__module__}.{value.__qualname__}"
        return value

    @property
    def version(self) -> Optional[str]:
        return self.parameters.version if self.parameters else None

    @property
    def implementation_(self) -> Optional[str]:
        return self.implementation

    @classmethod
    def parse_file(cls, path: str) -> "ModelSettings":
        return cls.from_file(path)  # type: ignore[return-value]

    @classmethod
    def parse_obj(cls, obj: Any) -> "ModelSettings":
        return cls.model_validate(obj)


def _without_unwritten_parameters(settings: Any) -> dict:
    """The native settings as a dict, a tensor's `parameters` left out where the file wrote none: MLServer's
    metadata lists a declared input or output without `"parameters": {}` then."""
    out = settings.model_dump()
    for key in ("inputs", "outputs"):
        for tensor, dumped in zip(getattr(settings, key), out[key]):
            if "parameters" not in tensor.model_fields_set:
                dumped.pop("parameters", None)
    return out


def as_mlserver_settings(settings: Any) -> ModelSettings:
    """The MLServer view of a model's settings (gpuserve's, a dict, or already MLServer's)."""
    if isinstance(settings, ModelSettings):
        out = settings
    elif isinstance(settings, _NativeSettings):
        out = ModelSettings.model_validate(_without_unwritten_parameters(settings))
        out.folder = settings.folder
    elif isinstance(settings, Mapping):
        out = ModelSettings.model_validate(dict(settings))
    elif settings is None:
        out = ModelSettings()
    else:
        raise TypeError(f"expected ModelSettings, got {type(settings).__name__}")
    if out.folder:
        uri = out.parameters.uri
        if not uri:
            out.parameters.uri = str(out.folder)
        elif "://" not in uri and not Path(uri).is_absolute():
            out.parameters.uri = str((Path(out.folder) / uri).resolve())
    return out


class CORSSettings(BaseSettings):
    """MLServer's `cors_settings` (its defaults): cross-origin requests the HTTP endpoint allows."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=MLSERVER_ENV_FILE, extra="ignore")

    allow_origins: Optional[List[str]] = []
    allow_origin_regex: Optional[str] = None
    allow_credentials: Optional[bool] = False
    allow_methods: Optional[List[str]] = ["GET"]
    allow_headers: Optional[List[str]] = []
    expose_headers: Optional[List[str]] = []
    max_age: Optional[int] = 600


class Settings(BaseSettings):
    """MLServer's server settings (`settings.json`, `MLSERVER_*`), as MLServer names them."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=MLSERVER_ENV_FILE, extra="allow",
                                      protected_namespaces=())

    debug: bool = False
    parallel_workers: int = 1
    parallel_workers_timeout: int = 5
    environments_dir: str = ".envs"
    model_repository_root: str = "."
    load_models_at_startup: bool = True
    server_name: str = "mlserver"
    server_version: str = ""
    extensions: List[str] = Field(default_factory=list)
    host: str = "0.0.0.0"
    http_port: int = 8080
    root_path: str = ""
    grpc_port: int = 8081
    grpc_max_message_length: Optional[int] = None
    metrics_endpoint: Optional[str] = "/metrics"
    metrics_port: int = 8082
    metrics_rest_server_prefix: str = "rest_server"
    metrics_dir: str = ".metrics"
    use_structured_logging: bool = False
    logging_settings: Optional[Any] = None
    cache_enabled: bool = False
    cache_size: int = 100
    tracing_server: Optional[str] = None
    cors_settings: Optional[CORSSettings] = None
    gzip_enabled: bool = True
    model_repository_implementation: Optional[Any] = None
    model_repository_implementation_args: dict = Field(default_factory=dict)
    kafka_enabled: bool = False
    kafka_servers: str = "localhost:9092"
    kafka_topic_input: str = "mlserver-input"
    kafka_topic_output: str = "mlserver-output"


# MLServer name -> gpuserve ServerSettings name (same-named fields map to themselves).
_RENAMED = {
    "grpc_max_message_length": "grpc_max_message_bytes",
    "metrics_endpoint": "metrics_path",
    "metrics_rest_server_prefix": "metrics_rest_prefix",
    "gzip_enabled": "compress_responses",
    "extensions": "server_extensions",
}
_SAME = ("host", "http_port", "grpc_port", "metrics_port", "model_repository_root", "load_models_at_startup",
         "server_name", "parallel_workers", "environments_dir", "model_repository_implementation",
         "model_repository_implementation_args", "server_version", "logging_settings",
         "parallel_workers_timeout", "tracing_server", "metrics_dir", "kafka_enabled", "kafka_servers",
         "kafka_topic_input", "kafka_topic_output")
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidSettings(f"MLServer setting '{name}' must be true or false, got {value!r}")


def _translate(name: str, value: Any, where: str, native_fields: Any) -> List[Tuple[str, Any]]:
    """One MLServer setting as gpuserve (name, value) pairs; [] when it has no equivalent."""
    if name == "debug":
        return [("log_level", "DEBUG" if _as_bool(value, name) else "INFO")]
    if name == "use_structured_logging":
        return [("logging_format", "json" if _as_bool(value, name) else "text")]
    if name == "metrics_endpoint":
        if value is None or value == "":
            return [("enable_metrics_server", False)]
        return [("metrics_path", value)]
    if name == "model_repository_implementation_args" and isinstance(value, str):  # MLSERVER_*: JSON
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidSettings(f"{where}: MLServer setting '{name}' is not a JSON object: {exc}") from None
        return [(name, value)]
    if name == "root_path":  # ASGI's root_path: MLServer 1.7.1 routes the same paths with it (/p/v2/... is 404)
        return []
    if name == "cache_enabled":  # the response cache (gpuserve/response_cache.py) for models that enable it too
        return [("mlserver_cache", _as_bool(value, name))]
    if name == "cache_size":
        return [("response_cache_entries", value)]
    if name == "cors_settings":  # served as MLServer serves them: Starlette's CORSMiddleware (server/cors.py)
        if value is None:
            return []
        try:
            return [("cors", CORSSettings.model_validate(json.loads(value) if isinstance(value, str) else value
                                                         ).model_dump())]
        except ValueError as exc:
            raise InvalidSettings(f"{where}: MLServer setting 'cors_settings' is not valid: {exc}") from None
    if name in _RENAMED:
        return [] if value is None else [(_RENAMED[name], value)]
    if name in _SAME:
        return [(name, value)]
    if name in native_fields:
        return []  # a gpuserve name: gpuserve's own settings read it
    logger.warning("%s: unknown setting '%s' ignored", where, name)
    return []


def _from_file(folder: Optional[os.PathLike | str]) -> Dict[str, Any]:
    if folder is None:
        return {}
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return {}
    return read_json_object(path)


def _from_env(environ: Mapping[str, str]) -> Dict[str, Any]:
    out = {}
    for key, value in environ.items():
        upper = key.upper()
        # MLSERVER_MODEL_* are per-model defaults and MLSERVER_INFER_* the `mlserver infer` client's.
        if upper.startswith(ENV_PREFIX) and not upper.startswith((ENV_PREFIX + "MODEL_", ENV_PREFIX + "INFER_")):
            out[upper[len(ENV_PREFIX):].lower()] = value
    return out


def translated(settings: "Settings") -> Dict[str, Any]:
    """The fields of an MLServer `Settings` object that were set (given, or read from MLSERVER_* variables)
    under gpuserve's ServerSettings names (mlserver.MLServer's server)."""
    from gpuserve.settings import ServerSettings

    values = settings.model_dump(include=set(settings.model_fields_set) & set(type(settings).model_fields))
    values.update({k: v for k, v in (settings.model_extra or {}).items() if k in settings.model_fields_set})
    out: Dict[str, Any] = {}
    for name, value in values.items():  # (a repository class given as such passes as it is)
        for key, converted in _translate(name, value, "MLServer Settings", ServerSettings.model_fields):
            out[key] = converted
    return out


def mlserver_overrides(folder: Optional[os.PathLike | str] = None,
                       environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """MLServer's `settings.json` fields and `MLSERVER_*` variables under gpuserve's names.

    Only what was given is returned (no MLServer defaults); `settings.json` wins over the
    environment, as in MLServer. Callers put the result below gpuserve's own sources.
    """
    from gpuserve.settings import ServerSettings

    native_fields = ServerSettings.model_fields
    environ = os.environ if environ is None else environ
    out: Dict[str, Any] = {}
    from_env = _from_env(environ)
    tarball = from_env.pop("env_tarball", None)
    if tarball:  # read by MLServer's Docker image, which activates it for the whole server before starting it
        out["environment_tarball"] = tarball
    for source, values in (("MLSERVER_* environment", from_env),
                           (str(Path(folder) / SETTINGS_FILE) if folder is not None else "", _from_file(folder))):
        for name, value in values.items():
            for key, translated in _translate(name, value, source, native_fields):
                out[key] = translated
    return out


__all__ = ["ModelSettings", "ModelParameters", "Settings", "as_mlserver_settings", "mlserver_overrides", "translated"]
