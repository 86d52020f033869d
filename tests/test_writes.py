"""server/writes.py: pieces of a large answer reach the peer whole and in order, whatever the socket takes at
once: all of it, part of a piece, nothing (a peer that does not read), more pieces than one sendmsg may carry;
and a transport with bytes already queued keeps them first."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from gpuserve.server import writes


async def _pair():
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)  # the socket takes only part at once
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    theirs.setblocking(False)
    return transport, theirs


async def _read_all(sock, size: int) -> bytes:
    loop, got = asyncio.get_running_loop(), bytearray()
    while len(got) < size:
        got += await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
    return bytes(got)


def _pieces(count: int, size: int):
    rng = np.random.default_rng(count)
    arrays = [rng.integers(0, 2**31, size=size, dtype=np.int32) for _ in range(count)]
    return [memoryview(a) for a in arrays], b"".join(a.tobytes() for a in arrays)  # views with format "i"


@pytest.mark.parametrize("count, size", [(1, 16), (3, 1 << 18), (2500, 700)])  # small, partial, > IOV_MAX
def test_pieces_arrive_whole_and_in_order(count, size):
    async def main():
        transport, peer = await _pair()
        views, expected = _pieces(count, size)
        writes.write_views(transport, [b"head:", *views])
        got = await _read_all(peer, 5 + len(expected))
        transport.close()
        peer.close()
        return got, expected
    got, expected = asyncio.run(main())
    assert got == b"head:" + expected


def test_bytes_queued_before_go_first():
    async def main():
        transport, peer = await _pair()
        queued = b"q" * (4 << 20)  # more than the socket takes: the transport keeps the rest queued
        transport.write(queued)
        assert transport.get_write_buffer_size() > 0
        views, expected = _pieces(4, 1 << 16)
        writes.write_views(transport, views)
        got = await _read_all(peer, len(queued) + len(expected))
        transport.close()
        peer.close()
        return got, queued + expected
    got, expected = asyncio.run(main())
    assert got == expected


def test_a_transport_without_a_socket_of_its_own_gets_writelines():
    class Plain:
        def __init__(self):
            self.got = None

        def writelines(self, parts):
            self.got = b"".join(bytes(p) for p in parts)
    plain = Plain()
    writes.write_views(plain, [b"a", memoryview(b"bc")])
    assert plain.got == b"abc"
