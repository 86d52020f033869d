"""`mlserver.batching.adaptive.AdaptiveBatcher`: one MLModel's requests batched before its `predict`.

gpuserve batches MLServer-form models by itself (`max_batch_size` in model-settings.json), so runtimes need
not. This class is for code that builds one by hand, as MLServer's `load_batching` does: `await
batcher.predict(request)` waits for company as gpuserve's batcher decides (up to `max_batch_size` requests,
at most `max_batch_time` seconds), runs the runtime's own `predict` once on the merged request, and answers
this request's share.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from gpuserve.adaptive import AdaptiveBatcher as _Batcher
from gpuserve.mlserver.types import (InferenceRequest, InferenceResponse, from_native_request,
                                     from_native_response, to_native_request, to_native_response)
from gpuserve.types import InferRequest, InferResponse


class _Runtime:
    """The runtime's unbatched `predict` as gpuserve's batcher calls a model: native types in and out."""

    def __init__(self, name: str, predict):
        self.name = name
        self.predict = predict

    async def __call__(self, request: InferRequest, headers: Optional[dict]) -> Tuple[InferResponse, Dict]:
        answer = await self.predict(from_native_request(request, headers))
        return to_native_response(answer), {}


class AdaptiveBatcher:
    def __init__(self, model: Any):
        self._model = model
        self._max_batch_size = model.settings.max_batch_size
        self._max_batch_time = model.settings.max_batch_time or 0.0
        self._predict_fn = model.predict  # kept before any decoration, as MLServer keeps it
        self._batcher: Optional[_Batcher] = None

    async def predict(self, req: InferenceRequest) -> InferenceResponse:
        if self._batcher is None:  # made on the serving loop, where its task will run
            self._batcher = _Batcher(_Runtime(self._model.name, self._predict_fn), self._max_batch_size,
                                     self._max_batch_time)
        native = to_native_request(req, self._model.name)
        response, _ = await self._batcher.submit(native, native.headers)
        return from_native_response(response)

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()


__all__ = ["AdaptiveBatcher"]
