"""`mbbench latency`: per-request latency of one plan's model at several batch sizes -> a `Latency` record.

Closed loop, one request at a time (`bench.latency.measure_latency`), each request `batch_size` documents
drawn from the suite (seeded per request), in the model's own layout: packed for the unpadded reference
model, padded to the longest in the request otherwise. Real tokens only are counted. Per batch size: one
cold call (apart), a warmup, then at least N requests and S seconds on the wall clock. Defaults follow
optimum-benchmark's inference scenario (optimum_benchmark/scenarios/inference/config.py: duration=10 s,
warmup_runs=10) but for the count: 100 requests, not its 10, so that p99 (the highest percentile printed) has
one request beyond it (`bench.latency.samples_needed`); p99 of 10 is their maximum. The model runs on the plan's
engine, loaded through `loading` (threads, kernels, the accuracy gate); its cold start (load, then the engine's
export, compile and first call on document 0 alone) is recorded apart.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from mbbench import estimate, loading
from mbbench.batching import Batch
from mbbench.bench.clock import RealClock
from mbbench.bench.forward_service import latency_call, latency_requests, model_batch
from mbbench.bench.latency import LatencyRun, few_samples_note, measure_latency
from mbbench.bench.loadgen import MAX_REQUESTS, MAX_SECONDS
from mbbench.errors import Interrupted, UserError
from mbbench.loading import LoadedModel
from mbbench.models.encoders import Encoder
from mbbench.plan import Plan, record, unsupported_record
from mbbench.records import KeptPoints, Latency, LatencyPoint, MachineLoad, Record
from mbbench.runner import watch_load

DEFAULT_BATCH_SIZES = (1, 2, 4, 8)
DEFAULT_MIN_REQUESTS = 100  # one request beyond p99, the highest percentile printed (optimum-benchmark's is 10)
DEFAULT_MIN_SECONDS = 10.0  # optimum-benchmark: duration = 10 s
DEFAULT_WARMUP = 10  # optimum-benchmark: warmup_runs = 10

Progress = Callable[[str], None]
HEARTBEAT_S = 30.0  # wall seconds between progress lines while one batch size runs
SHORTEN = ("--requests, --min-seconds or fewer --batch-size shorten it (Ctrl-C stops it and keeps the batch sizes "
           "that finished)")


@dataclass(frozen=True)
class LatencySettings:
    """What a latency measurement runs besides the plan: all of it changes the numbers (the record's `traffic`)."""

    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES  # documents per request, measured in this order
    min_requests: int = DEFAULT_MIN_REQUESTS  # timed requests per batch size, at least ...
    min_seconds: float = DEFAULT_MIN_SECONDS  # ... and at least this many seconds of them
    warmup: int = DEFAULT_WARMUP  # untimed requests per batch size after its cold call
    seed: int = 0  # which documents each request draws

    def __post_init__(self) -> None:
        """Raise UserError for any value no run could honour (before anything is built or written)."""
        if not self.batch_sizes or min(self.batch_sizes) < 1 or max(self.batch_sizes) > MAX_REQUESTS:
            raise UserError(f"--batch-size must be between 1 and {MAX_REQUESTS:,}, got {list(self.batch_sizes)}")
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise UserError(f"--batch-size given twice: {list(self.batch_sizes)}")
        if not 1 <= self.min_requests <= MAX_REQUESTS:
            raise UserError(f"--requests must be between 1 and {MAX_REQUESTS:,}, got {self.min_requests}")
        if not (math.isfinite(self.min_seconds) and 0 <= self.min_seconds <= MAX_SECONDS):
            raise UserError(f"--min-seconds must be a finite number of seconds from 0 to {MAX_SECONDS:,.0f} (a day), "
                            f"got {self.min_seconds}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be 0 or more, got {self.warmup}")

    def traffic(self) -> tuple:
        """(name, value) pairs for `plan.resolve(..., traffic=...)`: the identity's share of these settings."""
        return (("batch_sizes", tuple(self.batch_sizes)), ("min_requests", self.min_requests),
                ("min_seconds", float(self.min_seconds)), ("seed", self.seed), ("warmup", self.warmup))


def measure(plan: Plan, settings: LatencySettings, progress: Progress | None = None,
            earlier: Record | None = None) -> Record:
    """Measure one plan's per-request latency at each of `settings.batch_sizes`; its record (ok or unsupported).

    The plan must come from `plan.resolve(config, "latency", traffic=settings.traffic())`. `earlier`, a partial
    latency record of the same identity, keeps its measured batch sizes: only the rest are measured. The record's
    setup (cold start, machine load) is then this run's, and `kept` says which points an earlier run measured,
    when, and under what load (`kept_points`). Ctrl-C after at least one batch size is measured raises
    `errors.Interrupted` with the partial record (the store writes it); before that, KeyboardInterrupt. Raises
    whatever building, preparing or running the model raises, ParityFailure included (the store turns it into a
    failure record).
    """
    reason = plan.unsupported_reason()
    if reason:
        return unsupported_record(plan, reason)
    model = loading.load(plan.model_plan, lambda encoder: service_batches(plan, encoder, max(settings.batch_sizes)),
                         progress)
    if progress:
        progress(f"cold start: {cold_start_text(model)} (document 0, {len(plan.suite.document(0))} tokens); "
                 f"{plan.documents} documents to draw from ({model.encoder.layout})")
    points = [p for p in earlier.payload.points if p.batch_size in settings.batch_sizes] if earlier else []
    kept = kept_points(earlier, {p.batch_size for p in points}) if points else None
    if points and progress:
        progress(f"kept from the interrupted run: batch size {', '.join(str(p.batch_size) for p in points)}")
    machine = watch_load(plan, model.busy_threads)
    for batch_size in [b for b in settings.batch_sizes if b not in {p.batch_size for p in points}]:
        try:
            run = measure_batch_size(plan, model, settings, batch_size,
                                     RequestProgress(settings, batch_size, progress) if progress else None)
        except KeyboardInterrupt:
            if points:  # what finished is kept: the store writes it, a rerun measures the rest
                raise Interrupted(record(plan, latency_payload(model, settings, points, machine(), kept))) from None
            raise
        points.append(run.point())
        if progress:
            say_point(progress, run)
    return record(plan, latency_payload(model, settings, points, machine(), kept))


def kept_points(earlier: Record, batch_sizes: set[int]) -> list[KeptPoints]:
    """Where the points of `batch_sizes` kept from the partial record `earlier` were measured: the runs `earlier`
    had kept in turn, then `earlier`'s own run (its creation time and machine load)."""
    payload = earlier.payload
    before = [KeptPoints([b for b in k.batch_sizes if b in batch_sizes], k.created_at, k.load)
              for k in payload.kept or []]
    kept_before = {b for k in before for b in k.batch_sizes}
    own = KeptPoints(sorted(batch_sizes - kept_before, key=payload.batch_sizes.index), earlier.created_at,
                     payload.setup.load)
    return [k for k in [*before, own] if k.batch_sizes]


def say_point(progress: Progress, run: LatencyRun) -> None:
    """One batch size's result for people: requests, p50, p99 (with a note when too few lie beyond it), tokens/s."""
    stats = run.stats
    progress(f"batch {run.batch_size}: {stats.count} requests, p50 {stats.p50 * 1e3:.1f} ms, "
             f"p99 {stats.p99 * 1e3:.1f} ms{few_samples_note(stats, (99,), 'requests')}, "
             f"{run.tokens_per_second:,.0f} tokens/s")


def service_batches(plan: Plan, encoder: Encoder, rows: int) -> list[Batch]:
    """What `loading` prepares a latency or serving model on: document 0 alone (the engine's first call, the cold
    call, and the accuracy gate's batch), then `rows` copies of the longest document used (the largest request,
    for an exporting engine's host-memory check)."""
    padded = encoder.layout == "padded"
    first = model_batch([plan.suite.document(0)], padded, encoder.pad_token_id)
    return [first, model_batch([longest_document(plan)] * rows, padded, encoder.pad_token_id)]


def longest_document(plan: Plan) -> torch.Tensor:
    """The longest of the documents a plan's requests draw from (its token ids)."""
    lengths = plan.suite.lengths[:plan.documents]
    return plan.suite.document(max(range(len(lengths)), key=lengths.__getitem__))


def cold_start_text(model: LoadedModel) -> str:
    """'load 1.20 s, first call 35.1 ms' (and the export and compile of an exporting engine), for people."""
    info = model.engine.info
    steps = [f"{name} {seconds:.2f} s" for name, seconds in (("export", info.export_seconds),
                                                              ("compile", info.compile_seconds)) if seconds is not None]
    return ", ".join([f"load {model.built.load_seconds:.2f} s", *steps,
                      f"first call {(info.first_call_seconds or 0.0) * 1e3:.1f} ms"])


def latency_payload(model: LoadedModel, settings: LatencySettings, points: list[LatencyPoint], load: MachineLoad,
                    kept: list[KeptPoints] | None = None) -> Latency:
    """The record's numbers: each batch size's point, and how the model was served (`LoadedModel.service_setup`)."""
    order = list(settings.batch_sizes)  # measured points (kept ones first) in the order asked for
    setup = model.service_setup(settings.seed, settings.min_requests, settings.min_seconds, RealClock.kind,
                                warmed_description(settings.warmup), load)
    return Latency(setup=setup,
                   points=sorted(points, key=lambda point: order.index(point.batch_size)),
                   warmup_requests=settings.warmup, planned_batch_sizes=order, kept=kept)


def measure_batch_size(plan: Plan, model: LoadedModel, settings: LatencySettings, batch_size: int,
                       on_request: Callable[[int, float, float], None] | None = None) -> LatencyRun:
    """The closed loop at one batch size: cold call (request 0), warmup, then the timed requests 1, 2, ...
    (`on_request` hears each, as `measure_latency` says)."""
    make_request = latency_requests(plan.suite.document, plan.documents, batch_size, settings.seed, model.padded,
                                    model.device, model.encoder.pad_token_id)
    warmup = warmup_requests(plan, model, make_request, batch_size, settings.warmup)
    return measure_latency(latency_call(model.engine, model.device), make_request, settings.min_requests,
                           settings.min_seconds, RealClock(), batch_size, warmup, on_request)


def remaining_estimate(settings: LatencySettings, batch_size: int, first_seconds: float) -> estimate.Estimate:
    """How long the timed requests left should take, once the first at `batch_size` took `first_seconds`: the
    rest of this batch size's requests, then every later batch size's at a request time scaled by its batch size
    (a forward's time is about linear in its tokens; a larger batch runs at least as efficiently, so the later
    ones are over-estimated if anything). Each batch size runs max(--requests, enough for --min-seconds)."""
    later = settings.batch_sizes[list(settings.batch_sizes).index(batch_size):]
    seconds = 0.0
    for size in later:
        per_request = max(first_seconds, 1e-9) * size / batch_size  # a request below the clock's resolution
        requests = max(settings.min_requests, math.ceil(settings.min_seconds / per_request))
        seconds += per_request * (requests - 1 if size == batch_size else requests)
    return estimate.Estimate(seconds, f"{first_seconds * 1e3:,.1f} ms for the first timed request at batch "
                                      f"{batch_size}, x the requests left, later batch sizes scaled by their size",
                             False, SHORTEN)


@dataclass
class RequestProgress:
    """`measure_latency`'s per-request callback for people: after the first timed request at a batch size, the
    estimate of what is left (`remaining_estimate`); then a line every HEARTBEAT_S of wall time."""

    settings: LatencySettings
    batch_size: int
    progress: Progress
    started: float = field(default_factory=time.perf_counter)
    said_at: float = 0.0  # wall seconds after `started` of the last line

    def __call__(self, count: int, seconds: float, elapsed: float) -> None:
        now = time.perf_counter() - self.started
        if count == 1:
            self.progress(f"batch {self.batch_size}: "
                          f"{remaining_estimate(self.settings, self.batch_size, seconds).line()}")
        elif now - self.said_at >= HEARTBEAT_S:
            self.progress(f"batch {self.batch_size}: {count} requests timed of at least "
                          f"{self.settings.min_requests}, {elapsed:.0f} s of at least {self.settings.min_seconds:g} s")
        else:
            return
        self.said_at = now


def warmup_requests(plan: Plan, model: LoadedModel, make_request: Callable[[int], Batch], batch_size: int,
                    count: int) -> list[Batch]:
    """`count` untimed requests: the largest shape first (`batch_size` copies of the longest document used, so
    the allocator has grown to the peak the timed part can reach), then timed requests 1 .. count-1 themselves
    (the shapes the timed part starts with)."""
    if count == 0:
        return []
    largest = model_batch([longest_document(plan)] * batch_size, model.padded,
                          model.encoder.pad_token_id).to(model.device)
    return [largest, *(make_request(index) for index in range(1, count))]


NEW_SHAPES = ("; and before a timed request of a shape not yet run, that request once untimed (each point's "
              "shape_warmup_requests)")


def warmed_description(count: int) -> str:
    """What `warmup_requests` and `measure_latency` ran untimed, in words (the record says it)."""
    if count == 0:
        return "per batch size: the cold call" + NEW_SHAPES
    return (f"per batch size: the cold call (request 0), then {count} untimed requests: batch size x the longest "
            f"document used (the largest shape), then requests 1-{count - 1} (the first timed shapes)"
            if count > 1 else "per batch size: the cold call (request 0), then one untimed request of batch size x "
            "the longest document used (the largest shape)") + NEW_SHAPES
