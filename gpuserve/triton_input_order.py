"""The order in which Triton's core walks a request's inputs, reproduced so that migrating clients and models
meet the same answers.

Triton keeps a request's inputs in a `std::unordered_map<std::string, ...>` (GCC's libstdc++): the order of
that map is what its refusals follow (the first bad input in it is the one named, `Got input(s) [...]` lists
it), and the Python backend hands a model `request.inputs()` in the order of a second such map filled by
walking the first, then the sequence batcher's control inputs. Neither is the order the client sent: for
three inputs or more it follows the names' hashes. The map is rebuilt here as libstdc++ builds it (its
`_Hash_bytes` string hash, its prime bucket counts starting at 13, a new node placed first in its bucket or,
in an empty bucket, first in the list) and was checked against Triton 2.51 (tests/test_triton_input_order.py:
orders of 2 to 16 inputs read off a real tritonserver). Results are cached by the tuple of names.
"""

from __future__ import annotations

import bisect
import functools
from typing import List, Sequence, Tuple

_MASK = (1 << 64) - 1
_MUL = 0xC6A4A7935BD1E995  # libstdc++'s 64-bit _Hash_bytes multiplier
_SEED = 0xC70F6907  # the seed std::hash<std::string> passes
# libstdc++'s _Prime_rehash_policy: small bucket counts from a table, larger ones from its prime list
_FAST_BUCKETS = (2, 2, 2, 3, 5, 5, 7, 7, 11, 11, 11, 11, 13, 13)
_PRIMES = (13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 103, 109, 113, 127,
           137, 139, 149, 157, 167, 179, 193, 199, 211, 227, 241, 257, 277, 293, 313, 337, 359, 383, 409, 439,
           467, 503, 541, 577, 619, 661, 709, 761, 823, 887, 953, 1031, 1109, 1193, 1289, 1381, 1493, 1613, 1741,
           1879, 2029, 2179, 2357, 2549, 2753, 2971, 3209, 3469, 3739, 4027, 4349, 4703, 5087, 5503, 5953, 6427)


def _shift_mix(value: int) -> int:
    return value ^ (value >> 47)


def name_hash(name: str) -> int:
    """std::hash<std::string> of libstdc++ on a 64-bit machine (a MurmurHash2 variant over the UTF-8 bytes)."""
    data = name.encode("utf-8")
    size = len(data)
    whole = size & ~7
    value = (_SEED ^ (size * _MUL)) & _MASK
    for start in range(0, whole, 8):
        word = (_shift_mix((int.from_bytes(data[start:start + 8], "little") * _MUL) & _MASK) * _MUL) & _MASK
        value = ((value ^ word) * _MUL) & _MASK
    if size & 7:
        value = ((value ^ int.from_bytes(data[whole:], "little")) * _MUL) & _MASK
    return _shift_mix((_shift_mix(value) * _MUL) & _MASK)


def _bucket_count(wanted: int) -> int:
    if wanted < len(_FAST_BUCKETS):
        return _FAST_BUCKETS[wanted]
    return _PRIMES[min(bisect.bisect_left(_PRIMES, wanted), len(_PRIMES) - 1)]


def _place(nodes: List[str], hashes: dict, name: str, buckets: int) -> None:
    """Insert as libstdc++ does: before the first node of the name's bucket, or first in the list when the
    bucket is empty."""
    bucket = hashes[name] % buckets
    for index, other in enumerate(nodes):
        if hashes[other] % buckets == bucket:
            nodes.insert(index, name)
            return
    nodes.insert(0, name)


@functools.lru_cache(maxsize=4096)
def map_order(names: Tuple[str, ...]) -> Tuple[str, ...]:
    """The walk order of an unordered_map after inserting `names` in turn (distinct names)."""
    if len(names) < 3:
        return names[::-1]  # one bucket run or two: always the reverse
    hashes = {name: name_hash(name) for name in names}
    nodes: List[str] = []
    buckets, next_resize = 1, 0
    for name in names:
        count = len(nodes) + 1
        if count > next_resize:  # the rehash policy's check before each insert
            least = max(count, 11 if not next_resize else 0)  # the first insert sizes for 11
            if least >= buckets:
                buckets = _bucket_count(max(least + 1, buckets * 2))
                next_resize = buckets
                old, nodes = nodes, []
                for node in old:  # a rehash re-places the nodes in list order
                    _place(nodes, hashes, node, buckets)
            else:
                next_resize = buckets
        _place(nodes, hashes, name, buckets)
    return tuple(nodes)


def checked_order(names: Sequence[str]) -> Tuple[str, ...]:
    """The order Triton's request normalisation checks inputs in (and lists them in its refusals)."""
    return map_order(tuple(names))


@functools.lru_cache(maxsize=4096)
def backend_order(names: Tuple[str, ...], controls: Tuple[str, ...] = ()) -> Tuple[str, ...]:
    """The order a Triton backend reads a request's inputs in: the checked order inserted into a new map,
    then the control inputs the sequence batcher adds. Two inputs or fewer keep the request's order."""
    if len(names) < 3 and not controls:
        return names
    return map_order(map_order(names) + controls)
