"""A decoupled model's sender runs at most a window of responses ahead of the request's reader; a
cancelled or stalled reader never holds the model, and the server loop's own thread never waits."""

from __future__ import annotations

import asyncio
import threading
import time

from gpuserve import response_stream
from gpuserve.response_stream import ResponseStream


def _sender(stream: ResponseStream, count: int, sent: list) -> threading.Thread:
    def run():
        for i in range(count):
            stream.put(i, i == count - 1)
            sent.append(i)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def _until(condition, within: float = 30.0) -> None:
    """A sender thread may start late on a loaded machine: wait for what it must have done, not a fixed time."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the sender never got that far"
        await asyncio.sleep(0.01)


def test_a_sender_waits_for_the_reader_beyond_its_window():
    async def main():
        stream = ResponseStream(asyncio.get_running_loop(), window=2)
        sent: list = []
        thread = _sender(stream, 6, sent)
        await _until(lambda: len(sent) >= 2)
        await asyncio.sleep(0.2)  # room for a third send, were it not held
        assert sent == [0, 1]  # the third send waits for the reader
        got = []
        while True:
            item, final = await stream.get()
            got.append(item)
            if final:
                break
        thread.join(30)
        assert got == [0, 1, 2, 3, 4, 5] and sent == got
    asyncio.run(main())


def test_cancelling_the_stream_frees_a_waiting_sender():
    async def main():
        stream = ResponseStream(asyncio.get_running_loop(), window=1)
        sent: list = []
        thread = _sender(stream, 5, sent)
        await _until(lambda: len(sent) >= 1)
        await asyncio.sleep(0.2)  # room for a second send, were it not held
        assert sent == [0]
        stream.cancelled = True
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 30)
        assert sent == [0, 1, 2, 3, 4] and stream.is_cancelled()
    asyncio.run(main())


def test_a_stalled_reader_stops_pacing(monkeypatch):
    """One wait of STALL_S, then none: pacing every send would take 49 x 0.5 s, past the join's 20 s; the
    10 s bound leaves a loaded machine 9.5 s beyond the one wait."""
    monkeypatch.setattr(response_stream, "STALL_S", 0.5)

    async def main():
        stream = ResponseStream(asyncio.get_running_loop(), window=1)
        sent: list = []
        thread = _sender(stream, 50, sent)
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 20)
        assert len(sent) == 50 and time.monotonic() - started < 10  # one wait of STALL_S, then no more
        items = [await stream.get() for _ in range(50)]
        assert [item for item, _ in items] == list(range(50)) and items[-1][1]
    asyncio.run(main())


def test_the_loop_thread_never_waits():
    async def main():
        stream = ResponseStream(asyncio.get_running_loop(), window=1)
        for i in range(10):  # a model answering from the server loop itself
            stream.put(i, i == 9)
        await asyncio.sleep(0)
        assert [(await stream.get())[0] for _ in range(10)] == list(range(10))
    asyncio.run(main())


def test_window_zero_never_paces():
    async def main():
        stream = ResponseStream(asyncio.get_running_loop(), window=0)
        sent: list = []
        _sender(stream, 20, sent).join(2)
        assert len(sent) == 20
    asyncio.run(main())


def test_the_window_is_the_servers_setting():
    """`decoupled_send_window` (GPUSERVE_DECOUPLED_SEND_WINDOW) reaches every stream the server makes."""
    import pytest

    from conftest import running_server
    from gpuserve.settings import ServerSettings

    with pytest.raises(ValueError):
        ServerSettings(decoupled_send_window=-1)
    try:
        with running_server(decoupled_send_window=3):
            async def made():
                return ResponseStream(asyncio.get_running_loop())._room._value
            assert response_stream.SEND_WINDOW == 3 and asyncio.run(made()) == 3
    finally:
        response_stream.configure(0)


async def _read_together(*streams) -> list:
    """Each stream read to its final response by its own reader (started in the order given), as a gRPC
    stream's pumps read them; the items in the order the readers handed them over."""
    got = []

    async def read(stream):
        while True:
            item, final = await stream.get()
            got.append(item)
            if final:
                stream.close()
                return
    await asyncio.wait_for(asyncio.gather(*(read(stream) for stream in streams)), 30)
    return got


def _sharing_one_order(loop, count: int = 2):
    """Response streams of `count` requests on one gRPC stream (as ModelStreamInfer makes them)."""
    order, streams = response_stream.SendOrder(), []
    for _ in range(count):
        response_stream.SEND_ORDER.set([order])
        streams.append(ResponseStream(loop, window=0))
    response_stream.SEND_ORDER.set(None)
    return streams


def test_responses_of_requests_on_one_grpc_stream_are_read_in_the_order_they_were_sent():
    """Request 0 sends, then request 1 sends its last, then request 0 its last, all before either reader
    starts; request 0's reader starts first. Without the stream's send order it read both of its own before
    request 1's (a CI run of the qa decoupled test saw 0, 0, 1)."""
    async def main():
        loop = asyncio.get_running_loop()
        streams = _sharing_one_order(loop)
        streams[0].put("0a", False)
        streams[1].put("1", True)
        streams[0].put("0b", True)
        await asyncio.sleep(0.05)  # all three have arrived
        assert await _read_together(*streams) == ["0a", "1", "0b"]
    asyncio.run(main())


def test_a_request_whose_responses_are_never_read_holds_the_others_once_and_briefly(monkeypatch):
    """One wait of ORDER_WAIT_S (2 s), not one per response (6 s): the 5 s bound tells them apart with 3 s to
    spare for a loaded machine (0.2 s and 1.0 s before could not tell one wait from three)."""
    monkeypatch.setattr(response_stream, "ORDER_WAIT_S", 2.0)

    async def main():
        loop = asyncio.get_running_loop()
        streams = _sharing_one_order(loop)
        streams[0].put("never read", False)
        for i in range(3):
            streams[1].put(i, i == 2)
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        got = [(await streams[1].get())[0] for _ in range(3)]
        assert got == [0, 1, 2] and 1.5 <= time.perf_counter() - started < 5.0
        # a stream that joined no order (HTTP, a BLS call) is never held
        plain = ResponseStream(loop, window=0)
        plain.put("x", True)
        assert await asyncio.wait_for(plain.get(), 1) == ("x", True)
    asyncio.run(main())


def test_a_stream_closed_by_its_reader_releases_what_it_never_read(monkeypatch):
    monkeypatch.setattr(response_stream, "ORDER_WAIT_S", 30.0)  # far beyond the bound below, however loaded

    async def main():
        loop = asyncio.get_running_loop()
        streams = _sharing_one_order(loop)
        streams[0].put("left behind", False)
        streams[1].put("answer", True)
        await asyncio.sleep(0.05)
        streams[0].close()  # its client went away
        started = time.perf_counter()
        assert await streams[1].get() == ("answer", True)
        assert time.perf_counter() - started < 10  # not ORDER_WAIT_S
    asyncio.run(main())


def test_a_request_alone_on_its_stream_is_not_stamped_and_one_that_joins_later_keeps_the_order():
    """A lone request's responses need no order (nothing else is sent on the stream); once a second request
    joins, later responses are stamped, and what the first sent before it joined still comes first."""
    async def main():
        loop = asyncio.get_running_loop()
        order = response_stream.SendOrder()
        response_stream.SEND_ORDER.set([order])
        first = ResponseStream(loop, window=0)
        first.put("0a", False)
        await asyncio.sleep(0.05)
        assert order._next == 0  # alone: no stamp taken
        response_stream.SEND_ORDER.set([order])
        second = ResponseStream(loop, window=0)
        response_stream.SEND_ORDER.set(None)
        second.put("1", True)
        first.put("0b", True)
        await asyncio.sleep(0.05)
        assert await _read_together(first, second) == ["0a", "1", "0b"] and order.members == 0
    asyncio.run(main())
