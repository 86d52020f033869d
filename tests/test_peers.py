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
