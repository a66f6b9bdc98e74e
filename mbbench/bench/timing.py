"""Device-synchronised timing and the statistics every measurement reports."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds for `fn`, with all queued device work finished before start and before stop.

    On CUDA, events recorded on the stream measure device time between them (host jitter excluded);
    on CPU, perf_counter around the call.
    """
    synchronize(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


@dataclass(frozen=True)
class Summary:
    median: float
    mean: float
    std: float
    min: float
    max: float
    iqr: float

    @property
    def relative_iqr(self) -> float:
        return self.iqr / self.median if self.median else float("inf")

    def to_dict(self) -> dict:
        return {"median": self.median, "mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "iqr": self.iqr, "iqr_over_median": self.relative_iqr}


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def summarize(values: list[float]) -> Summary:
    if not values:
        raise ValueError("no values to summarize")
    q1, q3 = quartiles(values)
    return Summary(statistics.median(values), statistics.fmean(values),
                   statistics.stdev(values) if len(values) > 1 else 0.0, min(values), max(values), q3 - q1)


UNSTABLE_IQR = 0.10  # IQR/median above this is flagged (torch.utils.benchmark's threshold)
