"""HTTP/2 over cleartext TCP with prior knowledge (h2c, what gRPC clients speak), on asyncio.

Why our own: grpc.aio spends ~280-300 us of server CPU on every call on the machines measured, a minimal
HTTP/2 server on asyncio ~35-40 (benchmarks/grpc_transport_probe.py, RESULTS.md session 6). This module
is the protocol only (frames, SETTINGS, PING, flow control both ways, HPACK through the `hpack`
package); server/grpc/native.py puts gRPC calls on it. A stream's owner gets its request headers, its
DATA as it arrives and a reset; it answers with `send_headers`, `send_data` and `send_trailers`,
which wait for the peer's flow-control windows without blocking the loop (the bytes queue per stream).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Protocol, Tuple

import numpy as np

from gpuserve.server.writes import write_views

logger = logging.getLogger("gpuserve.grpc")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
HEADER_TABLE_SIZE, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x1, 0x4, 0x5
# Our header blocks never add to the peer's dynamic table (literals without indexing, static indices), so
# when a peer shrinks that table (SETTINGS_HEADER_TABLE_SIZE below HPACK's 4096) the one thing owed is
# the size update RFC 7541 4.2 asks at the start of the next block: to 0, valid under any later setting.
TABLE_SIZE_TO_ZERO = b"\x20"
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, CANCEL, COMPRESSION_ERROR = 0, 1, 3, 6, 8, 9
ENHANCE_YOUR_CALM = 0xB
MAX_HEADER_LIST_SIZE = 0x6  # the SETTINGS identifier
# A request's header block, encoded, at most: a client that sends more (a CONTINUATION flood) loses the
# connection instead of the server buffering it without end. Advertised as SETTINGS_MAX_HEADER_LIST_SIZE.
HEADER_BLOCK_LIMIT = 64 * 1024
MAX_WINDOW = 2**31 - 1
OUR_MAX_FRAME = 1 << 20  # what we accept; we send at most what the peer accepts (16 KiB unless it says more)
# Bytes written and not yet taken by the peer's socket, at most, before we stop reading it (and so stop making
# answers for it: responses, PING and SETTINGS acks) until it reads again.
WRITE_BUFFER_HIGH = 4 << 20
DECODED_BLOCKS, DECODED_BLOCK_BYTES = 16, 2048  # header blocks kept decoded per connection, each at most so large
READ_BUFFER = 256 * 1024  # the socket is read into this much (asyncio's own read size)
READ_CHUNK = 64 * 1024  # a read gets at least this much room
DIRECT_FRAME_BYTES = 16 * 1024  # a DATA frame this large is read into its stream's message, where it can be


_FRAME_HEADER = struct.Struct(">HBBBI").unpack_from  # a frame's length (16 + 8 bits), type, flags, stream id
_HEADERS_FLAGS = bytes((HEADERS, END_HEADERS))  # a frame's type and flags, as send_whole writes them
_DATA_FLAGS = bytes((DATA, 0))
_TRAILERS_FLAGS = bytes((HEADERS, END_HEADERS | END_STREAM))


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def _hpack_int(value: int, prefix_bits: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """One header as an HPACK literal without indexing (new name, no Huffman): no state on either side."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


class StreamOwner(Protocol):
    # `payload` is a view of the connection's read buffer, valid during the call only: copy what is kept.
    def data(self, payload: memoryview, end_stream: bool) -> None: ...

    # Optional, for large DATA frames: `receive_into(length, head)` takes the frame's first bytes and gives
    # a view to read its other `length - len(head)` bytes into (or None: the frame comes through `data`);
    # `data_filled(end_stream)` follows once they are there.

    def reset(self) -> None: ...


class _Stream:
    __slots__ = ("id", "owner", "send_window", "received", "pending", "trailers", "closed", "parts")

    def __init__(self, stream_id: int, send_window: int):
        self.id = stream_id
        self.owner: Optional[StreamOwner] = None
        self.send_window = send_window
        self.received = 0  # DATA bytes since our last WINDOW_UPDATE for this stream
        self.pending = bytearray()  # DATA payload waiting for window
        self.parts: Optional[Deque] = None  # a large payload's pieces (views) waiting, after `pending`
        self.trailers: Optional[bytes] = None  # a header block to send once `pending` is out
        self.closed = False


# (connection, stream id, request headers as (name, value) str pairs, end_stream) -> the stream's owner
Opener = Callable[["Http2Connection", int, List[Tuple[str, str]], bool], StreamOwner]


class Http2Connection(asyncio.BufferedProtocol):
    def __init__(self, opener: Opener, connections: set):
        from hpack import Decoder

        self.opener = opener
        self.connections = connections
        self.decoder = Decoder()
        self._decoded: Dict[bytes, list] = {}  # see _decode
        self.buffer = _read_buffer(READ_BUFFER)
        self._start = self._end = 0  # what of `buffer` is read from the socket and not yet taken as frames
        self._direct: Optional[list] = None  # [stream id, flags, length, target view, bytes in it] of a frame
        self.preface = False
        self.streams: Dict[int, _Stream] = {}
        self.peer_window = 65535  # connection-level send window
        self.peer_initial = 65535
        self.peer_max_frame = 16384
        self.peer_table = 4096  # the size of the peer's HPACK decoding table as our blocks have left it
        self._table_update = b""  # a dynamic table size update owed at the start of our next header block
        self.received = 0  # bytes of DATA since our last connection WINDOW_UPDATE
        self.header_stream = 0  # a HEADERS block waiting for CONTINUATION
        self.header_block = bytearray()
        self.header_end_stream = False
        self.last_stream = 0
        self.transport: Optional[asyncio.Transport] = None
        self.closing = False
        # Frames leave in one write per loop turn: a batch's answers (and each answer's HEADERS, DATA and
        # trailers) share a send() call; profiled, separate writes were ~17 % of the server's time.
        self._out: List[bytes] = []
        self._views = False  # `_out` holds views of a large payload: written as they are, not joined
        self._write_scheduled = False
        self._reading = False  # in _read_frames, which writes what its frames' answers queued as it returns
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    # connection -------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.connections.add(self)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        settings = INITIAL_WINDOW_SIZE.to_bytes(2, "big") + MAX_WINDOW.to_bytes(4, "big") + \
            MAX_FRAME_SIZE.to_bytes(2, "big") + OUR_MAX_FRAME.to_bytes(4, "big") + \
            MAX_HEADER_LIST_SIZE.to_bytes(2, "big") + HEADER_BLOCK_LIMIT.to_bytes(4, "big")
        self._send(frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - 65535).to_bytes(4, "big")))

    def connection_lost(self, exc) -> None:
        self.connections.discard(self)
        self._out.clear()
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if stream.owner is not None:
                stream.owner.reset()

    def pause_writing(self) -> None:
        """The peer does not read what we send (a client that opened streams and never reads, a PING flood
        whose acks it leaves): stop reading it, or every request it sends becomes an answer buffered here
        without end."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def goaway(self) -> None:
        """No new streams; the ones open finish."""
        if self.transport is not None and not self.closing:
            self.closing = True
            self._send(frame(GOAWAY, 0, 0, self.last_stream.to_bytes(4, "big") + NO_ERROR.to_bytes(4, "big")))
            self._maybe_close()

    def _fail(self, code: int, why: str) -> None:
        logger.warning("HTTP/2 connection error: %s", why)
        if self.transport is not None:
            self._send(frame(GOAWAY, 0, 0, self.last_stream.to_bytes(4, "big") + code.to_bytes(4, "big")))
            self._write_out()
            self.transport.close()

    # reading ----------------------------------------------------------------------------------
    # A BufferedProtocol: the socket is read into `buffer` (no bytes object per read, no joins), and the rest
    # of a large DATA frame straight into its stream's message (`receive_into`): a 400 KB request message was
    # copied five times on its way in before (socket bytes, the joined buffer, a slice, its bytes, the call's
    # join) and is copied once now.
    def get_buffer(self, sizehint: int) -> memoryview:
        direct = self._direct
        if direct is not None:
            return direct[3][direct[4]:]
        buffer = self.buffer
        if len(buffer) - self._end < READ_CHUNK:
            self._make_room()
        return memoryview(self.buffer)[self._end:]

    def _make_room(self) -> None:
        """Moves what is unread to the front (a partial frame, usually small), growing the buffer only for a
        frame larger than it that goes nowhere directly; a grown buffer shrinks back once it is read."""
        buffer, start, end = self.buffer, self._start, self._end
        unread = end - start
        size = READ_BUFFER if unread < READ_BUFFER - READ_CHUNK else unread + READ_BUFFER
        if size != len(buffer):
            fresh = _read_buffer(size)
            fresh[:unread] = buffer[start:end]
            self.buffer = fresh
        elif start:
            buffer[:unread] = bytes(buffer[start:end])  # a partial frame: small, and the two may overlap
        self._start, self._end = 0, unread

    def buffer_updated(self, nbytes: int) -> None:
        direct = self._direct
        if direct is not None:
            direct[4] += nbytes
            if direct[4] < len(direct[3]):
                return
            self._direct = None
            stream_id, flags, length = direct[0], direct[1], direct[2]
            try:
                self._data_received_into(flags, stream_id, length)
            except _ConnectionError as exc:
                return self._fail(exc.code, str(exc))
        else:
            self._end += nbytes
        self._read_frames()

    def _read_frames(self) -> None:
        buffer, pos, end = self.buffer, self._start, self._end
        if not self.preface:
            if end - pos < 24:
                return
            if bytes(buffer[pos:pos + 24]) != PREFACE:
                return self._fail(PROTOCOL_ERROR, "not an HTTP/2 prior-knowledge connection")
            pos += 24
            self._start = pos
            self.preface = True
        view = memoryview(buffer)
        self._reading = True
        try:
            while end - pos >= 9:
                high, low, kind, flags, stream_id = _FRAME_HEADER(view, pos)
                length = high << 8 | low
                if length > OUR_MAX_FRAME:
                    return self._fail(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                if end - pos < 9 + length:
                    if kind == DATA and length >= DIRECT_FRAME_BYTES and not flags & PADDED:
                        self._start = pos  # on failure below, the frame is read the plain way
                        if self._receive_directly(view, pos, end, length, flags):
                            pos = end
                    break
                stream_id &= 0x7FFFFFFF
                payload = view[pos + 9:pos + 9 + length]  # a DATA frame's: a view its owner copies from
                if kind != DATA:
                    payload = bytes(payload)
                pos += 9 + length
                self._frame(kind, flags, stream_id, payload)
                if self.transport is None or self.transport.is_closing():
                    return
        except _ConnectionError as exc:
            return self._fail(exc.code, str(exc))
        finally:
            self._reading = False
            view.release()
            self._start = pos
            if pos == end:
                self._start = self._end = 0
                if len(self.buffer) > READ_BUFFER:  # a large frame went through: give the memory back
                    self.buffer = _read_buffer(READ_BUFFER)
        if self._out:  # answers made while reading (acks, cached responses) leave now, not a loop turn later
            self._write_out()

    def _receive_directly(self, view: memoryview, pos: int, end: int, length: int, flags: int) -> bool:
        """The rest of a large DATA frame goes straight into its stream's message, when the stream's owner
        has one to put it in; its first bytes (read with the header) are handed over first."""
        if self.header_stream:
            raise _ConnectionError(PROTOCOL_ERROR, "a header block was interrupted")
        stream_id = int.from_bytes(view[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        stream = self.streams.get(stream_id)
        receive_into = getattr(stream.owner, "receive_into", None) if stream is not None else None
        if receive_into is None:
            return False
        target = receive_into(length, view[pos + 9:end])
        if target is None:
            return False
        self._direct = [stream_id, flags, length, target, 0]
        return True

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.header_stream and kind != CONTINUATION:
            raise _ConnectionError(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            if flags & PADDED:
                payload = _unpad(payload)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            if flags & END_HEADERS:  # the whole block in one frame: no gathering
                if len(payload) > HEADER_BLOCK_LIMIT:
                    raise _ConnectionError(ENHANCE_YOUR_CALM, f"header block over {HEADER_BLOCK_LIMIT} bytes")
                self._header_block(stream_id, payload, bool(flags & END_STREAM))
                return
            self.header_block = bytearray(payload)
            self.header_end_stream = bool(flags & END_STREAM)
            self.header_stream = stream_id
            self._check_header_size()
        elif kind == CONTINUATION:
            if stream_id != self.header_stream:
                raise _ConnectionError(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
            self.header_block += payload
            self._check_header_size()
            if flags & END_HEADERS:
                self._headers_complete()
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
                self._send(frame(SETTINGS, ACK, 0))
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, int.from_bytes(payload[:4], "big") & 0x7FFFFFFF)
        elif kind == PING:
            if not flags & ACK:
                self._send(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            stream = self.streams.pop(stream_id, None)
            if stream is not None and stream.owner is not None:
                stream.owner.reset()
        elif kind == GOAWAY:
            self.closing = True
        # PRIORITY and unknown frame types are ignored, as the protocol asks; PUSH_PROMISE never comes from clients

    def _check_header_size(self) -> None:
        if len(self.header_block) > HEADER_BLOCK_LIMIT:
            raise _ConnectionError(ENHANCE_YOUR_CALM, f"header block over {HEADER_BLOCK_LIMIT} bytes")

    def _headers_complete(self) -> None:
        stream_id, block, end_stream = self.header_stream, bytes(self.header_block), self.header_end_stream
        self.header_stream, self.header_block = 0, bytearray()
        self._header_block(stream_id, block, end_stream)

    def _header_block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        headers = self._decoded.get(block)
        if headers is None:
            headers = self._decode(block)
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client: only the end of its stream matters
            if end_stream and stream.owner is not None:
                stream.owner.data(b"", True)
            return
        if stream_id <= self.last_stream or stream_id % 2 == 0:
            raise _ConnectionError(PROTOCOL_ERROR, f"stream {stream_id} cannot be opened now")
        self.last_stream = stream_id
        if self.closing:
            self._send(frame(RST_STREAM, 0, stream_id, (7).to_bytes(4, "big")))  # REFUSED_STREAM
            return
        stream = self.streams[stream_id] = _Stream(stream_id, self.peer_initial)
        stream.owner = self.opener(self, stream_id, headers, end_stream)  # (name, value) str pairs

    def _decode(self, block: bytes) -> list:
        """HPACK-decoded, and kept for the next time this exact block comes: a client's calls send the same
        block again and again once its headers sit in the dynamic table (tritonclient: 49 of 50 blocks alike,
        with a timeout too), and decoding one cost ~7 us a call, pure Python. Kept only while the table stays
        as it was; a block that changes the table (adds, evicts or resizes) empties what was kept, since
        indexes into the table then mean other headers. The list is shared: openers only read it."""
        table = self.decoder.header_table
        entries = table.dynamic_entries
        count, first, size = len(entries), entries[0] if entries else None, table.maxsize
        try:
            headers = self.decoder.decode(block)
        except Exception as exc:
            raise _ConnectionError(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        # each entry added is a new tuple: the newest one the same object means nothing was added
        if len(entries) != count or (entries[0] if entries else None) is not first or table.maxsize != size:
            self._decoded.clear()
        elif len(self._decoded) < DECODED_BLOCKS and len(block) <= DECODED_BLOCK_BYTES:
            self._decoded[block] = headers
        return headers

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        stream = self._count_data(stream_id, len(payload))
        if stream is not None:
            stream.owner.data(_unpad(payload) if flags & PADDED else payload, bool(flags & END_STREAM))

    def _data_received_into(self, flags: int, stream_id: int, length: int) -> None:
        """A DATA frame read into its stream's message (`_receive_directly`) is complete."""
        stream = self._count_data(stream_id, length)
        if stream is not None:
            stream.owner.data_filled(bool(flags & END_STREAM))

    def _count_data(self, stream_id: int, size: int) -> Optional[_Stream]:
        """Flow control for a DATA frame; its stream, if anyone still owns it."""
        self.received += size
        if self.received > MAX_WINDOW // 2:  # give the connection window back before it runs low
            self._send(frame(WINDOW_UPDATE, 0, 0, self.received.to_bytes(4, "big")))
            self.received = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.owner is None:
            return None  # a stream we reset or finished: its bytes still counted against the connection window
        stream.received += size
        if stream.received > MAX_WINDOW // 2:  # the stream window starts at 2^31-1 (our SETTINGS)
            self._send(frame(WINDOW_UPDATE, 0, stream_id, stream.received.to_bytes(4, "big")))
            stream.received = 0
        return stream

    def _settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            key = int.from_bytes(payload[offset:offset + 2], "big")
            value = int.from_bytes(payload[offset + 2:offset + 6], "big")
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "initial window over 2^31-1")
                delta, self.peer_initial = value - self.peer_initial, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == MAX_FRAME_SIZE:
                self.peer_max_frame = max(16384, min(value, 2**24 - 1))
            elif key == HEADER_TABLE_SIZE and value < self.peer_table:
                self.peer_table, self._table_update = 0, TABLE_SIZE_TO_ZERO
        self._flush_all()

    def _window_update(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            self.peer_window += increment
            self._flush_all()
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            self._flush(stream)

    # writing ----------------------------------------------------------------------------------
    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or self.transport is None:
            return
        self._write_block(stream_id, block, end_stream)
        if end_stream:
            self._close(stream)

    def send_data(self, stream_id: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or self.transport is None:
            return
        if stream.parts:  # behind a large payload still waiting: in order, after it
            stream.parts.append(memoryview(payload))
        else:
            stream.pending += payload
        self._flush(stream)

    def send_whole(self, stream_id: int, headers: bytes, payload: bytes, trailers: bytes) -> bool:
        """`send_headers`, `send_data` and `send_trailers` at once, when they can leave now as three frames
        (the common small answer: nothing queued on the stream, the windows open, each part one frame) and
        the stream closes; the same bytes, built in one go. False, with nothing done, otherwise."""
        stream = self.streams.get(stream_id)
        size = len(payload)
        limit = self.peer_max_frame
        if stream is None or self.transport is None or self._table_update or stream.pending or stream.parts \
                or stream.trailers is not None or size > limit or size > stream.send_window \
                or size > self.peer_window or len(headers) > limit or len(trailers) > limit \
                or self.transport.is_closing():
            return False
        stream.send_window -= size
        self.peer_window -= size
        sid = stream_id.to_bytes(4, "big")
        self._out.append(b"".join((len(headers).to_bytes(3, "big"), _HEADERS_FLAGS, sid, headers,
                                   size.to_bytes(3, "big"), _DATA_FLAGS, sid, payload,
                                   len(trailers).to_bytes(3, "big"), _TRAILERS_FLAGS, sid, trailers)))
        self._close(stream)  # queued first: on a connection going away, closing the last stream writes and closes
        if self.streams or self._reading:  # other answers may come this loop turn: they leave together
            if not self._write_scheduled:
                self._write_scheduled = True
                self.loop.call_soon(self._write_out)
        else:  # the connection's one call (a lone client's): out now, not a loop turn later
            self._write_out()
        return True

    def send_parts(self, stream_id: int, parts: List) -> None:
        """send_data for a large payload in pieces (views of output arrays): queued as they are, and sent
        as the windows allow without being copied into one buffer."""
        stream = self.streams.get(stream_id)
        if stream is None or self.transport is None:
            return
        if stream.parts is None:
            stream.parts = deque()
        stream.parts.extend(memoryview(part).cast("B") for part in parts if len(part))
        self._flush(stream)

    def send_trailers(self, stream_id: int, block: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or self.transport is None:
            return
        stream.trailers = block
        self._flush(stream)

    def reset_stream(self, stream_id: int, code: int = CANCEL) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None and self.transport is not None:
            self._send(frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big")))
            self._maybe_close()

    def pending_bytes(self, stream_id: int) -> int:
        stream = self.streams.get(stream_id)
        if stream is None:
            return 0
        return len(stream.pending) + (sum(len(part) for part in stream.parts) if stream.parts else 0)

    def _write_block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        if self._table_update:
            block, self._table_update = self._table_update + block, b""
        limit = self.peer_max_frame
        first, rest = block[:limit], block[limit:]
        flags = (END_STREAM if end_stream else 0) | (0 if rest else END_HEADERS)
        out = [frame(HEADERS, flags, stream_id, first)]
        while rest:
            piece, rest = rest[:limit], rest[limit:]
            out.append(frame(CONTINUATION, 0 if rest else END_HEADERS, stream_id, piece))
        self._send(b"".join(out))

    def _flush(self, stream: _Stream) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        pending = stream.pending
        if pending:
            room = min(stream.send_window, self.peer_window)
            if room > 0:
                size = min(room, len(pending))
                chunk = bytes(pending[:size])
                del pending[:size]
                stream.send_window -= size
                self.peer_window -= size
                limit = self.peer_max_frame
                self._send(b"".join(frame(DATA, 0, stream.id, chunk[i:i + limit]) for i in range(0, size, limit)))
        if stream.parts and not pending:
            self._flush_parts(stream)
        if not pending and not stream.parts and stream.trailers is not None:
            block, stream.trailers = stream.trailers, None
            self._write_block(stream.id, block, True)
            self._close(stream)

    def _flush_parts(self, stream: _Stream) -> None:
        """As much of a large payload's pieces as the windows allow, as DATA frames whose payloads are
        views; written with writelines (no join)."""
        parts, limit, stream_id = stream.parts, self.peer_max_frame, stream.id.to_bytes(4, "big")
        room = min(stream.send_window, self.peer_window)
        while parts and room > 0:
            part = parts[0]
            size = min(room, limit, len(part))
            if size == len(part):
                parts.popleft()
            else:
                parts[0] = part[size:]
            stream.send_window -= size
            self.peer_window -= size
            room -= size
            self._out.append(size.to_bytes(3, "big") + bytes((DATA, 0)) + stream_id)
            self._out.append(part[:size])
            self._views = True
        if not self._write_scheduled:
            self._write_scheduled = True
            self.loop.call_soon(self._write_out)

    def _flush_all(self) -> None:
        for stream in list(self.streams.values()):
            if stream.pending or stream.parts or stream.trailers is not None:
                self._flush(stream)

    def _close(self, stream: _Stream) -> None:
        stream.closed = True
        stream.owner = None
        self.streams.pop(stream.id, None)
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.closing and not self.streams and self.transport is not None:
            self._write_out()
            self.transport.close()

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        if not self._write_scheduled:
            self._write_scheduled = True
            self.loop.call_soon(self._write_out)

    def _write_out(self) -> None:
        self._write_scheduled = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            if self._views:
                write_views(self.transport, self._out)
                self._out, self._views = [], False
                return
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._out.clear()
            self.transport.write(data)
        else:
            self._out.clear()
        self._views = False


class _ConnectionError(Exception):
    def __init__(self, code: int, why: str):
        super().__init__(why)
        self.code = code


def _read_buffer(size: int) -> memoryview:
    """Not zeroed: an idle connection holds only the pages its reads have touched, not READ_BUFFER."""
    return memoryview(np.empty(size, np.uint8))


def _unpad(payload: bytes) -> bytes:
    if not payload or payload[0] >= len(payload):
        raise _ConnectionError(PROTOCOL_ERROR, "bad padding")
    return payload[1:len(payload) - payload[0]]
