"""Request bodies sent compressed (`Content-Encoding: gzip|deflate`, tritonclient's
request_compression_algorithm, MLServer's gzip middleware), inflated with a bound: a small compressed body
must not become an unbounded one in memory. Inference answers compressed as the client's `Accept-Encoding`
asks (tritonclient's response_compression_algorithm), as Triton answers them, once they are big enough for
it to pay (clients read an answer without Content-Encoding as it is)."""

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


# Answers smaller than this go uncompressed whatever Accept-Encoding says: they fit a packet either way, and
# gzip cost the demo's small JSON answers ~20 % req/s under hey (whose Go client asks for gzip by default)
COMPRESS_MIN_BYTES = 1024


def response_encoding(accept: str | None) -> str | None:
    """The encoding Triton answers an inference with for an `Accept-Encoding` header: of identity, gzip
    and deflate, the one with the highest weight (the first listed on a tie); None for identity."""
    chosen, weight = "identity", 0.0
    for item in (accept or "").split(","):
        name, _, q = item.strip().partition(";q=")
        if ";" in name or name not in ("identity", *ENCODINGS):
            continue
        try:
            value = float(q) if q else 1.0
        except ValueError:
            continue
        if value > weight:
            chosen, weight = name, value
    return None if chosen == "identity" else chosen


def compress(body: bytes, encoding: str) -> bytes:
    """`body` in `encoding` (gzip, or deflate as zlib's stream, which is what Triton and clients mean)."""
    packer = zlib.compressobj(wbits=31 if encoding == "gzip" else 15)
    return packer.compress(body) + packer.flush()
