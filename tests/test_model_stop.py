"""A model that is unloaded, reloaded or scaled away answers the requests it took before it stops
(model_repository.stop_model waits for them, at most its stop_timeout), as Triton lets a version it unloads finish
its in-flight work: under a load generator a swap must fail none of them. The models here stand in for a TorchServe
handler or a parallel model (their `inflight` counts) and an adaptive batcher's model."""

from __future__ import annotations

import asyncio
import time

from gpuserve.adaptive import AdaptiveBatcher
from gpuserve.model_repository import stop_model
from gpuserve.types import InferInput, InferRequest


class Busy:
    """A model with one request under way, answered after `takes` seconds."""

    name = "busy"
    ready = True

    def __init__(self, takes: float, stop_timeout: float = 5.0):
        self.inflight, self.takes, self.stop_timeout = 1, takes, stop_timeout
        self.stopped_at = None

    async def answer(self):
        await asyncio.sleep(self.takes)
        self.inflight = 0

    def stop(self):
        self.stopped_at = time.monotonic()


def _stopped_after(model: Busy) -> float:
    async def run():
        began = time.monotonic()
        answering = asyncio.ensure_future(model.answer())
        await stop_model(model)
        answering.cancel()
        return model.stopped_at - began
    return asyncio.run(run())


def test_stop_waits_for_the_requests_under_way():
    assert _stopped_after(Busy(takes=0.3)) >= 0.29


def test_stop_waits_no_longer_than_its_stop_timeout():
    waited = _stopped_after(Busy(takes=30.0, stop_timeout=0.2))
    assert 0.19 <= waited < 5.0


class Slow:
    """A model the adaptive batcher calls: each call takes 0.2 s."""

    name = "slow"

    async def __call__(self, request, headers=None):
        await asyncio.sleep(0.2)
        return "answered", {}


def test_an_adaptive_batchers_requests_are_answered_before_it_stops():
    async def run():
        batcher = AdaptiveBatcher(Slow(), max_batch_size=4)
        request = InferRequest("slow", [InferInput("x", [1], "FP32", [1.0])])
        asked = [asyncio.ensure_future(batcher.submit(request, None)) for _ in range(3)]
        await asyncio.sleep(0.01)
        busy_while_asked = batcher.busy()
        model = type("Batched", (), {"name": "slow", "ready": True, "_adaptive_batcher": batcher,
                                      "stop": lambda self: None})()
        await stop_model(model)
        return busy_while_asked, [a.result() if a.done() and not a.exception() else a for a in asked], batcher.busy()
    busy_while_asked, answers, busy_after = asyncio.run(run())
    assert busy_while_asked and not busy_after
    assert answers == [("answered", {})] * 3
