"""`mlserver.batching.requests.BatchedRequests`: merge MLServer requests into one and split the answer back.

A runtime that batches by itself uses it as with MLServer. The merging and splitting are gpuserve's adaptive
batching (gpuserve/adaptive.py), so a runtime sees the same merged request whether the server batched or it
did: inputs concatenated along their first axis, custom parameters gathered into one list per key (MLServer
1.7.1 keeps the last request's value for request-level parameters), list-valued output parameters split one
element per request, and each part answered under its own request's id.
"""

from __future__ import annotations

from typing import Dict, Optional

from gpuserve.adaptive import _rows, merge_requests, split_response
from gpuserve.mlserver.types import (InferenceRequest, InferenceResponse, from_native_request,
                                     from_native_response, to_native_request, to_native_response)


class BatchedRequests:
    def __init__(self, inference_requests: Optional[Dict[str, InferenceRequest]] = None):
        self.inference_requests = dict(inference_requests or {})
        self._native = [to_native_request(request) for request in self.inference_requests.values()]
        self._rows = [_rows(request) for request in self._native]
        if not self._native:
            self.merged_request = InferenceRequest(inputs=[])
            return
        merged = merge_requests(self._native)
        merged.id = None  # as MLServer: the merged request is nobody's
        self.merged_request = from_native_request(merged)

    def split_response(self, batched_response: InferenceResponse) -> Dict[str, InferenceResponse]:
        """Each request's share of `batched_response`, by the keys the requests were given under."""
        native = to_native_response(batched_response)
        parts = split_response(native, self._native, self._rows, native.model_name)
        return {key: from_native_response(part) for key, part in zip(self.inference_requests, parts)}


__all__ = ["BatchedRequests"]
