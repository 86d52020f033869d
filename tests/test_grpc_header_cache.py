"""The native gRPC transport keeps header blocks it decoded (server/grpc/http2.py `_decode`): a client's calls
repeat one block once its headers sit in the HPACK dynamic table. A kept block must still decode as a fresh
decoder would after any block that changed the table, since its indexes then name other headers."""

from __future__ import annotations

from hpack import Decoder, Encoder

from gpuserve.server.grpc import http2


def _connection(monkeypatch):
    opened, decodes = [], []
    connection = http2.Http2Connection(lambda conn, stream_id, headers, end: opened.append(list(headers)), set())
    decode = connection.decoder.decode

    def counted(block):
        decodes.append(block)
        return decode(block)
    monkeypatch.setattr(connection.decoder, "decode", counted)
    return connection, opened, decodes


def _send(connection, stream_id: int, block: bytes) -> None:
    connection.header_stream, connection.header_block, connection.header_end_stream = stream_id, bytearray(block), True
    connection._headers_complete()


CALL = [(":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
        (":authority", "127.0.0.1:8001"), ("content-type", "application/grpc"), ("te", "trailers"),
        ("x-user", "alice")]


def test_a_repeated_block_is_decoded_once_and_a_table_change_forgets_it(monkeypatch):
    encoder = Encoder()
    first = encoder.encode(CALL)  # literals, added to the table
    again = encoder.encode(CALL)  # indexes into the table
    changed = encoder.encode([("x-user", "bob")])  # a new entry: every older index moves by one
    sequence = [first, again, again, again, changed, again, again]
    connection, opened, decodes = _connection(monkeypatch)
    for stream_id, block in zip(range(1, 2 * len(sequence), 2), sequence):
        _send(connection, stream_id, block)
    reference = Decoder()
    assert opened == [list(reference.decode(block)) for block in sequence]
    assert opened[1] == opened[3] == [tuple(pair) for pair in CALL]
    assert opened[5] != opened[3]  # after the change the same bytes name other headers, as a fresh decoder says
    # decoded: first, again (kept), changed (forgets), again (kept anew); the other repeats came from what was kept
    assert decodes == [first, again, changed, again]


def test_a_table_resize_forgets_kept_blocks(monkeypatch):
    encoder = Encoder()
    first, again = encoder.encode(CALL), encoder.encode(CALL)
    encoder.header_table_size = 64  # the next block starts with a size update that evicts most entries
    resized = encoder.encode([("x-user", "alice")])
    connection, opened, decodes = _connection(monkeypatch)
    for stream_id, block in zip((1, 3, 5, 7), (first, again, resized, again)):
        try:
            _send(connection, stream_id, block)
        except http2._ConnectionError:
            opened.append("refused")  # indexes past the shrunk table: a fresh decoder refuses them too
    reference, expected = Decoder(), []
    for block in (first, again, resized, again):
        try:
            expected.append(list(reference.decode(block)))
        except Exception:
            expected.append("refused")
    assert opened == expected
    assert decodes == [first, again, resized, again]


def test_large_blocks_are_decoded_each_time_and_what_is_kept_is_bounded(monkeypatch):
    encoder = Encoder()
    size = http2.DECODED_BLOCK_BYTES + 1
    connection, opened, decodes = _connection(monkeypatch)
    _send(connection, 1, encoder.encode(CALL[:6]))  # the call's own headers into the table first
    decodes.clear()
    big = encoder.encode(CALL[:6] + [("x-big", "v" * size, True)], huffman=False)  # never indexed: table unchanged
    for stream_id in (3, 5):
        _send(connection, stream_id, big)
    assert decodes == [big, big]
    assert opened[-1][-1] == ("x-big", "v" * size)
    blocks = [encoder.encode(CALL[:6] + [("x-n", str(n), True)]) for n in range(2 * http2.DECODED_BLOCKS)]
    for stream_id, block in zip(range(7, 1000, 2), blocks):
        _send(connection, stream_id, block)
    assert len(connection._decoded) == http2.DECODED_BLOCKS


def test_what_a_kept_header_list_says_is_read_once():
    from gpuserve.server.grpc.native import NativeGrpcServer

    server = NativeGrpcServer.__new__(NativeGrpcServer)  # only its reading of headers is used here
    server.methods, server._headers_read = {"/inference.GRPCInferenceService/ModelInfer": "infer"}, {}
    headers = [tuple(pair) for pair in CALL]
    read = server._read(headers)
    assert read[1:] == (dict(CALL), "infer", (("x-user", "alice"),))
    assert server._read(headers) is read  # the same list again (a kept block): read once
    other = [*headers[:-1], ("x-user", "bob")]
    server._headers_read[id(other)] = (headers, *read[1:])  # as if `other` took the id of a list no longer kept
    assert server._read(other)[3] == (("x-user", "bob"),)
