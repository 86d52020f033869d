"""Server settings (env `GPUSERVE_*` over `settings.json` over defaults) and per-model settings.

Model settings use MLServer's `model-settings.json` field names so existing folders load as they
are; fields gpuserve does not know are kept (extra="allow") rather than rejected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gpuserve.errors import InvalidSettings

SETTINGS_FILE = "settings.json"
MODEL_SETTINGS_FILE = "model-settings.json"


def read_json_object(path: Path) -> Dict[str, Any]:
    """A settings file's JSON object; anything else is a clear InvalidSettings."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidSettings(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidSettings(f"{path} must hold a JSON object")
    return data


MLSERVER_ENV_FILE = ".env"


def mlserver_environ() -> Dict[str, str]:
    """The process environment over the `MLSERVER_*` lines of a `.env` file in the working directory, as
    MLServer's pydantic settings read it (`env_file`): a variable set in the environment wins."""
    found: Dict[str, str] = {}
    if os.path.isfile(MLSERVER_ENV_FILE):
        from dotenv import dotenv_values  # pydantic-settings' own dependency

        found = {key: value for key, value in dotenv_values(MLSERVER_ENV_FILE).items()
                 if value is not None and key.upper().startswith("MLSERVER_")}
    return {**found, **os.environ} if found else dict(os.environ)


# MLServer's model settings from the environment: every ModelSettings and ModelParameters field is
# also MLSERVER_MODEL_<FIELD> (lists and objects as JSON). They default every model-settings.json
# (the file wins) and, where no such file exists, make a model of their own.
MODEL_ENV_PREFIX = "MLSERVER_MODEL_"
_MODEL_ENV_FIELDS = ("name", "implementation", "platform", "versions", "inputs", "outputs", "max_batch_size",
                     "max_batch_time", "parallel_workers", "warm_workers", "cache_enabled", "parameters")
_PARAMETER_ENV_FIELDS = ("uri", "version", "format", "content_type", "extra", "environment_tarball",
                         "environment_path")
_JSON_ENV_FIELDS = ("versions", "inputs", "outputs", "parameters", "extra")


def model_env(environ: Optional[Dict[str, str]] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(model settings fields, parameters fields) that MLSERVER_MODEL_* variables give; runtime-specific
    ones (MLSERVER_MODEL_HUGGINGFACE_*, ...) are not model settings and are left alone."""
    environ = mlserver_environ() if environ is None else environ
    given = {key.upper(): value for key, value in environ.items() if key.upper().startswith(MODEL_ENV_PREFIX)}
    fields: Dict[str, Any] = {}
    parameters: Dict[str, Any] = {}
    for names, out in ((_MODEL_ENV_FIELDS, fields), (_PARAMETER_ENV_FIELDS, parameters)):
        for name in names:
            key = MODEL_ENV_PREFIX + name.upper()
            if key not in given:
                continue
            value: Any = given[key]
            if name in _JSON_ENV_FIELDS:
                try:
                    value = json.loads(value)
                except ValueError as exc:
                    raise InvalidSettings(f"{key} must be JSON: {exc}") from None
            out[name] = value
    if "parameters" in fields and not isinstance(fields["parameters"], dict):
        raise InvalidSettings(f"{MODEL_ENV_PREFIX}PARAMETERS must be a JSON object")
    return fields, parameters


def with_model_env(data: Dict[str, Any], environ: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """A model-settings object with MLSERVER_MODEL_* below it: the object's own fields win, and within
    `parameters` its own keys win over MLSERVER_MODEL_URI, _VERSION, ... (as pydantic settings do in
    MLServer). MLSERVER_MODEL_PARAMETERS counts only where the object has no `parameters`."""
    fields, parameters = model_env(environ)
    if not fields and not parameters:
        return data
    out = {**{k: v for k, v in fields.items() if k != "parameters"}, **data}
    own = data.get("parameters") if "parameters" in data else fields.get("parameters")
    if parameters or own:
        out["parameters"] = {**parameters, **(own if isinstance(own, dict) else {})}
    return out


def _check_device(value: str) -> str:
    value = (value or "auto").strip().lower()
    if value in ("auto", "cpu", "cuda", "gpu"):
        return "cuda" if value == "gpu" else value
    if value.startswith("cuda:") and value[5:].isdigit():
        return value
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got '{value}'")


class _JsonFileSource(PydanticBaseSettingsSource):
    """Values from `settings.json` at the repository root; the file wins only over defaults."""

    def __init__(self, settings_cls: Type[BaseSettings], path: Optional[Path]):
        super().__init__(settings_cls)
        self.values: Dict[str, Any] = {}
        if path is not None and path.is_file():
            data = read_json_object(path)
            fields = settings_cls.model_fields
            self.values = {k: v for k, v in data.items() if k in fields}

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ is used
        return self.values.get(field_name), field_name, False

    def __call__(self) -> Dict[str, Any]:
        return dict(self.values)


class _MLServerSource(PydanticBaseSettingsSource):
    """MLServer's settings.json names and MLSERVER_* variables: below every gpuserve source."""

    def __init__(self, settings_cls: Type[BaseSettings], folder: Optional[Path]):
        super().__init__(settings_cls)
        from gpuserve.mlserver.settings import mlserver_overrides

        fields = settings_cls.model_fields
        self.values = {k: v for k, v in mlserver_overrides(folder, mlserver_environ()).items() if k in fields}

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ is used
        return self.values.get(field_name), field_name, False

    def __call__(self) -> Dict[str, Any]:
        return dict(self.values)


_SETTINGS_PATH: Optional[Path] = None


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUSERVE_", extra="ignore", validate_default=True)

    host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_port: int = 8081
    metrics_port: int = 8082
    metrics_path: str = "/metrics"
    metrics_prefix: str = ""
    # The REST request families' prefix (MLServer's metrics_rest_server_prefix): <prefix>_requests_total, ...
    metrics_rest_prefix: str = "rest_server"
    # Inference answers compressed as Accept-Encoding asks (false: never; MLServer's gzip_enabled)
    compress_responses: bool = True
    nvml_interval_seconds: float = 5.0
    # Each endpoint's bind address when it differs from `host` (Triton's --http-address, --grpc-address,
    # --metrics-address)
    http_host: Optional[str] = None
    grpc_host: Optional[str] = None
    metrics_host: Optional[str] = None
    enable_http: bool = True  # Triton's --allow-http
    enable_grpc: bool = True
    enable_metrics_server: bool = True
    # grpc.aio channel arguments (Triton's keepalive and connection-age flags, gpuserve/triton_flags.py); any
    # given serves gRPC on grpc.aio, which applies them
    grpc_arguments: Dict[str, int] = Field(default_factory=dict)
    workers: int = 1
    reuse_port: bool = False  # set for each of several workers sharing the ports
    # Triton's --reuse-http-port / --reuse-grpc-port: that endpoint's port alone may be shared by several servers
    reuse_http_port: bool = False
    reuse_grpc_port: bool = False
    # Default for custom models whose settings name none (0: in process). None (not given): 0, except for models
    # with a custom environment, which need workers and get MLServer's default of 1.
    parallel_workers: Optional[int] = None
    # Where models' environment_tarball files are unpacked, one folder per tarball's SHA-256 (MLServer's
    # environments_dir; relative to the working directory).
    environments_dir: str = ".envs"
    # MLServer's MLSERVER_ENV_TARBALL: the environment_tarball of every model that names none.
    environment_tarball: Optional[str] = None
    max_threads: Optional[int] = None
    max_asyncio_workers: Optional[int] = None
    model_repository_root: Optional[str] = None
    # MLServer's custom repository: a class (dotted path) with async list() and find(name) answering model
    # settings, built with root= the repository folder and these args (gpuserve/mlserver/repository/)
    model_repository_implementation: Optional[Any] = None  # the dotted path, or the class itself
    model_repository_implementation_args: Dict[str, Any] = Field(default_factory=dict)
    load_models_at_startup: bool = True
    # With load_models_at_startup off, the models that still load at start-up (Triton's --load-model; "*": all).
    startup_models: List[str] = Field(default_factory=list)
    model_control_enabled: bool = True
    # TorchServe's enable_model_api (--enable-model-api): its management API's register and unregister are served
    # (server/torchserve_manage.py); off, as in TorchServe since 0.11, they are refused
    torchserve_model_api: bool = False
    # Seconds between scans of the repository folder for added, changed and removed models (Triton's
    # --model-control-mode poll with --repository-poll-secs); 0: never.
    repository_poll_seconds: float = 0.0
    strict_readiness: bool = False
    # Triton's --rate-limit (off | execution_count) and --rate-limit-resource NAME:COUNT[:DEVICE] values
    rate_limit: str = "off"
    rate_limit_resources: List[str] = Field(default_factory=list)
    # How many responses a decoupled Python model's send may run ahead of the client reading them before it
    # waits (gpuserve/response_stream.py); 0: never waits. Bounds what a slow client leaves queued, at a cost in
    # tokens/s for models that make tokens faster than clients read them (benchmarks/RESULTS.md)
    decoupled_send_window: int = Field(0, ge=0)
    # Triton's auto-complete (off: --disable-auto-complete-config): config.pbtxt tensors are checked as written
    auto_complete_config: bool = True
    # Triton's --model-config-name: a model reads configs/NAME.pbtxt where it has one, else config.pbtxt
    model_config_name: Optional[str] = None
    allow_client_shm: bool = True  # clients may register system shared-memory regions
    # Triton's --trace-config KEY=VALUE flags, as given: the trace settings clients read at start-up
    trace_config: List[str] = Field(default_factory=list)
    # MLServer's tracing_server, host:port of an OTLP/gRPC collector: a span per REST / gRPC request goes
    # there (gpuserve/otel_mlserver.py; needs gpuserve[tracing])
    tracing_server: Optional[str] = None
    # Triton's --http-restricted-api / --grpc-restricted-protocol specs, `GROUP[,GROUP...]:KEY=VALUE`: those
    # endpoint groups answer only requests carrying the header (server/restricted.py)
    http_restricted_api: List[str] = Field(default_factory=list)
    grpc_restricted_protocol: List[str] = Field(default_factory=list)
    # Triton's --grpc-use-ssl / --grpc-use-ssl-mutual (which implies TLS) and their PEM files
    # (server/grpc/tls.py): the gRPC endpoint serves TLS, and with mutual also requires client certificates
    grpc_use_ssl: bool = False
    grpc_use_ssl_mutual: bool = False
    grpc_server_cert: Optional[str] = None
    grpc_server_key: Optional[str] = None
    grpc_root_cert: Optional[str] = None
    # Triton's --http-header-forward-pattern / --grpc-header-forward-pattern: request headers whose name the
    # regular expression finds become string request parameters (gpuserve/header_forward.py)
    http_header_forward_pattern: Optional[str] = None
    grpc_header_forward_pattern: Optional[str] = None
    device: str = "auto"
    # HTTP bodies up to 2 GiB, as gRPC messages: Triton takes binary tensors that large over HTTP (its qa
    # L0_large_payload sends 1.9 GB and expects 3 GB to fail)
    max_request_bytes: int = 2**31 - 1
    grpc_max_message_bytes: int = 2**31 - 1
    server_name: str = "gpuserve"
    metrics_dir: Optional[str] = None  # parallel workers' metric files go below it (MLServer's metrics_dir)
    # MLServer's Kafka server: requests from kafka_topic_input answered to kafka_topic_output (gpuserve[kafka])
    kafka_enabled: bool = False
    kafka_servers: str = "localhost:9092"
    kafka_topic_input: str = "mlserver-input"
    kafka_topic_output: str = "mlserver-output"
    parallel_workers_timeout: float = 5.0  # seconds a stop waits for parallel workers before killing them
    server_extensions: Optional[List[str]] = None  # server metadata's extensions (MLServer's `extensions`)
    server_version: Optional[str] = None  # the /v2 metadata's version (MLServer's server_version); None: gpuserve's
    # A logging configuration applied after gpuserve's own (MLServer's logging_settings): a dictConfig dict, or a
    # file (.json/.yaml dictConfig, else fileConfig)
    logging_settings: Optional[Any] = None
    log_level: str = "INFO"
    # text: gpuserve's lines; json: one object a line; default / ISO8601: tritonserver's (its --log-format)
    logging_format: Literal["text", "json", "default", "ISO8601"] = "text"
    log_file: Optional[str] = None  # Triton's --log-file: the log goes there instead of standard error
    # Triton's --log-info / --log-warning / --log-error: false leaves that level's lines out
    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    model_load_retry_count: int = 0  # Triton's --model-load-retry-count: loads again a model that failed
    access_log: bool = False
    # "auto": our HTTP/1.1 server on httptools (server/rest/http11.py) when httptools is installed,
    # else uvicorn; "uvicorn" forces uvicorn (and its ASGI fast path) for every route.
    http_server: Literal["auto", "gpuserve", "uvicorn"] = "auto"
    # KServe 0.21's --ssl_certfile / --ssl_keyfile (in a KServe script also KSERVE_TLS_CERT_FILE /
    # KSERVE_TLS_KEY_FILE): the HTTP endpoint serves HTTPS with this PEM certificate and key
    http_ssl_certfile: Optional[str] = None
    http_ssl_keyfile: Optional[str] = None
    # an idle keep-alive HTTP connection closes after this many seconds (KServe 0.21's --timeout-keep-alive,
    # 65 in its scripts)
    http_keep_alive_s: float = Field(75.0, gt=0)
    # cross-origin requests the HTTP endpoint allows (MLServer's cors_settings, served with Starlette's
    # CORSMiddleware: allow_origins, allow_origin_regex, allow_credentials, allow_methods, allow_headers,
    # expose_headers, max_age); None: no CORS headers, as MLServer without them (server/cors.py)
    cors: Optional[Dict[str, Any]] = None
    # the event loop the server runs: uvloop when installed ("auto"), or the one named (KServe 0.21's
    # --event-loop)
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    # "native": our HTTP/2 (server/grpc/native.py; needs the `hpack` package, part of gpuserve[grpc]): grpc.aio
    # costs ~250 us more server CPU a call (RESULTS.md, session 6). "grpcio": grpc.aio, the fallback.
    grpc_transport: Literal["native", "grpcio"] = "native"
    enable_docs_url: bool = True
    graceful_shutdown_seconds: float = 30.0
    # Triton's response cache (`--cache-config local,size=BYTES`), used only by models that enable it; taken
    # as entries arrive, so the default costs nothing until then. 0: no cache.
    response_cache_bytes: int = 128 * 1024 * 1024
    response_cache_entries: int = 0  # MLServer's cache_size: a bound on the entries too (0: bytes alone)
    # MLServer's cache_enabled: its models whose model-settings.json says cache_enabled use the cache
    mlserver_cache: bool = False
    # Triton's --metrics-config SETTING=VALUE: counter_latencies (default true), summary_latencies (default
    # false) and summary_quantiles "Q:ERROR,..." shape the model metrics (server/metrics.py)
    metrics_config: Dict[str, str] = Field(default_factory=dict)
    gpu_metrics: bool = True  # Triton's --allow-gpu-metrics: the nv_gpu_* gauges where there is a GPU
    cpu_metrics: bool = True  # Triton's --allow-cpu-metrics: nv_cpu_utilization and nv_cpu_memory_*
    # Triton's SageMaker endpoint (--allow-sagemaker; server/sagemaker.py): /ping, /invocations and the
    # multi-model /models API on a port of its own. A safe port range "LOW-HIGH" is where every other endpoint
    # must listen. Multi-model loads take model folders under sagemaker_models_root only.
    sagemaker: bool = False
    sagemaker_port: int = 8080
    sagemaker_host: Optional[str] = None
    sagemaker_safe_port_range: Optional[str] = None
    sagemaker_models_root: str = "/opt/ml/models"
    # Triton's Vertex AI endpoint (--allow-vertex-ai; server/vertex_ai.py): AIP_HEALTH_ROUTE and
    # AIP_PREDICT_ROUTE on a port of its own, inference on the default model or redirected by a header
    vertex_ai: bool = False
    vertex_ai_port: int = 8080
    vertex_ai_host: Optional[str] = None
    vertex_ai_default_model: Optional[str] = None

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return _check_device(value)

    @field_validator("startup_models")
    @classmethod
    def _startup_models(cls, value: List[str]) -> List[str]:
        if "*" in value and len(value) > 1:  # as Triton
            raise ValueError("'*' (every model) must be the only model named to load at start-up")
        return value

    @field_validator("http_restricted_api", "grpc_restricted_protocol")
    @classmethod
    def _restricted(cls, value: List[str], info) -> List[str]:
        from gpuserve.restricted import grpc_rules, http_rules

        try:
            (http_rules if info.field_name == "http_restricted_api" else grpc_rules)(value)
        except InvalidSettings as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("http_header_forward_pattern", "grpc_header_forward_pattern")
    @classmethod
    def _forward_pattern(cls, value: Optional[str], info) -> Optional[str]:
        from gpuserve.header_forward import header_forward

        try:
            header_forward(value, info.field_name.replace("_", "-"))
        except InvalidSettings as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("repository_poll_seconds")
    @classmethod
    def _poll(cls, value: float) -> float:
        if value < 0:
            raise ValueError("repository_poll_seconds must be 0 (off) or more")
        return value

    def startup_selection(self) -> Optional[List[str]]:
        """The models to load at start-up: None for every model on disk, else their names."""
        if self.load_models_at_startup or "*" in self.startup_models:
            return None
        return list(self.startup_models)

    @field_validator("http_port", "grpc_port", "metrics_port", "sagemaker_port", "vertex_ai_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError(f"port must be within 0..65535, got {value}")
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> Tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _JsonFileSource(settings_cls, _SETTINGS_PATH),
                _MLServerSource(settings_cls, _SETTINGS_PATH.parent if _SETTINGS_PATH else None))

    @classmethod
    def load(cls, folder: Optional[str | os.PathLike] = None, **overrides: Any) -> "ServerSettings":
        """Defaults < settings.json in `folder` < GPUSERVE_* env < explicit overrides (CLI flags)."""
        global _SETTINGS_PATH
        _SETTINGS_PATH = Path(folder) / SETTINGS_FILE if folder is not None else None
        try:
            overrides = {k: v for k, v in overrides.items() if v is not None}
            settings = cls(**overrides)
        except ValidationError as exc:
            raise InvalidSettings(f"invalid server settings: {_errors(exc)}") from None
        finally:
            _SETTINGS_PATH = None
        if folder is not None and settings.model_repository_root is None:
            settings.model_repository_root = str(folder)
        return settings


class ModelParameters(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    uri: Optional[str] = None
    version: Optional[str] = None
    content_type: Optional[str] = None
    format: Optional[str] = None
    extra: Dict[str, Any] = Field(default_factory=dict)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class TensorMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    datatype: str
    shape: List[int]
    parameters: Dict[str, Any] = Field(default_factory=dict)


class InstanceGroup(BaseModel):
    model_config = ConfigDict(extra="allow")

    count: int = 1
    kind: Literal["auto", "gpu", "cpu"] = "auto"
    gpus: List[int] = Field(default_factory=list)


class DynamicBatching(BaseModel):
    """Triton's `dynamic_batching` block, also accepted in model-settings.json."""

    model_config = ConfigDict(extra="allow")

    preferred_batch_size: List[int] = Field(default_factory=list)
    max_queue_delay_microseconds: int = 0
    priority_levels: int = 0
    default_priority_level: int = 0
    max_queue_size: int = 0
    default_timeout_microseconds: int = 0
    allow_timeout_override: bool = True


class PreprocessSettings(BaseModel):
    """uint8 images in, normalised float out on the device (gpuserve.kernels.preprocess): clients send
    UINT8 `layout` images for `input`; the model gets (x * scale - mean[c]) / std[c] as FP32/FP16 NCHW."""

    model_config = ConfigDict(extra="forbid")

    input: str
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    scale: float = 1.0 / 255.0
    mean: List[float] = Field(default_factory=lambda: [0.0], min_length=1)
    std: List[float] = Field(default_factory=lambda: [1.0], min_length=1)


class RaggedSettings(BaseModel):
    """Requests of different lengths along axis 1 of `inputs` share a batch (gpuserve.kernels.ragged):
    padded to the batch's longest with `pad_value`; the model may take the row lengths and a 0/1 mask
    as extra inputs; `outputs` carrying the ragged axis are cut back to each request's length."""

    model_config = ConfigDict(extra="forbid")

    inputs: List[str] = Field(min_length=1)
    pad_value: float = 0
    lengths_input: Optional[str] = None
    mask_input: Optional[str] = None
    outputs: List[str] = Field(default_factory=list)
    # packed: no padding at all; the model takes the rows back to back and their offsets (rows + 1)
    mode: Literal["pad", "packed"] = "pad"
    offsets_input: Optional[str] = None


class ModelSettings(BaseModel):
    """One model's settings: MLServer's `model-settings.json` fields plus gpuserve's device fields."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str = ""
    implementation: Optional[str] = None
    platform: str = ""
    versions: List[str] = Field(default_factory=list)
    parameters: ModelParameters = Field(default_factory=ModelParameters)
    inputs: List[TensorMetadata] = Field(default_factory=list)
    outputs: List[TensorMetadata] = Field(default_factory=list)
    # None: decided from the artefact (batching on when every input has a dynamic first dimension).
    max_batch_size: Optional[int] = None
    max_batch_time: float = 0.0
    dynamic_batching: Optional[DynamicBatching] = None
    parallel_workers: Optional[int] = None
    device: Optional[str] = None
    instance_groups: List[InstanceGroup] = Field(default_factory=list)
    warmup: bool = True
    # Triton's `response_cache { enable: true }`: a request seen before is answered from the server's cache
    # (gpuserve/response_cache.py says what is cached and when).
    response_cache: bool = False
    # Triton's model_warmup entries: {"name", "batch_size", "count", "inputs": {NAME: {"data_type", "dims",
    # "zero_data" | "random_data" | "input_data_file"}}}; empty: one zero batch-1 request when shapes are known.
    warmup_samples: List[Dict[str, Any]] = Field(default_factory=list)
    # Kernels between staging and the backend (README "Kernels"): what clients send differs from what the model takes.
    preprocess: Optional[PreprocessSettings] = None
    ragged: Optional[RaggedSettings] = None

    # Where the settings came from; relative uris resolve against it.
    folder: Optional[str] = Field(default=None, exclude=True)

    @field_validator("device")
    @classmethod
    def _device(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else _check_device(value)

    @classmethod
    def from_file(cls, path: str | os.PathLike, environ: Optional[Dict[str, str]] = None) -> "ModelSettings":
        """A model-settings.json; fields it leaves out come from MLSERVER_MODEL_* (as in MLServer)."""
        path = Path(path)
        data = with_model_env(read_json_object(path), environ)
        try:
            settings = cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidSettings(f"invalid {path}: {_errors(exc)}") from None
        settings.folder = str(path.parent)
        if not settings.name:
            settings.name = path.parent.name
        return settings

    @classmethod
    def from_env(cls, folder: str | os.PathLike, environ: Optional[Dict[str, str]] = None
                 ) -> Optional["ModelSettings"]:
        """MLServer's "default" model for a folder without any model-settings.json: MLSERVER_MODEL_*
        alone, when they name an implementation or a uri. Its name defaults to the folder's, its
        artefact to a well-known file in the folder; a relative uri is found in the folder, else in
        the working directory."""
        data = with_model_env({}, environ)
        parameters = data.get("parameters") or {}
        if not data.get("implementation") and not parameters.get("uri"):
            return None
        folder = Path(folder).resolve()
        uri = parameters.get("uri")
        if uri and not Path(uri).is_absolute() and not (folder / uri).exists() and Path(uri).exists():
            data["parameters"] = dict(parameters, uri=str(Path(uri).resolve()))
        try:
            settings = cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidSettings(f"invalid {MODEL_ENV_PREFIX}* settings: {_errors(exc)}") from None
        settings.folder = str(folder)
        if not settings.name:
            settings.name = folder.name
        return settings

    def resolve_uri(self) -> Optional[Path]:
        """The artefact path named by `parameters.uri`, relative to the settings' folder."""
        uri = self.parameters.uri
        if not uri:
            return None
        path = Path(uri)
        if not path.is_absolute() and self.folder:
            path = Path(self.folder) / path
        return path


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
