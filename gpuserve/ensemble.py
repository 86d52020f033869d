"""Triton ensembles (`platform: "ensemble"` with `ensemble_scheduling { step [...] }`): a pipeline of
served models, each step's inputs and outputs renamed through `input_map` / `output_map`.

Each step is an ordinary request through the server's data plane, so the step's model batches it with
everyone else's requests (its dynamic batcher sees the step as one more client) and counts it in its
statistics, as Triton does. Steps whose inputs are all available run concurrently; a step's error fails
the ensemble request with that error's status. The graph is checked at load: every step input must be an
ensemble input or another step's output, every ensemble output must be produced, and no tensor may be
produced twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from gpuserve.engine.stats import ModelStats
from gpuserve.errors import InferenceError, InvalidInput, InvalidSettings, ModelNotReady
from gpuserve.model import Model
from gpuserve.triton_config import read_config
from gpuserve.triton_python_config import checked_inputs, tensor_specs
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput


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


def plan_steps(name: str, config: Dict[str, Any]) -> List[Step]:
    scheduling = config.get("ensemble_scheduling")
    if isinstance(scheduling, list):
        scheduling = scheduling[0] if scheduling else {}
    steps = [Step(entry, i, name) for i, entry in enumerate((scheduling or {}).get("step", []))]
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
    # every step must become runnable: a cycle leaves some never ready
    ready, pending = set(available), list(steps)
    while pending:
        runnable = [s for s in pending if all(t in ready for t in s.inputs.values())]
        if not runnable:
            raise InvalidSettings(f"ensemble '{name}': steps {[s.model for s in pending]} wait on each other (a cycle)")
        for step in runnable:
            ready.update(step.outputs.values())
            pending.remove(step)
    return steps


class EnsembleModel(Model):
    platform = "ensemble"
    engine_backed = True  # runs in the server process (its steps reach the other models there), never in workers
    plain_predict = True  # no user hooks: the data plane awaits predict directly

    def __init__(self, name: str, settings=None):
        self._loaded = False
        self._reason = ""
        super().__init__(name)
        self.settings = settings
        self.version = settings.parameters.version if settings is not None else None
        self.registry = None  # set by the ModelRepository that serves it: the steps' models live there
        self.config: Dict[str, Any] = {}
        self.steps: List[Step] = []
        self.input_specs: list = []
        self.input_index: dict = {}
        self.output_specs: list = []
        self.optional_inputs: set = set()
        # Its own statistics, as Triton keeps them: a request counts once its inputs passed the checks
        self.stats = ModelStats(name, str(self.version or ""))

    def load(self) -> bool:
        folder = Path(self.settings.folder)
        config = read_config(folder)
        config["name"] = self.name
        self.steps = plan_steps(self.name, config)
        batched = int(config.get("max_batch_size", 0) or 0) > 0
        self.input_specs = tensor_specs(config.get("input", []), batched, "input")
        self.input_index = {spec.name: spec for spec in self.input_specs}
        self.output_specs = tensor_specs(config.get("output", []), batched, "output")
        self.optional_inputs = {t["name"] for t in config.get("input", []) if t.get("optional")}
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
        scheduling = config.get("ensemble_scheduling")
        if isinstance(scheduling, list):
            config["ensemble_scheduling"] = scheduling[0] if scheduling else {"step": []}
        return config

    # Ready while loaded and every step's model is: a pipeline with a missing stage cannot answer, and it
    # becomes ready by itself once its steps load (they may load after it, or be reloaded).
    @property
    def ready(self) -> bool:
        return self._loaded and not self._missing_steps()

    @ready.setter
    def ready(self, value: bool) -> None:
        self._loaded = bool(value)

    @property
    def reason(self) -> str:
        missing = self._missing_steps() if self._loaded else []
        if missing:
            return f"ensemble '{self.name}' needs model(s) {missing}, which are not ready"
        return self._reason

    @reason.setter
    def reason(self, value: str) -> None:
        self._reason = value

    def _missing_steps(self) -> List[str]:
        return [s.model for s in self.steps if self._step_model(s) is None]

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
        max_batch = int(self.config.get("max_batch_size", 0) or 0)
        tensors: Dict[str, Any] = dict(checked_inputs(self.name, payload, self.input_index, self.optional_inputs,
                                                      max_batch))
        start = time.perf_counter_ns()
        try:
            response = await self._run_steps(payload, headers, tensors)
        except BaseException:
            self.stats.record_request(False, time.perf_counter_ns() - start)
            raise
        elapsed = time.perf_counter_ns() - start
        self.stats.record_queue([0])
        self.stats.record_request(True, elapsed)
        rows = next(iter(tensors.values())).shape[0] if max_batch and tensors else 1
        self.stats.record_batch(rows, 1, 0, elapsed, 0)
        return response

    async def _run_steps(self, payload: InferRequest, headers: Optional[dict], tensors: Dict[str, Any]):
        pending = list(self.steps)
        while pending:
            runnable = [s for s in pending if all(t in tensors for t in s.inputs.values())]
            if not runnable:  # an optional ensemble input was left out and a step needs it
                needed = sorted({t for s in pending for t in s.inputs.values() if t not in tensors})
                raise InvalidInput(f"ensemble '{self.name}' cannot run its steps without {needed}")
            results = await asyncio.gather(*(self._run_step(s, tensors, payload, headers) for s in runnable))
            for step, outputs in zip(runnable, results):
                tensors.update(outputs)
                pending.remove(step)
        names = [o.name for o in payload.request_outputs] if payload.request_outputs else \
            [s.name for s in self.output_specs]
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy(n, tensors[n]) for n in names
                                                     if n in tensors], model_version=self.version)

    async def _run_step(self, step: Step, tensors: Dict[str, Any], payload: InferRequest,
                        headers: Optional[dict]) -> Dict[str, Any]:
        inputs = [InferInput.from_numpy(model_input, tensors[tensor]) for model_input, tensor in step.inputs.items()]
        request = InferRequest(step.model, inputs, request_id=payload.id, parameters=dict(payload.parameters or {}),
                               request_outputs=[RequestedOutput(n) for n in step.outputs], model_version=step.version)
        response, _ = await self.registry.infer(request, headers)
        if not isinstance(response, InferResponse):
            raise InferenceError(f"ensemble '{self.name}': step '{step.model}' did not answer with a V2 response")
        produced = {o.name: o.as_numpy() for o in response.outputs}
        missing = [n for n in step.outputs if n not in produced]
        if missing:
            raise InferenceError(f"ensemble '{self.name}': step '{step.model}' did not return {missing}")
        return {tensor: produced[output] for output, tensor in step.outputs.items()}
