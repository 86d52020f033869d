"""Pooled host buffers for assembling batches: one copy per request into a reused buffer.

Buffers are keyed by dtype and a power-of-two size class, so a steady load allocates nothing after
warm-up; `stats()` shows it. On a GPU the same pool holds page-locked memory (the allocator comes
from the backend's device helpers); on the CPU it is plain NumPy memory, the same code path.

Large batches are gathered by several threads: one core copies host memory at 6-10 GB/s, while a
PCIe 5 link takes 50+ GB/s, so for image-sized requests the single-threaded copy, not the device, set
the engine's pace (H200, 2026-12-04: 64 x 600 KB requests, 13k rows/s served against 60k direct).
NumPy releases the GIL while it copies, so plain threads scale (measured here: 2 threads, 2.0x).
"""

from __future__ import annotations

import functools
import math
import os
import threading
import weakref
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np


def size_class(nbytes: int) -> int:
    return 1 << max(int(nbytes - 1).bit_length(), 12)  # at least 4 KiB


def numpy_allocator(nbytes: int) -> np.ndarray:
    return np.empty(nbytes, dtype=np.uint8)


class Lease:
    __slots__ = ("pool", "key", "buffer", "array")

    def __init__(self, pool: "StagingPool", key: Tuple[int], buffer: np.ndarray, array: np.ndarray):
        self.pool, self.key, self.buffer, self.array = pool, key, buffer, array

    def release(self) -> None:
        if self.buffer is not None:
            self.pool._give_back(self.key, self.buffer)
            self.buffer = None
            self.array = None


# Pools of page-locked memory (any allocator but NumPy's), for Triton's nv_pinned_memory_pool_* gauges
PINNED_POOLS: "weakref.WeakSet[StagingPool]" = weakref.WeakSet()


def pinned_bytes() -> Tuple[int, int]:
    """(held, leased) bytes of page-locked staging memory across pools: (0, 0) where there is no GPU."""
    pools = list(PINNED_POOLS)
    return (sum(p.cached_bytes + p.leased_bytes for p in pools), sum(p.leased_bytes for p in pools))


class StagingPool:
    def __init__(self, allocator: Callable[[int], np.ndarray] = numpy_allocator, max_cached_bytes: int = 1 << 30):
        self.allocator = allocator
        self.max_cached_bytes = max_cached_bytes
        self._free: Dict[int, List[np.ndarray]] = defaultdict(list)
        self._lock = threading.Lock()
        self.allocations = 0
        self.reuses = 0
        self.in_use = 0
        self.cached_bytes = 0
        self.leased_bytes = 0
        if allocator is not numpy_allocator:
            PINNED_POOLS.add(self)

    def acquire(self, dtype: np.dtype, shape: Tuple[int, ...]) -> Lease:
        dtype = np.dtype(dtype)
        nbytes = int(math.prod(shape)) * dtype.itemsize
        key = size_class(nbytes)
        with self._lock:
            free = self._free.get(key)
            if free:
                buffer = free.pop()
                self.cached_bytes -= key
                self.reuses += 1
            else:
                buffer = None
                self.allocations += 1
            self.in_use += 1
            self.leased_bytes += key
        if buffer is None:
            buffer = self.allocator(key)
        array = buffer[:nbytes].view(dtype).reshape(shape)
        return Lease(self, key, buffer, array)

    def _give_back(self, key: int, buffer: np.ndarray) -> None:
        with self._lock:
            self.in_use -= 1
            self.leased_bytes -= key
            if self.cached_bytes + key <= self.max_cached_bytes:
                self._free[key].append(buffer)
                self.cached_bytes += key

    def stats(self) -> Dict[str, int]:
        with self._lock:
            return {"allocations": self.allocations, "reuses": self.reuses, "in_use": self.in_use,
                    "cached_bytes": self.cached_bytes}

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self.cached_bytes = 0


def gather(pool: Optional[StagingPool], parts: List[np.ndarray], rows: Optional[int] = None
           ) -> Tuple[np.ndarray, Optional[Lease]]:
    """Concatenate request arrays along rows into one batch array; a single part is passed as is.
    `rows`, when the caller knows it, is the parts' total row count."""
    if len(parts) == 1:
        return parts[0], None
    first = parts[0]
    if rows is None:
        rows = sum(p.shape[0] for p in parts)
    shape = (rows,) + first.shape[1:]
    if pool is None or first.dtype == object:
        return np.concatenate(parts, axis=0), None
    lease = pool.acquire(first.dtype, shape)
    threads = 1
    if lease.array.nbytes >= PARALLEL_COPY_BYTES:  # the common small batch costs no more than before
        threads = min(_copy_threads(), len(parts), lease.array.nbytes // (PARALLEL_COPY_BYTES // 2))
    if threads > 1:
        _parallel_concatenate(parts, lease.array, threads)
    else:
        np.concatenate(parts, axis=0, out=lease.array)
    return lease.array, lease


# Under this a batch is copied by one thread; over it, by one thread per 4 MB (at most MAX_COPY_THREADS): a
# hand-off to a pool thread costs tens of microseconds on a VM, about what one core copies 0.5 MB in.
PARALLEL_COPY_BYTES = 8 << 20
MAX_COPY_THREADS = 8
_copier: Optional[ThreadPoolExecutor] = None
_copier_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _copy_threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, MAX_COPY_THREADS)


def _parallel_concatenate(parts: List[np.ndarray], out: np.ndarray, threads: int) -> None:
    """np.concatenate(parts, out=out) in `threads` groups of whole parts of about equal rows, one group per
    thread (the caller copies the last)."""
    global _copier
    if _copier is None:
        with _copier_lock:
            if _copier is None:
                # threads start as work needs them; the caller copies one group itself
                _copier = ThreadPoolExecutor(MAX_COPY_THREADS - 1, thread_name_prefix="gpuserve-gather")
    total = out.shape[0]
    groups, start, row, first = [], 0, 0, 0
    for index, part in enumerate(parts):
        row += part.shape[0]
        if row * threads >= total * (len(groups) + 1) and len(groups) < threads - 1:
            groups.append((first, index + 1, start, row))
            first, start = index + 1, row
    groups.append((first, len(parts), start, total))
    pending = [_copier.submit(np.concatenate, parts[a:b], 0, out[r0:r1]) for a, b, r0, r1 in groups[:-1]]
    a, b, r0, r1 = groups[-1]
    if a < b:
        np.concatenate(parts[a:b], axis=0, out=out[r0:r1])
    for future in pending:
        future.result()
