"""Where a model's sync hook runs: on the event loop when its calls are quick, else on the default executor.

KServe calls a sync `predict` on its event loop: quick calls pay nothing, and a slow one stops every other
request of the server (kserve/kserve#3950). Always hopping to an executor thread costs the other way: the
hand-off and the wake-up back are two waits for the GIL, and a KServe script's 40 us NumPy predict served 9,487
req/s with 8 HTTP clients that way against 14,312 placed here (2-core VM, benchmarks/peers/kserve_hooks_bench.py,
RESULTS session 34). So each hook is timed: on a thread, its thread CPU time (GIL waits excluded) and its clock
time (sleeps and I/O included); once its recent calls there took under INLINE_BELOW_S of CPU and under
THREAD_CLOCK_BELOW_S of clock, it runs on the loop, timed by the clock; a call there over INLINE_BELOW_S on
average, or one over SPIKE_S, sends it back to the thread, and the next try on the loop waits twice as many calls
as the last (up to RETRY_MAX). A hook that sleeps or waits on the network never reaches the loop: its clock time on
the thread is long.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable, Optional

INLINE_BELOW_S = 300e-6  # the hand-off to a thread and back costs 60-120 us idle, far more under load
THREAD_CLOCK_BELOW_S = 1.5e-3  # a call on a thread that took this long by the clock is not tried on the loop
SPIKE_S = 3e-3  # one call on the loop this long goes back to the thread at once
TRY_AFTER = 3  # calls timed on a thread before the first try on the loop (the first ones are cold)
RETRY_MAX = 1024
_WEIGHT = 0.2  # of the newest call in the moving averages


class Placement:
    """One hook of one model object: its recent timings and where its next call goes."""

    __slots__ = ("on_loop", "cpu", "clock", "loop_clock", "timed", "wait")

    def __init__(self) -> None:
        self.on_loop = False
        self.cpu = self.clock = self.loop_clock = 0.0
        self.timed = 0  # calls timed on a thread since the hook last left the loop
        self.wait = TRY_AFTER

    def run_timed(self, call: Callable[..., Any], *args: Any) -> Any:
        """On an executor thread: `call(*args)`, timed."""
        cpu, clock = time.thread_time(), time.perf_counter()
        try:
            return call(*args)
        finally:
            self._thread_call(time.thread_time() - cpu, time.perf_counter() - clock)

    def _thread_call(self, cpu: float, clock: float) -> None:
        if self.timed <= 1:  # the first call of a run on the thread is cold (a new thread, caches): not counted
            self.cpu, self.clock = cpu, clock
        else:
            self.cpu += _WEIGHT * (cpu - self.cpu)
            self.clock += _WEIGHT * (clock - self.clock)
        self.timed += 1
        if self.timed >= self.wait and self.cpu < INLINE_BELOW_S and self.clock < THREAD_CLOCK_BELOW_S:
            self.loop_clock = self.cpu
            self.on_loop = True

    def keep_off_loop(self) -> None:
        """The hook cannot run on the loop at all (it starts an event loop of its own)."""
        self.on_loop = False
        self.timed = 0
        self.wait = RETRY_MAX * 1_000_000

    def loop_call(self, clock: float) -> None:
        """After a call on the loop that took `clock` seconds."""
        self.loop_clock += _WEIGHT * (clock - self.loop_clock)
        if self.on_loop and (clock > SPIKE_S or self.loop_clock > INLINE_BELOW_S):
            self.on_loop = False
            self.timed = 0
            self.wait = min(self.wait * 2, RETRY_MAX)


_PLACEMENTS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def placement_of(hook: Callable) -> Optional[Placement]:
    """The placement of a bound method's hook (one per model object and method); None for what cannot be
    told apart over time (a plain function, an object that takes no weak reference)."""
    owner = getattr(hook, "__self__", None)
    function = getattr(hook, "__func__", None)
    if owner is None or function is None:
        return None
    try:
        hooks = _PLACEMENTS.get(owner)
        if hooks is None:
            hooks = _PLACEMENTS[owner] = {}
    except TypeError:
        return None
    placement = hooks.get(function)
    if placement is None:
        placement = hooks[function] = Placement()
    return placement
