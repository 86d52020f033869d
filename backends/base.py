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
