"""Timed passes over a suite's batches -> run times. Inputs are on the device before timing.

Warmup has two parts. The protocol's warmup batches are a *timing convention* (the paper warms up on one
batch; the rigorous protocol on a full pass). But work that belongs to warmup must never land in a timed
pass whatever the convention: flex attention compiles once per new total length, cuDNN/cuBLAS pick
algorithms and the allocator grows per new shape. So after the protocol's batches, the first batch of every
shape not yet run is run too (`warmup_order`); a timed pass then only ever meets shapes it has seen. The
record says how many batches the warmup ran, and how many of them only for a new shape.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields, is_dataclass
from typing import Callable, ContextManager, Hashable, Sequence

import torch

from mbbench.bench.timing import synchronize, timed


@dataclass
class PassTimes:
    pass_seconds: list[float]
    warmup_seconds: float
    first_call_seconds: float  # includes compilation when the model is compiled
    warmup_batches: int = 0  # batches the warmup ran (the first call included): what ran, not what was asked
    shape_warmup_batches: int = 0  # of those, batches run beyond the protocol's only because their shape was new


def batch_shape(batch) -> Hashable:
    """What decides whether a forward compiles or allocates anew: every tensor's shape and every integer field
    of a batch dataclass (a packed batch's `max_seqlen`), or a bare tensor's shape."""
    if isinstance(batch, torch.Tensor):
        return tuple(batch.shape)
    if is_dataclass(batch):
        values = (getattr(batch, f.name) for f in fields(batch))
        return tuple(tuple(v.shape) if isinstance(v, torch.Tensor) else v for v in values
                     if isinstance(v, (torch.Tensor, int)))
    return type(batch).__name__


def warmup_order(batches: Sequence, warmup_batches: int | None) -> tuple[list[int], int]:
    """The indices of the batches the warmup runs, in order, and how many were added for a new shape.

    The protocol's batches first (the first `max(warmup_batches, 1)`: the first call always runs; None: all),
    then the first batch of each shape they did not cover.
    """
    count = len(batches) if warmup_batches is None else min(max(warmup_batches, 1), len(batches))
    order = list(range(count))
    seen = {batch_shape(batches[i]) for i in order}
    for index in range(count, len(batches)):
        shape = batch_shape(batches[index])
        if shape not in seen:
            seen.add(shape)
            order.append(index)
    return order, len(order) - count


def measure_passes(forward: Callable, batches: Sequence, device: torch.device, passes: int,
                   warmup_batches: int | None, time_transfer: bool = False,
                   on_pass: Callable[[int, float], None] | None = None,
                   around_timed: ContextManager | None = None,
                   on_first_batch: Callable[[float], None] | None = None) -> PassTimes:
    """Warm up, then time `passes` full passes over `batches`; `on_pass(index, seconds)` follows each.

    `warmup_batches=None` warms up with one full pass; otherwise with that many batches (the paper
    uses one; 0 still runs the first call), then one batch of each shape not yet run (`warmup_order`).
    With `time_transfer`, batches stay on the host and each pass includes their copies.
    `around_timed` (e.g. a telemetry sampler) is entered around the timed passes only. `on_first_batch(seconds)`
    follows the first (cold) batch, before anything else runs: the caller's estimate of the whole run.
    """
    on_device = batches if time_transfer else [b.to(device) for b in batches]
    synchronize(device)

    def one_pass(items):
        for batch in items:
            forward(batch.to(device) if time_transfer else batch)

    order, for_shapes = warmup_order(batches, warmup_batches)
    with torch.inference_mode():
        first = timed(lambda: forward(on_device[0].to(device)), device)
        if on_first_batch:
            on_first_batch(first)
        warm = [on_device[i] for i in order[1:]]
        warmup = first + timed(lambda: one_pass(warm), device)
        times = []
        with around_timed or contextlib.nullcontext():
            for index in range(passes):
                seconds = timed(lambda: one_pass(on_device), device)
                times.append(seconds)
                if on_pass:
                    on_pass(index, seconds)
    return PassTimes(times, warmup, first, len(order), for_shapes)
