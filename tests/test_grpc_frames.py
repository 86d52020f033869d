"""Large gRPC request messages as HTTP/2 clients may frame them: the native transport reads the rest of a
large DATA frame straight into the message it belongs to (server/grpc/http2.py `_receive_directly`,
native.py `receive_into`), so every way a message can be cut into frames and TCP reads must still give the
model exactly the bytes sent: frames whose first bytes hold less than the 5-byte message prefix, padded
frames, a frame that ends one message and starts the next (a stream), compressed messages, and bytes that
arrive a few at a time."""

from __future__ import annotations

import gzip
import socket
import time

import numpy as np
import pytest
from hpack import Decoder

from conftest import running_server
from gpuserve import InferOutput, InferResponse, Model
from gpuserve.server.grpc import inference_pb2 as pb
from gpuserve.server.grpc.http2 import (CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, PADDED, PRIORITY,
                                        PRIORITY_FLAG, SETTINGS, WINDOW_UPDATE, frame, literal)

SERVICE = "/inference.GRPCInferenceService/"


class Negate(Model):
    def load(self):
        self.ready = True
        return True

    async def predict(self, payload, headers=None):
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("OUT", -payload.inputs[0].as_numpy())])


@pytest.fixture
def direct(monkeypatch):
    """How many frames were read straight into their message."""
    from gpuserve.server.grpc import native
    taken, receive_into = [], native.Call.receive_into

    def spy(self, length, head):
        target = receive_into(self, length, head)
        taken.append(target is not None)
        return target
    monkeypatch.setattr(native.Call, "receive_into", spy)
    return taken


@pytest.fixture(scope="module")
def server():
    with running_server([Negate("negate")], grpc_transport="native") as srv:
        yield srv


def _message(values: np.ndarray, compressed: bool = False) -> bytes:
    request = pb.ModelInferRequest(model_name="negate", id=str(values[0]))
    tensor = request.inputs.add(name="IN", datatype="FP32", shape=[1, values.size])
    del tensor  # the data travels in raw_input_contents
    request.raw_input_contents.append(values.astype(np.float32).tobytes())
    body = request.SerializeToString()
    if compressed:
        body = gzip.compress(body)
    return bytes((1 if compressed else 0,)) + len(body).to_bytes(4, "big") + body


def _headers(method: str, compressed) -> bytes:
    """The request's header block; `compressed`: True for gzip, or the grpc-encoding to name."""
    pairs = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", (SERVICE + method).encode()),
             (b":authority", b"test"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]
    if compressed:
        pairs.append((b"grpc-encoding", b"gzip" if compressed is True else compressed.encode()))
    return b"".join(literal(name, value) for name, value in pairs)


def _frames(data: bytes, cuts, padded_at=()) -> bytes:
    """`data` as DATA frames on stream 1 cut at the given offsets; frames listed in padded_at are padded."""
    out, bounds = [], [0, *cuts, len(data)]
    for index, (start, end) in enumerate(zip(bounds, bounds[1:])):
        flags = END_STREAM if end == len(data) else 0
        piece = data[start:end]
        if index in padded_at:
            out.append(frame(DATA, flags | PADDED, 1, bytes((7,)) + piece + b"\x00" * 7))
        else:
            out.append(frame(DATA, flags, 1, piece))
    return b"".join(out)


def _call(port: int, method: str, body: bytes, compressed: bool = False, dribble: int = 0, settings: bytes = b"",
          decoder=None, blocks=None, head=None):
    """Sends one call's frames (a few bytes per write when `dribble`), returns (grpc-status, messages);
    `settings` go in the client's SETTINGS, the answer's header blocks through `decoder` and into `blocks`;
    `head(block)` frames the request's header block otherwise than as one HEADERS frame."""
    big_window = (2**31 - 1).to_bytes(4, "big")  # the answers are large too: no WINDOW_UPDATEs needed
    wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + \
        frame(SETTINGS, 0, 0, (4).to_bytes(2, "big") + big_window + settings) + \
        frame(WINDOW_UPDATE, 0, 0, (2**31 - 1 - 65535).to_bytes(4, "big")) + \
        (head or (lambda block: frame(HEADERS, END_HEADERS, 1, block)))(_headers(method, compressed)) + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if dribble:
            for at in range(0, len(wire), dribble):
                sock.sendall(wire[at:at + dribble])
                if at // dribble % 64 == 0:
                    time.sleep(0.001)  # let the server read what is there: frames arrive in pieces
        else:
            sock.sendall(wire)
        received, status, data = b"", None, bytearray()
        decoder = decoder if decoder is not None else Decoder()
        while status is None:
            more = sock.recv(1 << 20)
            assert more, "the server closed the connection before the call's trailers"
            received += more
            while len(received) >= 9 and len(received) >= 9 + int.from_bytes(received[:3], "big"):
                length, kind, flags = int.from_bytes(received[:3], "big"), received[3], received[4]
                payload, received = received[9:9 + length], received[9 + length:]
                if kind == DATA:
                    data += payload
                elif kind == HEADERS:
                    if blocks is not None:
                        blocks.append(payload)
                    fields = dict(decoder.decode(payload))
                    if flags & END_STREAM:
                        status = (int(fields["grpc-status"]), fields.get("grpc-message", ""))
    messages = []
    while data:
        size = int.from_bytes(data[1:5], "big")
        messages.append(bytes(data[5:5 + size]))
        del data[:5 + size]
    return status, messages


def _answered(message: bytes, stream: bool = False) -> np.ndarray:
    if stream:
        answer = pb.ModelStreamInferResponse.FromString(message)
        assert not answer.error_message, answer.error_message
        message = answer.infer_response.SerializeToString()
    response = pb.ModelInferResponse.FromString(message)
    return np.frombuffer(response.raw_output_contents[0], dtype=np.float32)


VALUES = np.arange(100_000, dtype=np.float32) + 0.5  # 400 KB: over the 64 KiB view bound


@pytest.mark.parametrize("cuts, padded_at", [
    ((), ()),  # one frame
    ((3,), ()),  # the first frame holds less than the message prefix
    ((5,), ()),  # ... exactly the prefix
    ((5 + 100_000, 5 + 250_000), ()),  # frames inside the message
    ((17_000, 17_001, 300_000), ()),  # a one-byte frame between large ones
    ((100_000,), (0, 1)),  # padded frames take the plain way
    ((70_000, 140_000, 210_000, 280_000, 350_000), (2,)),  # a padded frame between direct ones
])
@pytest.mark.parametrize("dribble", [0, 4096, 65_000])
def test_a_large_unary_message_cut_any_way_arrives_whole(server, direct, cuts, padded_at, dribble):
    message = _message(VALUES)
    status, messages = _call(server.ports["grpc"], "ModelInfer", _frames(message, cuts, padded_at), dribble=dribble)
    assert status == (0, "") and len(messages) == 1
    np.testing.assert_array_equal(_answered(messages[0]), -VALUES)
    if dribble == 4096 and not padded_at:  # frames arrive in pieces: the large ones are read directly
        assert any(direct)


def test_a_compressed_large_message_cut_into_frames_arrives_whole(server):
    message = _message(VALUES, compressed=True)
    status, messages = _call(server.ports["grpc"], "ModelInfer", _frames(message, (3, len(message) // 2)),
                             compressed=True, dribble=8192)
    assert status == (0, "") and len(messages) == 1
    np.testing.assert_array_equal(_answered(messages[0]), -VALUES)


def test_stream_messages_whose_frames_straddle_them_arrive_in_order(server, direct):
    # message 1 large, message 2 small, message 3 large: one large frame holds the end of 1, all of 2 and the
    # start of 3 (read the plain way); the frames inside 1 and 3 are read directly
    first, second, third = VALUES, np.arange(10, dtype=np.float32) + 1, VALUES[::-1].copy()
    one, two, three = _message(first), _message(second), _message(third)
    stream = one + two + three
    cuts = (50_000, len(one) + len(two) + 30_000, len(one) + len(two) + 200_000)
    for dribble in (0, 4096):
        status, messages = _call(server.ports["grpc"], "ModelStreamInfer", _frames(stream, cuts), dribble=dribble)
        assert status == (0, "") and len(messages) == 3
        for got, sent in zip(messages, (first, second, third)):
            np.testing.assert_array_equal(_answered(got, stream=True), -sent)
    assert True in direct and False in direct  # the frames inside a message were read directly, not the others


def test_a_unary_call_that_ends_inside_a_large_message_is_refused_and_the_server_goes_on(server):
    message = _message(VALUES)
    status, _ = _call(server.ports["grpc"], "ModelInfer", _frames(message[:200_000], (3, 100_000)), dribble=8192)
    assert status[0] == 13  # INTERNAL, as for any unary call without its one message
    status, messages = _call(server.ports["grpc"], "ModelInfer", _frames(message, (3,)))
    assert status == (0, "")
    np.testing.assert_array_equal(_answered(messages[0]), -VALUES)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_a_declared_length_takes_memory_only_as_its_bytes_arrive(server):
    # a client that declares a 1 GB message and sends 200 KB of it: the message buffer is allocated for the
    # declared length at once, but not zeroed, so only the pages the bytes land in are taken
    declared = 1 << 30
    wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0) + \
        frame(HEADERS, END_HEADERS, 1, _headers("ModelInfer", False)) + \
        frame(DATA, 0, 1, b"\x00" + declared.to_bytes(4, "big") + b"\x01" * 200_000)
    before = _rss_bytes()
    with socket.create_connection(("127.0.0.1", server.ports["grpc"]), timeout=30) as sock:
        for at in range(0, len(wire), 8192):
            sock.sendall(wire[at:at + 8192])
        time.sleep(0.5)
        grown = _rss_bytes() - before
    assert grown < 200 << 20, f"{grown >> 20} MB taken for a message of {declared >> 20} MB declared"
    status, messages = _call(server.ports["grpc"], "ModelInfer", _frames(_message(VALUES), (3,)))
    assert status == (0, "")


def test_idle_connections_hold_little_memory(server):
    # each connection's read buffer is 256 KiB of address space, but only the pages its reads touched are
    # taken: 200 connections that sent their preface and a SETTINGS frame must not cost 200 x 256 KiB (50 MB)
    hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0)
    before, socks = _rss_bytes(), []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", server.ports["grpc"]), timeout=30)
            sock.sendall(hello)
            socks.append(sock)
        for sock in socks:  # each got the server's SETTINGS: its connection is open and has read
            assert sock.recv(9)
        grown = _rss_bytes() - before
    finally:
        for sock in socks:
            sock.close()
    assert grown < 25 << 20, f"{grown >> 20} MB for 200 idle connections"


@pytest.mark.parametrize("table_size", [0, 256])
def test_a_client_that_shrinks_its_header_table_gets_the_size_update_it_is_owed(server, table_size):
    """RFC 7541 4.2: after SETTINGS_HEADER_TABLE_SIZE below 4096 the next header block starts with a dynamic
    table size update; decoders that hold the encoder to it (nghttp2's, Python h2's) refuse the answer
    otherwise. hpack's Decoder checks it once told the client's limit."""
    decoder, blocks = Decoder(), []
    decoder.max_allowed_table_size = table_size
    setting = (1).to_bytes(2, "big") + table_size.to_bytes(4, "big")
    status, messages = _call(server.ports["grpc"], "ModelInfer", _frames(_message(VALUES[:8]), ()), settings=setting,
                             decoder=decoder, blocks=blocks)
    assert status == (0, "")
    assert np.array_equal(_answered(messages[0]), -VALUES[:8])
    assert blocks[0][:1] == b"\x20" and blocks[1][:1] != b"\x20"  # once, at the start of the first block
    assert decoder.header_table_size == 0


def test_a_client_that_keeps_the_default_table_gets_no_size_update(server):
    blocks = []
    status, _ = _call(server.ports["grpc"], "ServerLive", _frames(b"\x00\x00\x00\x00\x00", ()), blocks=blocks)
    assert status == (0, "")
    assert blocks[0][:1] == b"\x88"  # :status 200, as before: the common client's bytes are unchanged


@pytest.mark.parametrize("encoding, code, words", [
    ("snappy", 12, "grpc-encoding 'snappy' is not supported (supported: identity,deflate,gzip)"),  # UNIMPLEMENTED
    ("identity", 13, "a compressed message needs a grpc-encoding naming its compression"),  # INTERNAL
])
def test_a_compressed_message_the_server_cannot_read_is_refused_as_grpc_says(server, encoding, code, words):
    """gRPC's compression spec: an algorithm the server lacks is UNIMPLEMENTED and the answer lists what it
    takes (grpc-accept-encoding); the compressed flag without an encoding is the client's protocol error."""
    message = _message(VALUES[:4], compressed=True)
    blocks = []
    status, messages = _call(server.ports["grpc"], "ModelInfer", _frames(message, ()), compressed=encoding,
                             blocks=blocks)
    assert status == (code, words) and messages == []
    fields = dict(Decoder().decode(blocks[-1]))
    assert (fields.get("grpc-accept-encoding") == "identity,deflate,gzip") == (code == 12)
    status, messages = _call(server.ports["grpc"], "ModelInfer", _frames(message, ()), compressed=True)
    assert status == (0, "") and np.array_equal(_answered(messages[0]), -VALUES[:4])  # the server goes on


def _cut_headers(block: bytes) -> bytes:
    """The header block as a padded HEADERS frame with the PRIORITY flag and two CONTINUATION frames."""
    priority = (0).to_bytes(4, "big") + bytes((15,))  # depends on stream 0, weight 16
    first = bytes((9,)) + priority + block[:7] + b"\x00" * 9
    return (frame(HEADERS, PADDED | PRIORITY_FLAG, 1, first) + frame(CONTINUATION, 0, 1, block[7:15])
            + frame(CONTINUATION, END_HEADERS, 1, block[15:]))


def _open_ended(message: bytes) -> bytes:
    return frame(DATA, 0, 1, message)  # the message without END_STREAM: something else ends the stream


@pytest.mark.parametrize("how", ["continuation", "priority frames", "unknown frame type", "empty final DATA",
                                 "ended by trailers"])
def test_framings_other_http2_clients_use_are_read(server, how):
    """What HTTP/2 clients other than grpcio may send (Python's h2, nghttp2, Go's), each answered as usual."""
    message, head = _message(VALUES[:16]), None
    body = _frames(message, ())
    if how == "continuation":
        head = _cut_headers
    elif how == "priority frames":
        body = frame(PRIORITY, 0, 3, (1).to_bytes(4, "big") + bytes((1,))) + body
    elif how == "unknown frame type":
        body = frame(0xEE, 0, 0, b"abcd") + frame(0xEE, 0x3, 1, b"") + body
    elif how == "empty final DATA":
        body = _open_ended(message) + frame(DATA, END_STREAM, 1, b"")
    else:
        body = _open_ended(message) + frame(HEADERS, END_HEADERS | END_STREAM, 1, literal(b"x-trailer", b"1"))
    status, messages = _call(server.ports["grpc"], "ModelInfer", body, head=head)
    assert status == (0, "")
    assert np.array_equal(_answered(messages[0]), -VALUES[:16])


def test_a_whole_small_answer_leaves_as_the_three_calls_would_write_it():
    """send_whole (a small unary answer's HEADERS, DATA and trailers built in one piece) writes the bytes that
    send_headers + send_data + send_trailers write, keeps the windows' accounting, and closes the stream;
    it declines (doing nothing) where a part would not leave at once."""
    import asyncio

    from gpuserve.server.grpc import http2
    from gpuserve.server.grpc.native import OK_TRAILERS, RESPONSE_HEADERS

    class Transport:
        def __init__(self):
            self.written = []

        def write(self, data):
            self.written.append(bytes(data))

        def is_closing(self):
            return False

        def set_write_buffer_limits(self, high):
            pass

    async def answer(whole: bool, payload: bytes, window: int = 65535):
        connection = http2.Http2Connection(lambda *args: None, set())
        transport = Transport()
        connection.connection_made(transport)
        connection._write_out()
        transport.written.clear()
        connection.streams[3] = http2._Stream(3, window)
        sent = whole and connection.send_whole(3, RESPONSE_HEADERS, payload, OK_TRAILERS)
        if not sent:
            connection.send_headers(3, RESPONSE_HEADERS)
            connection.send_data(3, payload)
            connection.send_trailers(3, OK_TRAILERS)
        await asyncio.sleep(0)
        connection._write_out()
        return b"".join(transport.written), connection.peer_window, 3 in connection.streams, sent

    async def main():
        payload = b"\x00\x00\x00\x00\x05hello"
        whole, plain = await answer(True, payload), await answer(False, payload)
        assert whole[3] and whole[:3] == plain[:3] and whole[2] is False  # same bytes and window, stream closed
        declined = await answer(True, payload, window=4)  # the stream's window cannot take it: the old way
        assert declined[3] is False and declined[:3] == (await answer(False, payload, window=4))[:3]

    asyncio.run(main())
