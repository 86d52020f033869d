"""Request bodies sent compressed (`Content-Encoding: gzip|deflate`, tritonclient's
request_compression_algorithm, MLServer's gzip middleware), inflated with a bound: a small compressed body
must not become an unbounded one in memory."""

from __future__ import annotations

import zlib

from gpuserve.errors import InvalidInput, PayloadTooLarge

ENCODINGS = ("gzip", "deflate")


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` decoded from `encoding` (one of ENCODINGS), refused past `limit` bytes."""
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"request body is not valid {encoding}: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    return out
