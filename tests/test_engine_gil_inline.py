"""Batches of a backend whose calls hold the GIL run on the loop's thread (BatchingConfig.inline_holding_gil_below_s),
once batches on the instance thread show that nothing could arrive while they ran; a backend that releases the
GIL while requests keep coming stays on its thread, and one that starts releasing it is seen and goes back."""

import asyncio
import threading
import time

import numpy as np

from gpuserve.engine import batcher
from gpuserve.engine.batcher import BatchingConfig, Scheduler
from gpuserve.engine.instance import Instance


class Spinner:
    """A CPU backend whose call takes `seconds`: Python work holding the GIL, or a sleep releasing it."""

    device = "cpu"

    def __init__(self, hold_gil: bool, seconds: float = 0.0003):
        self.hold_gil, self.seconds = hold_gil, seconds
        self.threads = []

    def run(self, arrays, outputs=None):
        self.threads.append(threading.current_thread() is threading.main_thread())
        end = time.perf_counter() + self.seconds
        if self.hold_gil:
            while time.perf_counter() < end:  # pure Python: the GIL is held throughout
                pass
        else:
            time.sleep(self.seconds)  # releases the GIL, as NumPy on large arrays or I/O does
        return {"y": arrays["x"] * 2}


def _scheduler(backend, holding_gil_s=0.002):
    instance = Instance(backend, "s-0", slots=1)
    return Scheduler("s", [instance], BatchingConfig(max_batch_size=4, inline_below_s=0.00001,
                                                     inline_holding_gil_below_s=holding_gil_s))


async def _load(scheduler, seconds: float, clients: int = 6, open_every_s: float = 0.0):
    """`clients` closed-loop clients, plus, with `open_every_s`, a request every that often regardless of
    answers (so requests arrive while batches run). Every answer is checked."""
    stop = time.perf_counter() + seconds

    async def client(i):
        x = np.full((1, 2), i, np.float32)
        while time.perf_counter() < stop:
            result = await scheduler.submit({"x": x})
            np.testing.assert_array_equal(result["y"], x * 2)

    async def opener():
        pending = []
        while time.perf_counter() < stop:
            pending.append(asyncio.ensure_future(scheduler.submit({"x": np.ones((1, 2), np.float32)})))
            await asyncio.sleep(open_every_s)
        for result in await asyncio.gather(*pending):
            np.testing.assert_array_equal(result["y"], np.full((1, 2), 2, np.float32))

    tasks = [client(i) for i in range(clients)] + ([opener()] if open_every_s else [])
    await asyncio.gather(*tasks)


async def test_a_backend_holding_the_gil_runs_inline_after_a_few_watched_batches():
    backend = Spinner(hold_gil=True)
    scheduler = _scheduler(backend)
    await _load(scheduler, 0.6)
    await scheduler.stop()
    later = backend.threads[len(backend.threads) // 2:]
    assert sum(later) / len(later) > 0.8  # mostly on the loop's (here the main) thread
    assert not all(later)  # one batch in WATCH_EVERY is still watched on the instance thread
    assert scheduler._watched >= batcher.WATCH_FIRST


async def test_a_backend_releasing_the_gil_while_requests_arrive_stays_on_its_thread():
    # 3 ms calls and a request every ~1 ms (the loop's timers are that coarse): requests arrive during calls
    backend = Spinner(hold_gil=False, seconds=0.003)
    scheduler = _scheduler(backend, holding_gil_s=0.01)
    await _load(scheduler, 0.8, clients=2, open_every_s=0.001)
    await scheduler.stop()
    assert sum(backend.threads) / len(backend.threads) < 0.1
    assert scheduler._loop_ran > 0.5


async def test_without_the_setting_nothing_changes():
    backend = Spinner(hold_gil=True)
    scheduler = _scheduler(backend, holding_gil_s=0.0)
    await _load(scheduler, 0.3)
    await scheduler.stop()
    assert not any(backend.threads) and scheduler._watched == 0


async def test_a_backend_that_starts_releasing_the_gil_goes_back_to_its_thread():
    backend = Spinner(hold_gil=True, seconds=0.003)
    scheduler = _scheduler(backend, holding_gil_s=0.01)
    await _load(scheduler, 0.5, clients=2)
    assert sum(backend.threads[-20:]) > 10  # inline by now
    backend.hold_gil, backend.threads = False, []
    await _load(scheduler, 1.0, clients=2, open_every_s=0.001)
    await scheduler.stop()
    later = backend.threads[len(backend.threads) // 2:]
    assert sum(later) / len(later) < 0.2
