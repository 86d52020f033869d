"""`mlserver.batching`: MLServer's adaptive-batching names for runtimes that batch by hand. gpuserve batches
MLServer-form models itself (`max_batch_size`, `max_batch_time` in model-settings.json); these serve code
written against MLServer's classes."""

from gpuserve.mlserver.batching.adaptive import AdaptiveBatcher
from gpuserve.mlserver.batching.hooks import adaptive_batching, load_batching
from gpuserve.mlserver.batching.requests import BatchedRequests

__all__ = ["AdaptiveBatcher", "load_batching", "BatchedRequests"]
