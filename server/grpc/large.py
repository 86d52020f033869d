"""Large ModelInfer messages without copies of their tensor bytes, on the native transport.

protobuf copies every bytes field it parses and every one it serializes, and its Python bytes for a
field are one more copy: a 1 GB raw_input_contents entry was held three times before the model saw it,
and the answer's raw_output_contents three times more. Here a large request message is parsed with its
raw_input_contents left out, and those entries are read-only views of the received bytes; a large
answer is the message without raw_output_contents followed by those entries as views of the output
arrays, written to the wire piece by piece (repeated fields may come in any position on the wire, so
this is the same message to any protobuf reader). Messages under gpuserve.datatypes.VIEW_BYTES keep the
ordinary path.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from gpuserve.errors import InvalidInput

RAW_INPUT_FIELD = 7  # ModelInferRequest.raw_input_contents
RAW_OUTPUT_TAG = b"\x32"  # ModelInferResponse.raw_output_contents: field 6, length-delimited


def read_varint(data, pos: int, end: int) -> Tuple[int, int]:
    """(a protobuf varint's value, the position after it), reading no further than `end`."""
    value = shift = 0
    while pos < end:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise InvalidInput("the request message is not valid protobuf (a truncated or overlong varint)")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def split_raw_inputs(message: memoryview) -> Tuple[bytes, List[memoryview]]:
    """(the message's bytes without its raw_input_contents, those entries as views, in order)."""
    view = message  # views of a buffer the server read the message into stay writable (Triton's Python
    # models may change their inputs in place; triton_python copies only what is read-only)
    kept, raw = [], []
    pos, start, end = 0, 0, len(view)
    while pos < end:
        field_start = pos
        tag, pos = read_varint(view, pos, end)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = read_varint(view, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = read_varint(view, pos, end)
            if field == RAW_INPUT_FIELD:
                if pos + length > end:
                    break
                kept.append(view[start:field_start])
                raw.append(view[pos:pos + length])
                start = pos + length
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise InvalidInput(f"the request message is not valid protobuf (wire type {wire})")
        if pos > end:
            break
    else:
        kept.append(view[start:end])
        return b"".join(kept), raw
    raise InvalidInput("the request message is not valid protobuf (a field runs past its end)")


class LargeRequest:
    """A ModelInferRequest whose raw_input_contents are views of the received message."""

    __slots__ = ("message", "raw_input_contents")

    def __init__(self, message, raw: List[memoryview]):
        self.message = message
        self.raw_input_contents = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self.message, name)


# Below this, each raw input is copied once into bytes of its own (aligned, as protobuf's copy was): a view
# sits wherever protobuf's framing put it, and a misaligned array takes other kernels (ONNX Runtime's sums
# came out 1.6e-4 apart, NumPy's unaligned loops are ~1.5x slower); from here on memory matters more
KEEP_VIEWS_FROM = 1 << 20


def parse_request(request_class, message) -> Any:
    """The request message, large ones (a memoryview of the received bytes) without copies of their data.
    Only ModelInferRequest has raw contents to keep aside (field 7 means something else in other messages);
    a method taking raw bytes (request_class None) gets them."""
    if request_class is None:
        return bytes(message)
    if not isinstance(message, memoryview) or "raw_input_contents" not in request_class.DESCRIPTOR.fields_by_name:
        return request_class.FromString(message)
    stripped, raw = split_raw_inputs(message)
    if len(message) < KEEP_VIEWS_FROM:
        raw = [bytes(entry) for entry in raw]
    return LargeRequest(request_class.FromString(stripped), raw)


class RawAnswer:
    """A ModelInferResponse whose raw_output_contents go on the wire as views, after the message's other
    fields. `parts()` is what the native transport writes."""

    __slots__ = ("head", "raw")

    def __init__(self, head, raw: List[Any]):
        self.head = head  # the ModelInferResponse without raw_output_contents
        self.raw = raw

    def parts(self) -> List[Any]:
        parts = [self.head.SerializeToString()]
        for data in self.raw:
            parts += (RAW_OUTPUT_TAG + _encode_varint(len(data)), data)
        return parts

    def SerializeToString(self) -> bytes:
        return b"".join(self.parts())
