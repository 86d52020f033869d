"""The one small interface every framework backend offers; the engine (and, until the engine
lands for a framework, the framework model) is the only caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the artefact declares it; -1 marks a dynamic dimension."""

    name: str
    datatype: str
    shape: List[int] = field(default_factory=list)

    def as_metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Backend(Protocol):
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    device: str

    def run(self, inputs: Dict[str, np.ndarray], output_names: Optional[Sequence[str]] = None
            ) -> Dict[str, np.ndarray]:
        """Run one batch; blocking, releases the GIL where the framework does."""

    def unload(self) -> None:
        """Free the session and any device memory."""


class DeviceBackend(Backend, Protocol):
    """What GPU-capable backends (onnx on CUDA, torch on CUDA, tensorrt) add: results that stay on the GPU.

    `inputs` are NumPy arrays or device arrays (`__cuda_array_interface__`, e.g. CuPy) on the backend's
    device; the results are CuPy arrays on that device, synchronised, so any stream may read them.
    CuPy is imported on the first call; without CuPy or CUDA, or on a CPU backend, the call raises
    `gpuserve.backends.device_arrays.DeviceUnavailable` with the reason.
    """

    def run_on_device(self, inputs: Dict[str, object], output_names: Optional[Sequence[str]] = None
                      ) -> Dict[str, object]:
        ...
