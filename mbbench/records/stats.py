"""Typed statistics a record keeps: `Stats` of per-pass tokens/s, `Percentiles` of latencies (or batch sizes) and
the `Interval` of a median ratio. `bench/` computes them (`bench.timing.summarize`, `bench.latency.percentiles`,
`bench.paired.median_interval`); records store them and reports read them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

UNSTABLE_IQR = 0.10  # IQR/median above this is flagged unstable (torch.utils.benchmark's threshold)
PERCENTILES = (50, 90, 95, 99)  # the percentiles `Percentiles` stores
CONFIDENCE = 0.95  # the coverage an interval of a median ratio is asked for


@dataclass(frozen=True)
class Stats:
    """Statistics of one sample (tokens/s per pass, or seconds per pass). A value that was NaN or infinite is None
    once written (records are strict JSON; the record's `non_finite` says which)."""

    median: float | None
    mean: float | None
    std: float | None  # sample standard deviation (0 for one value)
    min: float | None
    max: float | None
    iqr: float | None  # interquartile range (inclusive quartiles)
    iqr_over_median: float | None  # the spread the report gives (infinite for a median of 0)

    @property
    def unstable(self) -> bool:
        """IQR/median above `UNSTABLE_IQR`: too noisy to rank on."""
        return self.iqr_over_median is not None and self.iqr_over_median > UNSTABLE_IQR


def samples_beyond(count: int, percentile: float) -> int:
    """How many of `count` samples lie beyond the `percentile`th by rank, `count - ceil(count * percentile / 100)`:
    what a tail percentile rests on. 0 means there is none: p99 of 10 requests lies between the two largest
    (numpy's interpolation), so it is their maximum, not an estimate of a 1-in-100 tail."""
    return count - math.ceil(round(count * percentile / 100, 9))  # rounded: 100 x 0.99 is not 98.99999...


def samples_needed(percentile: float) -> int:
    """The fewest samples that put one beyond the `percentile`th (`samples_beyond` >= 1): p99 100, p95 20, p90 10."""
    return math.ceil(round(100 / (100 - percentile), 9))


@dataclass(frozen=True)
class Percentiles:
    """Statistics of a sample (seconds for latencies; requests or tokens for batch distributions).

    Percentiles are numpy's default (linear interpolation between order statistics, type 7 of
    Hyndman & Fan 1996); `stdev` is the sample standard deviation (ddof=1; 0 for one value). `beyond` is derived
    from `count`: per stored percentile, the samples beyond it (`samples_beyond`; 0: it is their largest).
    """

    count: int
    mean: float
    stdev: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    beyond: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "beyond", {f"p{p}": samples_beyond(self.count, p) for p in PERCENTILES})

    def at(self, percentile: float) -> float:
        """The stored percentile 50, 90, 95 or 99; KeyError for any other."""
        if percentile not in PERCENTILES:
            raise KeyError(f"p{percentile:g} is not stored (stored: {', '.join(f'p{p}' for p in PERCENTILES)})")
        return getattr(self, f"p{int(percentile)}")

    def is_largest(self, percentile: float) -> bool:
        """No sample lies beyond the `percentile`th: it is the largest one, not a tail estimate."""
        return samples_beyond(self.count, percentile) < 1


@dataclass(frozen=True)
class Interval:
    """A confidence interval of a median (ratio); `confidence` is its exact coverage, which is below `requested`
    when the rounds are too few to reach it (`bench.paired`). Records before issue 26 hold a percentile bootstrap
    (`method` says so, `order` None): its stated confidence was not its coverage at few rounds."""

    low: float
    high: float
    confidence: float  # exact coverage probability of this interval (0.9375 for [min, max] of 5 rounds)
    requested: float = CONFIDENCE
    method: str = "order statistics (sign test)"
    order: int | None = 1  # k: the interval is [x_(k), x_(n+1-k)] of the sorted values

    @property
    def reaches_requested(self) -> bool:
        return self.confidence >= self.requested

    @property
    def bootstrap(self) -> bool:
        """A percentile bootstrap (records before issue 26), not an order-statistic interval."""
        return self.method.startswith("percentile bootstrap")
