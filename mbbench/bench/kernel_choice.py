"""Which GEMM and element-wise kernel our own models run on, and where that choice came from.

Sources (`KernelChoice.source`):
- "measured now": the kernels' timings were taken in this process (and kept in the kernel cache);
- "cache": read from the kernel cache (`bench.kernel_store`), measured by an earlier process on this CPU;
- "pinned": the user named the kernel (`--gemm`, `--elementwise`);
- "fixed": nothing to choose (a GPU, transformers' own code, an engine that runs its own graph).

The rule (`decide`) breaks ties toward a fixed default (torch's GEMM, eager element-wise): every other kernel is
compared with the default in paired rounds (the kernels ran interleaved, so a busy moment hits both), one
ratio per round, the default's seconds over the other's. The other kernel is chosen only when the whole
order-statistic interval of the median ratio (`paired.median_interval`, its exact coverage stated) lies above 1.
Inside the measurement's noise the default stays, so two kernels at "139 vs 139 GFLOP/s" always give the
default, and, read from the cache, the same timings give the same kernel in every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from mbbench.bench.elementwise import ElementwiseTimes
from mbbench.bench.matmul import GemmRates
from mbbench.bench.paired import CONFIDENCE, Interval, median_interval

PINNED = "pinned"
FIXED = "fixed"


@dataclass(frozen=True)
class KernelChoice:
    """The kernel a model runs on, where the choice came from (a source above), and why, in words."""

    kernel: str
    source: str
    reason: str

    @property
    def text(self) -> str:
        """'cache: onednn-packed 152 vs torch 139 GFLOP/s ...': the source first, as records keep it."""
        return f"{self.source}: {self.reason}"


@dataclass(frozen=True)
class Verdict:
    """The outcome of `decide`: the kernel, the best alternative's median speedup over the default and its
    interval (None with a single kernel or fewer than two rounds), and whether that speedup was within the noise."""

    kernel: str
    default: str
    rival: str | None  # the fastest other kernel
    speedup: float | None  # median over rounds of default seconds / rival seconds (> 1: the rival is faster)
    interval: Interval | None
    tied: bool  # the rival's interval reaches 1 (or there is none): the default stays

    rounds: int = 0

    def describe(self) -> str:
        """'onednn-packed at 1.09x [1.04, 1.12] torch's speed (99.2% interval, 8 paired rounds): onednn-packed', or
        '..., within the noise: the default torch'."""
        if self.rival is None:
            return f"only {self.kernel} runs here"
        if self.interval is None:
            return (f"{self.rival} at {self.speedup:.2f}x {self.default}'s speed in {self.rounds} round, no interval: "
                    f"the default {self.default}")
        span = (f"{self.rival} at {self.speedup:.2f}x [{self.interval.low:.2f}, {self.interval.high:.2f}] "
                f"{self.default}'s speed ({self.interval.confidence:.1%} interval, {self.rounds} paired rounds)")
        return f"{span}, within the noise: the default {self.default}" if self.tied else f"{span}: {self.kernel}"


def decide(round_seconds: Mapping[str, Sequence[float]], default: str, confidence: float = CONFIDENCE) -> Verdict:
    """The kernel to run: the fastest other kernel when its paired speedup over `default` is above 1 with the
    whole interval, else `default` (ties and noise go to the default).

    `round_seconds`: kernel -> seconds per round, round r of every kernel measured back to back. Raises
    ValueError when `default` was not measured.
    """
    if default not in round_seconds:
        raise ValueError(f"the default kernel {default!r} was not measured (measured: {list(round_seconds)})")
    base = np.asarray(round_seconds[default], dtype=float)
    best: tuple[str, float, Interval | None] | None = None
    for kernel, seconds in round_seconds.items():
        if kernel == default:
            continue
        ratios = base / np.asarray(seconds, dtype=float)  # one paired speedup per round
        interval = median_interval(list(ratios), confidence) if len(ratios) >= 2 else None
        candidate = (kernel, float(np.median(ratios)), interval)
        if best is None or candidate[1] > best[1]:
            best = candidate
    if best is None:
        return Verdict(default, default, None, None, None, False, len(base))
    rival, speedup, interval = best
    tied = interval is None or interval.low <= 1.0
    return Verdict(default if tied else rival, default, rival, speedup, interval, tied, len(base))


def pinned(kernel: str, option: str) -> KernelChoice:
    """The kernel the user named (`option`: "--gemm" or "--elementwise")."""
    return KernelChoice(kernel, PINNED, f"{option} {kernel}")


def gemm_for(rates: GemmRates | None, pin: str | None, default: str) -> KernelChoice:
    """Our own model's GEMM kernel: `pin` (--gemm) when given; the default where nothing was measured (a GPU:
    cuBLAS); else what `decide` picks from `rates`' paired rounds."""
    if pin:
        return pinned(pin, "--gemm")
    if rates is None:
        return KernelChoice(default, FIXED, "torch's default (cuBLAS on CUDA)")
    return gemm(rates, default)


def elementwise_for(times: ElementwiseTimes | None, pin: str | None, default: str) -> KernelChoice:
    """Our own model's RoPE + gated activation kernel: `pin` (--elementwise) when given; the default where
    nothing was measured (GPUs); else what `decide` picks from `times`' paired rounds."""
    if pin:
        return pinned(pin, "--elementwise")
    if times is None:
        return KernelChoice(default, FIXED,
                            "eager ATen (Inductor's fused kernels are chosen by measurement on CPUs only)")
    return elementwise(times, default)


def gemm(rates: GemmRates, default: str) -> KernelChoice:
    """The GEMM kernel `decide` picks from the paired rounds behind `rates`, with the rates and the verdict."""
    verdict = decide(dict(rates.round_seconds), default)
    return KernelChoice(verdict.kernel, rates.source, f"{verdict.describe()}; {rates.describe()}")


def elementwise(times: ElementwiseTimes, default: str) -> KernelChoice:
    """The element-wise kernel `decide` picks from the paired rounds behind `times` (the default when Inductor
    cannot run here, with the reason)."""
    if times.error is not None:
        return KernelChoice(default, times.source, times.describe())
    verdict = decide(dict(times.round_seconds), default)
    return KernelChoice(verdict.kernel, times.source, f"{verdict.describe()}; {times.describe()}")
