"""In-process load test: open-loop arrivals, a dynamic batcher and one model worker, on a clock.

    arrivals (loadgen) --> queue --> batcher (budget, cap, max wait) --> worker: service(batch) -> s

No network and no threads: arrivals are known in advance (open loop: they do not depend on the
server), so one loop plays the server -- when the worker is free it waits for a request if none is
queued, lets the batcher wait for a fuller batch (up to the maximum wait), dispatches, and runs the
service. Per request it records TEI's three times: queue (arrival -> dispatch), inference
(dispatch -> completion, the batch's service time) and total. Under `VirtualClock` the run is a
discrete-event simulation and exact; under `RealClock` requests arrive in real time.

`highest_rate_meeting` bisects the offered rate for the highest one whose latency percentile meets
a target (`--slo p99=50ms`), one full run per step.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from mbbench.bench.batcher import Batcher, RequestBatch
from mbbench.bench.clock import Clock
from mbbench.bench.latency import Percentiles, percentiles
from mbbench.bench.loadgen import Request, make_requests
from mbbench.errors import UserError
from mbbench.records import RatePoint

Service = Callable[[RequestBatch], float]  # runs one batch to completion; returns its seconds
NewShape = Callable[[RequestBatch], bool]  # whether a batch's shape has not run yet (its first call may compile)


def fixed_cost_service(seconds_per_token: float, overhead_s: float = 0.0) -> Service:
    """A fake model: a batch takes `overhead_s` + `seconds_per_token` x its tokens (padded when padded)."""
    return lambda batch: overhead_s + seconds_per_token * batch.tokens


@dataclass(frozen=True)
class ServedRequest:
    """One request's times, seconds from the start of the run."""

    request: Request
    dispatch_s: float
    completion_s: float
    batch_index: int

    @property
    def queue_s(self) -> float:
        return self.dispatch_s - self.request.arrival_s

    @property
    def inference_s(self) -> float:
        return self.completion_s - self.dispatch_s

    @property
    def total_s(self) -> float:
        return self.completion_s - self.request.arrival_s


@dataclass(frozen=True)
class BatchRun:
    """One dispatched batch: when, how many requests, tokens processed (padded when padded), seconds."""

    dispatch_s: float
    size: int
    tokens: int
    real_tokens: int
    service_s: float
    new_shape: bool = False  # its shape had not run before: its service time holds that shape's first call


@dataclass(frozen=True)
class ServingRun:
    """One load test at one offered rate. Latency statistics are over served requests."""

    offered_rate: float  # requests/s asked for
    arrival: str  # "poisson" or "constant"
    seed: int
    batcher: Batcher
    clock: str  # "real" or "virtual"
    served: list[ServedRequest]
    batches: list[BatchRun]
    unserved: int = 0  # requests still queued when the drain limit stopped the run (overload)
    duration_s: float = 0.0  # start of the run to the last completion
    arrival_span_s: float = 0.0  # start of the run to the last arrival (the arrivals' own window)

    @property
    def saturated(self) -> bool:
        return self.unserved > 0

    def latency_at(self, percentile: float) -> float:
        """Total latency at any percentile (0-100) in seconds; inf when a request went unserved."""
        if self.unserved or not self.served:
            return math.inf
        return float(np.percentile([s.total_s for s in self.served], percentile))

    @property
    def queue_s(self) -> Percentiles:
        return percentiles([s.queue_s for s in self.served])

    @property
    def inference_s(self) -> Percentiles:
        return percentiles([s.inference_s for s in self.served])

    @property
    def total_s(self) -> Percentiles:
        return percentiles([s.total_s for s in self.served])

    @property
    def batch_sizes(self) -> Percentiles:
        return percentiles([b.size for b in self.batches])

    @property
    def batch_tokens(self) -> Percentiles:
        return percentiles([b.tokens for b in self.batches])

    @property
    def achieved_rate(self) -> float:
        """Served requests/s over the run (start to last completion)."""
        return len(self.served) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        """Real (unpadded) tokens/s served over the run."""
        return sum(b.real_tokens for b in self.batches) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def arrived_rate(self) -> float:
        """Requests/s the seeded Poisson draw actually brought over its window: beside the offered rate, what a
        short run's achieved rate is to be read against (3 arrivals in 20 s at 0.2/s offered is 0.15/s)."""
        requests = len(self.served) + self.unserved
        return requests / self.arrival_span_s if self.arrival_span_s > 0 else 0.0

    @property
    def new_shape_batches(self) -> int:
        """Batches whose shape had not run before: each one's service time holds its shape's first call."""
        return sum(b.new_shape for b in self.batches)

    @property
    def new_shape_share(self) -> float:
        """The fraction of the worker's busy time spent on batches of new shapes (0 to 1): how much of the
        latencies is first calls (a compile per length, kernel selection, the allocator growing)."""
        busy = sum(b.service_s for b in self.batches)
        return sum(b.service_s for b in self.batches if b.new_shape) / busy if busy > 0 else 0.0

    @property
    def padding_efficiency(self) -> float:
        processed = sum(b.tokens for b in self.batches)
        return sum(b.real_tokens for b in self.batches) / processed if processed else 1.0

    @property
    def utilization(self) -> float:
        """Fraction of the run the worker was busy (the measured rho)."""
        return sum(b.service_s for b in self.batches) / self.duration_s if self.duration_s > 0 else 0.0

    def point(self) -> RatePoint:
        """The summary of this rate (statistics, not samples) a `Serving` payload keeps, one per run."""
        served, batched = bool(self.served), bool(self.batches)
        return RatePoint(self.offered_rate, self.arrived_rate, self.achieved_rate, self.tokens_per_second,
                         self.duration_s, len(self.served) + self.unserved, len(self.served), self.unserved,
                         len(self.batches), self.utilization, self.padding_efficiency,
                         self.queue_s if served else None, self.inference_s if served else None,
                         self.total_s if served else None, self.batch_sizes if batched else None,
                         self.batch_tokens if batched else None, self.new_shape_batches, self.new_shape_share)


def serve(requests: Sequence[Request], batcher: Batcher, service: Service, clock: Clock, offered_rate: float,
          arrival: str = "poisson", seed: int = 0, drain_limit_s: float | None = None,
          new_shape: NewShape | None = None) -> ServingRun:
    """Play `requests` (arrival order, times from the run's start) through `batcher` into `service`.

    The clock never pauses: a batch whose shape is new (`new_shape(batch)`, e.g.
    `forward_service.ModelService.is_new`) is served like any other, its first call (a compile per new length)
    in its requests' latencies and in the worker's busy time, as a server spends it; the run counts those
    batches and their share of the busy time (`new_shape_batches`, `new_shape_share`).

    One worker: a batch is formed only when the previous one has completed. `drain_limit_s` stops an
    overloaded run that long after the last arrival; requests still queued count as `unserved` (their
    latency is unbounded, so `latency_at` is inf). `offered_rate`, `arrival` and `seed` are recorded.
    Raises UserError (up front) when a request is longer than the batch token budget.
    """
    batcher.check_lengths([r.length for r in requests])
    origin = clock.now()
    stop_at = math.inf if drain_limit_s is None or not requests else requests[-1].arrival_s + drain_limit_s
    waiting: list[Request] = []
    served: list[ServedRequest] = []
    batches: list[BatchRun] = []
    arrived = 0

    def admit(now: float) -> None:
        nonlocal arrived
        while arrived < len(requests) and requests[arrived].arrival_s <= now:
            waiting.append(requests[arrived])
            arrived += 1

    def elapsed(at_least: float) -> float:
        # seconds since the start; never less than the time just slept to: (origin + t) - origin can
        # round below t, which would leave the request being waited for not yet arrived
        return max(clock.now() - origin, at_least)

    now = 0.0  # when the worker is next free
    while (arrived < len(requests) or waiting) and now <= stop_at:
        now = elapsed(now)
        admit(now)
        if not waiting:
            clock.sleep_until(origin + requests[arrived].arrival_s)
            now = elapsed(requests[arrived].arrival_s)
            continue
        dispatch = _dispatch_time(batcher, waiting, requests, arrived, now)
        if dispatch > now:
            clock.sleep_until(origin + dispatch)
            now = elapsed(dispatch)
            admit(now)
        chosen = _take(batcher, waiting)
        batch = RequestBatch(tuple(chosen), now, batcher.padded)
        fresh = new_shape is not None and new_shape(batch)
        seconds = service(batch)
        clock.sleep_until(origin + now + seconds)
        done = elapsed(now + seconds)
        served.extend(ServedRequest(r, now, done, len(batches)) for r in chosen)
        batches.append(BatchRun(now, batch.size, batch.tokens, batch.real_tokens, done - now, fresh))
        now = done
    duration = max((s.completion_s for s in served), default=0.0)
    return ServingRun(offered_rate, arrival, seed, batcher, clock.kind, served, batches,
                      unserved=len(requests) - len(served), duration_s=duration,
                      arrival_span_s=requests[-1].arrival_s if requests else 0.0)


def _take(batcher: Batcher, waiting: list[Request]) -> list[Request]:
    """The requests of the batcher's next batch, taken off the queue."""
    chosen = batcher.select(waiting)
    taken = {r.id for r in chosen}
    waiting[:] = [r for r in waiting if r.id not in taken]
    return chosen


def run_load(rate: float, lengths: Sequence[int], batcher: Batcher, service: Service, clock: Clock, seed: int,
             min_requests: int, min_seconds: float, arrival: str = "poisson",
             drain_limit_s: float | None = None, new_shape: NewShape | None = None) -> ServingRun:
    """One load test at `rate` requests/s over a suite's document `lengths`: `loadgen.make_requests`
    (at least `min_requests` arriving over at least `min_seconds`) played through `serve`.

    With everything but the rate bound (functools.partial), it is `highest_rate_meeting`'s `run_at_rate`.
    Raises UserError when a document is longer than the budget, ValueError for a bad rate or counts.
    """
    requests = make_requests(rate, lengths, seed, min_requests, min_seconds, arrival)
    return serve(requests, batcher, service, clock, rate, arrival, seed, drain_limit_s, new_shape)


def _dispatch_time(batcher: Batcher, waiting: list[Request], requests: Sequence[Request], arrived: int,
                   now: float) -> float:
    """When the free worker takes the next batch: now, unless the batch is not full and the oldest
    request has waited less than the maximum wait -- then when a later arrival fills it, or at the
    oldest's arrival + max wait, whichever comes first. `requests[arrived:]` have not arrived yet."""
    if batcher.max_wait_s == 0:
        return now
    deadline = waiting[0].arrival_s + batcher.max_wait_s
    if now >= deadline or batcher.is_full(waiting):
        return now
    trial = list(waiting)
    for request in itertools.islice(requests, arrived, None):
        if request.arrival_s >= deadline:
            break
        trial.append(request)
        if batcher.is_full(trial):
            return request.arrival_s
    return deadline


# ------------------------------------------------------------------------------------------ SLO search

_SLO = re.compile(r"^p(\d+(?:\.\d+)?)=(\d+(?:\.\d+)?)(us|ms|s)$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class Slo:
    """A latency target: the `percentile` (0-100) of total request latency at most `target_s` seconds."""

    percentile: float
    target_s: float

    @classmethod
    def parse(cls, text: str) -> "Slo":
        """'p99=50ms' -> Slo(99, 0.05). Units us, ms, s. Raises UserError for anything else."""
        match = _SLO.match(text.strip().replace(" ", ""))
        if not match or not 0 < float(match.group(1)) < 100 or float(match.group(2)) <= 0:
            raise UserError(f"--slo {text!r}: expected pNN=<time> with 0 < NN < 100 and a positive time "
                            "in us, ms or s, e.g. p99=50ms")
        return cls(float(match.group(1)), float(match.group(2)) * _UNITS[match.group(3)])

    def __str__(self) -> str:
        return f"p{self.percentile:g}<={self.target_s * 1e3:g}ms"


class RateRun(Protocol):
    """What the search reads of a run (a ServingRun; tests pass stand-ins)."""

    def latency_at(self, percentile: float) -> float: ...


@dataclass(frozen=True)
class SloStep:
    rate: float  # offered requests/s
    latency_s: float  # the run's latency at the SLO's percentile (inf: requests unserved)
    met: bool


@dataclass(frozen=True)
class SloSearch:
    """Every step of the search (in run order), the answer, and why there may be none."""

    slo: Slo
    low: float
    high: float
    steps: list[SloStep]
    runs: list = field(default_factory=list, compare=False)  # the full run of every step, same order
    best_rate: float | None = None  # highest rate tried that met the target; None: even `low` missed
    bracket: tuple[float, float | None] = (0.0, None)  # (met, missed): the answer lies between
    note: str = ""


def highest_rate_meeting(slo: Slo, run_at_rate: Callable[[float], RateRun], low: float, high: float,
                         steps: int) -> SloSearch:
    """Bisect the offered rate (requests/s) in [low, high] for the highest one whose latency meets `slo`.

    Runs `low` first (if it misses there is no answer), then `high` (if it meets, the answer is
    `high`, capped), then `steps` bisections between the last rate that met and the first that
    missed, at their geometric mean: rates span decades, so each step halves the *ratio* of the
    bracket (after k steps the answer is within a factor (high/low)^(1/2^k)). Each step is one full
    `run_at_rate(rate)` (which should last at least S seconds). Assumes latency grows with the rate.
    Raises ValueError unless 0 < low < high and steps >= 0.
    """
    if not 0 < low < high or steps < 0:
        raise ValueError(f"need 0 < low < high and steps >= 0, got low={low}, high={high}, steps={steps}")
    trace: list[SloStep] = []
    runs: list = []

    def attempt(rate: float) -> bool:
        run = run_at_rate(rate)
        latency = run.latency_at(slo.percentile)
        trace.append(SloStep(rate, latency, latency <= slo.target_s))
        runs.append(run)
        return trace[-1].met

    if not attempt(low):
        return SloSearch(slo, low, high, trace, runs, None, (0.0, low),
                         f"even the lowest rate, {low:g} requests/s, misses {slo}")
    if attempt(high):
        return SloSearch(slo, low, high, trace, runs, high, (high, None),
                         f"the highest rate tried, {high:g} requests/s, meets {slo}: the answer may be higher")
    met, missed = low, high
    for _ in range(steps):
        middle = math.sqrt(met * missed)
        if attempt(middle):
            met = middle
        else:
            missed = middle
    return SloSearch(slo, low, high, trace, runs, met, (met, missed),
                     f"{met:.4g} requests/s meets {slo}; {missed:.4g} misses")
