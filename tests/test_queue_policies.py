"""Triton's queue policies per priority level: `priority_queue_policy` over `default_queue_policy`, each
level's own size bound and timeout, and `timeout_action: DELAY` (a timed-out request waits behind its
level instead of failing). A gated backend holds the instance while the test queues."""

import asyncio

import numpy as np
import pytest

from test_engine import GatedBackend, occupy, scheduler_for, settle
from gpuserve.batching import batching_config
from gpuserve.engine.batcher import QueuePolicy
from gpuserve.errors import DeadlineExceeded, QueueFull
from gpuserve.settings import ModelSettings
from gpuserve.triton_config import parse_pbtxt, settings_from_config

CONFIG = """
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 1
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]
dynamic_batching {
  priority_levels: 3
  default_priority_level: 2
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 1 }
  priority_queue_policy { key: 1 value: { max_queue_size: 1 } }
  priority_queue_policy { key: 3 value: { default_timeout_microseconds: 1 allow_timeout_override: true } }
}
"""


def row(value):
    return {"x": np.full((1, 2), value, np.float32)}


def test_triton_policies_become_one_policy_per_level(tmp_path):
    settings = ModelSettings(**settings_from_config(tmp_path, parse_pbtxt(CONFIG), 1))
    config = batching_config(settings, True)
    assert config.queue_policies == (QueuePolicy(1, None, False, False),  # level 1: its own, Triton's defaults
                                     QueuePolicy(0, 1e-6, False, True),  # level 2: the default policy
                                     QueuePolicy(0, 1e-6, True, False))
    from gpuserve.model_config import model_config

    shown = model_config({"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
                          "outputs": [], "parameters": {"max_batch_size": 1}}, settings)["dynamic_batching"]
    assert shown["default_queue_policy"]["timeout_action"] == "DELAY"
    assert shown["priority_queue_policy"] == {"1": {"max_queue_size": 1}, "3": {
        "default_timeout_microseconds": 1, "allow_timeout_override": True}}
    plain = ModelSettings(**settings_from_config(tmp_path, parse_pbtxt(CONFIG.split("dynamic_batching")[0]), 1))
    assert batching_config(plain, True).queue_policies == ()  # nothing asked: one queue, as before
    assert config.triton_errors  # a config.pbtxt model's timed-out requests answer in Triton's words
    assert not batching_config(ModelSettings(name="m", max_batch_size=4), True).triton_errors


async def test_each_level_keeps_its_own_bound_and_timeout_action(tmp_path):
    backend = GatedBackend()
    config = batching_config(ModelSettings(**settings_from_config(tmp_path, parse_pbtxt(CONFIG), 1)), True)
    scheduler, _ = scheduler_for(backend, max_batch_size=1, priority_levels=3, default_priority_level=1,
                                 queue_policies=config.queue_policies)
    first = await occupy(scheduler, backend)
    delayed = asyncio.ensure_future(scheduler.submit(row(20)))  # level 2: times out at once, then waits
    await asyncio.sleep(0.01)
    fresh = asyncio.ensure_future(scheduler.submit(row(21), timeout_s=60))  # level 2, no override: 1 us too
    high = asyncio.ensure_future(scheduler.submit(row(10), priority=0))
    rejected = asyncio.ensure_future(scheduler.submit(row(-30), priority=2))  # level 3: its timeout rejects
    # level 3 allows an override, but Triton lets a request only shorten the level's timeout, not lengthen it
    lengthened = asyncio.ensure_future(scheduler.submit(row(-31), priority=2, timeout_s=60))
    await settle()
    with pytest.raises(QueueFull, match="priority level 1 is full"):  # level 1 holds one, the others many
        await scheduler.submit(row(11), priority=0)
    await asyncio.sleep(0.01)
    backend.gate.set()
    answers = await asyncio.gather(first, delayed, fresh, high)
    assert [int(a["y"][0, 0]) for a in answers[1:]] == [40, 42, 20]
    for late in (rejected, lengthened):
        with pytest.raises(DeadlineExceeded):
            await late
    # delayed ones ran after their level's others (none here had not timed out) and before level 3
    assert [int(c[0, 0]) for c in backend.calls[1:]] == [10, 20, 21]
    assert scheduler.stats.fail_reasons["REJECTED"] == 2  # a delayed request is not a failure
    await scheduler.stop()


async def test_a_delayed_request_runs_behind_its_levels_requests_that_did_not_time_out():
    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, max_batch_size=1, priority_levels=2, default_priority_level=0,
                                 queue_policies=(QueuePolicy(0, None, True, True), QueuePolicy()))
    first = await occupy(scheduler, backend)
    late = asyncio.ensure_future(scheduler.submit(row(1), timeout_s=1e-6))
    await asyncio.sleep(0.01)
    on_time = [asyncio.ensure_future(scheduler.submit(row(2 + i), timeout_s=60)) for i in range(2)]
    lower = asyncio.ensure_future(scheduler.submit(row(9), priority=1))
    await settle()
    backend.gate.set()
    await asyncio.gather(first, late, *on_time, lower)
    assert [int(c[0, 0]) for c in backend.calls[1:]] == [2, 3, 1, 9]
    await scheduler.stop()


async def test_a_request_may_only_shorten_the_default_timeout():
    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, max_batch_size=1, default_timeout_s=60, allow_timeout_override=True)
    first = await occupy(scheduler, backend)
    short = asyncio.ensure_future(scheduler.submit(row(1), timeout_s=0.2))
    long = asyncio.ensure_future(scheduler.submit(row(2), timeout_s=3600))
    await settle()
    assert [round(job.deadline - job.arrival, 3) for level in scheduler.queue.levels for job in level] == [0.2, 60]
    with pytest.raises(DeadlineExceeded):  # answered at its deadline, while the instance is still busy
        await short
    backend.gate.set()
    await asyncio.gather(first, long)
    assert [int(c[0, 0]) for c in backend.calls[1:]] == [2]
    await scheduler.stop()


@pytest.mark.parametrize("triton", [False, True], ids=["gpuserve", "triton-form"])
async def test_a_timed_out_request_is_answered_at_its_deadline_even_staged_behind_a_busy_instance(triton):
    """Triton's qa queue_timeout_test: with one instance busy for seconds, a queued request whose queue
    policy times it out is answered at its deadline (UNAVAILABLE "Request timeout expired" for a Triton
    config), not when the instance frees up. Here the instance has a second slot, so the request was
    already handed to it, staged behind the running batch: it must be answered and then skipped."""
    from gpuserve.errors import QueueTimeout

    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, slots=2, max_batch_size=1, default_timeout_s=0.2, triton_errors=triton)
    first = await occupy(scheduler, backend)
    staged = asyncio.ensure_future(scheduler.submit(row(1)))
    queued = asyncio.ensure_future(scheduler.submit(row(2)))
    await settle()
    assert len(scheduler.queue) == 1  # `staged` went to the instance's second slot
    for late in (staged, queued):
        with pytest.raises(QueueTimeout if triton else DeadlineExceeded) as caught:
            await asyncio.wait_for(late, 5)  # before the gate opens
        if triton:
            assert str(caught.value) == "Request timeout expired" and caught.value.http == 503
    assert not first.done()
    backend.gate.set()
    await first
    await asyncio.sleep(0.05)
    assert len(backend.calls) == 1  # neither timed-out request ran
    assert scheduler.stats.fail_reasons["REJECTED"] == 2
    await scheduler.stop()


def test_an_override_without_a_default_timeout_has_no_effect_as_in_triton(tmp_path):
    written = CONFIG.split("dynamic_batching")[0] + """
dynamic_batching { priority_levels: 2 default_queue_policy { allow_timeout_override: true max_queue_size: 4 }
                   priority_queue_policy { key: 1 value: { allow_timeout_override: true } } }
"""
    config = batching_config(ModelSettings(**settings_from_config(tmp_path, parse_pbtxt(written), 1)), True)
    assert not config.allow_timeout_override  # Triton keeps the request's timeout only below a default one
    assert [p.allow_timeout_override for p in config.queue_policies] == [False, False]
    assert batching_config(ModelSettings(name="plain"), True).allow_timeout_override  # gpuserve's own models


def rows_of(n, value):
    return {"x": np.full((n, 2), value, np.float32)}


async def test_a_held_batch_goes_once_its_requests_make_a_preferred_size_in_queue_order():
    """Triton's qa L0_model_queue test_priority_levels: a 2-row request waits (max_queue_delay 10 s) for a
    preferred size 4 or 8; a 1-row request of its level follows; a 2-row request of a higher level makes
    4 with the first in queue order, so those two go at once and the 1-row request waits on alone."""
    backend = GatedBackend()
    backend.gate.set()
    scheduler, _ = scheduler_for(backend, max_batch_size=32, preferred_batch_sizes=(4, 8), max_queue_delay_s=10,
                                 priority_levels=2, default_priority_level=1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = asyncio.ensure_future(scheduler.submit(rows_of(2, 1)))
    await asyncio.sleep(0.05)
    lower = asyncio.ensure_future(scheduler.submit(rows_of(1, 2)))
    await asyncio.sleep(0.05)
    higher = asyncio.ensure_future(scheduler.submit(rows_of(2, 3), priority=0))
    await asyncio.wait_for(asyncio.gather(first, higher), 5)
    assert loop.time() - start < 5 and not lower.done()
    assert [c[:, 0].tolist() for c in backend.calls] == [[3, 3, 1, 1]]  # the higher level first, as queued
    await scheduler.stop()


async def test_a_held_request_that_times_out_under_delay_lets_the_others_make_a_preferred_size():
    """Triton's qa L0_model_queue test_policy_delay: the first request times out (DELAY) while its batch
    waits; two later ones make a preferred size without it and go at once; it runs after them."""
    backend = GatedBackend()
    backend.gate.set()
    scheduler, _ = scheduler_for(backend, max_batch_size=32, preferred_batch_sizes=(4, 8), max_queue_delay_s=0.5,
                                 default_timeout_s=0.05, queue_policies=(QueuePolicy(0, 0.05, False, True),))
    first = asyncio.ensure_future(scheduler.submit(rows_of(1, 1)))
    await asyncio.sleep(0.1)
    pair = [asyncio.ensure_future(scheduler.submit(rows_of(2, v))) for v in (2, 3)]
    await asyncio.wait_for(asyncio.gather(*pair), 0.4)  # before the delayed one's max_queue_delay ends
    assert not first.done()
    await asyncio.wait_for(first, 5)
    assert [c[:, 0].tolist() for c in backend.calls] == [[2, 2, 3, 3], [1]]
    await scheduler.stop()


def test_priority_levels_up_to_uint64_keep_a_bounded_number_of_queues(tmp_path):
    """Triton's qa L0_model_queue test_max_priority_levels writes priority_levels 2^64-1 with default level
    2^32: the model must load and serve (a queue per level never finished building), requests of
    level 1 still first."""
    from gpuserve.batching import MAX_PRIORITY_LEVELS

    written = CONFIG.split("dynamic_batching")[0] + """
dynamic_batching { priority_levels: 18446744073709551615 default_priority_level: 4294967296 }
"""
    settings = ModelSettings(**settings_from_config(tmp_path, parse_pbtxt(written), 1))
    config = batching_config(settings, True)
    assert config.priority_levels == MAX_PRIORITY_LEVELS
    assert config.default_priority_level == MAX_PRIORITY_LEVELS - 1


async def test_a_request_staged_behind_a_busy_instance_counts_against_the_queue_bound():
    """Triton's qa test_max_queue_size: with the instance busy, a bound of 2 takes exactly two more requests
    (one of them already handed to the instance's second slot, still waiting) and refuses the third."""
    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, slots=2, max_batch_size=1, max_queue_size=2)
    first = await occupy(scheduler, backend)
    waiting = [asyncio.ensure_future(scheduler.submit(row(v))) for v in (1, 2)]
    await settle()
    assert len(scheduler.queue) == 1  # the other is staged on the instance
    with pytest.raises(QueueFull):
        await scheduler.submit(row(3))
    backend.gate.set()
    await asyncio.gather(first, *waiting)
    await scheduler.stop()
