"""Triton's host gauges: nv_cpu_utilization, nv_cpu_memory_total_bytes, nv_cpu_memory_used_bytes.

Read from /proc at each scrape (utilization over the time since the previous scrape, as Triton reports it
over its metrics interval); where /proc is missing (not Linux) they are simply not exported.
"""

from __future__ import annotations

import threading
from typing import Optional, Tuple


class CpuSampler:
    def __init__(self, stat_path: str = "/proc/stat", meminfo_path: str = "/proc/meminfo"):
        self.stat_path, self.meminfo_path = stat_path, meminfo_path
        self._last: Optional[Tuple[int, int]] = None  # (total, idle) jiffies at the previous scrape
        self._lock = threading.Lock()

    def utilization(self) -> Optional[float]:
        """Busy share of all cores since the previous call, 0.0 .. 1.0 (0.0 the first time)."""
        try:
            with open(self.stat_path) as f:
                fields = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        total, idle = sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        with self._lock:
            last, self._last = self._last, (total, idle)
        if last is None or total <= last[0]:
            return 0.0
        return min(max(1.0 - (idle - last[1]) / (total - last[0]), 0.0), 1.0)

    def memory(self) -> Optional[Tuple[int, int]]:
        """(total, used) bytes, used meaning not available to new programs (MemTotal - MemAvailable)."""
        try:
            with open(self.meminfo_path) as f:
                values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.strip()}
        except (OSError, ValueError, IndexError):
            return None
        total = values.get("MemTotal")
        available = values.get("MemAvailable", values.get("MemFree"))
        if total is None or available is None:
            return None
        return total, total - available
