"""Built-in framework models: `Model` subclasses that serve an artefact with nothing for the user to write.

Each checks a request against the artefact's declared inputs (names, datatypes, ranks, fixed
dimensions) so a bad request is a 400 naming what was wrong, never a framework traceback, and then
submits the arrays to the engine, which batches them across requests and instances.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import AbstractSet, Any, Dict, List, Optional

import numpy as np

from gpuserve.batching import batching_config, request_priority, request_timeout_s
from gpuserve.classification import classes_output, classify, labels_for, requested_counts
from gpuserve import device_health
from gpuserve.datatypes import object_map, shape_fits, to_numpy_dtype
from gpuserve.engine import rate_limiter
from gpuserve.engine.batcher import Scheduler
from gpuserve.engine.device import choose_device
from gpuserve.engine.instance import Instance
from gpuserve.backends.cuda import pinned_allocator
from gpuserve.engine.staging import StagingPool
from gpuserve.engine.stats import ModelStats
from gpuserve.errors import (InferenceError, InvalidInput, InvalidSettings, ModelLoadError, ModelMissingError,
                             ModelNotReady, exception_chain)
from gpuserve.kernels.preprocess import Normalize
from gpuserve.kernels.stage import NO_KERNELS, ImageInput, KernelPlan, Ragged
from gpuserve.declared_tensors import declared_dims, reconcile, reshaped
from gpuserve.kernels.topk import TopK
from gpuserve.model import Model
from gpuserve.runtimes_classic import CLASSIC_RUNTIMES
from gpuserve.ragged_batch import RaggedBackend, RaggedSpec, ragged_spec
from gpuserve.sequence_state import SequenceInputs, direct_batching
from gpuserve.settings import ModelSettings
from gpuserve.types import InferOutput, InferRequest, InferResponse
from gpuserve.triton_refusals import missing_inputs, unknown_input
from gpuserve.triton_request_check import check_request
from gpuserve.warmup import run_warmup, warmup_samples

logger = logging.getLogger("gpuserve")
_NONE: AbstractSet[str] = frozenset()  # what bf16_outputs answers for most backends, made once


class FrameworkModel(Model):
    """Request checking, engine submission and response building shared by artefact-backed models."""

    platform = ""
    describes_itself = True  # the model file declares its tensors (a config.pbtxt is checked against them)
    engine_backed = True  # the engine's instances parallelise it; parallel_workers does not apply
    classifies_outputs = True  # the classification extension runs in the engine (top-k in the kernel stage)
    plain_predict = True  # the data plane may await predict directly while no pipeline hook is overridden

    def __init__(self, name: str, settings: Optional[ModelSettings] = None, uri: Optional[str] = None,
                 device: Optional[str] = None):
        super().__init__(name)
        self.settings = settings or ModelSettings(name=name)
        self.uri = uri or (str(self.settings.resolve_uri()) if self.settings.parameters.uri else None)
        self.device_wanted = device or self.settings.device
        self.version = self.settings.parameters.version
        self.backend = None  # the first instance's backend: it describes inputs and outputs
        self.scheduler: Optional[Scheduler] = None
        self.stats = ModelStats(name, self.version or "")
        self.fallback = ""  # why the model runs on the CPU instead of the device it asked for
        self.device_failure = ""  # a sticky CUDA error that ended its service (gpuserve/device_health.py)
        self.kernels: KernelPlan = NO_KERNELS
        self.client_inputs: list = []  # the inputs as clients send them (the kernel stage may change them)
        # The backend's tensors as a config.pbtxt narrowed them (FrameworkModel.load); None: the backend's own
        self.served_inputs: Optional[list] = None
        self.served_outputs: Optional[list] = None
        self.default_outputs: Optional[List[str]] = None
        # config.pbtxt `reshape`s: per input, the model's dims; per output, the dims clients get
        self.reshape_inputs: Dict[str, List[int]] = {}
        self.reshape_outputs: Dict[str, List[int]] = {}
        self.reshape_batched = False
        self.sequences: Optional[SequenceInputs] = None  # config.pbtxt sequence_batching: a stateful model
        self.ragged: Optional[RaggedSpec] = None  # config.pbtxt allow_ragged_batch / batch_input / batch_output

    # to be provided by each framework ----------------------------------------------------------
    def make_backend(self, path: Path, device: str, threads: int):
        raise NotImplementedError

    def artefact(self) -> Path:
        if not self.uri:
            raise ModelMissingError(f"model '{self.name}' has no parameters.uri naming its artefact")
        return Path(self.uri)

    # lifecycle ----------------------------------------------------------------------------------
    def load(self) -> bool:
        path = self.artefact()
        if not path.exists():
            raise ModelMissingError(f"model '{self.name}': {path} does not exist")
        device = choose_device(self.device_wanted)
        count = sum(g.count for g in self.settings.instance_groups) or 1
        tickets = self._rate_limiter_tickets()  # Triton's --rate-limit: a model that cannot fit fails here
        try:
            return self._load(path, device, count, tickets)
        except BaseException:
            self._release_tickets(tickets)
            raise

    def _rate_limiter_tickets(self) -> list:
        """With Triton's rate limiter on, one ticket per instance (engine/rate_limiter.py): its instance group's
        resources and priority; none when it is off."""
        limiter = rate_limiter.limiter()
        groups = [g.model_dump() for g in self.settings.instance_groups]
        return limiter.tickets_for(self.name, groups) if limiter is not None and groups else []

    @staticmethod
    def _release_tickets(tickets: list) -> None:
        limiter = rate_limiter.limiter()
        if tickets and limiter is not None:
            limiter.unregister(tickets)

    def _load(self, path: Path, device: str, count: int, tickets: list) -> bool:
        self.fallback = ""
        self.sequences = self._sequence_inputs(count)
        ragged = (self.settings.model_extra or {}).get("triton_ragged")
        self.ragged = ragged_spec(self.name, ragged) if ragged else None
        backends = self._build_backends(path, device, count)
        device = backends[0].device if backends else device
        if not self.fallback and backends and getattr(backends[0], "fallback", ""):
            self.fallback = backends[0].fallback  # e.g. TensorRT EP asked for, CUDA EP running
        try:
            if self.ragged is not None:  # the engine sees the client's tensors and hands over whole requests
                backends = [RaggedBackend(b, self.ragged, self.settings.inputs, self.settings.outputs)
                            for b in backends]
            self._complete_max_batch(backends[0])
            self.kernels = kernel_plan(self.name, self.settings, backends[0])
            if self.sequences is not None:
                self.sequences.check(backends[0].inputs, backends[0].outputs)
            self.served_inputs, self.served_outputs = self._served_tensors(backends[0])
            samples = warmup_samples(self.settings, backends[0].inputs)
            if samples:
                runs = run_warmup(self.name, backends, samples, self.prepare,
                                  guessed=not self.settings.warmup_samples)
                logger.info("model %s: warmup ran %d request(s) (%s)", self.name, runs,
                            ", ".join(name for name, _, _ in samples))
        except BaseException:
            _unload_all(backends)
            raise
        self.backend = backends[0]
        self.client_inputs = client_inputs(self.kernels, self.served_inputs)
        # A config.pbtxt that lists fewer outputs than the file has: requests get the listed ones (as Triton)
        self.default_outputs = [o.name for o in self.served_outputs] \
            if len(self.served_outputs) < len(self.backend.outputs) or self.sequences is not None else None
        # A config.pbtxt's max_batch_size 0 means no batch dimension even where every dim is -1 (as Triton:
        # inputs of one request may then differ in their first dim, and zero-length tensors are fine)
        declared = (self.settings.model_extra or {}).get("triton_max_batch_size")
        batchable = declared != 0 and all(s.shape and s.shape[0] == -1
                                          for s in self.backend.inputs + self.backend.outputs)
        config = direct_batching(batching_config(self.settings, batchable),
                                 (self.settings.model_extra or {}).get("triton_sequence_batching"))
        if self.ragged is not None and self.ragged.ragged:  # their lengths may differ within a batch
            config = dataclasses.replace(config, ragged_any_shape=True, ragged_inputs=tuple(dict.fromkeys(
                config.ragged_inputs + self.ragged.ragged)))
        limit = int(getattr(self.backend, "max_batch_size", 0) or 0)  # e.g. a TensorRT profile's max
        if limit and config.max_batch_size > limit:
            config = dataclasses.replace(config, max_batch_size=limit, preferred_batch_sizes=tuple(
                p for p in config.preferred_batch_sizes if p <= limit))
        pinned = pinned_allocator() if device != "cpu" else None
        pool = StagingPool(pinned) if pinned is not None else StagingPool()
        instances = [Instance(b, f"{self.name}-{i}", pool, self.stats, stage=self.kernels.bind(b))
                     for i, b in enumerate(backends)]
        for instance, ticket in zip(instances, tickets):
            instance.ticket, instance.slots = ticket, 1  # one batch at a time while it holds resources
        self._tickets = tickets
        self.scheduler = Scheduler(self.name, instances, config, self.stats, batch_dim=batchable)
        if self.sequences is not None and batchable:  # Triton's Direct slots (gpuserve/sequence_direct.py)
            self.sequences.attach(self.scheduler, self.prepare)
        if self.settings.dynamic_batching is not None and self.sequences is None:
            logger.debug("Starting dynamic-batcher thread")  # Triton's verbose words as its batcher starts
        self.ready = True
        logger.info("model %s: %d instance(s) on %s, max_batch_size %d", self.name, count, self.backend.device,
                    config.max_batch_size)
        return True

    def _complete_max_batch(self, backend) -> None:
        """Triton's auto-complete of a model in a Triton repository (versioned folders) whose config is
        missing or lists no tensors: hook for the frameworks whose files describe their tensors."""

    def _sequence_inputs(self, instances: int = 1) -> Optional[SequenceInputs]:
        extra = self.settings.model_extra or {}
        batching = extra.get("triton_sequence_batching")
        if batching is None:
            return None
        folder = extra.get("triton_folder")
        max_batch = int(extra.get("triton_max_batch_size") or 0)
        return SequenceInputs(self.name, batching, Path(folder) if folder else None, max_batch > 0, instances,
                              max_batch)

    def _served_tensors(self, backend) -> tuple:
        """(inputs, outputs) as clients see them: a config.pbtxt's declared tensors checked against and merged
        with the model file's (gpuserve/declared_tensors.py), else the file's own. A stateful model's control
        and state inputs are the server's to fill, and its state outputs are kept unless the config lists them."""
        extra = self.settings.model_extra or {}
        self.reshape_inputs, self.reshape_outputs = {}, {}
        backend_inputs, backend_outputs = list(backend.inputs), list(backend.outputs)
        if self.sequences is not None:
            declared = {t.name for t in self.settings.outputs}
            backend_inputs = [s for s in backend_inputs if s.name not in self.sequences.hidden_inputs]
            backend_outputs = [s for s in backend_outputs
                               if s.name not in self.sequences.state_outputs or s.name in declared]
        reshapes = extra.get("triton_reshapes") or {}
        if "triton_max_batch_size" not in extra or self.kernels is not NO_KERNELS or not (
                self.describes_itself or reshapes):
            return backend_inputs, backend_outputs
        # Triton's `reshape`: the model takes (gives) the reshape's dims, clients send (get) the declared ones
        self.reshape_batched = int(extra.get("triton_max_batch_size") or 0) > 0
        inputs = reconcile(self.name, self.settings.inputs, backend_inputs, "input", reshapes.get("inputs"),
                           self.reshape_batched, getattr(backend, "overridable_inputs", ()),
                           extra.get("triton_optional_inputs") or ())
        outputs = reconcile(self.name, self.settings.outputs, backend_outputs, "output", reshapes.get("outputs"),
                            self.reshape_batched)
        self.reshape_inputs = dict(reshapes.get("inputs") or {})
        self.reshape_outputs = {o.name: (list(reshapes["outputs"][o.name]),
                                         list(o.shape[1:] if self.reshape_batched else o.shape))
                                for o in outputs if o.name in (reshapes.get("outputs") or {})}
        return inputs, outputs

    def _build_backends(self, path: Path, device: str, count: int) -> list:
        """One backend per instance; a device that runs out of memory sends them all to the CPU."""
        backends: list = []
        try:
            for _ in range(count):
                threads = max(_cpu_count() // count, 1) if device == "cpu" else 1
                backends.append(self.make_backend(path, device, threads))
            return backends
        except Exception as exc:
            if device == "cpu" or not is_out_of_memory(exc):
                _unload_all(backends)
                raise
            reason = f"out of memory on {device}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        _unload_all(backends)
        backends.clear()
        _empty_cuda_cache()
        logger.warning("model %s: %s; loading it on the CPU instead", self.name, reason)
        self.fallback = reason
        threads = max(_cpu_count() // count, 1)
        try:
            for _ in range(count):
                backends.append(self.make_backend(path, "cpu", threads))
        except BaseException:
            _unload_all(backends)
            raise
        return backends

    def _take_schedulers(self) -> list:
        """The model's schedulers (one here; the Python backend keeps one per instance for sequences), handed
        over for closing and forgotten; the model's rate limiter tickets go back with them."""
        self._release_tickets(getattr(self, "_tickets", None) or [])
        self._tickets = []
        if self.sequences is not None:
            self.sequences.detach()
        scheduler, self.scheduler = self.scheduler, None
        return [scheduler] if scheduler is not None else []

    async def aclose(self) -> None:
        """Stop the batchers (failing what is still queued), then free the instances."""
        self.ready = False
        for scheduler in self._take_schedulers():
            await scheduler.stop()
        self.backend = None

    def stop(self) -> None:
        super().stop()
        self.ready = False
        for scheduler in self._take_schedulers():
            for instance in scheduler.instances:
                instance.close()
        self.backend = None
        release_memory()

    # metadata -----------------------------------------------------------------------------------
    def get_input_types(self) -> List[Dict]:
        return [s.as_metadata() for s in self.client_inputs] if self.backend else \
            [t.model_dump(exclude={"parameters"}) for t in self.settings.inputs]

    @property
    def bf16_outputs(self) -> AbstractSet[str]:
        """Outputs the backend answers as BF16 held in float32 (ONNX Runtime on the CPU)."""
        return getattr(self.backend, "bf16_outputs", None) or _NONE

    def outputs_served(self) -> list:
        """The outputs clients may ask for: a config.pbtxt's narrowing, else the backend's own."""
        return self.served_outputs if self.served_outputs is not None else self.backend.outputs

    def get_output_types(self) -> List[Dict]:
        return [s.as_metadata() for s in self.outputs_served()] if self.backend else \
            [t.model_dump(exclude={"parameters"}) for t in self.settings.outputs]

    def metadata(self) -> Dict[str, Any]:
        meta = super().metadata()
        if self.backend is not None:
            meta["parameters"] = {"device": self.backend.device,
                                  "max_batch_size": self.scheduler.config.max_batch_size if self.scheduler else 0}
            if getattr(self, "fallback", ""):
                meta["parameters"]["fallback"] = self.fallback
        return meta

    # inference ----------------------------------------------------------------------------------
    def prepare(self, name: str, array: np.ndarray) -> np.ndarray:
        """Framework-specific conversion of one checked input (e.g. BYTES for onnxruntime)."""
        return array

    def _input_plan(self) -> tuple:
        """What `_arrays` reads of the model's inputs and settings, made again only when either is replaced (a
        load, a config update): (specs by name, loose, optional names, Triton form, checked, max_batch_size)."""
        backend, inputs, settings = self.backend, self.client_inputs, self.settings
        plan = self.__dict__.get("_plan")
        if plan is not None and plan[0] is inputs and plan[1] is settings and plan[2] is backend:
            return plan[3]
        loose = getattr(backend, "loose_inputs", False)  # TorchScript without declared inputs
        extra = settings.model_extra or {}
        triton = "triton_max_batch_size" in extra  # a config.pbtxt model: Triton core's checks and words
        made = ({s.name: s for s in inputs}, loose, extra.get("triton_optional_inputs") or (), triton,
                triton and not loose, int(extra.get("triton_max_batch_size") or 0))
        self.__dict__["_plan"] = (inputs, settings, backend, made)
        return made

    def _arrays(self, request: InferRequest) -> Dict[str, np.ndarray]:
        specs, loose, optional, triton, checked, max_batch = self._input_plan()
        # (checked: a config.pbtxt model's names, datatypes and shapes below are known to fit once checked here)
        if checked:
            check_request(request, self.name, specs, optional, max_batch)
        arrays = {}
        for tensor in request.inputs:
            spec = specs.get(tensor.name)
            if spec is None:  # (a config model's names were checked already, unless its inputs are loose)
                raise unknown_input(self.name, tensor.name) if triton else InvalidInput(
                    f"unexpected input '{tensor.name}' for model '{self.name}'; expected {sorted(specs)}")
            if loose:
                arrays[tensor.name] = self.prepare(tensor.name, tensor.as_numpy())
                continue
            if not checked and tensor.datatype != spec.datatype:
                raise InvalidInput(f"input '{tensor.name}' has datatype {tensor.datatype}; "
                                   f"model '{self.name}' expects {spec.datatype}")
            array = tensor.as_numpy()
            if not checked and not shape_fits(spec.shape, array.shape):
                raise InvalidInput(f"input '{tensor.name}' has shape {list(array.shape)}; "
                                   f"model '{self.name}' expects {spec.shape} (-1 is any size)")
            if tensor.name in self.reshape_inputs:
                array = reshaped(array, self.reshape_inputs[tensor.name], self.reshape_batched,
                                 f"input '{tensor.name}'")
            arrays[tensor.name] = self.prepare(tensor.name, array)
        # every input given is one of specs (an unknown one was refused above): only fewer can miss some
        missing = [name for name in specs if name not in arrays and name not in optional] \
            if len(arrays) < len(specs) else None
        if missing and triton:
            raise missing_inputs(request.id, self.name, list(arrays), missing, len(specs) - len(optional), len(specs))
        if missing:
            raise InvalidInput(f"model '{self.name}' needs inputs {missing} that the request lacks")
        self.kernels.check_request(arrays)
        return arrays

    @property
    def counts_inputs(self) -> bool:
        """A config.pbtxt model judges a request's input count itself (`_arrays`), an empty one too, in Triton
        core's words."""
        return "triton_max_batch_size" in (self.settings.model_extra or {}) and \
            not getattr(self.backend, "loose_inputs", False)

    async def _submit(self, arrays: Dict[str, np.ndarray], parameters: Optional[dict],
                      outputs: Optional[List[str]] = None, reduce: Optional[Dict[str, int]] = None
                      ) -> Dict[str, np.ndarray]:
        scheduler = self.scheduler
        if scheduler is None or not self.ready:
            raise ModelNotReady(self.name, self.device_failure or None)
        try:
            if not parameters:  # (most requests carry none: neither a priority nor a timeout)
                return await scheduler.submit(arrays, None, None, outputs, reduce)
            return await scheduler.submit(arrays, request_priority(parameters, scheduler.config.priority_levels),
                                          request_timeout_s(parameters), outputs, reduce)
        except Exception as exc:
            self._check_device(exc)
            raise

    def _check_device(self, exc: BaseException) -> None:
        """A sticky CUDA error (gpuserve/device_health.py) ends this model's and the server's service."""
        device = str(getattr(self.backend, "device", "cpu"))
        if device == "cpu":
            return
        reason = device_health.fatal_reason(exc)
        if reason is None:
            return
        self.ready = False
        self.device_failure = f"{device} reported an unrecoverable error ({reason}); restart the server"
        self.reason = self.device_failure
        device_health.report(device, f"model {self.name}: {reason}")

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            wanted = [o.name for o in payload.request_outputs] if payload.request_outputs else self.default_outputs
            if payload.request_outputs and not getattr(self.backend, "loose_outputs", False):
                known = {o.name for o in self.outputs_served()}
                unknown = [n for n in wanted if n not in known]
                if unknown:  # Triton's words, naming the first one (clients and qa tests match them)
                    raise InvalidInput(f"unexpected inference output '{unknown[0]}' for model '{self.name}'")
            counts = requested_counts(payload) if payload.request_outputs else {}
            if self.sequences is not None:
                results = await self._in_sequence(payload, wanted)
            else:
                results = await self._submit(self._arrays(payload), payload.parameters, wanted, counts or None)
            if self.reshape_outputs:
                results = {name: self._client_shape(name, array) for name, array in results.items()}
            if len(results) > 1:
                results = self._answer_order(results)
            outputs = [self._output(name, array, counts) for name, array in results.items()]
            return InferResponse(payload.id, self.name, outputs, model_version=self.version)
        if isinstance(payload, dict) and ("instances" in payload or "inputs" in payload):
            return await self._predict_v1(payload)
        raise InvalidInput("expected a V2 inference request or a V1 body with 'instances' or 'inputs'")

    async def _in_sequence(self, payload: InferRequest, wanted: Optional[List[str]]) -> Dict[str, np.ndarray]:
        """A stateful model's request: after its sequence's previous one, with controls and state added."""
        if requested_counts(payload):
            raise InvalidInput(f"model '{self.name}' is stateful (sequence_batching): the classification "
                               "extension is not served for it")
        parameters = payload.parameters or {}
        arrays = self._arrays(payload)
        hidden = self.sequences.hidden_inputs

        async def submit(full: Dict[str, np.ndarray], outputs: Optional[List[str]]) -> Dict[str, np.ndarray]:
            for name in hidden:  # the server's tensors need the framework's form too (a string CORRID)
                full[name] = self.prepare(name, full[name])
            return await self._submit(full, parameters, outputs)

        return await self.sequences.run(submit, arrays, parameters, wanted,
                                        [o.name for o in self.outputs_served()])

    def _answer_order(self, results: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The order a response lists several outputs in: the backend's (the client's asked order, else the
        model's); a model form whose peer answers in another order says so (OnnxModel)."""
        return results

    def _client_shape(self, name: str, array):
        """An output in the dims its config declares (Triton's `reshape`), where it has one."""
        shapes = self.reshape_outputs.get(name)
        if shapes is None or not isinstance(array, np.ndarray):
            return array
        return reshaped(array, declared_dims(array.shape, *shapes, self.reshape_batched), self.reshape_batched,
                        f"model '{self.name}' output '{name}'", InferenceError)

    def _output(self, name: str, array, counts: Dict[str, int]) -> InferOutput:
        """One response output; the classification extension's `value:index[:label]` rows where asked for."""
        if name not in counts:
            if name in self.bf16_outputs:  # held as float32 (NumPy has no bfloat16), sent as BF16
                return InferOutput(name, list(array.shape), "BF16", array)
            if array.dtype.kind == "U":  # NumPy's fixed-width text goes out as BYTES, held as objects
                array = array.astype(object)
            return InferOutput.from_numpy(name, array)
        batched = bool(self.scheduler.batch_dim) if self.scheduler is not None else True
        if isinstance(array, TopK):  # reduced in the kernel stage: only k per row came back
            return classes_output(name, array.first(counts[name]), labels_for(self, name), not batched)
        return classify(InferOutput.from_numpy(name, array), counts[name], labels_for(self, name), batched)

    async def _predict_v1(self, body: dict) -> dict:
        if self.sequences is not None:
            raise InvalidInput(f"model '{self.name}' is stateful (sequence_batching): send V2 requests with "
                               "a sequence_id")
        if len(self.client_inputs) != 1:
            raise InvalidInput(f"model '{self.name}' has {len(self.client_inputs)} inputs; use the V2 protocol")
        spec = self.client_inputs[0]
        try:
            # KServe V1: row form {"instances": [...]}, or the columnar form {"inputs": [...]}
            rows = body["instances"] if "instances" in body else body["inputs"]
            array = np.asarray(rows, dtype=to_numpy_dtype(spec.datatype))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"'instances' do not fit {spec.datatype}: {exc}") from None
        if not shape_fits(spec.shape, array.shape):
            raise InvalidInput(f"'instances' have shape {list(array.shape)}; model '{self.name}' expects {spec.shape}")
        if spec.name in self.reshape_inputs:
            array = reshaped(array, self.reshape_inputs[spec.name], self.reshape_batched, f"'{spec.name}'")
        results = await self._submit({spec.name: self.prepare(spec.name, array)}, body.get("parameters"))
        name, first = next(iter(results.items()))
        return {"predictions": self._client_shape(name, first)}


def kernel_plan(name: str, settings: ModelSettings, backend) -> KernelPlan:
    """The kernels the settings chose, checked against the backend's tensors; a bad one fails the load."""
    pre, ragged = settings.preprocess, settings.ragged
    if pre is None and ragged is None:
        return NO_KERNELS
    try:
        image = None
        if pre is not None:
            image = ImageInput(pre.input, Normalize(pre.layout, pre.scale, tuple(pre.mean), tuple(pre.std)))
        spec = None
        if ragged is not None:
            spec = Ragged(tuple(ragged.inputs), ragged.pad_value, ragged.lengths_input, ragged.mask_input,
                          tuple(ragged.outputs), ragged.mode, ragged.offsets_input)
        return KernelPlan(backend.inputs, backend.outputs, image, spec)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidSettings(f"model '{name}': {exc}") from None


def client_inputs(plan: KernelPlan, specs) -> list:
    """The backend's inputs as clients send them: preprocessed ones as UINT8, stage-filled ones left out."""
    from gpuserve.backends.base import TensorSpec

    seen = []
    for spec in specs:
        client = plan.client_input(spec)
        if client is not None:
            seen.append(spec if client == (spec.datatype, list(spec.shape)) else TensorSpec(spec.name, *client))
    return seen


def _cpu_count() -> int:
    """Cores for this process's model runtimes: its affinity, shared among serving workers."""
    try:
        cores = max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    share = int(os.environ.get("GPUSERVE_CPU_SHARE", "1") or 1)
    return max(cores // max(share, 1), 1)


_OOM_MARKERS = ("out of memory", "cuda_error_out_of_memory", "failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or a framework error whose message says the device ran out of memory."""
    for error in exception_chain(exc):
        if type(error).__name__ == "OutOfMemoryError":
            return True
        text = str(error).lower()
        if any(marker in text for marker in _OOM_MARKERS):
            return True
    return False


def _unload_all(backends) -> None:
    for backend in backends:
        unload = getattr(backend, "unload", None)
        if unload is not None:
            try:
                unload()
            except Exception:  # pragma: no cover - best effort while failing anyway
                logger.exception("backend unload failed")


def release_memory() -> None:
    """After an unload: collect cycles (frozen ones too), empty torch's CUDA cache, and hand freed heap
    pages back to the OS (glibc keeps freed chunks of a session's weights in its arenas otherwise, so
    RSS would not drop)."""
    import ctypes
    import gc

    frozen = gc.get_freeze_count() > 0
    if frozen:  # the server froze what was alive at start-up; a model's cycles (torch.export graphs) are in there
        gc.unfreeze()
    gc.collect()
    if frozen:
        gc.freeze()
    _empty_cuda_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _empty_cuda_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover
            pass


class _OutputsByName:
    """A model of a Triton repository answers its outputs sorted by name, those asked for among them, as
    Triton's ONNX Runtime and PyTorch backends do (each walks the model's outputs in a std::map), not in the
    order a client asked (clients reading `outputs[0]` get Triton's first). Other forms keep the client's."""

    @property
    def outputs_in_model_order(self) -> bool:
        known = self.__dict__.get("_sorted_outputs")
        if known is None:
            known = self.__dict__["_sorted_outputs"] = "triton_version_policy" in (self.settings.model_extra or {})
        return known

    def _answer_order(self, results: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return dict(sorted(results.items())) if self.outputs_in_model_order else results


def complete_max_batch(model: FrameworkModel, backend, backend_name: str) -> None:
    """As Triton's ONNX Runtime and TensorFlow backends complete a config that is missing or lists no inputs
    and outputs: a model whose tensors all have a variable first dimension, and no max_batch_size, gets
    --backend-config's default-max-batch-size (4 unless given; 0 leaves it unbatched) and, above 1,
    dynamic batching. gpuserve's own bare model files keep their automatic batching."""
    from gpuserve import backend_config

    extra = model.settings.model_extra or {}
    no_config = "triton_max_batch_size" not in extra and "triton_version_policy" in extra
    bare_config = extra.get("triton_max_batch_size") == 0 and not model.settings.inputs \
        and not model.settings.outputs
    if not (no_config or bare_config) or model.settings.max_batch_size:
        return
    backend_config.say_configuration(backend_name)
    default = backend_config.default_max_batch_size(backend_name)
    if not all(spec.shape and spec.shape[0] == -1 for spec in [*backend.inputs, *backend.outputs]):
        return
    logger.warning("autofilled max_batch_size to %d for model '%s' since batching is supporrted but no "
                   "max_batch_size is specified in model configuration. Must specify max_batch_size to utilize "
                   "autofill with a larger max batch size", default, model.name)  # Triton's words, typo too
    extra["triton_max_batch_size"] = default
    model.settings.max_batch_size = default if default > 1 else 0
    if default > 1 and model.settings.dynamic_batching is None:
        from gpuserve.settings import DynamicBatching

        model.settings.dynamic_batching = DynamicBatching()


class OnnxModel(_OutputsByName, FrameworkModel):
    platform = "onnxruntime_onnx"

    def _complete_max_batch(self, backend) -> None:
        complete_max_batch(self, backend, "onnxruntime")

    def artefact(self) -> Path:
        path = super().artefact()
        return path / "model.onnx" if path.is_dir() else path

    def make_backend(self, path: Path, device: str, threads: int):
        try:
            from gpuserve.backends.onnx import OnnxBackend
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ModelLoadError(f"onnxruntime is not installed ({exc}); pip install gpuserve[onnx]") from None
        extra = self.settings.parameters.extra
        providers = extra.get("providers")
        return OnnxBackend(str(path), device=device, intra_op_threads=extra.get("intra_op_threads", threads),
                           inter_op_threads=extra.get("inter_op_threads"),
                           graph_optimization_level=extra.get("graph_optimization_level", "all"),
                           allow_spinning=bool(extra.get("allow_spinning", False)),
                           execution_provider=extra.get("execution_provider"),
                           providers=providers.split(",") if isinstance(providers, str) else providers,
                           trt_fp16=bool(extra.get("trt_fp16", False)),
                           trt_engine_cache_path=extra.get("trt_engine_cache_path"),
                           provider_extra=extra.get("provider_options"),
                           execution_mode=extra.get("execution_mode", "sequential"),
                           enable_mem_arena=extra.get("enable_mem_arena"),
                           enable_mem_pattern=extra.get("enable_mem_pattern"),
                           custom_op_libraries=extra.get("custom_op_libraries") or (),
                           session_config=extra.get("session_config"), run_config=extra.get("run_config"))

    def prepare(self, name: str, array: np.ndarray) -> np.ndarray:
        if array.dtype == object:  # onnxruntime takes str elements for tensor(string)
            try:
                try:
                    return object_map(bytes.decode, array)  # UTF-8, strict
                except TypeError:  # an element that is not bytes (text from JSON, a number): as text
                    return object_map(_as_text, array)
            except UnicodeDecodeError as exc:  # ONNX string tensors hold text: the client's bytes are not
                raise InvalidInput(f"input '{name}': ONNX string tensors hold UTF-8 text; element bytes are not "
                                   f"UTF-8 ({exc.reason} at byte {exc.start})") from None
        return array


def _as_text(element) -> str:
    return element.decode("utf-8") if isinstance(element, bytes) else str(element)


class TorchModel(_OutputsByName, FrameworkModel):
    """TorchScript `model.pt` or torch.export `model.pt2`. TorchScript does not record tensor types,
    so declare `inputs`/`outputs` in the model settings to get checking and batching."""

    describes_itself = False  # TorchScript declares no tensors: the config's are the model's

    @property
    def platform(self) -> str:
        """What metadata and the config endpoints report: a config's torch_aoti as written (an AOTInductor package
        or a torch.export program in model.pt2, told apart at load: backends/torch.py)."""
        return "torch_aoti" if getattr(self.settings, "platform", "") == "torch_aoti" else "pytorch_libtorch"

    def artefact(self) -> Path:
        path = super().artefact()
        if path.is_dir():
            for name in ("model.pt2", "model.pt"):
                if (path / name).exists():
                    return path / name
            return path / "model.pt"
        return path

    def make_backend(self, path: Path, device: str, threads: int):
        try:
            from gpuserve.backends.torch import TorchBackend
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ModelLoadError(f"torch is not installed ({exc}); pip install gpuserve[torch]") from None
        from gpuserve.backends.base import TensorSpec

        # where the config has a `reshape`, the model itself takes (gives) the reshape's dims
        extra_settings = self.settings.model_extra or {}
        reshapes = extra_settings.get("triton_reshapes") or {}
        lead = [-1] if int(extra_settings.get("triton_max_batch_size") or 0) > 0 else []

        def own_shape(tensor, kind):
            reshape = (reshapes.get(kind) or {}).get(tensor.name)
            return lead + list(reshape) if reshape is not None else list(tensor.shape)

        declared_in = [TensorSpec(t.name, t.datatype, own_shape(t, "inputs")) for t in self.settings.inputs] or None
        if declared_in and self.sequences is not None:  # the control and state inputs the server fills
            declared_in += [TensorSpec(*tensor) for tensor in self.sequences.hidden_tensors()]
        if declared_in and self.ragged is not None:  # and the batch inputs
            declared_in += [TensorSpec(*tensor) for tensor in self.ragged.hidden_tensors()]
        declared_out = [TensorSpec(t.name, t.datatype, own_shape(t, "outputs")) for t in self.settings.outputs] or None
        if declared_out and self.sequences is not None:
            declared_out += [TensorSpec(*tensor) for tensor in
                             self.sequences.state_output_tensors([t.name for t in declared_out])]
        extra = self.settings.parameters.extra
        graphs = bool(extra.get("cuda_graphs", False)) and device != "cpu"
        sizes: List[int] = []
        if graphs:
            from gpuserve.backends.torch_graphs import graph_batch_sizes

            config = batching_config(self.settings, True)
            sizes = graph_batch_sizes(extra.get("cuda_graph_batch_sizes") or config.preferred_batch_sizes,
                                      config.max_batch_size)
        if "triton_max_batch_size" in (self.settings.model_extra or {}):  # a config.pbtxt, which Triton checks
            _check_torch_types(self.name, self.sequences, declared_in, declared_out)
        sharing = getattr(self, "_sharing", None)  # set while a load builds its instances
        shared = sharing.get(device) if sharing is not None and extra.get("weight_sharing") else None
        if shared is not None:
            logger.info("Reusing TorchScript model for instance '%s'", self.name)  # Triton's words
        backend = TorchBackend(str(path), device=device, threads=int(extra.get("intra_op_threads") or threads),
                               inputs=declared_in, outputs=declared_out,
                               precision=extra.get("precision"), compile=bool(extra.get("compile", False)),
                               cuda_graphs=graphs, graph_batch_sizes=sizes,
                               inference_mode=extra.get("inference_mode", True) is not False,
                               optimized_execution=extra.get("optimized_execution", True) is not False,
                               shared=shared, placed_by_model=bool(extra_settings.get("triton_kind_model")),
                               name=self.name, op_libraries=extra.get("custom_op_libraries") or ())
        if sharing is not None:
            sharing.setdefault(device, backend)
        if "triton_max_batch_size" in (self.settings.model_extra or {}) and not backend.exported:
            _check_torch_arity(self.name, declared_in, declared_out, backend)
        return backend

    def _build_backends(self, path: Path, device: str, count: int) -> list:
        """ENABLE_WEIGHT_SHARING: this load's instances on one device run one module, as in Triton."""
        for line in self.settings.parameters.extra.get("triton_said") or ():  # Triton's words, once a load
            logger.info("%s", line)
        self._sharing: Optional[Dict[str, object]] = {}
        try:
            return super()._build_backends(path, device, count)
        finally:
            self._sharing = None


def _check_torch_arity(model: str, inputs, outputs, backend) -> None:
    """A config.pbtxt must name an output and as many inputs as `forward` takes, as Triton's libtorch backend
    requires (in its words); gpuserve loaded such a model and failed its requests."""
    if not outputs:
        raise ModelLoadError("model configuration must contain at least one output, none were specified")
    takes = len(backend._found[0])
    if takes and len(inputs or ()) != takes:
        raise ModelLoadError(f"unable to load model '{model}', configuration expects {len(inputs or ())} inputs, "
                             f"model provides {takes}")


_NO_TORCH_TYPE = ("UINT16", "UINT32", "UINT64")  # no torch dtype in Triton's libtorch backend


def _check_torch_types(model: str, sequences, inputs, outputs) -> None:
    """A type Triton's libtorch backend has no torch dtype for fails the load there, in its words (the
    sequence controls checked first, as it does); gpuserve loaded such a model and failed its requests."""
    controls = {c.name for c in sequences.router.controls} if sequences is not None else set()
    states = {s.input_name for s in sequences.states} if sequences is not None else set()
    for spec in sorted(inputs or (), key=lambda s: s.name not in controls):
        if spec.datatype in _NO_TORCH_TYPE:
            if spec.name in controls:
                raise ModelLoadError(f"input '{spec.name}' type 'TYPE_{spec.datatype}' is not supported by PyTorch.")
            kind = "input state" if spec.name in states else "input"
            raise ModelLoadError(f"unsupported datatype TYPE_{spec.datatype} for {kind} '{spec.name}' for model "
                                 f"'{model}'")
    for spec in outputs or ():
        if spec.datatype in _NO_TORCH_TYPE:
            raise ModelLoadError(f"unsupported datatype TYPE_{spec.datatype} for output '{spec.name}' for model "
                                 f"'{model}'")


class TensorRTModel(FrameworkModel):
    """A serialized TensorRT engine, `model.plan`. Needs a GPU and the `tensorrt` package; without
    them the model is not ready and says why. Inputs and outputs come from the engine itself."""

    platform = "tensorrt_plan"

    def _answer_order(self, results: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """In a Triton repository, as Triton's TensorRT backend answers: the outputs asked for in the engine's
        I/O tensor order (it walks `getIOTensorName(i)` and skips the inputs; read from its source), not the
        client's order nor the names'. Not run here: no TensorRT on these machines."""
        if "triton_version_policy" not in (self.settings.model_extra or {}) or self.backend is None:
            return results
        rank = {spec.name: index for index, spec in enumerate(self.backend.outputs)}
        return dict(sorted(results.items(), key=lambda item: rank.get(item[0], len(rank))))

    def artefact(self) -> Path:
        path = super().artefact()
        return path / "model.plan" if path.is_dir() else path

    def load(self) -> bool:
        _tensorrt_module()  # the first thing to say when it is missing, before any file or device check
        return super().load()

    def make_backend(self, path: Path, device: str, threads: int):
        from gpuserve.backends.tensorrt import TensorRTBackend

        if device == "cpu":
            raise ModelLoadError(f"model '{self.name}': TensorRT engines run on a GPU only, and this model was "
                                 "placed on cpu (no usable CUDA device, or device: cpu)")
        profile = int(self.settings.parameters.extra.get("optimization_profile", 0) or 0)
        return TensorRTBackend(str(path), device=device, profile=profile)


def _tensorrt_module():
    try:
        from gpuserve.backends.tensorrt import _trt

        return _trt()
    except ImportError as exc:
        raise ModelLoadError(f"TensorRT is not installed ({exc}); pip install tensorrt on a machine with an NVIDIA "
                             "GPU, or serve the model as ONNX with execution_provider: tensorrt") from None


BUILTIN_RUNTIMES = {
    "torch": TorchModel,
    "pytorch": TorchModel,
    "pytorch_libtorch": TorchModel,
    "gpuserve.runtimes.TorchModel": TorchModel,
    "onnx": OnnxModel,
    "onnxruntime": OnnxModel,
    "onnxruntime_onnx": OnnxModel,
    "gpuserve.runtimes.OnnxModel": OnnxModel,
    "tensorrt": TensorRTModel,
    "tensorrt_plan": TensorRTModel,
    "gpuserve.runtimes.TensorRTModel": TensorRTModel,
}
BUILTIN_RUNTIMES.update(CLASSIC_RUNTIMES)
ARTEFACT_RUNTIMES = {".onnx": OnnxModel, ".pt2": TorchModel, ".pt": TorchModel, ".plan": TensorRTModel}


def __getattr__(name: str):
    """`gpuserve.runtimes.TensorFlowModel`, the name the other frameworks' models have, from its own module
    (gpuserve/runtimes_tensorflow.py), imported on first use."""
    if name == "TensorFlowModel":
        from gpuserve.runtimes_tensorflow import TensorFlowModel

        return TensorFlowModel
    raise AttributeError(f"module 'gpuserve.runtimes' has no attribute '{name}'")
