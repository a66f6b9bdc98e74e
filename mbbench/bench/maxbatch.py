"""OOM-safe maximum batch search: seeded bracket, bisection, caps.

The search is pure logic over a `probe(size) -> Trial`; only a probe that reports "oom" means
"too big". Any other error raised by the probe stops the search and propagates. The real probe
(`bench.trial.subprocess_probe`) runs each trial in a new Python process, so one OOM cannot fragment
or poison the allocator for the next trial; `errors.is_oom` decides what counts as running out of memory (the
typed `torch.cuda.OutOfMemoryError`, and the generic CUDA errors whose message says so).

Sizes are k x granularity; the strategies below work on k ("units").
- Seeded (a prediction, e.g. the memory model's): probe the seed, then bisect the presumed bracket
  [seed / spread, seed x spread] whose far end is assumed, not probed; only if the answer lands on
  that end is it probed, and a seed that was off by more than `spread` falls back to galloping.
- Unseeded: gallop (double) from `start` until a failure, then bisect.
Caps (`max_trials`, `max_seconds`) stop the search early; the result then says so and gives the
verified bracket (largest size that ran, smallest that ran out of memory).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Generator

from mbbench.errors import UserError
from mbbench.records import Trial

@dataclass
class SearchResult:
    """What a search found. Sizes, not units; `smallest_failed` None: no size failed (or only `upper` capped)."""

    largest_ok: int  # 0 when even the smallest size failed
    granularity: int
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0
    smallest_failed: int | None = None
    capped: bool = False  # stopped by max_trials / max_seconds before the bracket closed
    stopped_by: str | None = None  # "max_trials", "max_seconds" or None
    seed: int | None = None  # the size the search started from (None: unseeded)

    @property
    def bracket(self) -> tuple[int, int | None]:
        """(largest size that ran, smallest that ran out of memory): verified by trials, never presumed."""
        return self.largest_ok, self.smallest_failed

    def with_margin(self, margin: float) -> int:
        """The result less a safety margin (a fraction), rounded down to the granularity."""
        reduced = int(self.largest_ok * (1.0 - margin))
        return (reduced // self.granularity) * self.granularity

    @property
    def peak_bytes(self) -> int | None:
        return next((t.peak_bytes for t in self.trials if t.size == self.largest_ok and t.status == "ok"), None)


class TrialError(RuntimeError):
    """A trial failed for a reason other than running out of memory: the search stops."""


# --- strategies: generators that yield the next k to probe and receive whether it ran -------------------------

Plan = Generator[int, bool, tuple[int, int]]


def _bisect(lo: int, hi: int) -> Plan:
    """Narrow (lo fits, hi fails) to adjacent units; lo/hi may be presumed. Returns the final pair."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (yield mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def _gallop_up(lo: int, k: int, ceiling: int) -> Plan:
    """From a fitting `lo`, probe k, 2k, 4k, ... (below `ceiling`) until one fails; returns (lo, hi)."""
    while k < ceiling:
        if not (yield k):
            return lo, k
        lo, k = k, min(2 * k, ceiling)
    return lo, ceiling


def _gallop_down(hi: int) -> Plan:
    """From a failing `hi`, probe hi/2, hi/4, ... until one fits; returns (lo, hi) (lo 0: nothing fits)."""
    k = hi // 2
    while k >= 1:
        if (yield k):
            return k, hi
        hi, k = k, k // 2
    return 0, hi


def _unseeded(start: int, ceiling: int) -> Plan:
    lo, hi = yield from _gallop_up(0, min(start, ceiling), ceiling)
    return (yield from _bisect(lo, hi))


def _seeded(seed: int, spread: float, ceiling: int) -> Plan:
    """Probe the seed, bisect the presumed bracket on its side, fall back to galloping past it."""
    if ceiling <= 1:  # `upper` is below one granularity step: nothing may be probed
        return 0, ceiling
    seed = max(1, min(seed, ceiling - 1))
    if (yield seed):
        edge = min(int(seed * spread) + 3, ceiling)  # presumed to fail; +3 keeps a truth of 2*seed+1 inside
        lo, hi = yield from _bisect(seed, edge)
        if hi < edge or edge == ceiling:  # a probe inside failed, or the edge is the upper bound: closed
            return lo, hi
        if not (yield edge):  # every probe fitted: the presumed edge is checked
            return lo, edge
        lo, hi = yield from _gallop_up(edge, min(2 * edge, ceiling), ceiling)
        return (yield from _bisect(lo, hi))
    edge = int(seed / spread) - 1  # presumed to fit
    if edge <= 0:
        return (yield from _bisect(0, seed))
    lo, hi = yield from _bisect(edge, seed)
    if lo > edge:
        return lo, hi
    if (yield edge):
        return edge, hi
    lo, hi = yield from _gallop_down(edge)
    return (yield from _bisect(lo, hi))


def search(probe: Callable[[int], Trial], granularity: int = 2, seed: int | None = None,
           max_trials: int | None = None, max_seconds: float | None = None, *, start: int = 1,
           upper: int | None = None, spread: float = 2.0,
           clock: Callable[[], float] = time.perf_counter) -> SearchResult:
    """Largest size (a multiple of `granularity`) for which `probe` succeeds, assuming fit is monotone.

    seed: a predicted size (e.g. `memory.seed_size`); None gallops from `start` x granularity.
    max_trials / max_seconds: caps. A trial is not started when `max_trials` are done, or when the
      seconds spent plus the longest trial so far would pass `max_seconds`; the result is then
      `capped` with `stopped_by` set, and its bracket is the verified one reached.
    upper: never probe above this size. spread: the seed's presumed error factor (>= 1.25).
    clock: seconds (tests pass a fake one).

    Trial bounds, with T = limit // granularity (limit: the largest size that fits):
    - seeded, limit / 2 <= seed <= 2 * limit, spread 2: at most 1 + ceil(log2(T + 3)) trials
      (<= 8 for T <= 125, e.g. granularity 8 and limits up to 1007);
    - unseeded: at most 2 * log2(max(limit, 2)) + 3 (doubling, then bisection).
    Raises UserError on bad arguments; whatever the probe raises (e.g. TrialError) propagates.
    """
    if granularity < 1 or start < 1:
        raise UserError("granularity and start must be >= 1")
    if spread < 1.25 or (seed is not None and seed < 1) or (max_trials is not None and max_trials < 1):
        raise UserError("spread must be >= 1.25, seed and max_trials >= 1")
    ceiling = upper // granularity + 1 if upper is not None else sys.maxsize  # first unit never probed
    plan = _seeded(max(1, seed // granularity), spread, ceiling) if seed else _unseeded(start, ceiling)
    began = clock()
    trials: list[Trial] = []
    lo, hi, stopped_by = 0, None, None
    try:
        k = next(plan)
        while True:
            stopped_by = _cap_reached(trials, clock() - began, max_trials, max_seconds)
            if stopped_by:
                break
            trial = probe(k * granularity)
            trials.append(trial)
            fits = trial.status == "ok"
            lo, hi = (max(lo, k), hi) if fits else (lo, k if hi is None else min(hi, k))
            k = plan.send(fits)
    except StopIteration:
        pass
    finally:
        plan.close()
    return SearchResult(lo * granularity, granularity, trials, clock() - began,
                        hi * granularity if hi is not None else None, stopped_by is not None, stopped_by,
                        seed)


def _cap_reached(trials: list[Trial], elapsed: float, max_trials: int | None, max_seconds: float | None
                 ) -> str | None:
    if max_trials is not None and len(trials) >= max_trials:
        return "max_trials"
    longest = max((t.seconds for t in trials), default=0.0)
    if max_seconds is not None and elapsed + longest > max_seconds:
        return "max_seconds"
    return None


def synthetic_probe(limit: int, peak_per_item: int = 1) -> Callable[[int], Trial]:
    """A probe that 'runs out of memory' above `limit`: the CPU twin of a real allocator."""
    def probe(size: int) -> Trial:
        return Trial(size, "ok" if size <= limit else "oom", size * peak_per_item if size <= limit else None)
    return probe
