"""Timed passes over a suite's batches -> run times. Inputs are on the device before timing."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import torch

from mbbench.bench.timing import synchronize, timed


@dataclass
class PassTimes:
    pass_seconds: list[float]
    warmup_seconds: float
    first_call_seconds: float  # includes compilation when the model is compiled


def measure_passes(forward: Callable, batches: Sequence, device: torch.device, passes: int,
                   warmup_batches: int | None, time_transfer: bool = False,
                   on_pass: Callable[[int, float], None] | None = None,
                   around_timed: ContextManager | None = None,
                   on_first_batch: Callable[[float], None] | None = None) -> PassTimes:
    """Warm up, then time `passes` full passes over `batches`; `on_pass(index, seconds)` follows each.

    `warmup_batches=None` warms up with one full pass; otherwise with that many batches (the paper
    uses one). With `time_transfer`, batches stay on the host and each pass includes their copies.
    `around_timed` (e.g. a telemetry sampler) is entered around the timed passes only. `on_first_batch(seconds)`
    follows the first (cold) batch, before anything else runs: the caller's estimate of the whole run.
    """
    on_device = batches if time_transfer else [b.to(device) for b in batches]
    synchronize(device)

    def one_pass(items):
        for batch in items:
            forward(batch.to(device) if time_transfer else batch)

    with torch.inference_mode():
        first = timed(lambda: forward(on_device[0].to(device)), device)
        if on_first_batch:
            on_first_batch(first)
        warm = on_device[1:] if warmup_batches is None else on_device[1:max(warmup_batches, 1)]
        warmup = first + timed(lambda: one_pass(warm), device)
        times = []
        with around_timed or contextlib.nullcontext():
            for index in range(passes):
                seconds = timed(lambda: one_pass(on_device), device)
                times.append(seconds)
                if on_pass:
                    on_pass(index, seconds)
    return PassTimes(times, warmup, first)
