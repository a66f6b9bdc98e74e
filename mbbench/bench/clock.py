"""Clocks for load tests: a real one for measurements, a virtual one for deterministic tests.

The serving and latency loops never read time directly; they ask a `Clock`. Under `RealClock`
arrivals wait in real time and a batch's inference takes as long as the forward pass does. Under
`VirtualClock` time moves only when told: waiting for the next arrival jumps straight to it, and
a batch's service advances the clock by the seconds the service function returns. A virtual clock
therefore skips idle time, while service times stay real whenever the service function measures a
real forward pass (the queueing is simulated, the model's time is not) -- and with a fake model
whose forward takes a known time per token, a whole run is exact and reproducible.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    kind: str  # "real" or "virtual": recorded with every result

    def now(self) -> float:
        """Seconds since an arbitrary origin (monotonic)."""

    def sleep_until(self, t: float) -> None:
        """Return once `now() >= t` (at once when `t` is already past)."""


class RealClock:
    """Wall time: `time.perf_counter`, and `time.sleep` to wait for the next arrival."""

    kind = "real"

    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, t: float) -> None:
        remaining = t - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)


class VirtualClock:
    """Time that advances only when told: `sleep_until(t)` jumps to `t`; nothing else moves it.

    A service of `s` seconds that started at `t0` is accounted for by `sleep_until(t0 + s)`, so the
    simulated queue sees exactly the service times it is given (measured or known).
    """

    kind = "virtual"

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def sleep_until(self, t: float) -> None:
        self._now = max(self._now, float(t))
