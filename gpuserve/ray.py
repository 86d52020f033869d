"""`kserve.ray.RayModel`: a model whose work a Ray Serve deployment does (`RayModel(name, handle)`).

Its requests go to the deployment handle as they come (`await handle.remote(body, headers=headers)`, and
`handle.explain.remote(...)` for explain), as KServe's RayModel sends them; a deployment whose `__call__`
takes only the body is called without the headers. Ray itself is the user's: nothing here imports it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from gpuserve.model import InferenceVerb, Model


class RayModel(Model):
    def __init__(self, name: str, handle: Any):
        super().__init__(name)
        self._handle = handle
        self.ready = True

    def load(self) -> bool:
        self.ready = True
        return True

    async def __call__(self, body: Any, headers: Optional[Dict[str, str]] = None,
                       verb: InferenceVerb = InferenceVerb.PREDICT) -> Tuple[Any, Dict[str, str]]:
        target = self._handle.explain if verb is InferenceVerb.EXPLAIN else self._handle
        try:
            result = await target.remote(body, headers=headers)
        except TypeError as exc:  # a deployment whose __call__ takes the body alone (KServe's docs show one)
            if "headers" not in str(exc):
                raise
            result = await target.remote(body)
        return result, {}

    def get_input_types(self) -> List[Dict]:
        return []

    def get_output_types(self) -> List[Dict]:
        return []
