"""Unloads under load (found by a concurrency storm, 2026-12-06): a batcher loop being stopped must stop
even when its cancel lands in the same loop turn as a new request, and a request waiting for a sequence
slot must be answered when its model goes."""

from __future__ import annotations

import asyncio
import time

from gpuserve.engine.batcher import cancel_and_wait
from gpuserve.engine.queue import wait_set


def test_a_cancel_in_the_same_turn_as_the_event_is_not_lost():
    """asyncio.wait_for on Python 3.11 returns the event's result and drops such a cancel; the batcher
    loop then ran on and its model's unload (and reload) waited for ever."""
    async def main():
        event = asyncio.Event()

        async def loop():
            while True:
                await wait_set(event, 10)
                event.clear()

        task = asyncio.create_task(loop())
        await asyncio.sleep(0.01)
        event.set()
        task.cancel()
        await asyncio.sleep(0.05)
        return task.done() and task.cancelled()

    assert asyncio.run(main())


def test_wait_set_times_out_and_sees_a_set_event():
    async def main():
        event = asyncio.Event()
        assert not await wait_set(event, 0.01)
        event.set()
        assert await wait_set(event, 0.01) and await wait_set(event, None)

    asyncio.run(main())


def test_cancel_and_wait_ends_a_task_that_swallows_a_cancel():
    async def main():
        swallowed = []

        async def stubborn():
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    if swallowed:
                        raise
                    swallowed.append(1)  # the first cancel is lost, as wait_for loses one

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0.01)
        started = time.monotonic()
        await asyncio.wait_for(cancel_and_wait(task), 5)
        return task.cancelled() and swallowed == [1] and time.monotonic() - started < 2

    assert asyncio.run(main())


SEQUENCE_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", pb_utils.get_input_tensor_by_name(
            r, "INPUT").as_numpy())]) for r in requests]
"""

SEQUENCE_CONFIG = """
backend: "python"
max_batch_size: 2
sequence_batching {
  max_sequence_idle_microseconds: 60000000
  control_input [ { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] } ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""


def test_a_request_waiting_for_a_sequence_slot_is_answered_when_its_model_unloads(tmp_path):
    """Two slots taken by open sequences, a third START waits in the backlog; the unload answers it
    (before: it was never answered, its parked request moved later into the closed batcher's queue)."""
    import threading

    import httpx

    from conftest import running_server
    from gpuserve import ModelRepository
    from gpuserve.repository import DiskRepository

    (tmp_path / "seq" / "1").mkdir(parents=True)
    (tmp_path / "seq" / "config.pbtxt").write_text(SEQUENCE_CONFIG)
    (tmp_path / "seq" / "1" / "model.py").write_text(SEQUENCE_MODEL)

    def start(client, sequence_id):
        return client.post("/v2/models/seq/infer", json={
            "parameters": {"sequence_id": sequence_id, "sequence_start": True},
            "inputs": [{"name": "INPUT", "shape": [1, 1], "datatype": "INT32", "data": [sequence_id]}]})

    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        base = f"http://127.0.0.1:{server.ports['http']}"
        with httpx.Client(base_url=base, timeout=30) as client, httpx.Client(base_url=base, timeout=30) as other:
            assert start(client, 1).status_code == 200 and start(client, 2).status_code == 200
            third = {}
            waiter = threading.Thread(target=lambda: third.update(answer=start(other, 3), at=time.monotonic()))
            waiter.start()
            time.sleep(0.5)
            assert waiter.is_alive()  # in the backlog
            unloaded = time.monotonic()
            assert client.post("/v2/repository/models/seq/unload").status_code == 200
            waiter.join(20)
            assert not waiter.is_alive() and third["at"] - unloaded < 5
            assert third["answer"].status_code in (400, 503) and "unload" in third["answer"].json()["error"]


def test_a_stopped_scheduler_refuses_requests_that_found_its_model_before_the_unload():
    """A request resolved to the model just before its unload reached submit() after stop(): a new queue
    and loop started on instances already closed, and it was never answered (a reload under load)."""
    import numpy as np
    import pytest

    from gpuserve.errors import ModelNotReady
    from test_engine import GatedBackend, scheduler_for

    async def main():
        backend = GatedBackend()
        backend.gate.set()
        scheduler, _ = scheduler_for(backend)
        x = np.ones((1, 2), np.float32)
        assert (await scheduler.submit({"x": x}))["y"].tolist() == [[2.0, 2.0]]
        await scheduler.stop()
        with pytest.raises(ModelNotReady, match="being unloaded"):
            await asyncio.wait_for(scheduler.submit({"x": x}), 5)

    asyncio.run(main())


def test_stopping_an_adaptive_batcher_answers_its_waiting_requests_and_refuses_later_ones():
    """MLServer-style adaptive batching: requests queued or in a batch still growing were left unanswered
    when the unload cancelled the batcher's loop."""
    import pytest

    from gpuserve.adaptive import AdaptiveBatcher
    from gpuserve.errors import ModelNotReady
    from test_adaptive import Summer, request

    async def main():
        model = Summer("summer")
        model.load()
        model.gate.set()
        batcher = AdaptiveBatcher(model, 4, max_batch_time=30.0)  # a batch waits up to 30 s for more
        waiting = [asyncio.ensure_future(batcher.submit(request([i, 1], f"r{i}"), {})) for i in range(6)]
        await asyncio.sleep(0.1)
        await asyncio.wait_for(batcher.stop(), 5)
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
        # each answered: by the model (a batch that ran before the stop) or refused, none left waiting
        assert all(isinstance(r, (ModelNotReady, tuple)) for r in results), results
        assert any(isinstance(r, ModelNotReady) for r in results)
        with pytest.raises(ModelNotReady, match="being unloaded"):
            await batcher.submit(request([1, 1], "late"), {})

    asyncio.run(main())


def test_requests_held_for_a_growing_batch_are_answered_when_the_scheduler_stops():
    """With max_queue_delay the batcher takes requests out of the queue while their batch grows; stopping
    it then (an unload) left them unanswered, the queue's fail_all no longer saw them."""
    import numpy as np

    from gpuserve.errors import ModelNotReady
    from test_engine import GatedBackend, scheduler_for

    async def main():
        backend = GatedBackend()
        backend.gate.set()
        scheduler, _ = scheduler_for(backend, max_batch_size=8, max_queue_delay_s=30.0)
        held = asyncio.ensure_future(scheduler.submit({"x": np.ones((1, 2), np.float32)}))
        await asyncio.sleep(0.2)
        assert not held.done() and scheduler.queue.size == 0  # taken out, held for company
        await asyncio.wait_for(scheduler.stop(), 5)
        done, _ = await asyncio.wait({held}, timeout=5)
        return done and isinstance(held.exception(), ModelNotReady)

    assert asyncio.run(main())
