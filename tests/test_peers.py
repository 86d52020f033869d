"""The workers' own channel (server/peers.py), three workers in one event loop: answers gathered, changes told,
a failure named with its status, bytes carried, a worker that is not there left out."""

from __future__ import annotations

import pytest

from gpuserve.errors import InvalidInput
from gpuserve.server.peers import PeerError, Peers


async def _workers(tmp_path, count, handlers_of):
    workers = [Peers(str(tmp_path), i, count) for i in range(count)]
    for worker in workers:
        await worker.start(handlers_of(worker.index))
    return workers


async def test_gather_and_tell(tmp_path):
    seen = []

    def handlers_of(index):
        async def count(args):
            return {"worker": index, "files": args.get("files")}

        async def change(args):
            if index == 2 and args.get("fail"):
                raise InvalidInput("no such model 'x'")
            seen.append((index, args["value"]))

        return {"count": count, "change": change}

    workers = await _workers(tmp_path, 3, handlers_of)
    try:
        answers = await workers[0].gather("count", {"files": {"model.onnx": b"\x00\xffbytes"}})
        assert sorted(a["worker"] for a in answers) == [1, 2]
        assert all(a["files"] == {"model.onnx": b"\x00\xffbytes"} for a in answers)

        await workers[1].tell("change", {"value": 5})
        assert sorted(seen) == [(0, 5), (2, 5)]
        with pytest.raises(PeerError, match="worker 2: no such model 'x'") as raised:
            await workers[0].tell("change", {"value": 6, "fail": True})
        assert (raised.value.http, raised.value.grpc) == (400, "INVALID_ARGUMENT")
        assert (1, 6) in seen  # the others did it all the same

        with pytest.raises(PeerError, match="unknown request 'nothing'"):
            await workers[0].tell("nothing", {})
        assert await workers[0].gather("nothing", {}) == []  # (logged)

        await workers[2].close()  # gone: left out of answers, and not waited for
        assert [a["worker"] for a in await workers[0].gather("count", {})] == [1]
        await workers[0].tell("change", {"value": 7})
        assert (1, 7) in seen
    finally:
        for worker in workers:
            await worker.close()


async def test_cuda_regions_are_opened_by_every_worker(tmp_path):
    """perf_analyzer registers its CUDA regions once and infers from several connections: with workers, each
    worker opens the client's handle (a process may open another's once). A stand-in CUDA runtime over host
    memory (tests/test_cuda_shared_memory.py) lets two data planes in this process play the workers."""
    from test_cuda_shared_memory import HostMemoryRuntime

    from gpuserve.backends.cuda_ipc import CudaIpc
    from gpuserve.dataplane import DataPlane
    from gpuserve.errors import RegionExists
    from gpuserve.model_repository import ModelRepository
    from gpuserve.server.peers import handlers

    class Counted(HostMemoryRuntime):  # one buffer opened by two "processes": count mappings, not addresses
        opens = closes = 0

        def open(self, handle, device_id):
            self.opens += 1
            return super().open(handle, device_id)

        def close(self, pointer):
            self.closes += 1

    fake = Counted()
    planes = [DataPlane(ModelRepository()) for _ in range(2)]
    workers = [Peers(str(tmp_path), i, 2) for i in range(2)]
    for plane, worker in zip(planes, workers):
        plane.shared_memory.cuda = CudaIpc(fake)
        await worker.start(handlers(plane, None))
        plane.peers = worker

    def names():
        return [sorted(r["name"] for r in plane.shared_memory.cuda_status()) for plane in planes]

    try:
        handle = fake.allocate(64)
        await planes[0].cuda_register("r", handle, 0, 64)
        assert names() == [["r"], ["r"]] and fake.opens == 2
        await planes[1].cuda_unregister("r")
        assert names() == [[], []] and fake.closes == 2

        planes[1].shared_memory.cuda_register("s", handle, 0, 64)  # worker 1 alone has it (e.g. made so before)
        with pytest.raises(PeerError, match="worker 1: shared memory region 's' already in manager"):
            await planes[0].cuda_register("s", handle, 0, 64)
        assert names() == [[], []]  # everywhere or nowhere: worker 0 let go of it again, and so did worker 1
        with pytest.raises(RegionExists):  # refused here first: nothing is told
            planes[0].shared_memory.cuda_register("t", handle, 0, 64)
            await planes[0].cuda_register("t", handle, 0, 64)
        await planes[0].cuda_unregister()
        assert names() == [[], []]
    finally:
        for worker in workers:
            await worker.close()


def test_ready_once_every_worker_started(tmp_path):
    workers = [Peers(str(tmp_path), i, 2) for i in range(2)]
    workers[0].mark_started()
    assert not workers[0].all_started() and not workers[1].all_started()
    workers[1].mark_started()
    assert workers[0].all_started() and workers[1].all_started()
