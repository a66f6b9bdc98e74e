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

Ctrl-C keeps the rates already run (and an SLO search's finished steps) as a partial record; the same command runs
only the rest, the search replaying its steps from the kept runs (`RateRuns`, `KeptRun`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from mbbench import loading
from mbbench.bench.batcher import TEI_MAX_BATCH_TOKENS, TEI_MAX_WAIT_S, Batcher, RequestBatch
from mbbench.bench.clock import RealClock, VirtualClock
from mbbench.bench.forward_service import ModelService, model_service
from mbbench.bench.latency import few_samples_note
from mbbench.bench.loadgen import MAX_RATE, MAX_REQUESTS, MAX_SECONDS, make_requests
from mbbench.bench.serving import ServingRun, Slo, SloSearch, SloStep, highest_rate_meeting, run_load
from mbbench.errors import Interrupted, UserError
from mbbench.latency import cold_start_text, service_batches
from mbbench.loading import LoadedModel
from mbbench.plan import Plan, record, unsupported_record
from mbbench.records import (KeptRates, MachineLoad, RatePoint, Record, Serving, SloPoint, SloSummary,
                             samples_beyond, samples_needed)
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


def measure(plan: Plan, settings: ServeSettings, progress: Progress | None = None,
            earlier: Record | None = None) -> Record:
    """Load-test one plan's model at each offered rate (and search the SLO's highest rate); its record.

    The plan must come from `plan.resolve(config, "serving", traffic=settings.traffic())`. `earlier`, a partial
    serving record of the same identity, keeps its runs: a rate it ran is not run again wherever it can answer
    what is asked of it (`RateRuns`), and the record's `kept` says which runs an earlier run measured, when and
    under what load (its setup, cold start and machine load are this run's). Ctrl-C once a rate has a run raises
    `errors.Interrupted` with the partial record (the store writes it; an SLO search in progress keeps its steps,
    `finished` False, no answer claimed); before that, KeyboardInterrupt. Raises UserError when a document exceeds
    the token budget, and whatever building, preparing or running the model raises, ParityFailure included.
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
    rates = RateRuns(plan, settings, batcher, service, progress, kept_runs(earlier))
    if rates.kept and progress:
        progress(f"kept from the interrupted run: rate {', '.join(f'{rate:g}/s' for rate in rates.kept)}")
    machine = watch_load(plan, model.busy_threads)
    try:
        search = rates.run()
    except KeyboardInterrupt:
        if rates.runs or rates.kept:  # what finished is kept: the store writes it, a rerun measures the rest
            runs = rates.partial_runs()
            raise Interrupted(record(plan, serving_payload(model, settings, batcher, runs, rates.unfinished_search(),
                                                           machine(), kept_rates(earlier, runs)))) from None
        raise
    runs = list(rates.runs.values())
    return record(plan, serving_payload(model, settings, batcher, runs, search_summary(search) if search else None,
                                        machine(), kept_rates(earlier, runs)))


def largest_rows(plan: Plan, settings: ServeSettings) -> int:
    """The most copies of the longest document used that one batch can hold (the budget's, capped by
    --max-batch-requests): the largest shape the batcher can form, for an exporting engine's host-memory check."""
    longest = max(plan.suite.lengths[:plan.documents])
    rows = max(1, settings.max_batch_tokens // longest)
    return min(rows, settings.max_batch_requests) if settings.max_batch_requests else rows


@dataclass(frozen=True)
class KeptRun:
    """A rate an earlier, interrupted run measured (its `RatePoint`), standing in for a `ServingRun` where the
    resumed command asks for that rate: the same seeded arrivals, so not run again."""

    kept: RatePoint
    step_latency_s: float | None = None  # the SLO percentile's latency there, when the earlier search had asked it

    @property
    def offered_rate(self) -> float:
        return self.kept.offered_rate

    def point(self) -> RatePoint:
        return self.kept

    def latency_at(self, percentile: float) -> float:
        """Total latency at the SLO's `percentile` in seconds (inf when a request went unserved), as the earlier
        search found it, else from the stored percentiles; KeyError when the point does not store that one."""
        if self.step_latency_s is not None:
            return self.step_latency_s
        if self.kept.unserved or self.kept.total_seconds is None:
            return math.inf
        return self.kept.total_seconds.at(percentile)

    def answers(self, slo: Slo | None) -> bool:
        """Whether the SLO search (if any) can read this run's latency at its percentile."""
        try:
            return slo is None or self.latency_at(slo.percentile) >= 0
        except KeyError:
            return False


def kept_runs(earlier: Record | None) -> dict[float, KeptRun]:
    """The runs of the partial serving record `earlier` by offered rate, each with its SLO search step's latency
    when the earlier search had asked for it (a step's None is inf: requests went unserved)."""
    if earlier is None:
        return {}
    payload: Serving = earlier.payload
    steps = {s.rate: math.inf if s.latency_seconds is None else s.latency_seconds
             for s in (payload.slo.steps if payload.slo else [])}
    return {run.offered_rate: KeptRun(run, steps.get(run.offered_rate)) for run in payload.runs}


def kept_rates(earlier: Record | None, runs: list) -> list[KeptRates] | None:
    """Where the `KeptRun`s among `runs` were measured: the runs `earlier` had kept in turn, then `earlier`'s own
    run (its creation time and machine load), as `latency.kept_points` does for batch sizes; None when none is."""
    rates = {run.offered_rate for run in runs if isinstance(run, KeptRun)}
    if earlier is None or not rates:
        return None
    payload: Serving = earlier.payload
    before = [KeptRates([r for r in k.rates if r in rates], k.created_at, k.load) for k in payload.kept or []]
    kept_before = {r for k in before for r in k.rates}
    own = KeptRates([r for r in payload.rates if r in rates - kept_before], earlier.created_at, payload.setup.load)
    return [k for k in [*before, own] if k.rates]


@dataclass
class RateRuns:
    """One measurement's runs by offered rate, in the order first asked for: the `--rate` list, then the SLO
    search's steps (whose ends are usually rates already run: the same seeded run, not run again). A rate an
    earlier, interrupted run kept is taken from `kept` when it can answer the search, so a resumed command asks
    for the rates an uninterrupted one would. Not quite what it would measure there: the resuming process starts
    cold, so batch shapes the kept rates had warmed are new again and their first calls land in the remaining rates
    (docs/benchmarking.md says so)."""

    plan: Plan
    settings: ServeSettings
    batcher: Batcher
    service: ModelService
    progress: Progress | None
    kept: dict[float, KeptRun]
    runs: dict[float, ServingRun | KeptRun] = field(default_factory=dict)
    asked: list[float] = field(default_factory=list)  # the SLO search's rates so far, in its order

    def at_rate(self, rate: float) -> ServingRun | KeptRun:
        """The run at `rate` requests/s: asked before, kept, or run now."""
        if rate in self.runs:
            return self.runs[rate]
        kept = self.kept.get(rate)
        if kept is not None and kept.answers(self.settings.slo):
            self.runs[rate] = kept
            return kept
        if kept is not None and self.progress:
            self.progress(f"rate {rate:g}/s runs again: its kept run does not store the SLO's "
                          f"p{self.settings.slo.percentile:g}")
        settings, lengths = self.settings, self.plan.suite.lengths[:self.plan.documents]
        run = run_load(rate, lengths, self.batcher, self.service, CLOCKS[settings.clock](), settings.seed,
                       settings.min_requests, settings.duration_s, drain_limit_s=settings.drain_s,
                       new_shape=self.service.is_new)  # served as it comes: counted, never paused
        self.runs[rate] = run
        if self.progress:
            self.progress(describe_run(run))
        return run

    def search_step(self, rate: float) -> ServingRun | KeptRun:
        """`at_rate` for the SLO search, which remembers the rates it asked (an interrupted search's steps)."""
        run = self.at_rate(rate)
        self.asked.append(rate)
        return run

    def run(self) -> SloSearch | None:
        """A run at each `--rate`, then the SLO's bisection (None without an SLO)."""
        settings = self.settings
        for rate in settings.rates:
            self.at_rate(rate)
        if settings.slo is None:
            return None
        search = highest_rate_meeting(settings.slo, self.search_step, min(settings.rates), max(settings.rates),
                                      settings.search_steps)
        if self.progress:
            self.progress(f"SLO {settings.slo}: {search.note}")
        return search

    def partial_runs(self) -> list[ServingRun | KeptRun]:
        """What an interrupted measurement keeps: the runs so far, then the kept runs not asked for yet."""
        return [*self.runs.values(), *(run for rate, run in self.kept.items() if rate not in self.runs)]

    def unfinished_search(self) -> SloSummary | None:
        """The SLO search Ctrl-C stopped (its steps so far, `finished` False, no answer); None without an SLO."""
        slo, rates = self.settings.slo, self.settings.rates
        if slo is None:
            return None
        runs = [self.runs[rate] for rate in self.asked]
        steps = [SloStep(run.offered_rate, run.latency_at(slo.percentile),
                         run.latency_at(slo.percentile) <= slo.target_s) for run in runs]
        note = (f"the search did not finish (interrupted after {len(steps)} of its steps): no answer; "
                "the same command resumes it")
        return search_summary(SloSearch(slo, min(rates), max(rates), steps, runs, None, (0.0, None), note),
                              finished=False)


def serving_payload(model: LoadedModel, settings: ServeSettings, batcher: Batcher, runs: list[ServingRun | KeptRun],
                    slo: SloSummary | None, load: MachineLoad, kept: list[KeptRates] | None = None) -> Serving:
    """The record's numbers: each rate's run (in run order), the SLO's answer, how the model was served
    (`LoadedModel.service_setup`), the rates asked for and the runs kept from earlier, interrupted runs."""
    setup = model.service_setup(settings.seed, settings.min_requests, settings.duration_s, settings.clock,
                                warmed_description(settings.warmup), load)
    return Serving(setup=setup, arrival="poisson",
                   max_batch_tokens=batcher.max_batch_tokens, max_batch_requests=batcher.max_batch_requests,
                   max_wait_seconds=batcher.max_wait_s, sort_by_length=batcher.sort_by_length,
                   runs=[run.point() for run in runs], slo=slo, drain_limit_seconds=settings.drain_s,
                   planned_rates=list(settings.rates), kept=kept)


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


def search_summary(search: SloSearch, finished: bool = True) -> SloSummary:
    """The search's bracket, steps and answer, the achieved throughput of the answer's run (requests/s and
    tokens/s), and what its percentile rests on: the fewest requests a step served, how many of them lie beyond
    the percentile (0: the percentile was their largest) and how many would put one beyond it. `finished` False:
    Ctrl-C stopped it (`RateRuns.unfinished_search`)."""
    best = next((run.point() for run in search.runs if run.offered_rate == search.best_rate), None)
    fewest = min((run.point().served for run in search.runs), default=0)  # the step whose percentile rests on least
    steps = [SloPoint(step.rate, step.latency_s if math.isfinite(step.latency_s) else None, step.met)
             for step in search.steps]
    return SloSummary(search.slo.percentile, search.slo.target_s, search.low, search.high, search.best_rate,
                      list(search.bracket), search.note, steps, best.achieved_rate if best else None,
                      best.tokens_per_second if best else None, fewest,
                      samples_beyond(fewest, search.slo.percentile), samples_needed(search.slo.percentile),
                      finished)


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
