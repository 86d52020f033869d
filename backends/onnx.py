"""ONNX Runtime backend. CPU now, CUDA when the GPU build and a device are present.

onnxruntime is imported on the first load only, so importing gpuserve stays light. Thread counts
are set explicitly: ORT sizes its pools by host cores, not the container's share
(microsoft/onnxruntime#29510).
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from gpuserve.backends.base import TensorSpec

logger = logging.getLogger("gpuserve.backends.onnx")

_ORT_TO_V2 = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64", "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES", "tensor(bfloat16)": "BF16",
}
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


def _ort():
    import onnxruntime as ort  # paid by the first ONNX load only

    return ort


def _dims(shape) -> List[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in (shape or [])]


def _spec(arg) -> TensorSpec:
    datatype = _ORT_TO_V2.get(arg.type)
    if datatype is None:
        raise ValueError(f"ONNX tensor '{arg.name}' has unsupported type {arg.type}")
    return TensorSpec(arg.name, datatype, _dims(arg.shape))


def cpu_threads() -> int:
    """Cores this process may use (cgroup affinity), not the host's count."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


class OnnxBackend:
    def __init__(self, path: str, device: str = "cpu", intra_op_threads: Optional[int] = None,
                 inter_op_threads: Optional[int] = None, graph_optimization_level: str = "all",
                 allow_spinning: bool = False):
        ort = _ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads or cpu_threads()
        options.inter_op_num_threads = inter_op_threads or 1
        # Spinning workers burn the cores the event loop and staging need; off unless asked for.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if allow_spinning else "0")
        level = _LEVELS.get(graph_optimization_level)
        if level is None:
            raise ValueError(f"graph_optimization_level must be one of {', '.join(_LEVELS)}")
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        providers = ["CPUExecutionProvider"]
        self.device = "cpu"
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                index = int(device.split(":", 1)[1]) if ":" in device else 0
                providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
                self.device = f"cuda:{index}"
            else:
                logger.warning("CUDA asked for %s but onnxruntime has no CUDA provider; running on CPU", path)
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        if self.device != "cpu" and "CUDAExecutionProvider" not in self.session.get_providers():
            self.device = "cpu"
            logger.warning("onnxruntime could not start CUDA for %s; running on CPU", path)
        self.inputs = [_spec(arg) for arg in self.session.get_inputs()]
        self.outputs = [_spec(arg) for arg in self.session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]

    def run(self, inputs: Dict[str, np.ndarray], output_names: Optional[Sequence[str]] = None
            ) -> Dict[str, np.ndarray]:
        names = list(output_names) if output_names else self._output_names
        results = self.session.run(names, inputs)
        return dict(zip(names, results))

    def unload(self) -> None:
        self.session = None
