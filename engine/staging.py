"""Pooled host buffers for assembling batches: one copy per request into a reused buffer.

Buffers are keyed by dtype and a power-of-two size class, so a steady load allocates nothing after
warm-up; `stats()` shows it. On a GPU the same pool holds page-locked memory (the allocator comes
from the backend's device helpers); on the CPU it is plain NumPy memory, the same code path.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
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
        if buffer is None:
            buffer = self.allocator(key)
        array = buffer[:nbytes].view(dtype).reshape(shape)
        return Lease(self, key, buffer, array)

    def _give_back(self, key: int, buffer: np.ndarray) -> None:
        with self._lock:
            self.in_use -= 1
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
    np.concatenate(parts, axis=0, out=lease.array)
    return lease.array, lease
