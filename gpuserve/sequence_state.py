"""Stateful ONNX Runtime, PyTorch and TensorRT models: Triton's sequence batcher with implicit state.

A model file is a pure function, so a recurrent model that Triton serves with `sequence_batching` takes
its state as an input and gives the next state as an output; Triton keeps that state per sequence
(`sequence_batching { state [...] }`) and adds the control inputs (START, END, READY, CORRID) the config
declares. Clients send only the model's own inputs with `sequence_id` / `sequence_start` / `sequence_end`.
gpuserve does the same here: the state lives with the sequence on the server, not in an instance, so
requests of different sequences share the engine's ordinary batches (each row its own sequence, as
Triton's Oldest strategy batches them) while each sequence runs one request at a time, in order.

Direct strategy (a model with a batch dimension): as Triton, each sequence has a fixed batch slot on its
instance and batches are padded with not-ready rows (gpuserve/sequence_direct.py); the Oldest strategy
batches the ready requests only, through the engine's ordinary batcher.

State at a sequence's START: `initial_state` (`zero_data`, or `data_file` under the model's
`initial_state/` folder, row-major), else zeros with each variable dimension 1 (Triton leaves that
first state uninitialized; a model that reads it must look at START, as the docs ask).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence as Seq, Tuple

import numpy as np

from gpuserve.datatypes import from_numpy_dtype
from gpuserve.errors import InvalidSettings
from gpuserve.sequence_direct import DirectBatches, Entry
from gpuserve.triton_config import delay_scheduler_count
from gpuserve.triton_pb_utils import TRITON_STRING_TO_NUMPY
from gpuserve.triton_sequence import SequenceRouter, as_list


@dataclass
class StateSpec:
    input_name: str
    output_name: str
    datatype: str  # the config's TYPE_*
    initial: np.ndarray  # without the batch dimension
    dims: Tuple[int, ...] = ()  # as declared, -1 for a variable dimension

    def start_value(self, batched: bool) -> np.ndarray:
        return self.initial[np.newaxis] if batched else self.initial


def _read_initial(model: str, entry: Dict[str, Any], dtype, folder: Optional[Path]) -> np.ndarray:
    dims = [int(d) for d in as_list(entry.get("dims"))]
    if any(d < 0 for d in dims):
        raise InvalidSettings(f"model '{model}': initial_state dims must be fixed, got {dims}")
    data_file = entry.get("data_file")
    if not data_file:
        return np.zeros(dims, dtype=dtype) if dtype is not np.object_ else np.full(dims, b"", dtype=object)
    path = (folder or Path(".")) / "initial_state" / str(data_file)
    if not path.is_file():
        raise InvalidSettings(f"model '{model}': initial state file {path} does not exist")
    raw = path.read_bytes()
    count = int(np.prod(dims)) if dims else 1
    if dtype is np.object_:  # Triton's string tensors: each element a 4-byte little-endian length, then bytes
        items, at = [], 0
        while at < len(raw) and len(items) < count:
            (size,) = struct.unpack_from("<I", raw, at)
            items.append(raw[at + 4:at + 4 + size])
            at += 4 + size
        if len(items) != count:
            raise InvalidSettings(f"model '{model}': {path} holds {len(items)} strings, dims {dims} need {count}")
        return np.array(items, dtype=object).reshape(dims)
    need = count * np.dtype(dtype).itemsize
    if len(raw) != need:
        raise InvalidSettings(f"model '{model}': {path} has {len(raw)} bytes; dims {dims} of "
                              f"{np.dtype(dtype).name} need {need}")
    return np.frombuffer(raw, dtype=dtype).reshape(dims).copy()


def direct_batching(config, batching: Optional[Dict[str, Any]]):
    """The engine's BatchingConfig for a Direct-strategy sequence model (Triton's default strategy).
    Triton runs a Direct batch once `minimum_slot_utilization` (default 0: any one) of its max_batch_size
    slots are ready, and waits out `max_queue_delay_microseconds` only while fewer are; waiting for a full
    batch, as Oldest and the dynamic batcher do, held every lone sequence request for the whole delay
    (qa/L0_sequence_batcher test_queue_delay_no_min_util). Utilization 0 drops the delay; above it, the
    sizes from the ready rows up are preferred, where the batcher stops waiting. `config` as given
    for an Oldest model or one without sequence batching."""
    if not isinstance(batching, dict) or batching.get("oldest") is not None or config.max_queue_delay_s <= 0:
        return config
    direct = batching.get("direct") or {}
    direct = direct[0] if isinstance(direct, list) and direct else direct
    utilization = float((direct.get("minimum_slot_utilization") if isinstance(direct, dict) else 0) or 0)
    slots = max(config.max_batch_size, 1)
    ready = max(1, math.ceil(min(max(utilization, 0.0), 1.0) * slots))
    if ready == 1:
        return dataclasses.replace(config, max_queue_delay_s=0.0)
    return dataclasses.replace(config, preferred_batch_sizes=tuple(range(ready, slots + 1)))


def parse_states(model: str, batching: Dict[str, Any], folder: Optional[Path]) -> List[StateSpec]:
    states = []
    for entry in as_list(batching.get("state")):
        name_in, name_out = str(entry.get("input_name") or ""), str(entry.get("output_name") or "")
        datatype = str(entry.get("data_type") or "")
        dtype = TRITON_STRING_TO_NUMPY.get(datatype)
        if not name_in or not name_out or dtype is None:
            raise InvalidSettings(f"model '{model}': a sequence_batching state needs input_name, output_name "
                                  f"and a data_type, got {entry}")
        declared = tuple(int(d) for d in as_list(entry.get("dims")))
        initial = as_list(entry.get("initial_state"))
        if initial:
            if initial[0].get("data_type") not in (None, datatype):
                raise InvalidSettings(f"model '{model}': initial_state of '{name_in}' is "
                                      f"{initial[0].get('data_type')}, the state is {datatype}")
            value = _read_initial(model, initial[0], dtype, folder)
        else:
            dims = [d if d >= 0 else 1 for d in declared]
            value = np.zeros(dims, dtype=dtype) if dtype is not np.object_ else np.full(dims, b"", dtype=object)
        states.append(StateSpec(name_in, name_out, datatype, value, declared))
    return states


class SequenceInputs:
    """What a stateful model file gets besides the client's inputs, and the state it hands to the next step."""

    def __init__(self, model: str, batching: Dict[str, Any], folder: Optional[Path], batched: bool,
                 instances: int = 1, max_batch_size: Optional[int] = None):
        self.model = model
        # the engine runs any sequence's batch on any instance (the state travels with the sequence); the
        # instances count for the sequence slots Triton gives each
        self.router = SequenceRouter(model, batching, instances, batched, max_batch_size)
        self.batching = batching
        self.max_batch_size = max_batch_size or 0
        self.direct: Optional[DirectBatches] = None
        self._convert = None
        self.states = parse_states(model, batching, folder)
        self.hidden_inputs = {c.name for c in self.router.controls} | {s.input_name for s in self.states}
        self.state_outputs = {s.output_name for s in self.states}

    def attach(self, scheduler, convert) -> None:
        """Serve a Direct-strategy model with a batch dimension through per-instance slot batchers over the
        scheduler's instances (`convert`: the framework's form of a server-filled tensor)."""
        router = self.router
        if self.batching.get("oldest") is not None or not router.batch_dim or not router.slots:
            return
        self._convert = convert
        self.direct = DirectBatches(self.model, router, list(scheduler.instances), scheduler.stats, self.batching,
                                    self.max_batch_size, delay_scheduler_count())

    def detach(self) -> None:
        if self.direct is not None:
            self.direct.close()

    def hidden_tensors(self) -> List[Tuple[str, str, List[int]]]:
        """(name, V2 datatype, shape) of the inputs the server fills: what a file that does not describe its
        own tensors (TorchScript) is told besides the config's inputs."""
        lead = [-1] if self.router.batch_dim else []
        tensors = [(c.name, from_numpy_dtype(np.dtype(c.dtype)), lead + [1]) for c in self.router.controls]
        tensors += [(s.input_name, from_numpy_dtype(s.initial.dtype), lead + list(s.dims)) for s in self.states]
        return tensors

    def state_output_tensors(self, declared: Seq[str]) -> List[Tuple[str, str, List[int]]]:
        """The state outputs such a file must give besides the config's outputs (those not declared there)."""
        lead = [-1] if self.router.batch_dim else []
        return [(s.output_name, from_numpy_dtype(s.initial.dtype), lead + list(s.dims)) for s in self.states
                if s.output_name not in declared]

    def check(self, inputs: Seq, outputs: Seq) -> None:
        """Every control and state the config names must be one of the model file's tensors, and a control
        must take what the server will send (Triton's backends refuse the model at load otherwise)."""
        have_in = {spec.name: spec for spec in inputs}
        have_out = {spec.name for spec in outputs}
        for name in sorted(self.hidden_inputs):
            if name not in have_in:
                raise InvalidSettings(f"model '{self.model}': sequence_batching names input '{name}', which the "
                                      f"model file does not have (its inputs: {', '.join(have_in) or 'none'})")
        for control in self.router.controls:
            spec = have_in[control.name]
            dims = list(spec.shape[1:] if self.router.batch_dim else spec.shape)
            if spec.shape and dims != [1]:
                raise InvalidSettings(f"unable to load model '{self.model}', sequence control '{control.name}' in "
                                      f"model has dims {dims} but dims [1] is expected")
            datatype = from_numpy_dtype(np.dtype(control.dtype))
            if spec.datatype != datatype:
                written = "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
                raise InvalidSettings(f"unable to load model '{self.model}', sequence control '{control.name}', the "
                                      f"model expects data-type {spec.datatype} but the model configuration "
                                      f"specifies data-type {written}")
        for name in sorted(self.state_outputs):
            if name not in have_out:
                raise InvalidSettings(f"model '{self.model}': sequence_batching names state output '{name}', "
                                      f"which the model file does not have")

    async def run(self, submit, arrays: Dict[str, np.ndarray], parameters: Dict[str, Any],
                  wanted: Optional[List[str]], served_outputs: Seq[str]) -> Dict[str, np.ndarray]:
        """One request of a sequence, after the sequence's previous one: controls and state added, the
        model's next state kept, and the outputs the client may see returned."""
        router = self.router
        router.check_rows(arrays)
        key, sequence = router.open(parameters)
        if self.direct is not None:
            try:
                results = await self._direct(key, sequence, arrays, parameters, wanted)
            finally:
                router.close(key, sequence, bool(parameters.get("sequence_end")))
            if wanted is not None:
                return {name: results[name] for name in wanted}
            return {name: array for name, array in results.items() if name in served_outputs}
        try:
            async with sequence.turn():
                full = dict(arrays)
                full.update(router.control_arrays(key, parameters, 1))
                starting = bool(parameters.get("sequence_start"))
                held = sequence.states
                if starting:  # as Triton: START resets the state even when this request then fails
                    held.clear()
                for spec in self.states:
                    value = None if starting else held.get(spec.input_name)
                    full[spec.input_name] = value if value is not None else spec.start_value(router.batch_dim)
                asked = None if wanted is None else list(dict.fromkeys([*wanted, *self.state_outputs]))
                results = await submit(full, asked)
                for spec in self.states:
                    held[spec.input_name] = np.array(results[spec.output_name], copy=True)
        finally:
            router.close(key, sequence, bool(parameters.get("sequence_end")))
        if wanted is not None:
            return {name: results[name] for name in wanted}
        return {name: array for name, array in results.items() if name in served_outputs}

    async def _direct(self, key, sequence, arrays: Dict[str, np.ndarray], parameters: Dict[str, Any],
                      wanted: Optional[List[str]]) -> Dict[str, np.ndarray]:
        """One request into its sequence's slot queue: its controls and state are read when its batch forms
        (after its sequence's previous request ran), its next state kept when the batch has run."""
        router, states, convert = self.router, self.states, self._convert
        starting = bool(parameters.get("sequence_start"))

        def prepare() -> Dict[str, np.ndarray]:
            full = dict(arrays)
            full.update(router.control_arrays(key, parameters, 1))
            held = sequence.states
            if starting:  # as Triton: START resets the state even when this request then fails
                held.clear()
            for spec in states:
                value = None if starting else held.get(spec.input_name)
                full[spec.input_name] = value if value is not None else spec.start_value(True)
            for name in self.hidden_inputs:
                full[name] = convert(name, full[name])
            return full

        def finish(results: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            for spec in states:
                sequence.states[spec.input_name] = np.array(results[spec.output_name], copy=True)
            return results

        asked = None if wanted is None else list(dict.fromkeys([*wanted, *self.state_outputs]))
        ending = (lambda: router.end_slot(sequence)) if parameters.get("sequence_end") else None
        entry = Entry(arrays, prepare, finish, asked, asyncio.get_running_loop().create_future(), ending)
        if sequence.admit is None:
            return await self.direct.run(sequence.instance, sequence.slot_index, entry)
        return await sequence.park(entry)
