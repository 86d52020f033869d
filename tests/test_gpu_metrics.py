"""NVML gauges on /metrics where a GPU is (Triton's nv_gpu_* names, one series per GPU UUID). Skipped
without CUDA; run by benchmarks/gpu/verify_all.sh (test_metrics.py checks they are absent without a GPU)."""

import re

import httpx
import pytest

from conftest import running_server

pytestmark = pytest.mark.gpu


def _values(text, name):
    """{gpu_uuid: value} of one gauge in Prometheus text."""
    return {m.group(1): float(m.group(2))
            for m in re.finditer(rf'^{name}{{gpu_uuid="([^"]+)"}} (\S+)$', text, flags=re.MULTILINE)}


def test_nvml_gauges_describe_every_gpu():
    pynvml = pytest.importorskip("pynvml")
    pynvml.nvmlInit()
    try:
        count = pynvml.nvmlDeviceGetCount()
        total = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).total
    finally:
        pynvml.nvmlShutdown()
    with running_server() as server:
        text = httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/metrics").text
    memory = _values(text, "nv_gpu_memory_total_bytes")
    assert len(memory) == count and all(uuid.startswith("GPU-") for uuid in memory), text[-2000:]
    assert total in memory.values()
    used = _values(text, "nv_gpu_memory_used_bytes")
    assert set(used) == set(memory) and all(0 <= used[u] <= memory[u] for u in used)
    assert all(0.0 <= value <= 1.0 for value in _values(text, "nv_gpu_utilization").values())
    assert all(value > 0 for value in _values(text, "nv_gpu_power_limit").values())
