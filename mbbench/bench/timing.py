"""Device-synchronised timing and the statistics every measurement reports."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from mbbench.records import Stats


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


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def summarize(values: list[float]) -> Stats:
    """Median, mean, sample standard deviation, min, max, IQR (inclusive quartiles) and IQR over the median
    (infinite for a median of 0) of `values`. Raises ValueError when empty."""
    if not values:
        raise ValueError("no values to summarize")
    q1, q3 = quartiles(values)
    median = statistics.median(values)
    return Stats(median, statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0,
                 min(values), max(values), q3 - q1, (q3 - q1) / median if median else float("inf"))
