"""What the protocols do, independent of the transport: REST and gRPC are thin layers over this.

Every method takes decoded values and returns values or raises an error from `gpuserve.errors`;
the transports only decode, call one method, and encode.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
import uuid
from typing import Any, Dict, Optional, Tuple

import numpy as np

from gpuserve import device_health, response_cache, tracing
from gpuserve.adaptive import AdaptiveBatcher
from gpuserve.classification import apply_classification
from gpuserve.engine.stats import ModelStats
from gpuserve.errors import (InferenceError, InvalidInput, ModelControlDisabled, ModelLoadError, ModelNotFound,
                             ModelNotReady, QueueFull, RequestCancelled, cancelled_here, escaped)
from gpuserve.header_forward import HeaderForward
from gpuserve.response_headers import checked_headers
from gpuserve.model import InferenceVerb, Model
from gpuserve.model_repository import DUPLICATED, ModelRepository, triton_form
from gpuserve.ownership import own_outputs
from gpuserve.peer_merge import merge_statistics
from gpuserve.runtime_settings import RuntimeSettings
from gpuserve.shared_memory import SharedMemoryRegistry, resolve_shared_memory, write_shared_memory
from gpuserve.transport_metrics import TransportMetrics
from gpuserve.triton_sequence import check_sequence_id
from gpuserve.triton_refusals import named_twice, request_prefix
from gpuserve.types import InferRequest, InferResponse, json_numbers
from gpuserve.version import __version__

logger = logging.getLogger("gpuserve")

# Triton's words for the same refusal, exactly (Triton says them in mode none too, and clients match on them),
# then which setting made it.
CONTROL_OFF = ("explicit model load / unload is not allowed if polling is enabled (the server manages its models "
               "itself: --model-control-mode none or poll, or model_control_enabled=false)")

# Set by the transports whose calls may carry many responses per request (gRPC ModelStreamInfer); a model
# that answers with a stream (Triton's decoupled models) refuses calls that cannot carry one.
STREAMING: "contextvars.ContextVar[bool]" = contextvars.ContextVar("gpuserve_streaming_call", default=False)

# What works end to end, in Triton's order. CUDA shared memory is claimed on every machine, as Triton
# claims it: without a GPU (or cuda-bindings/CuPy) registering answers 501 with CUDA's reason.
EXTENSIONS = ["classification", "sequence", "model_repository", "model_repository(unload_dependents)",
              "schedule_policy", "model_configuration",
              "system_shared_memory", "cuda_shared_memory", "binary_tensor_data", "parameters", "statistics",
              "trace", "logging"]


class WrittenParameters(dict):
    """Response parameters that are written even when empty: MLServer's answers always carry
    `"parameters": {}` (its data plane adds CloudEvents headers there, then moves them to HTTP headers)."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return True


# How long a load or unload waits for the other workers of `--workers N` (a model may take long to load)
LOAD_TIMEOUT_S = 3600.0

# Triton's key order in a model's statistics (tritonclient's examples print the JSON as it came)
STATS_ORDER = ("name", "version", "last_inference", "inference_count", "execution_count", "inference_stats",
               "response_stats", "batch_stats", "memory_usage")


class DataPlane:
    def __init__(self, repository: ModelRepository, server_name: str = "gpuserve",
                 server_version: str = __version__, strict_readiness: bool = False, model_control: bool = True,
                 allow_client_shm: bool = True, response_cache_bytes: int = response_cache.DEFAULT_BYTES,
                 response_cache_entries: int = 0, mlserver_cache: bool = False,
                 trace_defaults: Optional[Dict[str, Any]] = None):
        self.repository = repository
        repository.plane = self  # in-process calls between models (BLS) take the clients' path
        self.server_name = server_name
        self.server_version = server_version
        self.extensions = EXTENSIONS  # what server metadata lists (MLServer's `extensions` setting replaces it)
        self.strict_readiness = strict_readiness
        self.model_control = model_control
        self.started = False  # set once the start-up loads have finished
        self.stopping = False  # set when shutdown begins: an open gRPC stream takes no new requests
        self.init_failure: Optional[str] = None  # why start-up failed, served on with --exit-on-error=false
        self._stats: Dict[Tuple[str, str], ModelStats] = {}
        # system shared-memory regions (both transports); allow_client_shm=False refuses registration
        self.shared_memory = SharedMemoryRegistry(allowed=allow_client_shm)
        self.server_spans = None  # MLServer's tracing_server (gpuserve/otel_mlserver.py), set by the server
        self.runtime_settings = RuntimeSettings(lambda name: self.repository.get_model(name) is not None,
                                                trace_defaults=trace_defaults)
        self.transport_metrics = TransportMetrics()
        # Triton's response cache, for the models that enable it (gpuserve/response_cache.py); 0 bytes: none
        self.response_cache = response_cache.ResponseCache(response_cache_bytes, response_cache_entries, mlserver_cache) \
            if response_cache_bytes > 0 else None
        # Triton's --http-header-forward-pattern / --grpc-header-forward-pattern (gpuserve/header_forward.py)
        self.http_forward: Optional[HeaderForward] = None
        self.grpc_forward: Optional[HeaderForward] = None
        # With `gpuserve start --workers N`: the other workers (server/peers.py), whose statistics are added to
        # this one's and who are told of loads, unloads and settings changed here; None in one process
        self.peers = None

    # health and metadata ------------------------------------------------------------------------
    def live(self) -> bool:
        """False once a device reported an error no process recovers from (gpuserve/device_health.py), and
        after a failed start-up (Triton's failed initialization, which still answers metadata)."""
        return not device_health.lost() and self.init_failure is None

    def not_live_reason(self) -> str:
        return "; ".join([f"{device}: {reason}" for device, reason in device_health.lost().items()]
                         + [self.init_failure] * (self.init_failure is not None))

    def ready(self) -> bool:
        """Ready once start-up loading is done (with workers, in every worker) and while live; with strict
        readiness, also every model ready."""
        if not self.started or not self.live():
            return False
        if self.peers is not None and not self.peers.all_started():
            return False
        if self.strict_readiness:
            return all(m.ready for _, _, m in self.repository.all_versions())
        return True

    def metadata(self) -> Dict[str, Any]:
        return {"name": self.server_name, "version": self.server_version, "extensions": self.extensions}

    def model_ready(self, name: str, version: Optional[str] = None) -> bool:
        model = self.repository.get_model(name, version)
        if model is None:
            raise ModelNotFound(name, version)
        return bool(model.ready)

    async def model_healthy(self, name: str, version: Optional[str] = None) -> bool:
        """Readiness as the model itself judges it (`healthy()`), e.g. including a remote predictor."""
        model = self.repository.get_model(name, version)
        if model is None:
            raise ModelNotFound(name, version)
        if not model.ready:
            return False
        healthy = getattr(model, "healthy", None)
        return bool(await healthy()) if healthy is not None else True

    def model_metadata(self, name: str, version: Optional[str] = None) -> Dict[str, Any]:
        model = self.repository.get_model(name, version)
        if model is None or (not model.ready and triton_form(model)):
            model = self.repository.resolve(name, version)  # the latest ready version, else Triton's words
        if hasattr(model, "metadata"):
            meta = dict(model.metadata())
        else:
            meta = {"name": model.name, "versions": [], "platform": "", "inputs": model.get_input_types(),
                    "outputs": model.get_output_types()}
        versions = [v for v in self.repository.versions(name) if v is not None]
        if versions and not getattr(model, "settings_metadata", False):
            meta["versions"] = versions
        return meta

    def model_config(self, name: str, version: Optional[str] = None) -> Dict[str, Any]:
        from gpuserve.model_config import model_config

        meta = self.model_metadata(name, version)
        model = self.repository.get_model(name, version)
        own = getattr(model, "triton_model_config", None)
        if own is not None and model.ready:  # a model that holds a complete config of its own (Python backend)
            return own()
        return model_config(meta, getattr(model, "settings", None))

    # repository extension ---------------------------------------------------------------------
    async def repository_index_async(self, ready_only: bool = False) -> list:
        """`repository_index` with the disk read in a thread: it parses every folder's config (~0.3 ms a
        model), which on the loop held every request for that long."""
        disk = None if ready_only else await asyncio.to_thread(self._on_disk)
        return self.repository_index(ready_only, disk)

    def _on_disk(self) -> Optional[tuple]:
        """(models on disk with their versions, those in MLServer's form, names several folders hold), or
        None without a disk repository."""
        catalog = getattr(self.repository, "catalog", None)
        if catalog is None:
            return None
        mlserver_names = getattr(self.repository, "mlserver_names", None)
        try:
            on_disk = catalog()
            # MLServer lists a model-settings.json model that is not loaded without a reason
            silent = mlserver_names() if mlserver_names is not None else ()
        except Exception as exc:  # a folder that went away must not break the index
            logger.warning("repository index: cannot scan the model folder: %s", exc)
            on_disk, silent = {}, ()
        duplicates = getattr(self.repository, "duplicates", None)
        return on_disk, silent, (duplicates() if duplicates is not None else ())

    def repository_index(self, ready_only: bool = False, disk: Optional[tuple] = None) -> list:
        index, listed = [], set()
        for name, version, model in self.repository.all_versions():
            listed.add((name, version or ""))
            if ready_only and not model.ready:
                continue
            # `reason` always there, "" when ready: MLServer's RepositoryIndexResponse requires it
            entry = {"name": name, "version": version or "", "state": "READY" if model.ready else "UNAVAILABLE",
                     "reason": ""}
            reason = "" if model.ready else getattr(model, "reason", "")
            if not model.ready and not reason and not self.started:
                entry["state"] = "LOADING"  # start-up loads still running: not a failure (as Triton says)
            elif not model.ready:
                entry["reason"] = reason or "not loaded"
            if not version and (getattr(model, "settings_metadata", False) or triton_form(model)):
                # MLServer leaves out the version a model-settings.json does not give; Triton that of a model
                # whose versions were never read (a duplicate, a config it could not parse)
                del entry["version"]
            index.append(entry)
        if disk is None and not ready_only:
            disk = self._on_disk()
        if disk is not None and not ready_only:  # on disk, not loaded (e.g. unloaded): as Triton, UNAVAILABLE
            unloaded = getattr(self.repository, "unloaded", ())
            on_disk, silent, duplicated = disk
            for name, versions in on_disk.items():
                if name in duplicated and not any(n == name for n, _ in listed):
                    index.append({"name": name, "state": "UNAVAILABLE", "reason": DUPLICATED})
                    continue
                if name not in silent and name not in unloaded:
                    if not any(n == name for n, _ in listed):
                        index.append({"name": name})  # as Triton: on disk, never loaded, no state to tell
                    continue
                for version in versions or [""]:
                    if (name, version) not in listed:
                        entry = {"name": name, "version": version, "state": "UNAVAILABLE",
                                 "reason": "" if name in silent else "unloaded"}
                        if not version and name in silent:
                            del entry["version"]
                        index.append(entry)
            index.sort(key=lambda e: (e["name"], _version_order(e.get("version", ""))))
        return index

    async def load_model(self, name: str, config: Optional[str] = None, files: Optional[Dict[str, bytes]] = None,
                         everywhere: bool = True) -> None:
        """Load or reload; `config` (JSON) and `files` are Triton's load parameters (load_override.py).
        With workers, the others load it too once it loaded here (`everywhere` false: here only)."""
        if not self.model_control:
            raise ModelControlDisabled(CONTROL_OFF)
        # Triton's words for names that cannot be a model folder (clients match them); unload is not checked
        if not name or not name.strip():
            raise InvalidInput("Model name cannot be empty. Please enter a valid name to deploy.")
        if "/" in name or name.strip() in (".", ".."):  # a backslash is a name's character here, as in Triton
            raise InvalidInput(f"invalid model name '{name}', model name must not contain path traversal characters")
        if self.response_cache is not None:
            self.response_cache.clear_model(name)  # a model loaded again may answer differently
        loaded = await (self.repository.load_async(name, config, files) if config is not None or files
                        else self.repository.load_async(name))
        if not loaded:
            model = self.repository.get_model(name)
            reason = getattr(self.repository, "load_failures", {}).get(name) or getattr(model, "reason", "") or \
                "load() did not make the model ready"
            if name in getattr(self.repository, "versioned_failures", ()):
                raise InvalidInput(f"load failed for model '{name}': {reason}")  # Triton's words and status
            raise ModelLoadError(f"failed to load '{name}': {reason}")
        if everywhere and self.peers is not None:
            await self.peers.tell("load", {"name": name, "config": config, "files": files}, timeout=LOAD_TIMEOUT_S)

    async def unload_model(self, name: str, unload_dependents: bool = False, everywhere: bool = True) -> None:
        """Unload; with Triton's `unload_dependents`, an ensemble's steps too. With workers, in each."""
        if not self.model_control:
            raise ModelControlDisabled(CONTROL_OFF)
        if self.response_cache is not None:
            self.response_cache.clear_model(name)
        if unload_dependents:
            await self.repository.unload_async(name, unload_dependents=True)
        else:
            await self.repository.unload_async(name)
        if everywhere and self.peers is not None:
            await self.peers.tell("unload", {"name": name, "unload_dependents": unload_dependents},
                                  timeout=LOAD_TIMEOUT_S)

    # CUDA shared memory, as the transports change it: with workers, in each (each opens the handle) ----
    async def cuda_register(self, name: str, raw_handle: Any, device_id: Any, byte_size: Any) -> None:
        self.shared_memory.cuda_register(name, raw_handle, device_id, byte_size)
        if self.peers is None:
            return
        try:
            await self.peers.tell("cuda_register", {"name": name, "raw_handle": bytes(raw_handle),
                                                    "device_id": device_id, "byte_size": byte_size})
        except Exception:  # registered everywhere or nowhere: a client that retries must not find it half there
            self.shared_memory.cuda_unregister(name)
            with contextlib.suppress(Exception):
                await self.peers.tell("cuda_unregister", {"name": name})
            raise

    async def cuda_unregister(self, name: Optional[str] = None) -> None:
        self.shared_memory.cuda_unregister(name)
        if self.peers is not None:
            await self.peers.tell("cuda_unregister", {"name": name})

    # trace and log settings, as the transports change them: with workers, in each --------------
    async def update_trace(self, updates: Dict[str, Any], model: Optional[str] = None) -> Dict[str, Any]:
        current = self.runtime_settings.update_trace(updates, model)
        if self.peers is not None:
            await self.peers.tell("trace", {"updates": updates, "model": model})
        return current

    async def clear_model_trace(self, model: str) -> Dict[str, Any]:
        current = self.runtime_settings.clear_model_trace(model)
        if self.peers is not None:
            await self.peers.tell("trace_clear", {"model": model})
        return current

    async def update_log(self, updates: Dict[str, Any]) -> Dict[str, Any]:
        current = self.runtime_settings.update_log(updates)
        if self.peers is not None:
            await self.peers.tell("log", {"updates": updates})
        return current

    def list_models(self) -> list:
        return sorted(self.repository.get_models())

    # inference ---------------------------------------------------------------------------------
    async def infer(self, request: InferRequest, headers: Optional[Dict[str, str]] = None
                    ) -> Tuple[Any, Dict[str, str]]:
        try:
            if request.trace is not None:
                return await self._traced(request, headers)
            held = self.shared_memory.hold(request)  # its regions outlive an unregister until it has answered
            if not held:
                return await self._infer(request, headers)
            try:
                return await self._infer(request, headers)
            finally:
                self.shared_memory.let_go(held)
        except QueueFull as exc:
            if exc.request_scoped:  # Triton's words: `[request id: ID] Exceeds maximum queue size`
                exc.request_scoped = False  # (once: an ensemble's step passes through here first)
                exc.reason = request_prefix(request.id) + exc.reason
            raise
        except Exception:
            raise
        except BaseException as exc:  # sys.exit() and the like from model code (gpuserve/hooks.py): this
            if cancelled_here(exc):  # request's 500 in every transport, and in tasks of its own (gRPC streams,
                raise  # ensemble steps), where asyncio would stop the loop with it
            raise escaped(exc) from None

    async def _traced(self, request: InferRequest, headers: Optional[Dict[str, str]] = None
                      ) -> Tuple[Any, Dict[str, str]]:
        """`infer` for a traced request (gpuserve/tracing.py): the request's span, its input and output
        tensors, and its trace as the engine's jobs see it. A child trace (an ensemble step) ends here."""
        trace = request.trace
        model = self.repository.get_model(request.model_name, request.model_version)
        if model is not None:
            trace.begin(model.name, getattr(model, "version", None) or request.model_version, request.id)
            if trace.setting.tensors:
                for tensor in request.inputs:
                    trace.tensor("TENSOR_QUEUE_INPUT", tensor.name, tensor.as_numpy, tensor.datatype)
        token = tracing.CURRENT.set(trace)
        held = self.shared_memory.hold(request)
        streamed = False
        try:
            response, response_headers = await self._infer(request, headers)
            if hasattr(response, "__aiter__"):  # decoupled: the request ends with its last response
                streamed = True
                return _traced_stream(response, trace), response_headers
            if trace.setting.tensors and isinstance(response, InferResponse):
                for output in response.outputs:
                    trace.tensor("TENSOR_BACKEND_OUTPUT", output.name, output.as_numpy, output.datatype)
            trace.stamp("INFER_RESPONSE_COMPLETE")
            return response, response_headers
        finally:
            tracing.CURRENT.reset(token)
            if held:
                self.shared_memory.let_go(held)
            if not streamed:
                _request_end(trace)

    async def _infer(self, request: InferRequest, headers: Optional[Dict[str, str]] = None
                     ) -> Tuple[Any, Dict[str, str]]:
        inputs = request.inputs
        model = self.repository.resolve(request.model_name, request.model_version)  # as Triton, the model first
        if len(inputs) > 1:  # (one name cannot repeat)
            _refuse_repeated(inputs, "input", request, model)
        if request.request_outputs:
            _refuse_repeated(request.request_outputs, "output", request, model)  # later Tritons (2.51 answered once)
        shm_outputs = resolve_shared_memory(self.shared_memory, request)  # inputs read, outputs noted
        if not inputs and getattr(model, "input_index", None) is None and not getattr(model, "counts_inputs", False):
            # Only a model with a Triton config (Python backend, ensemble: those with an input_index; a framework
            # model's config) judges an empty request itself, as Triton does: all-optional inputs run, else
            # "expected N inputs but got 0"
            raise InvalidInput("request must have at least one input" if request.from_grpc
                               else "request must have a non-empty 'inputs' list")
        parameters = request.parameters
        if parameters and "sequence_id" in parameters and triton_form(model):  # as Triton's frontends parse it
            check_sequence_id(parameters["sequence_id"])
        if _user_healthy(type(model)) and not await model.healthy():
            raise ModelNotReady(model.name)
        request.headers = headers
        if (self.http_forward is not None or self.grpc_forward is not None) and headers:
            forward = self.grpc_forward if request.from_grpc else self.http_forward
            if forward is not None:
                forward.apply(request.parameters, headers)
        as_mlserver = getattr(model, "generates_ids", False)  # MLServer's data plane: an id, parameters written
        if request.id is None and as_mlserver:
            # MLServer makes one up for REST only: a gRPC request's id is the proto's, "" when not set
            request.id = "" if request.from_grpc else str(uuid.uuid4())
        cache_key = None
        cache = self.response_cache
        if cache is not None and model.ready and response_cache.enabled_for(model, cache.mlserver):
            looked_up = time.perf_counter_ns()
            try:
                cache_key = cache.key(model, request)
                cached = cache.get(cache_key, request) if cache_key is not None else None
            except Exception:  # a cache that fails is a cache that missed: the model answers
                logger.exception("model %s: response cache lookup failed", model.name)
                cache_key = cached = None
            lookup_ns = time.perf_counter_ns() - looked_up
            if cached is not None:
                if request.trace is not None:  # as Triton's: a hit is queued, never computed
                    request.trace.stamp("QUEUE_START", looked_up)
                self.stats_of(model).record_cache_hit(lookup_ns)
                request.cache_key = cache_key
                if as_mlserver and not cached.parameters:
                    cached.parameters = WrittenParameters()
                return write_shared_memory(self.shared_memory, shm_outputs, cached, request), {}
        stats = None if getattr(model, "stats", None) is not None else self._stats_for(model)
        plain = _plain_predict(type(model))  # a built-in model: no user code made its outputs or runs its hooks
        if stats is None:
            if plain:  # straight to predict, no user hooks to run
                response_headers = {}
                response = await model.predict(request, headers, response_headers)
            else:
                response, response_headers = await model(request, headers)
        else:  # models outside the engine: count here so the statistics extension covers them too
            batcher = adaptive_batcher(model, stats)
            batched = batcher is not None and not (STREAMING.get() and getattr(model, "streams", False))
            if batched:  # the batcher records its executions and the queue; the request's outcome is counted here
                work = batcher.submit(request, headers)
            elif plain:
                work = _predict_with_headers(model, request, headers)
            else:
                work = model(request, headers)
            response, response_headers = await _counted(stats, work, executed=not batched)
        if isinstance(response, InferResponse):
            check_outputs(model.name, response)
            if not plain:  # a user's code made the outputs: it may refill them later
                own_outputs(response, request)
            response.nan_literals = triton_form(model)  # Triton writes NaN, Infinity; MLServer and KServe null
            if response.id is None or request.id is not None:
                response.id = request.id
            if as_mlserver and not response.parameters:
                response.parameters = WrittenParameters()
            if not response.model_name:
                response.model_name = model.name
            if response.model_version is None and getattr(model, "version", None) is not None:
                response.model_version = str(model.version)
            if request.request_outputs and not getattr(model, "answers_every_output", False):
                response.outputs = select_outputs(response, request, getattr(model, "output_specs", None),
                                                  getattr(model, "outputs_in_model_order", False))
                apply_classification(model, request, response)
            if cache_key is not None:
                self._keep(model, request, response, cache_key, lookup_ns)
        if shm_outputs:
            response = write_shared_memory(self.shared_memory, shm_outputs, response, request)
        if response_headers:
            response_headers = checked_headers(model.name, response_headers)
        return response, response_headers

    def _keep(self, model, request: InferRequest, response: InferResponse, key: bytes, lookup_ns: int) -> None:
        """Put a computed answer into the response cache; the request is answered whatever happens here."""
        inserting = time.perf_counter_ns()
        try:
            refused = self.response_cache.insert(key, response, model)
        except Exception:
            logger.exception("model %s: response cache insertion failed", model.name)
            return
        if refused == response_cache.ALREADY_KEPT:  # as Triton: neither a hit nor a miss
            return
        # as Triton: a miss whether or not the answer could be kept (it logs why not)
        self.stats_of(model).record_cache_miss(lookup_ns + time.perf_counter_ns() - inserting)
        if refused is None:
            request.cache_key = key
        else:
            logger.error("Failed to insert key [%s] into response cache: %s", key.hex(), refused)

    def cached_answer(self, request_key: bytes) -> Optional[Any]:
        """What a request of exactly these bytes was answered with (the transport's own encoding), when
        the response cache still holds that answer for the model the request names now
        (gpuserve/response_cache.py); a hit counts as one."""
        started = time.perf_counter_ns()
        asked = self.response_cache.asked_for(request_key)
        if asked is None:
            return None
        model = self.repository.get_model(*asked)
        if model is None or not model.ready:
            return None  # the full path gives this request its error
        answer = self.response_cache.encoded(request_key, model)
        if answer is not None:
            self.stats_of(model).record_cache_hit(time.perf_counter_ns() - started)
        return answer

    def _stats_for(self, model) -> ModelStats:
        key = (model.name, str(model.version) if getattr(model, "version", None) is not None else "")
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = ModelStats(*key)
        return stats

    def stats_of(self, model) -> ModelStats:
        """The engine's statistics for engine-backed models, the data plane's own for the others."""
        return getattr(model, "stats", None) or self._stats_for(model)

    def statistics(self, name: Optional[str] = None, version: Optional[str] = None,
                   unversioned: str = "1") -> Dict[str, Any]:
        """Triton's statistics extension: `{"model_stats": [...]}` for one model, one version or all.
        An unversioned model (KServe, MLServer) is reported as version `unversioned`: "1" on the
        statistics endpoints, as perf_analyzer parses every entry's version as an integer (std::stoll)
        and aborts on ""; the metrics keep "" in their labels."""
        if name:
            if self.repository.get_model(name, version) is None:  # Triton: 400 / INVALID_ARGUMENT here
                if version in (None, "") or self.repository.get_model(name) is None:
                    raise InvalidInput(f"requested model '{name}' is not available")
                raise InvalidInput(f"requested model version is not available for model '{name}'")
            chosen = [(name, v, m) for v, m in self.repository.versions(name).items()
                      if version in (None, "") or (v or unversioned) == str(version)]
            if not any(m.ready for _, _, m in chosen):  # as Triton: a model that failed to load or was unloaded
                raise InvalidInput(f"requested model '{name}' is not available")
        else:  # as Triton: every ready model
            chosen = [entry for entry in self.repository.all_versions() if entry[2].ready]
        entries = []
        for model_name, model_version, model in chosen:
            entry = self.stats_of(model).as_dict()
            entry["name"], entry["version"] = model_name, model_version or unversioned
            entry.setdefault("response_stats", {})  # as Triton: decoupled-response statistics (none here)
            entry.setdefault("memory_usage", [])
            first = {key: entry.pop(key) for key in STATS_ORDER if key in entry}  # printed as Triton prints it
            entries.append({**first, **entry})
        return {"model_stats": entries}

    async def statistics_everywhere(self, name: Optional[str] = None, version: Optional[str] = None
                                    ) -> Dict[str, Any]:
        """`statistics` as the statistics extension answers it: with workers, every worker's counts added."""
        own = self.statistics(name, version)
        if self.peers is None:
            return own
        return merge_statistics(own, await self.peers.gather("statistics", {"name": name, "version": version}))

    async def generate(self, name: str, version: Optional[str], body: Any,
                       headers: Optional[Dict[str, str]] = None, trace: Any = None) -> Any:
        """Triton's generate extension: the flat request mapped onto the model's inputs, run as a streaming
        call (a decoupled model may answer many times); `gpuserve.generate.responses_of` walks the result."""
        from gpuserve.generate import generate_request

        inputs = self.model_metadata(name, version).get("inputs") or []
        request = generate_request(name, version, body, inputs)
        request.trace = trace
        token = STREAMING.set(True)
        try:
            response, _ = await self.infer(request, headers)
        finally:
            STREAMING.reset(token)
        return response

    async def predict_v1(self, name: str, body: Any, headers: Optional[Dict[str, str]] = None,
                         verb: InferenceVerb = InferenceVerb.PREDICT,
                         version: Optional[str] = None) -> Tuple[Any, Dict[str, str]]:
        try:
            model = self.repository.resolve(name, version)
        except ModelNotFound:
            raise kserve_unknown_model(name) from None
        if _user_healthy(type(model)) and not await model.healthy():
            raise ModelNotReady(model.name)
        if isinstance(body, (bytes, bytearray)) and _builtin_predict(type(model)):
            raise InvalidInput(f"model '{name}' takes a JSON body on V1 (instances or inputs); this one was "
                               f"declared '{(headers or {}).get('content-type')}'")
        stats = None if getattr(model, "stats", None) is not None or verb is not InferenceVerb.PREDICT \
            else self._stats_for(model)
        work = model(body, headers, verb)
        # models outside the engine are counted here, as their V2 requests are (infer above)
        response, response_headers = await (work if stats is None else _counted(stats, work))
        if isinstance(response, InferResponse):
            check_outputs(model.name, response)
            if _builtin_predict(type(model)):  # a framework model asked in V1: V1's answer
                response = {"predictions": response.outputs[0].as_numpy() if len(response.outputs) == 1
                            else {o.name: o.as_numpy() for o in response.outputs}}
            else:  # a user's Model: its V2 answer as it is, as KServe sends it
                response = v2_body(response)
        if isinstance(response, dict) and "predictions" in response:  # float32 digits as KServe's tolist() gives
            predictions = response["predictions"]
            if isinstance(predictions, np.ndarray):
                response["predictions"] = json_numbers(predictions)
            elif isinstance(predictions, dict):
                response["predictions"] = {k: json_numbers(v) if isinstance(v, np.ndarray) else v
                                           for k, v in predictions.items()}
        if response_headers:
            response_headers = checked_headers(model.name, response_headers)
        return response, response_headers


def _refuse_repeated(tensors, kind: str, request: InferRequest, model) -> None:
    """A name given twice among a request's inputs or requested outputs, refused in Triton's words (with the
    request's id for a config.pbtxt model, as Triton's core writes it)."""
    if tensors and len(tensors) > 1 and len({t.name for t in tensors}) < len(tensors):
        seen = set()
        for tensor in tensors:
            if tensor.name in seen:
                if triton_form(model):
                    raise named_twice(request.id, kind, tensor.name)
                raise InvalidInput(f"{kind} '{tensor.name}' already exists in request")
            seen.add(tensor.name)


def kserve_unknown_model(name: str) -> ModelNotFound:
    """V1 is KServe's own protocol, so an unknown model is said in KServe's words there; V2 keeps Triton's,
    which tritonclient's examples check for."""
    return ModelNotFound(name, reason=f"Model with name {name} does not exist.")


def check_outputs(model_name: str, response: InferResponse) -> None:
    """Outputs given as JSON lists must fit their shape and datatype: one that does not is the model's
    (the server's) fault, 500 / INTERNAL, never a 200 with a malformed body nor the client's 400. NumPy
    outputs are well formed by construction; shared-memory outputs carry no data here."""
    for output in response.outputs:
        if output._array is None and output._data is not None and not getattr(output, "keeps_declared_shape", False):
            try:
                output.as_numpy()
            except InvalidInput as exc:
                raise InferenceError(f"model '{model_name}' returned a malformed output: {exc}") from None


def v2_body(response: InferResponse) -> Dict[str, Any]:
    """An InferResponse in KServe's V2 JSON (`id`, `model_name`, `model_version` even when null, `outputs`)."""
    body: Dict[str, Any] = {"id": response.id, "model_name": response.model_name,
                            "model_version": None if response.model_version is None else str(response.model_version),
                            "outputs": [o.wire_dict() for o in response.outputs]}
    if response.parameters:
        body["parameters"] = response.parameters
    return body


_BUILTIN: Dict[type, bool] = {}
_USER_HEALTHY: Dict[type, bool] = {}


def _user_healthy(cls: type) -> bool:
    """Whether a user's class defines `healthy()`: KServe asks it before every predict / infer (503 when it
    says False), so we do, for those classes only; gpuserve's own `healthy` (a remote predictor's check,
    Triton's `is_ready`) stays with the readiness routes, and models without one pay one dict lookup."""
    own = _USER_HEALTHY.get(cls)
    if own is None:
        owner = next((c for c in cls.__mro__ if "healthy" in vars(c)), None)
        own = _USER_HEALTHY[cls] = owner is not None and not owner.__module__.startswith("gpuserve.")
    return own


def _builtin_predict(cls: type) -> bool:
    """Whether this model's `predict` is one of gpuserve's own models' (ONNX, torch, classic, Triton Python,
    MLServer runtimes...): those answer a V1 request with `predictions`. A user's `predict`, or `Model`'s
    forwarding one, keeps its InferResponse's V2 form, as in KServe."""
    builtin = _BUILTIN.get(cls)
    if builtin is None:
        owner = next((c for c in cls.__mro__ if "predict" in vars(c)), None)
        builtin = _BUILTIN[cls] = owner is not None and owner is not Model and owner.__module__.startswith("gpuserve.")
    return builtin


async def _counted(stats: ModelStats, work, executed: bool = True):
    """Await a request's work for a model outside the engine, counting it in `stats` as Triton counts: a
    success as one unbatched execution (or, `executed` False, only as a success: an adaptive batcher recorded
    the execution that carried it), a failure with its reason (the client going away: CANCELED)."""
    start = time.perf_counter_ns()
    try:
        result = await work
    except asyncio.CancelledError:
        stats.record_request(False, time.perf_counter_ns() - start, "CANCELED")
        raise
    except BaseException as exc:  # a request the server cancelled (its sequence was) counts as Triton's CANCELED
        stats.record_request(False, time.perf_counter_ns() - start,
                             "CANCELED" if isinstance(exc, RequestCancelled) else "BACKEND")
        raise
    if executed:
        stats.record_unbatched(time.perf_counter_ns() - start)
    else:
        stats.record_request(True, time.perf_counter_ns() - start)
    return result


async def _predict_with_headers(model, request: InferRequest, headers) -> Tuple[Any, Dict[str, str]]:
    response_headers: Dict[str, str] = {}
    response = await model.predict(request, headers, response_headers)
    return response, response_headers


_PLAIN: Dict[type, bool] = {}


def _plain_predict(cls: type) -> bool:
    """Whether `Model.__call__` would only await `predict`: a class that says so (`plain_predict`, the
    built-in runtimes) and whose pipeline hooks nobody replaced. Skipping the pipeline saves ~4 us a request.
    `predict` must come from a class that says so itself: a user's subclass of a built-in runtime that
    overrides it may take other arguments, which the pipeline fits and a direct call would not."""
    plain = _PLAIN.get(cls)
    if plain is None:
        owner = next((c for c in cls.__mro__ if "predict" in vars(c)), None)
        plain = _PLAIN[cls] = bool(owner is not None and vars(owner).get("plain_predict", False)) and all(
            getattr(cls, name) is getattr(Model, name) for name in ("__call__", "preprocess", "postprocess", "validate")
        ) and inspect.iscoroutinefunction(cls.predict)
    return plain


def _version_order(version: str):
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def adaptive_batcher(model, stats: Optional[ModelStats] = None) -> Optional[AdaptiveBatcher]:
    """The model's adaptive batcher when its settings ask for one (max_batch_size > 1), made on first use; it
    records its executions in `stats`."""
    batcher = getattr(model, "_adaptive_batcher", None)
    if batcher is None:
        settings = getattr(model, "settings", None)
        max_batch = getattr(settings, "max_batch_size", None) or 0
        if max_batch <= 1:
            return None
        batcher = AdaptiveBatcher(model, max_batch, getattr(settings, "max_batch_time", 0.0) or 0.0, stats)
        model._adaptive_batcher = batcher
    elif batcher.stats is None:
        batcher.stats = stats
    return batcher


def select_outputs(response: InferResponse, request: InferRequest, declared=None, in_model_order=False) -> list:
    """Keep the outputs the client asked for, in its order (or, `in_model_order`, in the order the model
    answered them, as Triton's Python backend and ensembles do), carrying its per-output parameters. Where
    the model's config `declared` its outputs (Python backend, ensembles), one it declares but did not give
    is left out, as Triton leaves it out; one it does not declare is refused."""
    by_name = {o.name: o for o in response.outputs}
    chosen = []
    for wanted in request.request_outputs:
        output = by_name.pop(wanted.name, None)
        if output is None:
            if any(o.name == wanted.name for o in chosen):
                continue  # as Triton: an output asked for twice comes back once
            if declared is not None and any(spec.name == wanted.name for spec in declared):
                continue
            raise InvalidInput(f"unexpected inference output '{wanted.name}' for model '{request.model_name}'")
        chosen.append(output)
    if in_model_order and len(chosen) > 1:
        position = {output.name: index for index, output in enumerate(response.outputs)}
        chosen.sort(key=lambda output: position[output.name])
    return chosen


def _request_end(trace) -> None:
    if trace.started:
        trace.stamp("REQUEST_END")
    if trace.parent is not None:  # a child's trace ends here, a root's in its front end
        trace.end()


async def _traced_stream(responses, trace):
    """A traced decoupled request's responses: as Triton's, its REQUEST_END follows its final response
    (the front end stamps each one's sending)."""
    try:
        async for item in responses:
            if trace.setting.tensors and isinstance(item, InferResponse):
                for output in item.outputs:
                    trace.tensor("TENSOR_BACKEND_OUTPUT", output.name, output.as_numpy, output.datatype)
            yield item
    finally:
        await responses.aclose()
        _request_end(trace)
