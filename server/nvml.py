"""GPU gauges from NVML, refreshed by a background thread so a scrape never waits on the driver.

Without the nvidia-ml-py package, a driver or a GPU, there are simply no GPU metrics, said once in
the log.
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, List

logger = logging.getLogger("gpuserve.metrics")


class GpuSampler:
    def __init__(self, interval_s: float = 5.0):
        self.interval_s = interval_s
        self.samples: List[Dict] = []
        self.available = False
        self._stop = threading.Event()
        self._thread = None
        self._nvml = None

    def start(self) -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # no package, no driver, no GPU: all mean "no GPU metrics"
            logger.info("no GPU metrics: NVML unavailable (%s)", exc)
            return False
        self._nvml = pynvml
        self.available = True
        self.sample()
        self._thread = threading.Thread(target=self._run, name="gpuserve-nvml", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        nvml = self._nvml
        samples = []
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
                entry = {"gpu_uuid": uuid, "index": index}
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                entry["memory_total_bytes"], entry["memory_used_bytes"] = memory.total, memory.used
                entry["utilization"] = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
                for key, call, scale in (("power_watts", "nvmlDeviceGetPowerUsage", 1e-3),
                                         ("power_limit_watts", "nvmlDeviceGetEnforcedPowerLimit", 1e-3),
                                         ("energy_joules", "nvmlDeviceGetTotalEnergyConsumption", 1e-3)):
                    try:
                        entry[key] = getattr(nvml, call)(handle) * scale
                    except Exception:
                        pass
                try:
                    entry["temperature_celsius"] = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
                except Exception:
                    pass
                samples.append(entry)
        except Exception as exc:
            logger.warning("NVML sampling failed: %s", exc)
            return
        self.samples = samples

    def stop(self) -> None:
        self._stop.set()
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
