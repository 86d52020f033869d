"""TensorFlow models (backends/tensorflow.py): what Triton's TensorFlow backend serves and what KServe's
TFServing runtime serves, batched through the engine like the ONNX Runtime and PyTorch models.

Forms: a Triton repository (`platform: "tensorflow_savedmodel"` with `1/model.savedmodel/`, or
`"tensorflow_graphdef"` with `1/model.graphdef`, or `backend: "tensorflow"` with either file), a
`model-settings.json` naming `implementation: tensorflow` (or `gpuserve.runtimes.TensorFlowModel`), and a
bare TFServing model folder (`NAME/1/saved_model.pb` + `variables/`, or `NAME/saved_model.pb`).

This module does not import tensorflow (the backend does, at the first load): without it a TensorFlow
model is not ready, its reason naming the extra to install, and the other models serve on.
"""

from __future__ import annotations

import base64
import contextvars
import functools
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from gpuserve.backends.base import TensorSpec
from gpuserve.datatypes import object_map, shape_fits, to_numpy_dtype
from gpuserve.errors import InvalidInput, ModelMissingError
from gpuserve.hooks import off_loop
from gpuserve.runtimes import FrameworkModel, _OutputsByName, complete_max_batch

logger = logging.getLogger("gpuserve")

SAVEDMODEL_FILE = "model.savedmodel"  # Triton's default file names
GRAPHDEF_FILE = "model.graphdef"


def is_savedmodel(path: Path) -> bool:
    """A SavedModel folder as tf.saved_model.save writes it (TFServing's version folder is one)."""
    return path.is_dir() and ((path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file())


class TensorFlowModel(_OutputsByName, FrameworkModel):
    """A SavedModel (its signature's keys are the tensors, the config's are checked against them, a missing
    config is completed from them) or a frozen GraphDef (the config names its tensors)."""

    @property
    def platform(self) -> str:
        written = getattr(self.settings, "platform", "") or ""
        if written in ("tensorflow_savedmodel", "tensorflow_graphdef"):
            return written
        return "tensorflow_graphdef" if self.is_graphdef() else "tensorflow_savedmodel"

    @property
    def describes_itself(self) -> bool:  # a GraphDef's tensors are the config's, found in the graph by name
        return not self.is_graphdef()

    def is_graphdef(self) -> bool:
        if getattr(self.settings, "platform", "") == "tensorflow_graphdef":
            return True
        try:
            path = self.artefact()
        except ModelMissingError:
            return False
        return path.suffix == ".graphdef" or path.is_file()

    def artefact(self) -> Path:
        path = super().artefact()
        if path.is_dir() and not is_savedmodel(path):
            for name in (SAVEDMODEL_FILE, GRAPHDEF_FILE):
                if (path / name).exists():
                    return path / name
            return path / SAVEDMODEL_FILE
        if not path.exists() and path.name == SAVEDMODEL_FILE and is_savedmodel(path.parent):
            return path.parent  # TFServing's layout (1/saved_model.pb) under a config.pbtxt
        return path

    def load(self) -> bool:
        path = self.artefact()
        if not path.exists():
            what = "a frozen GraphDef file" if path.name == GRAPHDEF_FILE else "a SavedModel folder"
            raise ModelMissingError(f"model '{self.name}': {path} does not exist ({self.platform} expects {what} "
                                    "there)")
        return super().load()

    def _complete_max_batch(self, backend) -> None:
        if not self.is_graphdef():  # Triton completes SavedModel configs only; a GraphDef has no metadata
            complete_max_batch(self, backend, "tensorflow")

    def make_backend(self, path: Path, device: str, threads: int):
        from gpuserve.backends.base import TensorSpec
        from gpuserve.backends.tensorflow import TensorFlowBackend

        extra_settings = self.settings.model_extra or {}
        reshapes = extra_settings.get("triton_reshapes") or {}
        lead = [-1] if int(extra_settings.get("triton_max_batch_size") or 0) > 0 else []

        def own(tensor, kind: str) -> TensorSpec:  # the model's own dims: the reshape's, batch dim included
            reshape = (reshapes.get(kind) or {}).get(tensor.name)
            shape = lead + list(reshape) if reshape is not None else list(tensor.shape)
            return TensorSpec(tensor.name, tensor.datatype, shape)

        declared_in = [own(t, "inputs") for t in self.settings.inputs]
        declared_out = [own(t, "outputs") for t in self.settings.outputs]
        graphdef = self.is_graphdef()
        if graphdef and declared_in and self.sequences is not None:  # the control and state inputs the server fills
            declared_in += [TensorSpec(*tensor) for tensor in self.sequences.hidden_tensors()]
        if graphdef and declared_out and self.sequences is not None:
            declared_out += [TensorSpec(*tensor) for tensor in
                             self.sequences.state_output_tensors([t.name for t in declared_out])]
        extra = self.settings.parameters.extra
        tags = extra.get("tags")
        sharing = getattr(self, "_sharing", None)
        shared = sharing.get(device) if sharing is not None else None
        backend = TensorFlowBackend(str(path), device=device, graphdef=graphdef,
                                    signature=extra.get("signature_name"),
                                    tags=tags.split(",") if isinstance(tags, str) else tags,
                                    inputs=declared_in, outputs=declared_out,
                                    intra_op_threads=extra.get("intra_op_threads"),
                                    inter_op_threads=extra.get("inter_op_threads"), shared=shared)
        if sharing is not None:
            sharing.setdefault(backend.device, backend)
        return backend

    def _build_backends(self, path: Path, device: str, count: int) -> list:
        """A load's instances on one device call one loaded model (TensorFlow runs a function from several
        threads at once), rather than each holding a copy of the weights."""
        self._sharing: Optional[Dict[str, object]] = {}
        try:
            return super()._build_backends(path, device, count)
        finally:
            self._sharing = None

    def prepare(self, name: str, array: np.ndarray) -> np.ndarray:
        """tf.string takes bytes and text elements; any other element (a number in a JSON BYTES tensor) as text."""
        if array.dtype == object and not all(isinstance(e, (bytes, str)) for e in array.reshape(-1)):
            return object_map(lambda e: e if isinstance(e, (bytes, str)) else str(e), array)
        return array

    # a SavedModel's other signatures, named per request by TensorFlow Serving's clients ------------------------
    def tfserving_signatures(self) -> Dict[str, dict]:
        """The SavedModel's signatures other than the served one, each {"inputs": [...], "outputs": [...]} as
        metadata lists them. They run unbatched, outside the engine: the served signature is the batched one."""
        backend = self.backend
        if backend is None or self.is_graphdef() or not hasattr(backend, "signatures"):
            return {}
        if getattr(self, "_other_signatures", None) is None:
            self._other_signatures = {
                name: {"inputs": [s.as_metadata() for s in ins], "outputs": [s.as_metadata() for s in outs]}
                for name, (ins, outs) in backend.signatures().items() if name != backend.signature}
        return self._other_signatures

    def tfserving_signature_defs(self) -> Dict[str, dict]:
        """Every SignatureDef of the SavedModel, the served one included, with its method_name (what TensorFlow
        Serving's Classify and Regress check): {name: {"method_name", "inputs": {key: DataType number},
        "outputs": {...}}}. Empty for a GraphDef, or before the model loads."""
        backend = self.backend
        if backend is None or self.is_graphdef() or not hasattr(backend, "signature_defs"):
            return {}
        return backend.signature_defs()

    async def tfserving_predict(self, signature: str, inputs: Dict[str, np.ndarray],
                                outputs: Sequence[str]) -> Dict[str, np.ndarray]:
        """One call of another signature, in a thread; TensorFlow's refusal of the tensors is the client's error.
        Shapes are checked first, as the batched signature's are: a traced signature may take any shape."""
        declared = {t["name"]: t["shape"] for t in self.tfserving_signatures()[signature]["inputs"]}
        for name, array in inputs.items():
            if name in declared and not shape_fits(declared[name], np.shape(array)):
                raise InvalidInput(f"signature '{signature}' of model '{self.name}': input '{name}' has shape "
                                   f"{list(np.shape(array))}, the signature takes {declared[name]}")
        return await self.tfserving_run(signature, inputs, outputs)

    async def tfserving_run(self, signature: str, inputs: Dict[str, np.ndarray],
                            outputs: Sequence[str]) -> Dict[str, np.ndarray]:
        """Any signature of the SavedModel called once, unbatched, in a thread (Classify and Regress feed a
        classify or regress signature its serialized tf.Examples so)."""
        try:
            return await off_loop(None, functools.partial(contextvars.copy_context().run, self.backend.run_signature,
                                                          signature, inputs, list(outputs)))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"signature '{signature}' of model '{self.name}': {exc}") from None
        except Exception as exc:
            if type(exc).__name__ in ("InvalidArgumentError", "UnimplementedError", "NotFoundError"):
                raise InvalidInput(f"signature '{signature}' of model '{self.name}': {_op_error(exc)}") from None
            raise

    # KServe V1, as TFServing answers it ------------------------------------------------------------------
    async def _predict_v1(self, body: dict) -> dict:
        """TFServing's REST predict: the row form `{"instances": [...]}` -> `{"predictions": [...]}` (one output:
        its value per instance; several: an object per instance), the columnar form `{"inputs": ...}` ->
        `{"outputs": ...}` (a value, or an object of them). Instances of a model with several inputs are
        objects of them; a BYTES value may be `{"b64": "..."}`. `signature_name` may name another signature of a
        SavedModel, which runs unbatched."""
        if self.sequences is not None:
            raise InvalidInput(f"model '{self.name}' is stateful (sequence_batching): send V2 requests with "
                               "a sequence_id")
        wanted = body.get("signature_name")
        served = getattr(self.backend, "signature", None)
        other = None  # another signature of the SavedModel, run unbatched
        if wanted and not self.is_graphdef() and wanted != served:
            other = self.tfserving_signatures().get(wanted)
            if other is None:
                raise InvalidInput(f"model '{self.name}' has no signature '{wanted}' (it serves '{served}'"
                                   + "".join(f", '{name}'" for name in sorted(self.tfserving_signatures())) + ")")
        specs = {spec.name: spec for spec in self.client_inputs} if other is None else \
            {t["name"]: TensorSpec(t["name"], t["datatype"], t["shape"]) for t in other["inputs"]}
        rows = "instances" in body
        given = body["instances"] if rows else body["inputs"]
        if rows:
            if not isinstance(given, list):
                raise InvalidInput("'instances' must be a list")
            named = bool(given) and all(isinstance(i, dict) and not _is_b64(i) for i in given)
            if named:
                columns = {name: [instance.get(name) for instance in given] for name in given[0]}
            elif len(specs) == 1:
                columns = {next(iter(specs)): given}
            else:
                raise InvalidInput(f"model '{self.name}' has inputs {sorted(specs)}: each instance must be an "
                                   "object naming them")
        elif isinstance(given, dict) and not _is_b64(given):
            columns = given
        elif len(specs) == 1:
            columns = {next(iter(specs)): given}
        else:
            raise InvalidInput(f"model '{self.name}' has inputs {sorted(specs)}: 'inputs' must be an object "
                               "naming them")
        unknown = sorted(set(columns) - set(specs))
        missing = sorted(set(specs) - set(columns))
        if unknown or missing:
            raise InvalidInput(f"model '{self.name}' takes inputs {sorted(specs)}; the request "
                               + (f"has unknown {unknown}" if unknown else f"lacks {missing}"))
        arrays = {name: self.prepare(name, _v1_array(name, value, specs[name], self.name))
                  for name, value in columns.items()}
        if other is not None:
            results = await self.tfserving_predict(wanted, arrays, [t["name"] for t in other["outputs"]])
        else:
            results = await self._submit(arrays, body.get("parameters"), self.default_outputs)
            results = {name: self._client_shape(name, array) for name, array in results.items()}
        if not rows:
            values = {name: _json_value(name, array) for name, array in results.items()}
            return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
        if len(results) == 1:
            name, array = next(iter(results.items()))
            return {"predictions": _json_value(name, array)}
        count = min(len(array) for array in results.values()) if results else 0
        lists = {name: _json_value(name, array) for name, array in results.items()}
        return {"predictions": [{name: values[i] for name, values in lists.items()} for i in range(count)]}


def _op_error(exc: Exception) -> str:
    """What a TensorFlow op's error says, without the "Graph execution error" frame and the Python stack of where
    the op was defined that eager errors carry (a malformed tf.Example's parse error is one line of them)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("Graph execution error", "Detected at node", "File \"",
                                                           "[[", "Op:"))]
    return said[0] if said else (lines[0] if lines else type(exc).__name__)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _b64_decoded(value: Any) -> Any:
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"a 'b64' value is not base64: {exc}") from None
    if isinstance(value, list):
        return [_b64_decoded(v) for v in value]
    return value.encode() if isinstance(value, str) else value


def _v1_array(name: str, value: Any, spec, model: str) -> np.ndarray:
    try:
        if spec.datatype == "BYTES":
            array = np.asarray(_b64_decoded(value), dtype=object)
        else:
            array = np.asarray(value, dtype=to_numpy_dtype(spec.datatype))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"input '{name}' does not fit {spec.datatype}: {exc}") from None
    if not shape_fits(spec.shape, array.shape):
        raise InvalidInput(f"input '{name}' has shape {list(array.shape)}; model '{model}' expects {spec.shape}")
    return array


def _json_value(name: str, array) -> Any:
    """An output as JSON values; text for string tensors, `{"b64": ...}` where the name ends in `_bytes` (as
    TFServing writes binary outputs) or the bytes are not UTF-8."""
    array = np.asarray(array)
    if array.dtype != object:
        return array.tolist()
    as_b64 = name.endswith("_bytes")
    return object_map(lambda e: _text(e, as_b64), array).tolist()


def _text(element: Any, as_b64: bool) -> Any:
    if not isinstance(element, bytes):
        return element
    if not as_b64:
        try:
            return element.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(element).decode("ascii")}
