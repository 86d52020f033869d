"""Built-in framework models: `Model` subclasses that serve an artefact with nothing for the user to write.

They check each request against the artefact's declared inputs (names, datatypes, ranks and fixed
dimensions) so a bad request is a 400 naming what was wrong, never a framework traceback.
Until the engine lands for a framework, `predict` runs the backend in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from gpuserve.errors import InvalidInput, ModelLoadError, ModelMissingError
from gpuserve.model import Model
from gpuserve.settings import ModelSettings
from gpuserve.types import InferOutput, InferRequest, InferResponse

logger = logging.getLogger("gpuserve")
_device_said = False


def choose_device(wanted: Optional[str]) -> str:
    """`auto` means CUDA when usable, else CPU; said once in the log."""
    global _device_said
    wanted = (wanted or "auto").lower()
    if wanted != "auto":
        return wanted
    device = "cpu"
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            device = "cuda:0"
    except ImportError:
        pass
    if not _device_said:
        logger.info("device auto: using %s", device)
        _device_said = True
    return device


class FrameworkModel(Model):
    """Common request checking and response building for artefact-backed models."""

    platform = ""

    def __init__(self, name: str, settings: Optional[ModelSettings] = None, uri: Optional[str] = None,
                 device: Optional[str] = None):
        super().__init__(name)
        self.settings = settings or ModelSettings(name=name)
        self.uri = uri or (str(self.settings.resolve_uri()) if self.settings.parameters.uri else None)
        self.device_wanted = device or self.settings.device
        self.backend = None
        self.version = self.settings.parameters.version

    def get_input_types(self) -> List[Dict]:
        return [s.as_metadata() for s in self.backend.inputs] if self.backend else \
            [t.model_dump(exclude={"parameters"}) for t in self.settings.inputs]

    def get_output_types(self) -> List[Dict]:
        return [s.as_metadata() for s in self.backend.outputs] if self.backend else \
            [t.model_dump(exclude={"parameters"}) for t in self.settings.outputs]

    def metadata(self) -> Dict[str, Any]:
        meta = super().metadata()
        if self.backend is not None:
            meta["parameters"] = {"device": self.backend.device}
        return meta

    def _arrays(self, request: InferRequest) -> Dict[str, np.ndarray]:
        specs = {s.name: s for s in self.backend.inputs}
        arrays = {}
        for tensor in request.inputs:
            spec = specs.get(tensor.name)
            if spec is None:
                raise InvalidInput(f"unexpected input '{tensor.name}' for model '{self.name}'; "
                                   f"expected {sorted(specs)}")
            if tensor.datatype != spec.datatype:
                raise InvalidInput(f"input '{tensor.name}' has datatype {tensor.datatype}; "
                                   f"model '{self.name}' expects {spec.datatype}")
            array = tensor.as_numpy()
            if spec.shape and (len(spec.shape) != array.ndim or any(
                    d != -1 and d != a for d, a in zip(spec.shape, array.shape))):
                raise InvalidInput(f"input '{tensor.name}' has shape {list(array.shape)}; "
                                   f"model '{self.name}' expects {spec.shape} (-1 is any size)")
            arrays[tensor.name] = array
        missing = [name for name in specs if name not in arrays]
        if missing:
            raise InvalidInput(f"model '{self.name}' needs inputs {missing} that the request lacks")
        return arrays

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            wanted = [o.name for o in payload.request_outputs] if payload.request_outputs else None
            if wanted:
                known = {o.name for o in self.backend.outputs}
                unknown = [n for n in wanted if n not in known]
                if unknown:
                    raise InvalidInput(f"unexpected inference output {unknown} for model '{self.name}'")
            results = await asyncio.to_thread(self.backend.run, self._arrays(payload), wanted)
            outputs = [InferOutput.from_numpy(name, _json_safe(array)) for name, array in results.items()]
            return InferResponse(payload.id, self.name, outputs, model_version=self.version)
        if isinstance(payload, dict) and "instances" in payload:
            return await self._predict_v1(payload)
        raise InvalidInput("expected a V2 inference request or a V1 body with 'instances'")

    async def _predict_v1(self, body: dict) -> dict:
        if len(self.backend.inputs) != 1:
            raise InvalidInput(f"model '{self.name}' has {len(self.backend.inputs)} inputs; use the V2 protocol")
        spec = self.backend.inputs[0]
        from gpuserve.datatypes import to_numpy_dtype

        try:
            array = np.asarray(body["instances"], dtype=to_numpy_dtype(spec.datatype))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"'instances' do not fit {spec.datatype}: {exc}") from None
        results = await asyncio.to_thread(self.backend.run, self._checked_v1(spec, array))
        return {"predictions": next(iter(results.values()))}

    def _checked_v1(self, spec, array: np.ndarray) -> Dict[str, np.ndarray]:
        if spec.shape and (len(spec.shape) != array.ndim or any(
                d != -1 and d != a for d, a in zip(spec.shape, array.shape))):
            raise InvalidInput(f"'instances' have shape {list(array.shape)}; model '{self.name}' expects {spec.shape}")
        return {spec.name: array}

    def stop(self) -> None:
        super().stop()
        if self.backend is not None:
            self.backend.unload()
            self.backend = None
        self.ready = False


def _json_safe(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "U":
        return array.astype(object)
    return array


class OnnxModel(FrameworkModel):
    platform = "onnxruntime_onnx"

    def load(self) -> bool:
        if not self.uri:
            raise ModelMissingError(f"model '{self.name}' has no parameters.uri naming its .onnx file")
        path = Path(self.uri)
        if path.is_dir():
            path = path / "model.onnx"
        if not path.is_file():
            raise ModelMissingError(f"model '{self.name}': {path} does not exist")
        try:
            from gpuserve.backends.onnx import OnnxBackend
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ModelLoadError(f"onnxruntime is not installed ({exc}); pip install gpuserve[onnx]") from None
        extra = self.settings.parameters.extra
        self.backend = OnnxBackend(str(path), device=choose_device(self.device_wanted),
                                   intra_op_threads=extra.get("intra_op_threads"),
                                   inter_op_threads=extra.get("inter_op_threads"),
                                   graph_optimization_level=extra.get("graph_optimization_level", "all"))
        self.ready = True
        return True

    def _arrays(self, request: InferRequest) -> Dict[str, np.ndarray]:
        arrays = super()._arrays(request)
        for spec in self.backend.inputs:
            if spec.datatype == "BYTES":
                array = arrays[spec.name]
                arrays[spec.name] = np.vectorize(
                    lambda x: x.decode("utf-8") if isinstance(x, bytes) else str(x), otypes=[object])(array)
        return arrays


BUILTIN_RUNTIMES = {
    "onnx": OnnxModel,
    "onnxruntime": OnnxModel,
    "onnxruntime_onnx": OnnxModel,
    "gpuserve.runtimes.OnnxModel": OnnxModel,
}
ARTEFACT_RUNTIMES = {".onnx": OnnxModel}
