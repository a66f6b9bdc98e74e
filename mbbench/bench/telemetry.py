"""NVML sampling during timed passes: power, SM clock, temperature, throttle reasons, energy.

The sampler takes a `read` function so the summary logic is tested on CPU with recorded samples.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from mbbench.device import nvml_handle

# nvmlClocksEventReason* / nvmlClocksThrottleReason* bit values (nvml.h)
THROTTLE_BITS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that mean the measurement ran below its normal clocks (idle and app settings do not).
SLOWDOWN_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


@dataclass
class Sample:
    time_s: float
    power_w: float
    sm_clock_mhz: float
    temperature_c: float
    throttle_reasons: int
    energy_mj: float | None = None  # cumulative counter, millijoules


def nvml_reader(torch_index: int = 0) -> Callable[[], Sample]:
    """Samples of the GPU torch calls `cuda:<torch_index>` (found by UUID, see `device.nvml_handle`)."""
    import pynvml

    handle = nvml_handle(torch_index)

    def energy():
        try:
            return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except pynvml.NVMLError:
            return None

    def reasons():
        getter = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
        return int(getter(handle))

    def read() -> Sample:
        return Sample(time.perf_counter(), pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                      float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
                      float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)), reasons(), energy())
    return read


@dataclass
class Sampler:
    """Background thread calling `read` every `interval` seconds between start() and stop()."""

    read: Callable[[], Sample]
    interval: float = 0.05
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.samples.append(self.read())
            except Exception:  # a failed read must never break the measurement
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()
        try:
            self.samples.append(self.read())  # a final sample closes the energy interval
        except Exception:
            pass


def _stats(values: list[float]) -> dict:
    return {"min": min(values), "mean": sum(values) / len(values), "max": max(values)}


def summarize(samples: list[Sample], tokens: int) -> dict | None:
    """min/mean/max of each signal, energy (counter, else power integrated) and tokens per joule."""
    if not samples:
        return None
    duration = samples[-1].time_s - samples[0].time_s
    if samples[0].energy_mj is not None and samples[-1].energy_mj is not None:
        energy_j = (samples[-1].energy_mj - samples[0].energy_mj) / 1000.0
    else:  # trapezoid over the power samples
        energy_j = sum((b.time_s - a.time_s) * (a.power_w + b.power_w) / 2 for a, b in zip(samples, samples[1:]))
    reasons = 0
    for s in samples:
        reasons |= s.throttle_reasons
    return {
        "samples": len(samples), "duration_s": duration,
        "power_w": _stats([s.power_w for s in samples]),
        "sm_clock_mhz": _stats([s.sm_clock_mhz for s in samples]),
        "temperature_c": _stats([s.temperature_c for s in samples]),
        "energy_j": energy_j,
        "tokens_per_joule": tokens / energy_j if energy_j > 0 else None,
        "throttle_reasons": [name for bit, name in THROTTLE_BITS.items() if reasons & bit],
        "throttled": bool(reasons & SLOWDOWN_MASK),
    }
