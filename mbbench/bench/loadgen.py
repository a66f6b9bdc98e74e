"""Open-loop load: seeded arrival times and the suite documents each request carries.

Open loop means arrivals do not wait for answers (a real client population does not slow down
when the server is slow), so queueing delay shows up in latency instead of hiding in a lower
offered rate -- the load model of TEI's and k6's constant-arrival-rate tests. Arrivals are Poisson
(exponential gaps, the M in M/D/1) or evenly spaced ("constant"); documents are drawn uniformly
from the suite's documents. Both come from numpy Generators seeded from `seed` with separate
streams, so request i carries the same document at every rate and the same seed reproduces a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

ARRIVALS = ("poisson", "constant")
_ARRIVAL_STREAM, _DOCUMENT_STREAM = 0, 1  # numpy seed sequences [seed, stream]: independent draws

# The largest traffic one command generates: every request is held in memory with its times, so the counts are
# bounded before anything is built (a day at a million requests/s would need terabytes).
MAX_REQUESTS = 10_000_000
MAX_SECONDS = 86_400.0  # one day
MAX_RATE = 1_000_000.0  # requests/s


@dataclass(frozen=True)
class Request:
    """One request of one document: `arrival_s` seconds after the run started, `length` tokens."""

    id: int  # position in arrival order
    arrival_s: float
    document: int  # index into the suite's documents
    length: int  # tokens (the suite's length of that document)


def arrival_times(rate: float, min_requests: int, min_seconds: float, seed: int,
                  process: str = "poisson") -> np.ndarray:
    """Arrival times in seconds (float64, increasing, shape (n,)) at `rate` requests/s.

    n is the smallest count with at least `min_requests` arrivals and the last arrival at or past
    `min_seconds` (optimum-benchmark's rule: at least N iterations and S seconds). "poisson" draws
    exponential gaps of mean 1/rate (first arrival after one gap); "constant" spaces them 1/rate.
    Raises ValueError for rate <= 0, min_requests < 1, min_seconds < 0 or an unknown process.
    """
    if not rate > 0:
        raise ValueError(f"rate must be positive requests/s, got {rate}")
    if min_requests < 1 or min_seconds < 0:
        raise ValueError(f"need min_requests >= 1 and min_seconds >= 0, got {min_requests}, {min_seconds}")
    if process not in ARRIVALS:
        raise ValueError(f"arrival process {process!r} not in {ARRIVALS}")
    count = max(min_requests, int(np.ceil(min_seconds * rate)) + 1)
    if process == "constant":
        times = np.arange(1, count + 1, dtype=np.float64) / rate
    else:
        rng = np.random.default_rng([seed, _ARRIVAL_STREAM])
        times = np.cumsum(rng.exponential(1.0 / rate, size=count))
        while times[-1] < min_seconds:  # a slow draw: extend the same stream until S seconds are covered
            more = np.cumsum(rng.exponential(1.0 / rate, size=max(16, count // 8))) + times[-1]
            times = np.concatenate([times, more])
    # the smallest count: the draws above may overshoot (by up to 16 arrivals at a low rate, minutes of them)
    covered = int(np.searchsorted(times, min_seconds)) + 1  # up to the first arrival at or past min_seconds
    return times[:max(min_requests, covered)]


def document_draws(count: int, num_documents: int, seed: int) -> np.ndarray:
    """`count` document indices drawn uniformly from [0, num_documents) (int64, shape (count,)).

    A prefix does not depend on `count`: request i gets the same document in a longer run.
    """
    if num_documents < 1:
        raise ValueError("no documents to draw requests from")
    return np.random.default_rng([seed, _DOCUMENT_STREAM]).integers(0, num_documents, size=count)


def make_requests(rate: float, lengths: Sequence[int], seed: int, min_requests: int, min_seconds: float,
                  process: str = "poisson") -> list[Request]:
    """Requests at `rate` requests/s, each carrying one document of a suite with these `lengths`.

    See `arrival_times` for how many; raises ValueError as it does, or for an empty `lengths`.
    """
    times = arrival_times(rate, min_requests, min_seconds, seed, process)
    documents = document_draws(len(times), len(lengths), seed)
    return [Request(i, float(t), int(d), int(lengths[d])) for i, (t, d) in enumerate(zip(times, documents))]


def request_documents(index: int, batch_size: int, num_documents: int, seed: int) -> list[int]:
    """The documents of closed-loop request `index` at `batch_size` (uniform, with replacement).

    Seeded per request ([seed, batch_size, index]) so request i is the same whatever ran before it.
    """
    rng = np.random.default_rng([seed, batch_size, index])
    return rng.integers(0, num_documents, size=batch_size).tolist()
