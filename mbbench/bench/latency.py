"""Per-request latency: percentile statistics and a closed-loop timing loop.

Closed loop: one request at a time, the next sent when the previous returns, as optimum-benchmark's
inference scenario measures latency (at least N iterations *and* S seconds; the first, cold call --
allocator warm-up, autotuning, compilation -- reported apart). A loop's latencies give p50, p90,
p95, p99, mean and stdev; requests/s and tokens/s follow from the loop's total time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, TypeVar

import numpy as np

from mbbench.bench.clock import Clock
from mbbench.bench.throughput import batch_shape
from mbbench.records import PERCENTILES, LatencyPoint, Percentiles, samples_needed

def few_samples_note(stats: Percentiles, shown: Sequence[float], unit: str) -> str:
    """'' when each percentile in `shown` has a sample beyond it; else ' (p95, p99 of 10 requests: none beyond
    them, they are the largest; 100 put one beyond p99)'."""
    bare = [p for p in shown if stats.is_largest(p)]
    if not bare:
        return ""
    names = ", ".join(f"p{p:g}" for p in bare)
    return (f" ({names} of {stats.count} {unit}: none beyond {'them' if len(bare) > 1 else 'it'}, the largest; "
            f"{samples_needed(max(bare))} put one beyond p{max(bare):g})")


def shown_percentile(stats: Percentiles, percentile: int, scale: float = 1e3) -> str:
    """A stored percentile for people (milliseconds by default), '≈max' after one with no sample beyond it."""
    value = f"{stats.at(percentile) * scale:,.1f}"
    return value + " ≈max" if stats.is_largest(percentile) else value


def percentiles(samples: Sequence[float]) -> Percentiles:
    """Percentiles, mean, stdev, min, max and count of `samples`. Raises ValueError when empty."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no samples to summarize")
    p50, p90, p95, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
    stdev = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return Percentiles(int(values.size), float(values.mean()), stdev, float(values.min()), p50, p90, p95, p99,
                       float(values.max()))


class Sized(Protocol):
    """What a latency loop needs to know of a request: mbbench's PaddedBatch and PackedBatch qualify."""

    @property
    def real_tokens(self) -> int: ...

    @property
    def num_documents(self) -> int: ...


R = TypeVar("R", bound=Sized)


@dataclass(frozen=True)
class LatencyRun:
    """A closed loop's latencies at one batch size. Seconds throughout; the cold call is not a sample."""

    batch_size: int  # documents per request
    cold_s: float  # the first call, apart
    latencies_s: list[float]  # one per timed request, in order
    elapsed_s: float  # wall (or virtual) time of the timed requests, back to back
    real_tokens: int  # real tokens over the timed requests
    clock: str  # "real" or "virtual"
    shape_warmups: int = 0  # untimed calls run because a timed request's shape had not run before
    cold_real_tokens: int = 0  # real tokens of request 0, the cold call's (other documents than the timed ones)

    @property
    def stats(self) -> Percentiles:
        return percentiles(self.latencies_s)

    @property
    def requests_per_second(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s > 0 else float("inf")

    @property
    def documents_per_second(self) -> float:
        return self.requests_per_second * self.batch_size

    @property
    def tokens_per_second(self) -> float:
        return self.real_tokens / self.elapsed_s if self.elapsed_s > 0 else float("inf")

    def point(self) -> LatencyPoint:
        """The summary (no raw samples) the `Latency` payload stores per batch size."""
        return LatencyPoint(self.batch_size, len(self.latencies_s), self.cold_s, self.cold_real_tokens, self.elapsed_s,
                            self.real_tokens, self.requests_per_second, self.documents_per_second,
                            self.tokens_per_second, self.stats, self.shape_warmups)


def timed_call(call: Callable[[R], float], request: R, clock: Clock) -> float:
    """Seconds one call takes on `clock`: at least what `call` returns (its own measure of the forward).

    A virtual clock advances by the returned seconds; a real clock has already spent them, and its
    reading (host overhead and synchronisation included: what a client waits) is what counts.
    """
    start = clock.now()
    seconds = call(request)
    clock.sleep_until(start + seconds)
    return max(clock.now() - start, seconds)  # (start + s) - start can round below s


def measure_latency(call: Callable[[R], float], make_request: Callable[[int], R], min_requests: int,
                    min_seconds: float, clock: Clock, batch_size: int = 1, warmup: Sequence[R] = (),
                    on_request: Callable[[int, float, float], None] | None = None) -> LatencyRun:
    """Closed-loop latency: one cold call, the `warmup` requests (untimed), then requests until
    >= `min_requests` and >= `min_seconds`.

    A timed request never meets a shape for the first time: work that belongs to warmup (flex compiling per
    total length, kernel selection, the allocator growing) would land in its latency. So before a request
    whose shape (`throughput.batch_shape`) has not run yet, the request runs once untimed (`shape_warmups`).

    `make_request(i)` builds request i (e.g. a batch of `batch_size` suite documents, on the device,
    made before its call so building it is not timed); `call(request)` runs it to completion and
    returns its seconds (a fake model's known time; with a real model, `timing.timed` of the
    forward). The cold call uses request 0; timed requests are 1, 2, ... `on_request(count, seconds, elapsed)`, when
    given, is called after every timed request (for progress: requests timed so far, this one's and all their
    seconds). Raises ValueError for min_requests < 1 or min_seconds < 0.
    """
    if min_requests < 1 or min_seconds < 0:
        raise ValueError(f"need min_requests >= 1 and min_seconds >= 0, got {min_requests}, {min_seconds}")
    first = make_request(0)
    cold = timed_call(call, first, clock)
    seen = {batch_shape(first)}
    for request in warmup:
        call(request)
        seen.add(batch_shape(request))
    latencies: list[float] = []
    tokens, elapsed, index, shape_warmups = 0, 0.0, 1, 0
    while len(latencies) < min_requests or elapsed < min_seconds:
        request = make_request(index)
        if batch_shape(request) not in seen:
            call(request)  # untimed: on a virtual clock its seconds never advance the time either
            seen.add(batch_shape(request))
            shape_warmups += 1
        seconds = timed_call(call, request, clock)
        latencies.append(seconds)
        tokens += request.real_tokens
        elapsed += seconds
        index += 1
        if on_request:
            on_request(len(latencies), seconds, elapsed)
    return LatencyRun(batch_size, cold, latencies, elapsed, tokens, clock.kind, shape_warmups, first.real_tokens)
