"""The engine under concurrent load: batch sizes, exact results, priorities, deadlines, limits,
cancellation, isolation of bad requests, buffer reuse and statistics. No sleeps: a gated backend
holds the instance busy until the test has queued what it needs."""

import asyncio
import threading

import numpy as np
import pytest

from conftest import make_onnx_model, onnx_reference
from gpuserve.backends.base import TensorSpec
from gpuserve.engine.batcher import BatchingConfig, Scheduler
from gpuserve.engine.instance import Instance
from gpuserve.engine.job import Job
from gpuserve.engine.staging import StagingPool
from gpuserve.errors import DeadlineExceeded, InferenceError, QueueFull


class GatedBackend:
    """Doubles `x`; the first call waits for `gate`, so requests pile up behind a busy instance."""

    device = "cpu"

    def __init__(self, rows_out=None):
        self.inputs = [TensorSpec("x", "FP32", [-1, -1])]
        self.outputs = [TensorSpec("y", "FP32", [-1, -1])]
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls = []
        self.rows_out = rows_out

    def run(self, arrays, outputs=None):
        x = arrays["x"]
        self.calls.append(x.copy())
        self.entered.set()
        if not self.gate.wait(30):
            raise RuntimeError("gate never opened")
        if (x < 0).any():
            raise ValueError("negative input")
        y = x * 2
        if self.rows_out is not None:
            y = y[: self.rows_out]
        return {"y": y}


def scheduler_for(backend, slots=1, **config):
    # The gated backend blocks until the test, on the loop, opens its gate: it must run on the
    # instance's thread, never inline on the loop (test_quick_lone_batches_run_inline covers that).
    config.setdefault("inline_below_s", 0.0)
    pool = StagingPool()
    instance = Instance(backend, "m-0", pool, slots=slots)
    return Scheduler("m", [instance], BatchingConfig(**config)), pool


async def occupy(scheduler, backend):
    """Start one request and wait until the instance is running it."""
    task = asyncio.ensure_future(scheduler.submit({"x": np.zeros((1, 2), np.float32)}))
    assert await asyncio.to_thread(backend.entered.wait, 30)
    return task


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def test_batches_grow_while_the_instance_is_busy():
    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, max_batch_size=64)
    first = await occupy(scheduler, backend)
    xs = [np.full((1, 2), i, np.float32) for i in range(10)]
    tasks = [asyncio.ensure_future(scheduler.submit({"x": x})) for x in xs]
    await settle()
    backend.gate.set()
    results = await asyncio.gather(*tasks)
    await first
    assert scheduler.batches_formed == {1: 1, 10: 1}
    for x, result in zip(xs, results):
        assert np.array_equal(result["y"], x * 2)
    await scheduler.stop()


async def test_max_batch_size_and_preferred_sizes_shape_batches():
    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, max_batch_size=4)
    first = await occupy(scheduler, backend)
    tasks = [asyncio.ensure_future(scheduler.submit({"x": np.ones((1, 2), np.float32)})) for _ in range(10)]
    await settle()
    backend.gate.set()
    await asyncio.gather(first, *tasks)
    assert scheduler.batches_formed == {1: 1, 4: 2, 2: 1}
    await scheduler.stop()

    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, max_batch_size=8, preferred_batch_sizes=(4,))
    first = await occupy(scheduler, backend)
    tasks = [asyncio.ensure_future(scheduler.submit({"x": np.ones((1, 2), np.float32)})) for _ in range(7)]
    await settle()
    backend.gate.set()
    await asyncio.gather(first, *tasks)
    assert scheduler.batches_formed == {1: 1, 4: 1, 3: 1}
    await scheduler.stop()


async def test_requests_with_rows_are_packed_and_split_back_in_order():
    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, max_batch_size=16)
    first = await occupy(scheduler, backend)
    xs = [np.arange(r * 2, dtype=np.float32).reshape(r, 2) + 100 * r for r in (3, 1, 5, 2)]
    tasks = [asyncio.ensure_future(scheduler.submit({"x": x})) for x in xs]
    await settle()
    backend.gate.set()
    results = await asyncio.gather(*tasks)
    await first
    assert scheduler.batches_formed[11] == 1
    for x, result in zip(xs, results):
        assert result["y"].shape == x.shape and np.array_equal(result["y"], x * 2)
    await scheduler.stop()


async def test_different_non_batch_shapes_never_share_a_batch():
    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, max_batch_size=64)
    first = await occupy(scheduler, backend)
    shapes = [(1, 2), (1, 3), (1, 2), (1, 3), (2, 3)]
    tasks = [asyncio.ensure_future(scheduler.submit({"x": np.ones(s, np.float32)})) for s in shapes]
    await settle()
    backend.gate.set()
    results = await asyncio.gather(*tasks)
    await first
    assert [r["y"].shape for r in results] == shapes
    assert sorted(c.shape for c in backend.calls[1:]) == [(2, 2), (4, 3)]
    await scheduler.stop()


async def test_priority_levels_run_high_priority_first():
    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, max_batch_size=1, priority_levels=3, default_priority_level=1)
    first = await occupy(scheduler, backend)
    low = [asyncio.ensure_future(scheduler.submit({"x": np.full((1, 2), 30 + i, np.float32)}, priority=2))
           for i in range(2)]
    default = asyncio.ensure_future(scheduler.submit({"x": np.full((1, 2), 20, np.float32)}))
    high = asyncio.ensure_future(scheduler.submit({"x": np.full((1, 2), 10, np.float32)}, priority=0))
    await settle()
    backend.gate.set()
    await asyncio.gather(first, *low, default, high)
    assert [int(c[0, 0]) for c in backend.calls[1:]] == [10, 20, 30, 31]
    # as Triton: a level beyond the model's runs at the default level instead of failing
    backend.calls.clear()
    out = await scheduler.submit({"x": np.full((1, 2), 7, np.float32)}, priority=3)
    assert int(out["y"][0, 0]) == 14 and len(backend.calls) == 1
    await scheduler.stop()


async def test_expired_deadline_is_504_and_never_runs():
    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, max_batch_size=8)
    first = await occupy(scheduler, backend)
    late = asyncio.ensure_future(scheduler.submit({"x": np.full((1, 2), -7, np.float32)}, timeout_s=1e-9))
    ok = asyncio.ensure_future(scheduler.submit({"x": np.ones((1, 2), np.float32)}, timeout_s=60))
    await settle()
    backend.gate.set()
    with pytest.raises(DeadlineExceeded):
        await late
    assert np.array_equal((await ok)["y"], np.full((1, 2), 2, np.float32))
    await first
    assert all((c != -7).all() for c in backend.calls)
    # as Triton counts it: a failure, reason REJECTED (nv_inference_request_failure{reason="REJECTED"})
    assert scheduler.stats.fail.count == 1 and scheduler.stats.fail_reasons["REJECTED"] == 1
    await scheduler.stop()


async def test_full_queue_is_503_with_retry_after():
    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, max_batch_size=1, max_queue_size=2)
    first = await occupy(scheduler, backend)
    queued = [asyncio.ensure_future(scheduler.submit({"x": np.ones((1, 2), np.float32)})) for _ in range(2)]
    await settle()
    with pytest.raises(QueueFull) as error:
        await scheduler.submit({"x": np.ones((1, 2), np.float32)})
    assert error.value.http == 503 and error.value.headers["Retry-After"]
    backend.gate.set()
    await asyncio.gather(first, *queued)
    await scheduler.stop()


async def test_cancelled_request_is_skipped():
    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, max_batch_size=8)
    first = await occupy(scheduler, backend)
    gone = asyncio.ensure_future(scheduler.submit({"x": np.full((1, 2), 55, np.float32)}))
    kept = asyncio.ensure_future(scheduler.submit({"x": np.full((1, 2), 3, np.float32)}))
    await settle()
    gone.cancel()
    await settle()
    backend.gate.set()
    assert np.array_equal((await kept)["y"], np.full((1, 2), 6, np.float32))
    await first
    assert all((c != 55).all() for c in backend.calls)
    stats = scheduler.stats  # counted once, as Triton's CANCELED failure; the two that ran as successes
    assert (stats.success.count, stats.fail.count, stats.fail_reasons["CANCELED"]) == (2, 1, 1)
    assert stats.inference_count == 2
    await scheduler.stop()


async def test_a_request_cancelled_as_its_instance_takes_it_up_is_counted_once():
    """The caller's cancel reaches the request's future at once but its task a loop turn later: an instance
    that begins the request in between skips it, and it was counted neither as a success nor as CANCELED
    (a helper's burst of RST_STREAMs: 16-25 of 600 requests counted nowhere)."""
    import time

    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, slots=2, max_batch_size=8)
    first = await occupy(scheduler, backend)
    gone = asyncio.ensure_future(scheduler.submit({"x": np.full((1, 2), 55, np.float32)}))
    await settle()  # staged on the busy instance as its next batch
    gone.cancel()
    backend.gate.set()
    time.sleep(0.3)  # the loop held: the instance finishes the first batch and takes up (skips) the cancelled one
    await settle()
    await first
    with pytest.raises(asyncio.CancelledError):
        await gone
    await settle()
    stats = scheduler.stats
    assert (stats.success.count, stats.fail.count, stats.fail_reasons["CANCELED"]) == (1, 1, 1)
    assert all((c != 55).all() for c in backend.calls)
    await scheduler.stop()


async def test_burst_of_good_and_bad_requests_each_answered_exactly_once():
    backend = GatedBackend()
    backend.gate.set()
    scheduler, _ = scheduler_for(backend, max_batch_size=16)
    xs = [np.full((1, 2), -1 if i % 5 == 0 else i, np.float32) for i in range(200)]
    results = await asyncio.gather(*(scheduler.submit({"x": x}) for x in xs), return_exceptions=True)
    assert len(results) == 200
    for x, result in zip(xs, results):
        if x[0, 0] < 0:
            assert isinstance(result, ValueError)
        else:
            assert np.array_equal(result["y"], x * 2)
    stats = scheduler.stats.as_dict()["inference_stats"]
    assert stats["success"]["count"] == 160 and stats["fail"]["count"] == 40
    await scheduler.stop()


async def test_wrong_row_count_from_a_model_fails_clearly():
    backend = GatedBackend(rows_out=1)
    backend.gate.set()
    scheduler, _ = scheduler_for(backend, max_batch_size=8)
    with pytest.raises(InferenceError, match="returned 1 rows"):
        await scheduler.submit({"x": np.ones((3, 2), np.float32)})
    await scheduler.stop()


async def test_staging_buffers_are_reused():
    backend = GatedBackend()
    scheduler, pool = scheduler_for(backend, max_batch_size=8)
    for _ in range(20):
        backend.gate.clear()
        backend.entered.clear()
        first = await occupy(scheduler, backend)
        tasks = [asyncio.ensure_future(scheduler.submit({"x": np.ones((1, 2), np.float32)})) for _ in range(4)]
        await settle()
        backend.gate.set()
        await asyncio.gather(first, *tasks)
    stats = pool.stats()
    assert stats["allocations"] == 1 and stats["reuses"] == 19 and stats["in_use"] == 0
    await scheduler.stop()


async def test_max_queue_delay_waits_for_a_fuller_batch():
    backend = GatedBackend()
    backend.gate.set()
    scheduler, _ = scheduler_for(backend, max_batch_size=4, max_queue_delay_s=30.0)
    tasks = [asyncio.ensure_future(scheduler.submit({"x": np.ones((1, 2), np.float32)})) for _ in range(4)]
    for task in tasks:  # submitted one after another; the batch waited for all four
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert scheduler.batches_formed == {4: 1}
    await scheduler.stop()


async def test_onnx_results_identical_to_unbatched_execution(tmp_path):
    import onnxruntime as ort

    weight, bias = make_onnx_model(tmp_path / "m.onnx", in_features=8, out_features=5)
    from gpuserve.backends.onnx import OnnxBackend

    instances = [Instance(OnnxBackend(str(tmp_path / "m.onnx"), intra_op_threads=1), f"m-{i}", StagingPool())
                 for i in range(2)]
    scheduler = Scheduler("m", instances, BatchingConfig(max_batch_size=32))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(int(rng.integers(1, 4)), 8)).astype(np.float32) for _ in range(64)]
    results = await asyncio.gather(*(scheduler.submit({"input": x}) for x in xs))
    for x, result in zip(xs, results):
        alone = session.run(None, {"input": x})[0]
        assert np.allclose(result["output"], alone, rtol=1e-5, atol=1e-6)
        assert np.allclose(result["output"], onnx_reference(x, weight, bias), rtol=1e-4, atol=1e-5)
    assert max(scheduler.batches_formed) > 1  # batching happened
    stats = scheduler.stats.as_dict()
    assert stats["inference_count"] == sum(len(x) for x in xs)
    assert stats["inference_stats"]["success"]["count"] == 64
    assert sum(b["compute_infer"]["count"] for b in stats["batch_stats"]) == stats["execution_count"]
    await scheduler.stop()


async def test_two_slots_queue_the_next_batch_behind_the_running_one():
    backend = GatedBackend()
    scheduler, _ = scheduler_for(backend, slots=2, max_batch_size=64)
    first = await occupy(scheduler, backend)
    tasks = [asyncio.ensure_future(scheduler.submit({"x": np.ones((1, 2), np.float32)})) for _ in range(3)]
    await settle()
    # The second slot took the three waiting requests as a batch while the first still runs.
    assert scheduler.batches_formed == {1: 1, 3: 1}
    more = [asyncio.ensure_future(scheduler.submit({"x": np.ones((1, 2), np.float32)})) for _ in range(5)]
    await settle()
    backend.gate.set()
    await asyncio.gather(first, *tasks, *more)
    assert scheduler.batches_formed == {1: 1, 3: 1, 5: 1}
    await scheduler.stop()


async def test_an_idle_instance_takes_a_batch_before_a_busy_instances_second_slot():
    # instance_group { count: 3 }, each instance with two slots, no batching: three requests at once must
    # run on three instances, not two on the first (one waiting behind the other) while the third sits idle
    backends = [GatedBackend() for _ in range(3)]
    pool = StagingPool()
    instances = [Instance(b, f"m-{i}", pool, slots=2) for i, b in enumerate(backends)]
    scheduler = Scheduler("m", instances, BatchingConfig(max_batch_size=0, inline_below_s=0.0))
    tasks = [asyncio.ensure_future(scheduler.submit({"x": np.full((1, 2), i, np.float32)})) for i in range(3)]
    for backend in backends:
        assert await asyncio.to_thread(backend.entered.wait, 10), "an instance stayed idle"
    assert [len(b.calls) for b in backends] == [1, 1, 1]
    for backend in backends:
        backend.gate.set()
    answers = await asyncio.gather(*tasks)
    assert [a["y"][0, 0] for a in answers] == [0, 2, 4]
    # now every instance is idle again: the next three spread out the same way
    more = [asyncio.ensure_future(scheduler.submit({"x": np.ones((1, 2), np.float32)})) for _ in range(3)]
    await asyncio.gather(*more)
    assert [len(b.calls) for b in backends] == [2, 2, 2]
    await scheduler.stop()


class ThreadRecordingBackend:
    """Doubles `x`, takes `seconds_per_row` per row and records which thread ran each call."""

    def __init__(self, device="cpu", seconds_per_row=0.0):
        self.device, self.seconds_per_row, self.threads = device, seconds_per_row, []

    def run(self, arrays, outputs=None):
        self.threads.append(threading.get_ident())
        if self.seconds_per_row:
            threading.Event().wait(self.seconds_per_row * len(arrays["x"]))
        return {"y": arrays["x"] * 2}


async def test_quick_batches_run_inline_on_an_idle_cpu_model():
    loop_thread = threading.get_ident()
    backend = ThreadRecordingBackend(seconds_per_row=0.0002)
    scheduler = Scheduler("m", [Instance(backend, "m-0", StagingPool())],
                          BatchingConfig(max_batch_size=64, inline_below_s=0.01))
    x = np.ones((1, 2), np.float32)
    for _ in range(3):  # one at a time: after the first (timed on the instance thread) they run inline
        np.testing.assert_array_equal((await scheduler.submit({"x": x}))["y"], x * 2)
    assert backend.threads[0] != loop_thread and backend.threads[1:] == [loop_thread, loop_thread]
    # 64 requests in one loop turn: the first runs at once in its caller's task (nothing else was waiting
    # when it came); the other 63 rows at 0.2 ms or more a row would hold the loop past the 10 ms limit,
    # so they form one batch on the instance thread
    backend.threads.clear()
    results = await asyncio.gather(*(scheduler.submit({"x": x * i}) for i in range(64)))
    assert [r["y"][0, 0] for r in results] == [2.0 * i for i in range(64)]
    assert scheduler.batches_formed.get(63) == 1
    assert backend.threads[0] == loop_thread and backend.threads[1:] == [backend.threads[1]] != [loop_thread]
    await scheduler.stop()


def _turn_counter():
    """A callback that counts loop turns (it reschedules itself once per turn)."""
    loop, turns = asyncio.get_running_loop(), [0]

    def tick():
        turns[0] += 1
        handle[0] = loop.call_soon(tick)

    handle = [loop.call_soon(tick)]
    return turns, lambda: handle[0].cancel()


async def test_a_lone_request_runs_in_its_callers_task_in_one_loop_turn():
    backend = ThreadRecordingBackend(seconds_per_row=0.0002)
    scheduler = Scheduler("m", [Instance(backend, "m-0", StagingPool())], BatchingConfig(max_batch_size=8))
    x = np.ones((1, 2), np.float32)
    await scheduler.submit({"x": x})  # the first is timed on the instance thread
    await asyncio.sleep(0)
    turns, stop = _turn_counter()
    for i in range(20):  # one caller, back to back: a loop turn every second request at least (none starve)
        np.testing.assert_array_equal((await scheduler.submit({"x": x * i}))["y"], x * i * 2)
    direct = turns[0]
    await scheduler.submit({"x": x}, timeout_s=5.0)  # a deadline: through the queue as before
    queued = turns[0] - direct
    stop()
    assert 10 <= direct <= 20 and queued >= 2
    assert backend.threads[1:] == [threading.get_ident()] * 21
    stats = scheduler.stats.as_dict()
    assert stats["inference_count"] == 22 and stats["inference_stats"]["success"]["count"] == 22
    # a failing request raises in its caller, the model keeps serving
    with pytest.raises(KeyError):  # the backend reads "x"
        await scheduler.submit({"z": x})
    np.testing.assert_array_equal((await scheduler.submit({"x": x}))["y"], x * 2)
    assert scheduler.stats.as_dict()["inference_stats"]["fail"]["count"] == 1
    await scheduler.stop()


async def test_in_process_callers_that_submit_back_to_back_share_the_model():
    backend = ThreadRecordingBackend(seconds_per_row=0.0001)
    scheduler = Scheduler("m", [Instance(backend, "m-0", StagingPool())], BatchingConfig(max_batch_size=8))
    await scheduler.submit({"x": np.ones((1, 2), np.float32)})
    done = {"a": 0, "b": 0}

    async def caller(name):
        while sum(done.values()) < 100:
            await scheduler.submit({"x": np.ones((1, 2), np.float32)})
            done[name] += 1

    await asyncio.gather(caller("a"), caller("b"))
    assert min(done.values()) >= 30, done  # neither starves the other
    await scheduler.stop()


@pytest.mark.parametrize("device, seconds_per_row, limit", [("cuda:0", 0.0, 0.001), ("cpu", 0.005, 0.001),
                                                            ("cpu", 0.0, 0.0)])
async def test_no_inline_for_gpu_slow_or_disabled(device, seconds_per_row, limit):
    loop_thread = threading.get_ident()
    backend = ThreadRecordingBackend(device, seconds_per_row)
    scheduler = Scheduler("m", [Instance(backend, "m-0", StagingPool())],
                          BatchingConfig(max_batch_size=8, inline_below_s=limit))
    for _ in range(3):
        await scheduler.submit({"x": np.ones((1, 2), np.float32)})
    assert loop_thread not in backend.threads
    await scheduler.stop()


async def test_a_lone_clients_heavier_batches_run_inline_unless_others_wait_or_the_transport_says_no(monkeypatch):
    from gpuserve.engine import batcher
    from gpuserve.engine.batcher import LONE_INLINE_OK

    monkeypatch.setattr(batcher, "LONE_GAP_S", 0.02)  # wide margins both ways on a loaded machine

    loop_thread = threading.get_ident()
    backend = ThreadRecordingBackend(seconds_per_row=0.0005)  # 0.5 ms a row: over inline_below_s (0.1 ms)
    # a lone client's bound: 50 ms, not 2, so a 0.5 ms run that a loaded machine stretches still counts as quick
    config = BatchingConfig(max_batch_size=8, inline_alone_below_s=0.05)
    scheduler = Scheduler("m", [Instance(backend, "m-0", StagingPool())], config)
    x = np.ones((1, 2), np.float32)
    for _ in range(4):  # one client, one request at a time: nothing else for the loop to do meanwhile
        np.testing.assert_array_equal((await scheduler.submit({"x": x}))["y"], x * 2)
    assert backend.threads[0] != loop_thread and backend.threads[1:] == [loop_thread] * 3
    for _ in range(20):  # three clients at once: no longer lone, batches go back to the instance thread
        backend.threads.clear()
        await asyncio.gather(*(scheduler.submit({"x": x}) for _ in range(3)))
    assert backend.threads and loop_thread not in backend.threads
    await scheduler.stop()

    backend = ThreadRecordingBackend(seconds_per_row=0.0005)
    scheduler = Scheduler("m", [Instance(backend, "m-0", StagingPool())], config)
    token = LONE_INLINE_OK.set(False)  # as the gRPC servicer does for its requests
    try:
        for _ in range(4):  # a client that sends again a round trip after its answer is still lone
            await scheduler.submit({"x": x})
            await asyncio.sleep(0.06)
        assert backend.threads[0] != loop_thread and backend.threads[1:] == [loop_thread] * 3
        backend.threads.clear()
        for _ in range(4):  # back to back: each request was waiting behind the last answer
            await scheduler.submit({"x": x})
    finally:
        LONE_INLINE_OK.reset(token)
    # the first still came a round trip after its predecessor; the second arrived at once and turned the
    # rule off (for a second), so it and the rest went to the instance thread
    assert backend.threads[0] == loop_thread and backend.threads[1:] and loop_thread not in backend.threads[1:]
    await scheduler.stop()


def test_request_level_backend_gets_whole_requests_and_never_runs_them_twice():
    class Requests:
        device = "cpu"

        def __init__(self, fail=False):
            self.calls, self.fail = [], fail

        def run_requests(self, jobs):
            self.calls.append([job.parameters["tag"] for job in jobs])
            if self.fail:
                raise RuntimeError("broke while building the requests")
            return [{"tag": job.parameters["tag"]} for job in jobs]

    async def main(backend):
        scheduler = Scheduler("req", [Instance(backend, "req-0")], BatchingConfig(max_batch_size=8,
                                                                                  inline_below_s=0.0))
        try:
            return await asyncio.gather(*(scheduler.submit({"x": np.zeros((1, 2), np.float32)}, context={"tag": t})
                                          for t in range(5)), return_exceptions=True)
        finally:
            await scheduler.stop()

    working = Requests()
    assert asyncio.run(main(working)) == [{"tag": t} for t in range(5)]
    assert sorted(t for call in working.calls for t in call) == list(range(5))
    broken = Requests(fail=True)
    outcomes = asyncio.run(main(broken))
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert sorted(t for call in broken.calls for t in call) == list(range(5))  # each request tried once


@pytest.mark.parametrize("counts", [[1] * 64, [3, 1, 60], [60, 1, 3], [1, 1], [5] * 7 + [1], [2, 0, 2, 1]])
def test_large_batches_are_gathered_by_several_threads_exactly(monkeypatch, counts):
    from gpuserve.engine import staging

    monkeypatch.setattr(staging, "PARALLEL_COPY_BYTES", 16)
    monkeypatch.setattr(staging, "_copy_threads", lambda: 3)
    calls = []
    real = staging._parallel_concatenate
    monkeypatch.setattr(staging, "_parallel_concatenate",
                        lambda parts, out, threads: (calls.append(threads), real(parts, out, threads)))
    rng = np.random.default_rng(len(counts))
    parts = [rng.normal(size=(c, 5, 3)).astype(np.float32) for c in counts]
    parts[-1] = parts[-1].astype(np.float64)  # cast on copy as np.concatenate does
    pool = StagingPool()
    array, lease = staging.gather(pool, parts)
    assert calls and 1 < calls[0] <= 3 and array.dtype == np.float32
    np.testing.assert_array_equal(array, np.concatenate(parts).astype(np.float32))
    lease.release()


class _ThreadRecorder:
    """A two-thread backend that notes which thread ran each batch; `gate` can hold batches."""

    max_concurrency = 2
    device = "cuda:0"  # as a GPU backend: two threads; on the loop's thread only with runs_on_any_thread
    inputs = [TensorSpec("x", "FP32", [-1, 2])]
    outputs = [TensorSpec("y", "FP32", [-1, 2])]

    def __init__(self, gate=None):
        self.threads, self.gate = [], gate

    def run(self, inputs, output_names=None):
        self.threads.append(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(timeout=10)
        return {"y": inputs["x"] * 2}


def _job(value):
    return Job({"x": np.full((1, 2), value, np.float32)}, 1, (), None)


def _submit_and_wait(instance, value):
    done = threading.Event()
    got = []
    instance.submit([_job(value)], True, None,
                    lambda results, error: (got.append((results, error)), done.set()))
    assert done.wait(10)
    return got[0]


def test_an_idle_instance_hands_batches_to_the_thread_that_went_idle_last():
    backend = _ThreadRecorder()
    instance = Instance(backend, "lifo", StagingPool())
    for value in range(20):  # one at a time: one thread takes them all, the other sleeps
        results, error = _submit_and_wait(instance, value)
        assert error is None and results[0]["y"][0, 0] == 2 * value
    assert len(set(backend.threads)) == 1
    instance.close()


def test_busy_instance_threads_run_batches_together_and_close_drains_the_backlog():
    gate = threading.Barrier(2)  # passes only when both threads are inside run at once
    backend = _ThreadRecorder(gate)
    instance = Instance(backend, "both", StagingPool())
    answers, lock = [], threading.Lock()

    def answer(results, error):
        with lock:
            answers.append((results, error))

    for value in range(6):  # two run, four wait in the backlog
        instance.submit([_job(value)], True, None, answer)
    instance.close()  # waits for the threads, which first drain the backlog
    assert len(answers) == 6 and all(error is None for _, error in answers)
    assert sorted(int(results[0]["y"][0, 0]) for results, _ in answers) == [0, 2, 4, 6, 8, 10]
    assert len(set(backend.threads)) == 2


@pytest.mark.parametrize("any_thread", [True, False])
def test_a_lone_clients_device_batches_run_on_the_loop_only_where_the_backend_allows(any_thread):
    backend = _ThreadRecorder()
    backend.runs_on_any_thread = any_thread
    scheduler = Scheduler("dev", [Instance(backend, "dev-0", StagingPool())], BatchingConfig(max_batch_size=8))

    async def lone_then_crowd():
        loop_thread = threading.current_thread().name
        for value in range(30):  # one client, one request at a time
            result = await scheduler.submit({"x": np.full((1, 2), value, np.float32)})
            assert result["y"][0, 0] == 2 * value
        lone = list(backend.threads)
        backend.threads.clear()
        results = await asyncio.gather(*(scheduler.submit({"x": np.full((1, 2), v, np.float32)}) for v in range(64)))
        assert [r["y"][0, 0] for r in results] == [2 * v for v in range(64)]
        await scheduler.stop()
        return loop_thread, lone, list(backend.threads)

    loop_thread, lone, crowd = asyncio.run(lone_then_crowd())
    on_loop = sum(name == loop_thread for name in lone)
    if any_thread:
        assert on_loop >= 25, lone  # the first batches run on the instance thread to learn its time per row
    else:
        assert on_loop == 0
    assert loop_thread not in crowd[1:]  # a crowd's batches go to the instance threads
