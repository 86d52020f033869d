"""A sync hook runs on the event loop once its calls prove quick, and on an executor thread while they are slow
by CPU or by the clock (a sleep, a network wait): quick hooks skip the thread hop, slow ones never stop the loop."""

import asyncio
import threading
import time
import warnings

from gpuserve import Model
from gpuserve.hook_placement import RETRY_MAX, SPIKE_S, TRY_AFTER, Placement, placement_of


class Timed(Model):
    def __init__(self, seconds=0.0, sleep=False):
        super().__init__("timed")
        self.seconds, self.sleep = seconds, sleep
        self.on_loop = []
        self.ready = True

    def predict(self, payload, headers=None):
        self.on_loop.append(threading.current_thread() is threading.main_thread())
        if self.sleep:
            time.sleep(self.seconds)
        else:
            end = time.perf_counter() + self.seconds
            while time.perf_counter() < end:  # CPU work
                pass
        return {"predictions": payload["instances"]}


def _calls(model, count):
    async def run():
        for _ in range(count):
            response, _ = await model({"instances": [1]})
            assert response["predictions"] == [1]

    asyncio.run(run())


def test_a_quick_sync_predict_moves_to_the_loop_after_its_first_calls():
    model = Timed()
    _calls(model, 20)
    assert model.on_loop[:TRY_AFTER] == [False] * TRY_AFTER  # timed on a thread first
    assert model.on_loop[-1] and placement_of(model.predict).on_loop, model.on_loop


def test_a_sleeping_or_cpu_heavy_predict_stays_off_the_loop():
    for model in (Timed(0.005, sleep=True), Timed(0.002)):
        _calls(model, 12)
        assert not any(model.on_loop), model.on_loop
        assert not placement_of(model.predict).on_loop


def test_a_predict_that_turns_slow_leaves_the_loop_and_retries_later():
    model = Timed()
    _calls(model, 20)
    assert model.on_loop[-1]
    model.seconds = SPIKE_S * 1.5
    _calls(model, 1)  # one long call on the loop
    placement = placement_of(model.predict)
    assert model.on_loop[-1] and not placement.on_loop and placement.wait == 2 * TRY_AFTER
    model.seconds = 0.0
    model.on_loop.clear()
    _calls(model, 2 * TRY_AFTER + 14)
    # the next try on the loop waits at least twice as many thread calls as the first one did
    assert model.on_loop[:2 * TRY_AFTER] == [False] * (2 * TRY_AFTER) and model.on_loop[-1], model.on_loop


def test_placements_are_per_model_object_and_method():
    a, b = Timed(), Timed()
    assert placement_of(a.predict) is placement_of(a.predict)
    assert placement_of(a.predict) is not placement_of(b.predict)
    assert placement_of(a.preprocess) is not placement_of(a.predict)
    assert placement_of(lambda: None) is None  # a plain function: nothing to keep timings on


def test_retry_gap_is_bounded():
    placement = Placement()
    for _ in range(20):
        placement.on_loop = True
        placement.loop_call(SPIKE_S * 2)
    assert placement.wait == RETRY_MAX


class RunsItsOwnLoop(Timed):
    def predict(self, payload, headers=None):
        async def double(value):
            return 2 * value

        self.on_loop.append(threading.current_thread() is threading.main_thread())
        return {"predictions": [asyncio.run(double(v)) for v in payload["instances"]]}


def test_a_hook_that_starts_its_own_event_loop_keeps_working():
    """asyncio.run refuses to start on the loop's thread: that call runs again on a thread, and so do all later
    ones. (Its placement is set on the loop here: whether asyncio.run's own cost lets it get there by timing
    depends on the machine.)"""
    model = RunsItsOwnLoop()
    placement = placement_of(model.predict)
    placement.on_loop = True

    async def run():
        for _ in range(6):
            response, _ = await model({"instances": [1, 2]})
            assert response["predictions"] == [2, 4]

    with warnings.catch_warnings():  # the coroutine made for the refused asyncio.run is never awaited
        warnings.simplefilter("ignore", RuntimeWarning)
        asyncio.run(run())
    assert model.on_loop == [True] + [False] * 6, model.on_loop  # the refused try, then each call on a thread
    assert not placement.on_loop


def test_a_model_can_pin_its_sync_hooks():
    on_loop, off_loop = Timed(), Timed(0.005, sleep=True)
    on_loop.sync_hooks_on_loop, off_loop.sync_hooks_on_loop = True, False
    _calls(on_loop, 4)
    _calls(off_loop, 4)
    assert all(on_loop.on_loop) and not any(off_loop.on_loop)
    quick = Timed()
    quick.sync_hooks_on_loop = False
    _calls(quick, 10)
    assert not any(quick.on_loop)
