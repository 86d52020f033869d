"""Triton ensembles (`platform: "ensemble"` with `ensemble_scheduling { step [...] }`): a pipeline of
served models, each step's inputs and outputs renamed through `input_map` / `output_map`.

Each step is an ordinary request through the server's data plane, so the step's model batches it with
everyone else's requests (its dynamic batcher sees the step as one more client) and counts it in its
statistics, as Triton does. Steps whose inputs are all available run concurrently; a step's error fails
the ensemble request with that error's status, its message prefixed "in ensemble 'NAME', " as Triton's.
The graph is checked at load: every step input must be an ensemble input or another step's output, every
ensemble output must be produced, and no tensor may be produced twice.

A step on a decoupled model (TensorRT-LLM-style pipelines: preprocess -> decoupled generator ->
postprocess) makes the ensemble decoupled, as in Triton: only streaming calls reach it, and each of the
step's responses runs the rest of the graph on its own, giving one ensemble response each (a decoupled step
after another runs per response of the first). As in Triton 2.51, a response is final only when no step is
still answering once it is complete, with no response held back to find out; a graph that joins tensors
from different decoupled steps (or from one and the ensemble's inputs) is not ready, as Triton refuses it.
The rest of the graph runs for all of a decoupled step's responses at once, answered in the step's order
(gpuserve/ensemble_stream.py); `max_inflight_requests` bounds how many of one request's run together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

from gpuserve.dataplane import STREAMING
from gpuserve.ensemble_stream import FanOut
from gpuserve.engine.stats import ModelStats
from gpuserve.errors import GpuserveError, InferenceError, InvalidInput, InvalidSettings, ModelNotReady, Unimplemented
from gpuserve.model import Model
from gpuserve.declared_tensors import config_reshapes, from_reshape, to_reshape
from gpuserve.triton_config import read_config
from gpuserve.triton_input_order import map_order
from gpuserve.triton_python_config import checked_inputs, tensor_specs
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

logger = logging.getLogger("gpuserve")

# Where the tensors of one request's graph keep the batch size of the request that made each (Triton's
# TensorData batch_size_): 0 for a model (or ensemble) without batching
BATCH_SIZES = "\0batch sizes"
# Triton counts every failure of an ensemble's own requests under reason OTHER, whatever its step said
ENSEMBLE_FAILURE = "OTHER"
# and, as tritonserver 2.51 does, a request that failed once it was scheduled (in a step) twice: in the
# statistics extension's fail count and in nv_inference_request_failure (qa L0_model_queue test_policy_reject)
FAILURES_PER_REQUEST = 2
# the ensembles whose steps this thread is looking at (an ensemble among its own steps asks itself again)
_CHECKING = threading.local()


class Step:
    def __init__(self, entry: Dict[str, Any], index: int, ensemble: str):
        self.model = str(entry.get("model_name") or "")
        if not self.model:
            raise InvalidSettings(f"ensemble '{ensemble}': step {index} names no model_name")
        version = int(entry.get("model_version", -1) or -1)
        self.version = str(version) if version > 0 else None
        self.inputs: Dict[str, str] = {str(k): str(v) for k, v in (entry.get("input_map") or {}).items()}
        self.outputs: Dict[str, str] = {str(k): str(v) for k, v in (entry.get("output_map") or {}).items()}
        if not self.outputs:
            raise InvalidSettings(f"ensemble '{ensemble}': step {index} ({self.model}) has no output_map")
        self.layout: Optional[Tuple[Any, Tuple[bool, Dict[str, List[int]]]]] = None


def rebatched(array, dims: Optional[List[int]], batching: bool, batch: int):
    """A tensor made by a request of batch size `batch` (0: a model without batching) as a model (or the
    ensemble's output) of the other kind takes it, by Triton's rule: into a batching model, a tensor that
    already has the model's dims gets a batch dimension of 1; into a non-batching one, a batch-of-1 tensor
    that does not have the dims loses its batch dimension. Anything else goes as it is."""
    if dims is None or batching == (batch != 0):
        return array
    fits = len(dims) == array.ndim and all(d == -1 or d == n for d, n in zip(dims, array.shape))
    if batching:
        return array.reshape((1,) + array.shape) if fits else array
    return array.reshape(array.shape[1:]) if not fits and batch == 1 and array.ndim else array


def scheduling(config: Dict[str, Any]) -> Dict[str, Any]:
    """`ensemble_scheduling`, which the text-format reader may give as a one-item list."""
    found = config.get("ensemble_scheduling")
    if isinstance(found, list):
        found = found[0] if found else {}
    return found or {}


def max_inflight_requests(config: Dict[str, Any]) -> int:
    """`ensemble_scheduling.max_inflight_requests`, a uint32: other values are refused in the words of the
    text-format parser Triton reads config.pbtxt with."""
    value = scheduling(config).get("max_inflight_requests", 0)
    problem = None
    if isinstance(value, bool) or not isinstance(value, int):
        problem = f'Expected integer, got: {json.dumps(value) if isinstance(value, str) else value}'
    elif value < 0:
        problem = "Expected integer, got: -"
    elif value > 0xFFFFFFFF:
        problem = f"Integer out of range ({value})"
    if problem:
        raise InvalidSettings(f"Error parsing text-format inference.ModelConfig: {problem}")
    return value


def plan_steps(name: str, config: Dict[str, Any]) -> List[Step]:
    steps = [Step(entry, i, name) for i, entry in enumerate(scheduling(config).get("step", []))]
    if not steps:
        raise InvalidSettings(f"ensemble '{name}' has no ensemble_scheduling steps")
    available = {t["name"] for t in config.get("input", [])}
    produced: Dict[str, str] = {}
    for step in steps:
        for tensor in step.outputs.values():
            if tensor in produced or tensor in available:
                raise InvalidSettings(f"ensemble '{name}': tensor '{tensor}' is produced more than once")
            produced[tensor] = step.model
    for step in steps:
        unknown = [t for t in step.inputs.values() if t not in available and t not in produced]
        if unknown:
            raise InvalidSettings(f"ensemble '{name}': step '{step.model}' reads {unknown}, which neither the "
                                  "ensemble's inputs nor any step provide")
    missing = [t["name"] for t in config.get("output", []) if t["name"] not in produced]
    if missing:
        raise InvalidSettings(f"ensemble '{name}': no step produces its output(s) {missing}")
    used = {t for step in steps for t in step.inputs.values()} | {t["name"] for t in config.get("output", [])}
    unused = [t for t in produced if t not in used]
    if unused:  # Triton's words; a step whose answers go nowhere is a mistake in the graph
        raise InvalidSettings(f"ensemble tensor '{unused[0]}' is unused in ensemble '{name}'")
    # every step must become runnable (a cycle leaves some never ready); they are kept in the order they can run
    ready, pending, ordered = set(available), list(steps), []
    while pending:
        runnable = [s for s in pending if all(t in ready for t in s.inputs.values())]
        if not runnable:
            raise InvalidSettings(f"ensemble '{name}': steps {[s.model for s in pending]} wait on each other (a cycle)")
        for step in runnable:
            ready.update(step.outputs.values())
            pending.remove(step)
        ordered += runnable
    return ordered


class EnsembleModel(Model):
    platform = "ensemble"
    outputs_in_model_order = True  # Triton answers an ensemble's outputs in its output map's order (_response)
    engine_backed = True  # runs in the server process (its steps reach the other models there), never in workers
    plain_predict = True  # no user hooks: the data plane awaits predict directly

    def __init__(self, name: str, settings=None):
        self._loaded = False
        self._reason = ""
        self._checked: Optional[Tuple[tuple, str]] = None  # (the steps' models' ids, _step_problem's answer)
        super().__init__(name)
        self.settings = settings
        self.version = settings.parameters.version if settings is not None else None
        self.registry = None  # set by the ModelRepository that serves it: the steps' models live there
        self.batched = False
        self.reshapes: Dict[str, Dict[str, Tuple[List[int], List[int]]]] = {"input": {}, "output": {}}
        self.config: Dict[str, Any] = {}
        self.steps: List[Step] = []
        self.input_specs: list = []
        self.input_index: dict = {}
        self.output_specs: list = []
        self.optional_inputs: set = set()
        self._max_inflight = 0  # ensemble_scheduling.max_inflight_requests: flows of one request at once
        # Its own statistics, as Triton keeps them: a request counts once its inputs passed the checks
        self.stats = ModelStats(name, str(self.version or ""))

    def load(self) -> bool:
        folder = Path(self.settings.folder)
        config = read_config(folder)
        config["name"] = self.name
        self.steps = plan_steps(self.name, config)
        self.batched = batched = int(config.get("max_batch_size", 0) or 0) > 0
        self.input_specs = tensor_specs(config.get("input", []), batched, "input")
        self.input_index = {spec.name: spec for spec in self.input_specs}
        self.output_specs = tensor_specs(config.get("output", []), batched, "output")
        self.optional_inputs = {t["name"] for t in config.get("input", []) if t.get("optional")}
        # Triton's `reshape` on an ensemble's own tensors: its steps see the reshape's dims, clients the dims
        self.reshapes = config_reshapes(config)
        self._max_inflight = max_inflight_requests(config)
        if self._max_inflight:
            logger.info("Ensemble model '%s' configured with max_inflight_requests: %d", self.name, self._max_inflight)
        self.config = config
        self.ready = True
        return True

    # metadata -----------------------------------------------------------------------------------
    def get_input_types(self) -> List[Dict]:
        return [s.as_metadata() for s in self.input_specs]

    def get_output_types(self) -> List[Dict]:
        return [s.as_metadata() for s in self.output_specs]

    def metadata(self) -> Dict[str, Any]:
        return {"name": self.name, "versions": [self.version] if self.version else [], "platform": "ensemble",
                "inputs": self.get_input_types(), "outputs": self.get_output_types()}

    def triton_model_config(self) -> Dict[str, Any]:
        config = json.loads(json.dumps(self.config))
        config.update(platform="ensemble", backend="", max_batch_size=int(config.get("max_batch_size", 0) or 0))
        config.setdefault("version_policy", {"latest": {"num_versions": 1}})
        config["ensemble_scheduling"] = scheduling(config) or {"step": []}
        # as Triton: decoupled when a step is (clients pick streaming calls by this flag)
        config["model_transaction_policy"] = {"decoupled": bool(self._decoupled_steps())}
        return config

    def output_labels(self, output: str) -> Optional[List[str]]:
        """As Triton: an output's own label_filename, else the labels of the step output that produces it."""
        from gpuserve.classification import labels_for

        entry = next((t for t in self.config.get("output", []) if t["name"] == output), None)
        if entry is not None and entry.get("label_filename"):
            return labels_for(None, None, Path(self.settings.folder) / entry["label_filename"])
        for step in self.steps:
            for name, tensor in step.outputs.items():
                model = self._step_model(step) if tensor == output else None
                if model is not None:
                    return labels_for(model, name)
        return None

    # Ready while loaded and every step's model is, and their configs fit the graph: a pipeline with a missing
    # stage cannot answer, and it becomes ready by itself once its steps load (they may load after it, or be
    # reloaded).
    @property
    def ready(self) -> bool:
        return self._loaded and not self._step_problem()

    @ready.setter
    def ready(self, value: bool) -> None:
        self._loaded = bool(value)

    @property
    def reason(self) -> str:
        return (self._step_problem() if self._loaded else "") or self._reason

    @reason.setter
    def reason(self, value: str) -> None:
        self._reason = value

    def _decoupled_steps(self) -> List[str]:
        return [s.model for s in self.steps if getattr(self._step_model(s), "decoupled", False)]

    def _step_problem(self) -> str:
        """Why the steps' models cannot run this graph now, in Triton's words ("" when they can): a step's
        model (or the version it names) is not loaded, ensembles name each other in a cycle, or a step's
        config does not fit the graph (triton_validate.check_ensemble_steps; joins of different decoupled
        steps among them). Checked again only when a step's model changes."""
        checking = _CHECKING.__dict__.setdefault("ids", set())
        if id(self) in checking:  # asked again while checking itself: it names itself through its steps
            return "circular dependency"
        checking.add(id(self))
        try:
            models = [self._step_model(s) for s in self.steps]
        finally:
            checking.discard(id(self))
        key = tuple(id(m) for m in models)
        if self._checked is not None and self._checked[0] == key:
            return self._checked[1]
        if any(m is None for m in models):
            problem = self._missing_problem([s for s, m in zip(self.steps, models) if m is None])
        else:
            problem = self._config_problem()
        self._checked = (key, problem) if all(m is not None for m in models) else None
        return problem

    def _missing_problem(self, missing: List[Step]) -> str:
        cycle = self._cycle()
        if cycle:
            return f"circular dependency between ensembles: {self.name} -> ... -> {cycle} -> {self.name}"
        registry = self.registry
        for step in missing:
            if step.version is not None and registry is not None and registry.get_model(step.model) is not None:
                return (f"ensemble '{self.name}' depends on '{step.model}' whose required version {step.version} "
                        "is not loaded")
        names = ", ".join(sorted({s.model for s in missing}))
        return f"ensemble {self.name} contains models that are not available or ambiguous: {names}"

    def _cycle(self) -> str:
        """The ensemble that names this one as a step, where ensembles reach back to it ("" if none)."""
        registry, seen, todo = self.registry, set(), [self]
        while todo and registry is not None:
            ensemble = todo.pop()
            for step in getattr(ensemble, "steps", []):
                if step.model == self.name:
                    return ensemble.name
                model = registry.get_model(step.model)
                if isinstance(model, EnsembleModel) and model.name not in seen:
                    seen.add(model.name)
                    todo.append(model)
        return ""

    def _config_problem(self) -> str:
        from gpuserve.model_config import model_config
        from gpuserve.triton_validate import check_ensemble_steps

        scheduling = self.config.get("ensemble_scheduling")
        scheduling = (scheduling[0] if scheduling else {}) if isinstance(scheduling, list) else scheduling or {}
        raw = list(scheduling.get("step") or [])
        configs = []
        for entry, step in zip(raw, (Step(e, i, self.name) for i, e in enumerate(raw))):
            model = self._step_model(step)
            own = getattr(model, "triton_model_config", None)
            try:
                meta = model.metadata() if own is None else None
                if asyncio.iscoroutine(meta):
                    meta.close()
                    return ""  # a model that only describes itself asynchronously is not checked
                configs.append(own() if own is not None else model_config(meta, getattr(model, "settings", None)))
            except Exception:  # a step that cannot describe itself is not held against the ensemble
                return ""
        return check_ensemble_steps({**self.config, "name": self.name}, raw, configs) or ""

    def _step_model(self, step: Step):
        registry = self.registry
        model = registry.get_model(step.model, step.version) if registry is not None else None
        return model if model is not None and model.ready else None

    # inference ----------------------------------------------------------------------------------
    async def predict(self, payload, headers=None, response_headers=None):
        if not isinstance(payload, InferRequest):
            raise InvalidInput(f"model '{self.name}' is an ensemble: send a V2 inference request")
        if not self.ready or self.registry is None:
            raise ModelNotReady(self.name)
        if payload.trace is not None:  # as Triton's ensemble scheduler, which queues the request
            payload.trace.stamp("QUEUE_START")
        max_batch = int(self.config.get("max_batch_size", 0) or 0)
        tensors: Dict[str, Any] = dict(checked_inputs(self.name, payload, self.input_index, self.optional_inputs,
                                                      max_batch))
        rows = next(iter(tensors.values())).shape[0] if max_batch and tensors else 1
        for name, entry in self.reshapes["input"].items():
            if name in tensors:
                tensors[name] = to_reshape(tensors[name], entry, self.batched, f"input '{name}'")
        tensors[BATCH_SIZES] = dict.fromkeys(tensors, rows if max_batch else 0)
        for name in self.optional_inputs:  # as Triton: a left-out optional input is an absent tensor (None)
            tensors.setdefault(name, None)
        if self._decoupled_steps():
            if not STREAMING.get():  # Triton's words, as for a decoupled model itself
                where = "ModelInfer RPC" if payload.from_grpc else "HTTP end point"
                raise Unimplemented(f"{where} doesn't support models with decoupled transaction policy")
            return self._stream(payload, headers, tensors, rows)
        start = time.perf_counter_ns()
        try:
            outputs = None
            async for outputs, _ in self._flows(payload, headers, tensors, self._needed_steps(payload),
                                                streams=False):
                pass
        except BaseException as exc:
            self._record_failure(start, exc)
            raise
        self._record_success(start, rows)
        self.stats.record_first_response(time.perf_counter_ns() - start)
        return self._response(payload, outputs)

    def _record_failure(self, start: int, error: BaseException) -> None:
        """A request cancelled or its stream left counts once; one a step failed, twice (as Triton 2.51)."""
        elapsed = time.perf_counter_ns() - start
        for _ in range(FAILURES_PER_REQUEST if isinstance(error, Exception) else 1):
            self.stats.record_request(False, elapsed, ENSEMBLE_FAILURE)

    def _record_success(self, start: int, rows: int) -> None:
        elapsed = time.perf_counter_ns() - start
        self.stats.record_queue([0])
        self.stats.record_request(True, elapsed)
        self.stats.record_batch(rows, 1, 0, elapsed, 0)

    def _needed_steps(self, payload: InferRequest) -> List[Step]:
        """The steps the requested outputs need, in running order: as Triton, a step none of whose outputs
        is asked for (or read by a needed step) does not run."""
        if not payload.request_outputs:
            return list(self.steps)
        needed = {o.name for o in payload.request_outputs}
        kept: List[Step] = []
        for step in reversed(self.steps):
            if any(tensor in needed for tensor in step.outputs.values()):
                kept.append(step)
                needed.update(step.inputs.values())
        return kept[::-1]

    def _response(self, payload: InferRequest, tensors: Dict[str, Any]) -> InferResponse:
        """The outputs in the order Triton answers them: the walk of an unordered_map of the config's outputs
        (gpuserve/triton_input_order.py), those asked for among them."""
        names = map_order(tuple(s.name for s in self.output_specs))
        if payload.request_outputs:
            asked = {o.name for o in payload.request_outputs}
            names = [name for name in names if name in asked]
        for name in names:
            if name in tensors and tensors[name] is None:  # Triton's verbose line
                logger.debug("Composing models did not output tensor %s", name)
        outputs = [InferOutput.from_numpy(n, self._output(n, tensors)) for n in names if tensors.get(n) is not None]
        given = payload.parameters or {}
        # as Triton: an answer whose outputs came from steps carries the request's sequence id and flags
        parameters = {"sequence_id": given.get("sequence_id", 0) or 0,
                      "sequence_start": bool(given.get("sequence_start")),
                      "sequence_end": bool(given.get("sequence_end"))} if outputs else {}
        return InferResponse(payload.id, self.name, outputs, model_version=self.version, parameters=parameters)

    def _output(self, name: str, tensors: Dict[str, Any]):
        reshape = self.reshapes["output"].get(name)
        dims = reshape[0] if reshape else next(
            ([int(d) for d in t.get("dims", [])] for t in self.config.get("output", []) if t["name"] == name), None)
        array = rebatched(tensors[name], dims, self.batched, tensors[BATCH_SIZES].get(name, 0))
        if reshape is None:
            return array
        return from_reshape(array, reshape, self.batched, f"ensemble '{self.name}' output '{name}'")

    async def _stream(self, payload: InferRequest, headers: Optional[dict], tensors: Dict[str, Any], rows: int):
        """A decoupled ensemble's responses, as the gRPC stream (and generate_stream) read a decoupled
        model's: InferResponses marked `triton_final_response`, an error as an exception object (final)."""
        start, final, failed, first = time.perf_counter_ns(), False, True, True
        error: BaseException = GeneratorExit()  # the client left before the end, unless a step failed
        try:
            async with contextlib.aclosing(self._flows(payload, headers, tensors,
                                                       self._needed_steps(payload))) as flows:
                async for outputs, last in flows:
                    response = self._response(payload, outputs)
                    response.parameters["triton_final_response"] = final = last
                    if first:
                        first = False
                        self.stats.record_first_response(time.perf_counter_ns() - start)
                    yield response
            if not final and payload.parameters.get("triton_enable_empty_final_response"):
                yield InferResponse(payload.id, self.name, [], model_version="",
                                    parameters={"triton_final_response": True})  # as Triton: no version
            failed = False
        except Exception as exc:  # as Triton: the error ends the request's responses
            exc.triton_final = True
            error = exc
            yield exc
        finally:
            if failed:
                self._record_failure(start, error)
            else:
                self._record_success(start, rows)

    async def _flows(self, payload: InferRequest, headers: Optional[dict], tensors: Dict[str, Any],
                     pending: List[Step], streams: bool = True) -> AsyncIterator[Tuple[Dict[str, Any], bool]]:
        """Each complete set of tensors the graph yields, and whether it is the request's last: one set,
        or with a decoupled step, one per response of that step (the rest of the graph runs per response)."""
        while pending:
            runnable = [s for s in pending if all(t in tensors for t in s.inputs.values())]
            if not runnable:  # an optional ensemble input was left out and a step needs it
                needed = sorted({t for s in pending for t in s.inputs.values() if t not in tensors})
                raise InvalidInput(f"ensemble '{self.name}' cannot run its steps without {needed}")
            results = await asyncio.gather(*(self._run_step(s, tensors, payload, headers, streams) for s in runnable))
            fanned = []
            sizes = tensors[BATCH_SIZES]
            for step, (outputs, batch) in zip(runnable, results):
                pending.remove(step)
                sizes.update(dict.fromkeys(step.outputs.values(), batch))
                if isinstance(outputs, dict):
                    tensors.update(outputs)
                else:
                    fanned.append((step, outputs))
            if fanned:
                if not streams or len(fanned) > 1:  # steps that became decoupled (a reload) after the check
                    for _, stream in fanned:
                        await stream.aclose()
                    raise InferenceError(f"in ensemble '{self.name}', step(s) {[s.model for s, _ in fanned]} "
                                         "became decoupled while the request ran")
                fan = FanOut(fanned[0][1], lambda produced: self._flows(
                    payload, headers, {**tensors, **produced, BATCH_SIZES: dict(sizes)}, list(pending)),
                    self._max_inflight)
                async with contextlib.aclosing(fan.results()) as results:
                    async for (outputs, last), flagged, ended in results:
                        # as Triton: final only if no step is still answering when the response is complete;
                        # with no step after this one, that is when this response arrives
                        yield outputs, last and (flagged or bool(pending) and ended)
                return
        yield tensors, True

    async def _run_step(self, step: Step, tensors: Dict[str, Any], payload: InferRequest,
                        headers: Optional[dict], streaming: bool = False):
        """The step's outputs under their ensemble names; for a decoupled step, an async iterator of them.
        `streaming` lets a decoupled step answer: the caller that marked the call as streaming (generate_stream)
        may have left that mark before the ensemble's responses are read (each step runs in its own task)."""
        batching, dims = self._step_layout(step)
        sizes = tensors[BATCH_SIZES]
        arrays = {name: rebatched(tensors[tensor], dims.get(name), batching, sizes.get(tensor, 0))
                  for name, tensor in step.inputs.items() if tensors[tensor] is not None}
        inputs = [InferInput.from_numpy(name, array) for name, array in arrays.items()]
        batch = next((a.shape[0] for a in arrays.values() if a.ndim), 0) if batching else 0
        parameters = {k: v for k, v in (payload.parameters or {}).items()
                      if k != "triton_enable_empty_final_response"}  # the ensemble answers for its own end
        request = InferRequest(step.model, inputs, request_id=payload.id, parameters=parameters,
                               request_outputs=[RequestedOutput(n) for n in step.outputs], model_version=step.version)
        if payload.trace is not None:  # as Triton: each step of a traced request is a trace of its own
            request.trace = payload.trace.child()
        token = STREAMING.set(True) if streaming else None
        try:
            response, _ = await self.registry.infer(request, headers)
        except Exception as exc:
            raise self._in_ensemble(exc) from None
        finally:
            if token is not None:
                STREAMING.reset(token)
        if hasattr(response, "__aiter__"):
            return self._step_responses(step, response), batch
        return self._step_outputs(step, response), batch

    def _step_layout(self, step: Step) -> Tuple[bool, Dict[str, List[int]]]:
        """Whether the step's model batches, and its inputs' dims without the batch dimension (kept on the
        step while its model stays the same object)."""
        model = self._step_model(step)
        cached = step.layout
        if cached is not None and cached[0] is model:
            return cached[1]
        if model is None:  # not ready: the request itself will say so
            return False, {}
        own = getattr(model, "triton_model_config", None)
        if own is not None:
            config = own()
        else:
            from gpuserve.model_config import model_config

            meta = model.metadata() if hasattr(model, "metadata") else {
                "inputs": model.get_input_types(), "outputs": model.get_output_types()}
            config = model_config(meta, getattr(model, "settings", None))
        layout = (int(config.get("max_batch_size", 0) or 0) > 0,
                  {t["name"]: [int(d) for d in t.get("dims", [])] for t in config.get("input", [])})
        step.layout = (model, layout)
        return layout

    async def _step_responses(self, step: Step, responses) -> AsyncIterator[Tuple[Dict[str, Any], bool]]:
        """Each response's outputs, and whether it carried the step's final flag."""
        try:
            async for item in responses:
                if isinstance(item, BaseException):
                    raise self._in_ensemble(item)
                yield self._step_outputs(step, item), bool((item.parameters or {}).get("triton_final_response"))
        finally:
            await responses.aclose()

    def _step_outputs(self, step: Step, response) -> Dict[str, Any]:
        if not isinstance(response, InferResponse):
            raise InferenceError(f"in ensemble '{self.name}', step '{step.model}' did not answer with a V2 response")
        produced = {o.name: o.as_numpy() for o in response.outputs}
        # as Triton: an output the step did not give is an absent tensor (a later step's optional input)
        return {tensor: produced.get(output) for output, tensor in step.outputs.items()}

    def _in_ensemble(self, exc: BaseException) -> BaseException:
        """A step's error under Triton's prefix, keeping its status (its class)."""
        prefix = f"in ensemble '{self.name}', "
        if isinstance(exc, GpuserveError):
            if not exc.reason.startswith(prefix):
                exc.reason = prefix + exc.reason
                exc.args = (exc.reason,)
            return exc
        return InferenceError(prefix + str(exc))
