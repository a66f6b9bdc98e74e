"""`mbbench serve`: an in-process load test of one plan's model -> a `Serving` record (issue 28).

At each offered rate, open-loop Poisson arrivals (seeded) carry one suite document each into a dynamic
batcher (TEI's token budget, 16384, and no wait by default) feeding the model on one worker
(`bench.serving.run_load`). The unpadded reference model's batches cost the sum of their lengths and run
packed; a padded model's cost rows x longest and run padded to the longest (sorted by length first with
--sort-by-length, as infinity does). With an SLO, the highest rate meeting it is bisected between the
lowest and highest rate asked for, each step a full run (`bench.serving.highest_rate_meeting`).

The clock is real by default: requests arrive in real time and a request's inference time is the wall time
of its batch (assembly, host-to-device copy and forward: what a server spends). `--clock virtual` replays the
same arrivals as a discrete-event simulation over measured forward times (idle time skipped, so faster, but
batch assembly and copies are not in it); the record says which. The model runs on the plan's engine, loaded through
`loading` (threads, kernels, the accuracy gate); its cold start is recorded apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from mbbench import loading
from mbbench.bench.batcher import TEI_MAX_BATCH_TOKENS, TEI_MAX_WAIT_S, Batcher, RequestBatch
from mbbench.bench.clock import RealClock, VirtualClock
from mbbench.bench.forward_service import ModelService, model_service
from mbbench.bench.latency import few_samples_note
from mbbench.bench.loadgen import MAX_RATE, MAX_REQUESTS, MAX_SECONDS, make_requests
from mbbench.bench.serving import ServingRun, Slo, SloSearch, highest_rate_meeting, run_load
from mbbench.errors import UserError
from mbbench.latency import cold_start_text, service_batches
from mbbench.loading import LoadedModel
from mbbench.plan import Plan, record, unsupported_record
from mbbench.records import (MachineLoad, Record, Serving, SloPoint, SloSummary, samples_beyond,
                             samples_needed)
from mbbench.runner import watch_load

DEFAULT_DURATION_S = 10.0  # optimum-benchmark's duration = 10 s: every rate runs at least this long
DEFAULT_MIN_REQUESTS = 100  # and serves at least this many: one request beyond p99 (optimum-benchmark's is 10)
DEFAULT_WARMUP = 10  # optimum-benchmark's warmup_runs = 10
DEFAULT_SEARCH_STEPS = 3  # bisections after the bracket's ends: the answer within (high/low)^(1/8)
CLOCKS = {"real": RealClock, "virtual": VirtualClock}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ServeSettings:
    """What a load test runs besides the plan: all of it changes the numbers (the record's `traffic`)."""

    rates: tuple[float, ...]  # offered requests/s, run in this order
    duration_s: float = DEFAULT_DURATION_S  # arrivals span at least this many seconds per rate ...
    min_requests: int = DEFAULT_MIN_REQUESTS  # ... and number at least this many
    max_batch_tokens: int = TEI_MAX_BATCH_TOKENS
    max_batch_requests: int | None = None
    max_wait_s: float = TEI_MAX_WAIT_S
    sort_by_length: bool = False
    slo: Slo | None = None
    search_steps: int = DEFAULT_SEARCH_STEPS
    clock: str = "real"
    seed: int = 0  # arrivals and documents
    warmup: int = DEFAULT_WARMUP
    drain_limit_s: float | None = None  # None: one duration (an overloaded run stops that long after its last arrival)

    def __post_init__(self) -> None:
        """Raise UserError for any value no run could honour (before anything is built or written)."""
        if not self.rates or not all(math.isfinite(r) and r > 0 for r in self.rates):
            raise UserError(f"--rate must be a positive, finite number of requests/s, got {list(self.rates)}")
        if len(set(self.rates)) != len(self.rates):
            raise UserError(f"--rate given twice: {list(self.rates)}")
        if max(self.rates) > MAX_RATE:
            raise UserError(f"--rate {max(self.rates):g} requests/s is beyond any load mbbench generates "
                            f"(at most {MAX_RATE:,.0f})")
        if not (math.isfinite(self.duration_s) and 0 < self.duration_s <= MAX_SECONDS):
            raise UserError(f"--duration must be a positive number of seconds up to {MAX_SECONDS:,.0f} (a day), "
                            f"got {self.duration_s}")
        if not 1 <= self.min_requests <= MAX_REQUESTS:
            raise UserError(f"--requests must be between 1 and {MAX_REQUESTS:,}, got {self.min_requests}")
        if max(self.rates) * self.duration_s > MAX_REQUESTS:
            raise UserError(f"--rate {max(self.rates):g} for --duration {self.duration_s:g} s makes "
                            f"{max(self.rates) * self.duration_s:,.0f} requests; a run holds at most {MAX_REQUESTS:,}")
        if self.max_batch_tokens < 1:
            raise UserError(f"--max-batch-tokens must be at least 1, got {self.max_batch_tokens}")
        if self.max_batch_requests is not None and self.max_batch_requests < 1:
            raise UserError(f"--max-batch-requests must be at least 1, got {self.max_batch_requests}")
        if not (math.isfinite(self.max_wait_s) and self.max_wait_s >= 0):
            raise UserError(f"--max-wait must be a finite number of milliseconds >= 0, got {self.max_wait_s * 1e3:g}")
        if self.slo is not None and len(self.rates) < 2:
            raise UserError("--slo searches between the lowest and the highest --rate: give at least two rates")
        if self.search_steps < 0:
            raise UserError(f"--search-steps must be 0 or more, got {self.search_steps}")
        if self.clock not in CLOCKS:
            raise UserError(f"--clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.drain_limit_s is not None and not (math.isfinite(self.drain_limit_s) and self.drain_limit_s >= 0):
            raise UserError(f"--drain-limit must be a finite number of seconds >= 0, got {self.drain_limit_s}")

    @property
    def drain_s(self) -> float:
        return self.duration_s if self.drain_limit_s is None else self.drain_limit_s

    def batcher(self, padded: bool) -> Batcher:
        """The batching policy for a model of this layout (padded: rows x longest; packed: the sum)."""
        return Batcher(self.max_batch_tokens, self.max_batch_requests, self.max_wait_s, padded, self.sort_by_length)

    def traffic(self) -> tuple:
        """(name, value) pairs for `plan.resolve(..., traffic=...)`: the identity's share of these settings."""
        slo = None if self.slo is None else f"p{self.slo.percentile:g}={self.slo.target_s:g}s"
        return (("rates", tuple(float(r) for r in self.rates)), ("duration_s", float(self.duration_s)),
                ("min_requests", self.min_requests), ("max_batch_tokens", self.max_batch_tokens),
                ("max_batch_requests", self.max_batch_requests), ("max_wait_s", float(self.max_wait_s)),
                ("sort_by_length", self.sort_by_length), ("slo", slo),
                ("search_steps", self.search_steps if self.slo else None), ("arrival", "poisson"),
                ("clock", self.clock), ("seed", self.seed), ("warmup", self.warmup),
                ("drain_limit_s", float(self.drain_s)))


def check_lengths(plan: Plan, settings: ServeSettings) -> None:
    """UserError when a document the requests can draw is longer than the token budget (no batch could hold it)."""
    settings.batcher(padded=not plan.spec.unpadded).check_lengths(plan.suite.lengths[:plan.documents])


def measure(plan: Plan, settings: ServeSettings, progress: Progress | None = None) -> Record:
    """Load-test one plan's model at each offered rate (and search the SLO's highest rate); its record.

    The plan must come from `plan.resolve(config, "serving", traffic=settings.traffic())`. Raises UserError
    when a document exceeds the token budget, and whatever building, preparing or running the model raises,
    ParityFailure included.
    """
    reason = plan.unsupported_reason()
    if reason:
        return unsupported_record(plan, reason)
    check_lengths(plan, settings)
    model = loading.load(plan.model_plan, lambda encoder: service_batches(plan, encoder, largest_rows(plan, settings)),
                         progress)
    batcher = settings.batcher(model.padded)
    service = model_service(model.engine, plan.suite.document, model.padded, model.device, model.encoder.pad_token_id)
    warm(service, plan, batcher, settings)
    if progress:
        progress(f"cold start: {cold_start_text(model)}; {model.encoder.layout} batches, budget "
                 f"{batcher.max_batch_tokens} tokens, {settings.clock} clock")
    machine = watch_load(plan, model.busy_threads)
    runs, search = run_rates(plan, settings, batcher, service, progress)
    return record(plan, serving_payload(model, settings, batcher, list(runs.values()), search, machine()))


def largest_rows(plan: Plan, settings: ServeSettings) -> int:
    """The most copies of the longest document used that one batch can hold (the budget's, capped by
    --max-batch-requests): the largest shape the batcher can form, for an exporting engine's host-memory check."""
    longest = max(plan.suite.lengths[:plan.documents])
    rows = max(1, settings.max_batch_tokens // longest)
    return min(rows, settings.max_batch_requests) if settings.max_batch_requests else rows


def run_rates(plan: Plan, settings: ServeSettings, batcher: Batcher, service: ModelService,
              progress: Progress | None) -> tuple[dict[float, ServingRun], SloSearch | None]:
    """A load test at each offered rate, then the SLO's bisection (whose ends are usually rates already run: the
    same seeded run, not run again)."""
    runs: dict[float, ServingRun] = {}
    lengths = plan.suite.lengths[:plan.documents]

    def run_at_rate(rate: float) -> ServingRun:
        if rate not in runs:
            runs[rate] = run_load(rate, lengths, batcher, service, CLOCKS[settings.clock](), settings.seed,
                                  settings.min_requests, settings.duration_s, drain_limit_s=settings.drain_s,
                                  new_shape=service.is_new)  # served as it comes: counted, never paused
            if progress:
                progress(describe_run(runs[rate]))
        return runs[rate]

    for rate in settings.rates:
        run_at_rate(rate)
    search = None
    if settings.slo is not None:
        search = highest_rate_meeting(settings.slo, run_at_rate, min(settings.rates), max(settings.rates),
                                      settings.search_steps)
        if progress:
            progress(f"SLO {settings.slo}: {search.note}")
    return runs, search


def serving_payload(model: LoadedModel, settings: ServeSettings, batcher: Batcher, runs: list[ServingRun],
                    search: SloSearch | None, load: MachineLoad) -> Serving:
    """The record's numbers: each rate's run, the SLO's answer, and how the model was served
    (`LoadedModel.service_setup`)."""
    setup = model.service_setup(settings.seed, settings.min_requests, settings.duration_s, settings.clock,
                                warmed_description(settings.warmup), load)
    return Serving(setup=setup, arrival="poisson",
                   max_batch_tokens=batcher.max_batch_tokens, max_batch_requests=batcher.max_batch_requests,
                   max_wait_seconds=batcher.max_wait_s, sort_by_length=batcher.sort_by_length,
                   runs=[run.point() for run in runs], slo=search_summary(search) if search else None,
                   drain_limit_seconds=settings.drain_s)


def warm(service: ModelService, plan: Plan, batcher: Batcher, settings: ServeSettings) -> None:
    """Untimed, before any run: each of the first `warmup` requests of the lowest rate alone, then the batch the
    batcher forms from all of them queued together (a bounded set of shapes: those a light load sends first, and
    a fuller batch). Through `service`, so a run does not count these shapes as new."""
    if settings.warmup == 0:
        return
    requests = make_requests(min(settings.rates), plan.suite.lengths[:plan.documents], settings.seed,
                             settings.warmup, 0.0)[:settings.warmup]
    for chosen in [[r] for r in requests] + [batcher.select(requests)]:
        service(RequestBatch(tuple(chosen), 0.0, batcher.padded))


NEW_SHAPES = ("; during a run a batch of a shape not yet run is served as it comes, its first call in its requests' "
              "latencies, the clock never paused (each run's new_shape_batches and new_shape_share)")


def warmed_description(count: int) -> str:
    """What `warm` and the runs' shape warmups ran, in words (the record says it)."""
    if count == 0:
        return "the first call" + NEW_SHAPES
    return (f"the first call, then the first {count} requests of the lowest rate one by one and the batch the "
            "batcher forms from all of them queued together (untimed)") + NEW_SHAPES


def search_summary(search: SloSearch) -> SloSummary:
    """The search's bracket, steps and answer, the achieved throughput of the answer's run (requests/s and
    tokens/s), and what its percentile rests on: the fewest requests a step served, how many of them lie beyond
    the percentile (0: the percentile was their largest) and how many would put one beyond it."""
    best = next((run for run in search.runs if run.offered_rate == search.best_rate), None)
    fewest = min((len(run.served) for run in search.runs), default=0)  # the step whose percentile rests on least
    steps = [SloPoint(step.rate, step.latency_s if math.isfinite(step.latency_s) else None, step.met)
             for step in search.steps]
    return SloSummary(search.slo.percentile, search.slo.target_s, search.low, search.high, search.best_rate,
                      list(search.bracket), search.note, steps, best.achieved_rate if best else None,
                      best.tokens_per_second if best else None, fewest,
                      samples_beyond(fewest, search.slo.percentile), samples_needed(search.slo.percentile))


def slo_basis(slo: SloSummary) -> str:
    """'' when each step's SLO percentile had a request beyond it; else what the answer rests on: '; judged on
    the largest latency: p99 of 10 requests has none beyond it (100 would put one)'."""
    if slo.beyond_percentile is None or slo.beyond_percentile >= 1:
        return ""
    return (f"; judged on the largest latency: p{slo.percentile:g} of {slo.fewest_requests} requests has none "
            f"beyond it ({slo.requests_needed} would put one)")


def describe_run(run: ServingRun) -> str:
    """One progress line: offered, arrived (the seeded draw) and achieved rates, whether every request was served,
    total latency percentiles (with how many requests they rest on), batches and their new shapes."""
    arrived = f"rate {run.offered_rate:g}/s offered, {run.arrived_rate:.3g}/s arrived"
    if not run.served:
        return f"{arrived}: nothing served"
    total = run.total_s
    served = (f"{run.unserved} unserved (overloaded)" if run.unserved else "all served")
    return (f"{arrived}: {len(run.served)} served at {run.achieved_rate:.3g}/s ({served}), total p50 "
            f"{total.p50 * 1e3:.0f} ms p99 {total.p99 * 1e3:.0f} ms{few_samples_note(total, (99,), 'requests')}, "
            f"{len(run.batches)} batches, {run.new_shape_batches} of a new shape "
            f"({run.new_shape_share:.0%} of busy time)")
