"""The payloads of a model measured as a service: per-request `Latency` (closed loop) and `Serving` (open-loop
load). Both share one `ServiceSetup`: how the model was built and served, its cold start and the machine's load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mbbench.records.parts import BuildInfo, EngineInfo, MachineLoad, ParityCheck
from mbbench.records.stats import Percentiles


@dataclass(frozen=True)
class ServiceSetup:
    """What a latency or serving measurement ran: the build, the layout of its batches, the seed of what requests
    draw, at least `min_requests` requests over at least `min_seconds` per point, the timer and the clock, the
    model's cold start (load, then its first forward on one document, apart from every point), what the warmup
    covered and the machine's load around the measurement."""

    build: BuildInfo
    layout: str  # "packed": a batch costs the sum of lengths; "padded": rows x longest
    seed: int  # which documents (and arrivals) requests draw
    min_requests: int
    min_seconds: float
    timer: str  # what times a forward ("cuda-events" on a GPU, else "perf_counter")
    clock: str  # "real" or "virtual" (simulated queueing; service times as measured or known)
    load_seconds: float | None  # model load and move to the device
    first_call_seconds: float | None  # the model's first forward (one document): with load_seconds, the cold start
    warmed: str  # what the warmup covered, in words
    load: MachineLoad | None
    # the engine that ran (issue 33: loaded through `loading`), its accuracy gate (None: the torch engine in fp32 on
    # torch's kernels) and its cold start, export + compile + first call (None: records before it)
    engine: EngineInfo | None = None
    parity: ParityCheck | None = None
    cold_start_seconds: float | None = None


@dataclass(frozen=True)
class LatencyPoint:
    """The closed loop at one batch size (`bench.latency.LatencyRun.point`): the cold call apart (request 0, its
    documents' real tokens), then the timed requests' latency statistics and throughput."""

    batch_size: int
    requests: int
    cold_seconds: float
    cold_real_tokens: int | None  # None: records before it was kept
    elapsed_seconds: float
    real_tokens: int
    requests_per_second: float
    documents_per_second: float
    tokens_per_second: float
    latency_seconds: Percentiles
    shape_warmup_requests: int | None  # timed requests of a new shape, run once untimed first (None: older)


@dataclass(frozen=True)
class KeptPoints:
    """Batch sizes a resumed latency record kept from an interrupted run: when that run's partial record was written
    and the machine's load while it ran (the record's `setup` is the last run's: its cold start, its load)."""

    batch_sizes: list[int]
    created_at: str
    load: MachineLoad | None

    @property
    def named(self) -> str:
        """The kept points for people: 'batch size 1, 2'."""
        return f"batch size {', '.join(map(str, self.batch_sizes))}"


@dataclass(frozen=True)
class KeptRates:
    """Offered rates a resumed serving record kept from an interrupted run (as `KeptPoints` for latency): when that
    run's partial record was written and the machine's load while it ran (the record's `setup` is the last run's)."""

    rates: list[float]  # requests/s offered
    created_at: str
    load: MachineLoad | None

    @property
    def named(self) -> str:
        """The kept rates for people: 'rate 5/s, 40/s'."""
        return f"rate {', '.join(f'{r:g}/s' for r in self.rates)}"


@dataclass(frozen=True)
class Latency:
    """Closed-loop per-request latency at batch sizes 1, 2, 4, ..., each request drawing its documents from the
    suite (seeded); at least `setup.min_requests` timed requests and `setup.min_seconds` per batch size."""

    kind: ClassVar[str] = "latency"
    setup: ServiceSetup
    points: list[LatencyPoint]
    warmup_requests: int  # per batch size: untimed requests after the cold call, before the timed ones
    planned_batch_sizes: list[int] | None = None  # what the command asked for (None: records before it was kept)
    kept: list[KeptPoints] | None = None  # points measured by earlier, interrupted runs (None: all by this one)

    @property
    def batch_sizes(self) -> list[int]:
        return [p.batch_size for p in self.points]

    @property
    def complete(self) -> bool:
        """False when Ctrl-C stopped it before every planned batch size was measured (a rerun measures the rest)."""
        return self.planned_batch_sizes is None or set(self.planned_batch_sizes) <= set(self.batch_sizes)

    def point(self, batch_size: int) -> LatencyPoint:
        """The point of `batch_size`; KeyError when it was not measured."""
        for point in self.points:
            if point.batch_size == batch_size:
                return point
        raise KeyError(f"batch size {batch_size} not measured (measured: {self.batch_sizes})")


@dataclass(frozen=True)
class RatePoint:
    """One offered rate of a load test (`bench.serving.ServingRun.point`): the rates offered, drawn and achieved
    (requests/s), real tokens/s, requests served and unserved, batches, the worker's busy share, padding
    efficiency, the batches of a shape not run before (served with their first call) and their share of the busy
    time, and per-request seconds in the queue, in inference and in total, with the batches' sizes and tokens.
    None where nothing was served (or, for older records, not recorded)."""

    offered_rate: float
    arrived_rate: float | None
    achieved_rate: float
    tokens_per_second: float
    duration_seconds: float
    requests: int
    served: int
    unserved: int
    batches: int
    utilization: float
    padding_efficiency: float
    queue_seconds: Percentiles | None
    inference_seconds: Percentiles | None
    total_seconds: Percentiles | None
    batch_size: Percentiles | None  # requests per batch
    batch_tokens: Percentiles | None  # tokens per batch (padded when padded)
    new_shape_batches: int | None
    new_shape_share: float | None


@dataclass(frozen=True)
class SloPoint:
    """One rate the SLO search tried: the percentile's latency there (None: requests went unserved) and whether it
    met the target."""

    rate: float
    latency_seconds: float | None
    met: bool


@dataclass(frozen=True)
class SloSummary:
    """The highest offered rate whose latency percentile met a target (`serve.search_summary`): the search's
    bracket and steps, the answer (None: even the lowest rate missed) with what its run achieved, and what the
    percentile rests on (the fewest requests a step served, how many lie beyond it, how many would put one)."""

    percentile: float
    target_seconds: float
    low: float
    high: float
    best_rate: float | None
    bracket: list[float | None]
    note: str
    steps: list[SloPoint]
    best_achieved_rate: float | None
    best_tokens_per_second: float | None
    fewest_requests: int | None  # None: records before it was kept
    beyond_percentile: int | None
    requests_needed: int | None
    # False: Ctrl-C stopped the search; `steps` are those it finished, `best_rate` and `bracket` claim nothing, and
    # the same command resumes it (`serve.measure`)
    finished: bool = True


@dataclass(frozen=True)
class Serving:
    """An in-process load test: open-loop arrivals at offered rates through a dynamic batcher into one worker, and
    optionally the highest rate meeting a latency target (`slo`)."""

    kind: ClassVar[str] = "serving"
    setup: ServiceSetup
    arrival: str  # "poisson" or "constant"
    max_batch_tokens: int  # the batcher's token budget
    max_batch_requests: int | None  # None: the budget alone limits a batch
    max_wait_seconds: float  # how long a non-full batch may wait for more requests
    sort_by_length: bool
    runs: list[RatePoint]  # in run order (a resumed record's kept runs where an uninterrupted run would have them)
    slo: SloSummary | None
    drain_limit_seconds: float | None  # an overloaded run stops this long after its last arrival
    planned_rates: list[float] | None = None  # the --rate the command asked for (None: records before it was kept)
    kept: list[KeptRates] | None = None  # runs measured by earlier, interrupted runs (None: all by this one)

    @property
    def rates(self) -> list[float]:
        return [r.offered_rate for r in self.runs]

    @property
    def complete(self) -> bool:
        """False when Ctrl-C stopped it before every planned rate was run or before its SLO search finished (a
        rerun measures the rest)."""
        rates_done = self.planned_rates is None or set(self.planned_rates) <= set(self.rates)
        return rates_done and (self.slo is None or self.slo.finished)

    def run(self, rate: float) -> RatePoint:
        """The run at offered `rate` requests/s; KeyError when it was not run."""
        for run in self.runs:
            if run.offered_rate == rate:
                return run
        raise KeyError(f"rate {rate:g}/s not run (run: {self.rates})")

    @property
    def best_rate(self) -> float | None:
        return self.slo.best_rate if self.slo else None
