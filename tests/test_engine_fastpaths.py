"""The engine's per-request fast paths give what the general paths give: one-pass row count and
batching key, equal-rows splitting by reshape, batch-level statistics, and instance threads that stop."""

import asyncio
import threading

import numpy as np
import pytest

from gpuserve.engine.batcher import BatchingConfig, Scheduler
from gpuserve.engine.instance import Instance
from gpuserve.engine.job import batch_key, describe, row_count
from gpuserve.engine.split import split_rows
from gpuserve.engine.stats import ModelStats
from gpuserve.errors import InvalidInput


def test_describe_counts_rows_and_keys_like_the_general_path():
    a = {"x": np.zeros((3, 4), np.float32), "y": np.zeros((3, 2, 2), np.int64)}
    rows, key = describe(a, True, True)
    assert rows == row_count(a, True) == 3
    same = {"x": np.ones((5, 4), np.float32), "y": np.ones((5, 2, 2), np.int64)}
    assert describe(same, True, True)[1] == key  # rows may differ within a batch
    for other in ({"x": np.zeros((3, 4), np.float64), "y": a["y"]},  # dtype
                  {"x": np.zeros((3, 4), ">f4"), "y": a["y"]},  # byte order
                  {"x": np.zeros((3, 5), np.float32), "y": a["y"]}):  # non-batch shape
        assert describe(other, True, True)[1] != key
    # unbatched models and ragged inputs keep the general path's key
    assert describe(a, True, False) == (3, batch_key(a, False))
    assert describe(a, False, False) == (1, batch_key(a, False))
    assert describe(a, True, True, ("y",)) == (3, batch_key(a, True, ("y",)))


@pytest.mark.parametrize("arrays", [{"x": np.zeros((), np.float32)},
                                    {"x": np.zeros((2, 1)), "y": np.zeros((3, 1))},
                                    {"x": np.zeros((0, 4))}])
def test_describe_rejects_what_row_count_rejects(arrays):
    with pytest.raises(InvalidInput):
        row_count(arrays, True)
    with pytest.raises(InvalidInput):
        describe(arrays, True, True)


@pytest.mark.parametrize("rows", [[1] * 7, [3] * 4, [2, 1, 3], [1]])
def test_split_gives_each_request_its_rows(rows):
    total = sum(rows)
    y = np.arange(total * 6, dtype=np.float32).reshape(total, 6)
    z = np.arange(total * 10).reshape(10, total).T  # not contiguous
    per_job = split_rows({"y": y, "z": z}, rows, "m")
    start = 0
    for count, result in zip(rows, per_job):
        assert list(result) == ["y", "z"]
        np.testing.assert_array_equal(result["y"], y[start:start + count])
        np.testing.assert_array_equal(result["z"], z[start:start + count])
        assert result["y"].shape == (count, 6) and result["z"].shape == (count, 10)
        start += count
    assert len(per_job) == len(rows)


def test_batch_level_request_statistics_match_one_at_a_time():
    one, batch = ModelStats("m"), ModelStats("m")
    ok, failed = [50_000, 400_000, 3_000_000_000], [7_000_000]
    for ns in ok:
        one.record_request(True, ns)
    for ns in failed:
        one.record_request(False, ns)
    batch.record_requests(ok, failed)
    assert one.as_dict() == batch.as_dict()
    assert one.request_seconds.cumulative() == batch.request_seconds.cumulative()
    assert one.request_seconds.total == pytest.approx(batch.request_seconds.total)


def test_unbatched_request_statistics_match_the_three_calls():
    three, one = ModelStats("m"), ModelStats("m")
    for ns in (50_000, 3_000_000, 2_000_000_000):
        three.record_queue([0])
        three.record_request(True, ns)
        three.record_batch(1, 1, 0, ns, 0)
        one.record_unbatched(ns)
    three.last_inference_ms = one.last_inference_ms
    assert three.as_dict() == one.as_dict()
    assert three.request_seconds.cumulative() == one.request_seconds.cumulative()


def test_a_lone_requests_statistics_match_the_three_calls():
    three, one = ModelStats("m"), ModelStats("m")
    for queue_ns, rows, spent, total in ((1_000, 1, (10, 20_000, 30), 25_000), (0, 4, (5, 3_000_000, 7), 3_100_000)):
        three.record_queue([queue_ns])
        three.record_batch(rows, 1, *spent)
        three.record_requests([total])
        one.record_alone(queue_ns, rows, *spent, total)
    three.last_inference_ms = one.last_inference_ms
    assert three.as_dict() == one.as_dict()
    assert three.request_seconds.cumulative() == one.request_seconds.cumulative()


async def test_lone_requests_count_as_the_queued_ones_do():
    """A lone client's requests run in its task (batcher.py's _run_now) and are recorded in one call; the same
    requests through the queue and the instance thread (inline batches off) count the same, failures too."""
    class Picky(Doubler):
        def run(self, arrays, outputs=None):
            if (arrays["x"] < 0).any():
                raise ValueError("negative")
            return super().run(arrays, outputs)

    found = []
    for inline in (0.0001, 0.0):
        scheduler = Scheduler("d", [Instance(Picky(), "d-0")], BatchingConfig(max_batch_size=8, inline_below_s=inline))
        for value in (1.0, -1.0, 2.0, 3.0):  # one after another: each alone
            if value < 0:
                with pytest.raises(ValueError):
                    await scheduler.submit({"x": np.full((2, 3), value, np.float32)})
            else:
                result = await scheduler.submit({"x": np.full((2, 3), value, np.float32)})
                np.testing.assert_array_equal(result["y"], np.full((2, 3), 2 * value, np.float32))
        await scheduler.stop()
        stats = scheduler.stats.as_dict()
        found.append((stats, scheduler.stats.request_seconds.count))
    (inline, inline_count), (queued, queued_count) = found

    def counts(stats):  # every count (durations differ run to run)
        return {key: value["count"] for key, value in stats["inference_stats"].items()}, \
            stats["inference_count"], stats["execution_count"], \
            {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}
    assert counts(inline) == counts(queued)
    assert counts(inline)[0]["success"] == 3 and counts(inline)[0]["fail"] == 1
    assert counts(inline)[0]["queue"] == 4 and inline["execution_count"] == 3 and inline_count == queued_count == 4


class Doubler:
    device = "cpu"

    def run(self, arrays, outputs=None):
        return {"y": arrays["x"] * 2}


async def test_instance_threads_answer_and_stop():
    instance = Instance(Doubler(), "d-0", slots=2)
    scheduler = Scheduler("d", [instance], BatchingConfig(max_batch_size=8, inline_below_s=0.0))
    xs = [np.full((1, 3), i, np.float32) for i in range(20)]
    results = await asyncio.gather(*(scheduler.submit({"x": x}) for x in xs))
    for x, result in zip(xs, results):
        np.testing.assert_array_equal(result["y"], x * 2)
    workers = [t for t in threading.enumerate() if t.name.startswith("gpuserve-d-0")]
    assert workers
    await scheduler.stop()
    assert not any(t.is_alive() for t in workers)
