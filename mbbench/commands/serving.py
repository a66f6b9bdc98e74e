"""The commands that measure a model as a service: `latency` (closed loop, per request) and `serve` (open-loop load).

Like `run`, they parse options, resolve one plan per model x suite (`plan.resolve`, measurement "latency" or
"serving", their settings in the identity's `traffic`), and produce one record per configuration through the
store (resume by identity, --force, --out, failure records, Ctrl-C exits 130). Every bad value is refused
before a model is built or a file written (`UserError`: one line, exit 2). Under the summary row, each record's
numbers are printed whole: per batch size, or per offered rate and the SLO's answer.
"""

from __future__ import annotations

import click

from mbbench import latency as latency_producer
from mbbench import serve as serve_producer
from mbbench.bench.batcher import TEI_MAX_BATCH_TOKENS, TEI_MAX_WAIT_S
from mbbench.bench.latency import few_samples_note, shown_percentile
from mbbench.bench.serving import Slo
from mbbench.commands.common import configs, echo_notes, engine_cache, engine_named, finish, progress_for
from mbbench.commands.console import aligned, produce_and_print
from mbbench.commands.options import options
from mbbench.device import check_requested_gpu, detect
from mbbench.driver import job
from mbbench.plan import Plan, resolve
from mbbench.records import PERCENTILES, Latency, RatePoint, Record, Serving, SloSummary
from mbbench.results import Store

SHARED = ("models", "suites", "protocol", "backend", "dtype", "request_docs", "device", "gpu", "engine", "threads", "gemm",
          "elementwise", "out", "force", "compile", "weights", "tiny", "quiet")


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds for people: one decimal, never cut."""
    return "" if seconds is None else f"{seconds * 1e3:,.1f}"


@click.command()
@options(*SHARED)
@click.option("--batch-size", "batch_sizes", type=int, multiple=True,
              default=latency_producer.DEFAULT_BATCH_SIZES, show_default=True,
              help="Repeatable: documents per request.")
@click.option("--requests", "min_requests", type=int, default=latency_producer.DEFAULT_MIN_REQUESTS,
              show_default=True, help="At least this many timed requests per batch size (100: one beyond p99; fewer "
              "make the tail percentiles the largest latencies, and the table says so).")
@click.option("--min-seconds", type=float, default=latency_producer.DEFAULT_MIN_SECONDS, show_default=True,
              help="And at least this many seconds of them (optimum-benchmark's 10 s).")
@click.option("--warmup", type=int, default=latency_producer.DEFAULT_WARMUP, show_default=True,
              help="Untimed requests per batch size after its cold call.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which documents each request draws.")
def latency(models, suites, gpu, out_dir, force, quiet, compile_model, engine, batch_sizes, min_requests,
            min_seconds, warmup, seed, **fields) -> None:
    """Per-request latency (p50/p90/p95/p99, mean, stdev) at each batch size over SUITE's lengths."""
    settings = latency_producer.LatencySettings(tuple(batch_sizes), min_requests, min_seconds, warmup, seed)
    local = detect(fields["device"])
    check_requested_gpu(gpu, local)
    engine = engine_named(engine, compile_model)
    plans = [resolve(c, "latency", device=local, traffic=settings.traffic())
             for c in configs(models, suites, engine=engine, engine_cache=engine_cache(), **fields)]
    echo_notes(plans, quiet)
    store = Store(out_dir)
    jobs = [job(p, lambda plan: latency_producer.measure(plan, settings, progress_for(plan, quiet),
                                                         None if force else partial_record(store, plan, Latency)))
            for p in plans]
    finish(produce_and_print(jobs, out_dir, force, quiet, latency_lines))


def partial_record(store: Store, plan: Plan, payload: type[Latency] | type[Serving]) -> Record | None:
    """The plan's partial record of `payload`'s kind (Ctrl-C kept its finished batch sizes or rates), or None."""
    found = store.find(plan.identity.key())
    return found if found and isinstance(found.payload, payload) and not found.payload.complete else None


@click.command()
@options(*SHARED)
@click.option("--rate", "rates", type=float, multiple=True, required=True,
              help="Repeatable: offered load in requests/s (Poisson arrivals, one document each).")
@click.option("--duration", type=float, default=serve_producer.DEFAULT_DURATION_S, show_default=True,
              help="Seconds of arrivals per rate (and per SLO search step).")
@click.option("--requests", "min_requests", type=int, default=serve_producer.DEFAULT_MIN_REQUESTS,
              show_default=True, help="At least this many requests per rate (100: one beyond p99; fewer make "
              "the tail percentiles the largest latencies, and the table says so).")
@click.option("--max-batch-tokens", type=int, default=TEI_MAX_BATCH_TOKENS, show_default=True,
              help="The batcher's token budget (text-embeddings-inference's default).")
@click.option("--max-batch-requests", type=int, default=None, help="Cap requests per batch (default: none).")
@click.option("--max-wait", "max_wait_ms", type=float, default=TEI_MAX_WAIT_S * 1e3, show_default=True,
              help="Milliseconds a batch that is not full may wait for more requests (TEI: 0).")
@click.option("--sort-by-length", is_flag=True, help="Sort queued requests by length before batching (infinity).")
@click.option("--slo", default=None, help="e.g. p99=2s: search the highest rate meeting it between the lowest "
              "and highest --rate.")
@click.option("--search-steps", type=int, default=serve_producer.DEFAULT_SEARCH_STEPS, show_default=True,
              help="Bisection steps of the SLO search.")
@click.option("--clock", type=click.Choice(list(serve_producer.CLOCKS)), default="real", show_default=True,
              help="real: arrivals in real time; virtual: a simulation over measured forward times.")
@click.option("--drain-limit", "drain_limit_s", type=float, default=None,
              help="Seconds an overloaded run may go on after its last arrival (default: one --duration); "
              "requests still queued then count as unserved.")
@click.option("--warmup", type=int, default=serve_producer.DEFAULT_WARMUP, show_default=True,
              help="Requests of the lowest rate run untimed, alone and as one batch.")
@click.option("--seed", type=int, default=0, show_default=True, help="Arrival times and documents.")
def serve(models, suites, gpu, out_dir, force, quiet, compile_model, engine, rates, duration, min_requests,
          max_batch_tokens, max_batch_requests, max_wait_ms, sort_by_length, slo, search_steps, clock, drain_limit_s,
          warmup, seed, **fields) -> None:
    """An in-process load test: open-loop arrivals at each --rate, a dynamic batcher, one model worker."""
    settings = serve_producer.ServeSettings(
        tuple(rates), duration, min_requests, max_batch_tokens, max_batch_requests, max_wait_ms / 1e3,
        sort_by_length, Slo.parse(slo) if slo is not None else None, search_steps, clock, seed, warmup, drain_limit_s)
    local = detect(fields["device"])
    check_requested_gpu(gpu, local)
    engine = engine_named(engine, compile_model)
    plans = [resolve(c, "serving", device=local, traffic=settings.traffic())
             for c in configs(models, suites, engine=engine, engine_cache=engine_cache(), **fields)]
    for plan in plans:
        if not plan.unsupported_reason():
            serve_producer.check_lengths(plan, settings)
    echo_notes(plans, quiet)
    store = Store(out_dir)
    jobs = [job(p, lambda plan: serve_producer.measure(plan, settings, progress_for(plan, quiet),
                                                       None if force else partial_record(store, plan, Serving)))
            for p in plans]
    finish(produce_and_print(jobs, out_dir, force, quiet, serving_lines))


# ------------------------------------------------------------------------------------------ the numbers, whole

LATENCY_HEADER = ["batch", "requests", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "mean ms", "stdev ms",
                  "tokens/request", "cold ms (tokens)", "untimed new shapes", "tokens/s", "requests/s"]
COLD_NOTE = ("cold: each batch size's first call, on request 0's documents, apart from the timed requests (which "
             "draw others: a cold call on shorter documents can be faster than their median)")


def latency_lines(record: Record) -> list[str]:
    """Per batch size: latency percentiles ('≈max' where no request lies beyond one), mean, stdev, the tokens of a
    timed request and of the cold call, the requests that met a new shape (run once untimed first), tokens/s and
    requests/s; then what the cold call is and what too few requests leave of the tail."""
    payload = record.payload
    if not isinstance(payload, Latency):
        return []
    rows = [[str(p.batch_size), str(p.requests), *(shown_percentile(p.latency_seconds, k) for k in PERCENTILES),
             ms(p.latency_seconds.mean), ms(p.latency_seconds.stdev), f"{p.real_tokens / p.requests:,.0f}",
             f"{ms(p.cold_seconds)} ({'?' if p.cold_real_tokens is None else p.cold_real_tokens})",
             "" if p.shape_warmup_requests is None else str(p.shape_warmup_requests),
             f"{p.tokens_per_second:,.0f}", f"{p.requests_per_second:,.2f}"] for p in payload.points]
    setup = payload.setup
    title = (f"latency {record.identity.display_model} / {record.identity.suite} ({setup.layout}, {setup.timer}, "
             f"{setup.clock} clock): cold start: load {setup.load_seconds or 0:.2f} s, first call "
             f"{ms(setup.first_call_seconds)} ms (document 0)")
    notes = [COLD_NOTE] + [f"batch {p.batch_size}: {note.strip(' ()')}" for p in payload.points
                           for note in [few_samples_note(p.latency_seconds, PERCENTILES, "requests")] if note]
    return ["", title, *aligned(LATENCY_HEADER, rows), *notes]


SERVING_HEADER = ["offered/s", "arrived/s", "achieved/s", "served", "unserved", "p50 ms", "p90 ms", "p99 ms",
                  "queue p99 ms", "inference p99 ms", "batch mean", "batch max", "tokens/batch mean", "tokens/s",
                  "busy", "new-shape batches (busy time)"]
TOTAL_PERCENTILES = (50, 90, 99)


def serving_row(run: RatePoint) -> list[str]:
    """One offered rate's numbers for people (a record before `arrived_rate` and the new-shape counts: blank)."""
    total, batch = run.total_seconds, run.batch_size
    new_shapes = (f"{run.new_shape_batches} of {run.batches} ({run.new_shape_share:.0%})"
                  if run.new_shape_batches is not None else "")
    arrived = f"{run.arrived_rate:.3g}" if run.arrived_rate is not None else ""
    return [f"{run.offered_rate:g}", arrived, f"{run.achieved_rate:.3g}", str(run.served),
            str(run.unserved), *(shown_percentile(total, k) if total else "" for k in TOTAL_PERCENTILES),
            ms(run.queue_seconds.p99 if run.queue_seconds else None),
            ms(run.inference_seconds.p99 if run.inference_seconds else None),
            f"{batch.mean if batch else 0:.2f}", f"{batch.max if batch else 0:.0f}",
            f"{run.batch_tokens.mean if run.batch_tokens else 0:,.0f}", f"{run.tokens_per_second:,.0f}",
            f"{run.utilization:.0%}", new_shapes]


def serving_lines(record: Record) -> list[str]:
    """Per offered rate (ascending): the rate offered, the one the seeded arrivals brought and the one achieved,
    total latency percentiles, queue and inference p99, batch distributions, throughput, busy time and the batches
    of new shapes (served as they came, their first calls in the latencies); then the SLO search's answer."""
    payload = record.payload
    if not isinstance(payload, Serving):
        return []
    runs = sorted(payload.runs, key=lambda r: r.offered_rate)
    sorting = ", sorted by length" if payload.sort_by_length else ""
    setup = payload.setup
    title = (f"serving {record.identity.display_model} / {record.identity.suite} ({setup.layout} batches of at most "
             f"{payload.max_batch_tokens} tokens{sorting}, max wait {ms(payload.max_wait_seconds)} ms, {setup.clock} "
             f"clock): cold start: load {setup.load_seconds or 0:.2f} s, first call {ms(setup.first_call_seconds)} ms")
    notes = ["arrived/s: what the seeded Poisson draw brought over its window (a short window draws off the offered "
             "rate); achieved/s: served over the run, below arrived/s by the last requests' latency, not overload "
             "unless requests went unserved"]
    notes += [f"rate {run.offered_rate:g}: {note.strip(' ()')}" for run in runs if run.total_seconds
              for note in [few_samples_note(run.total_seconds, TOTAL_PERCENTILES, "requests")] if note]
    lines = ["", title, *aligned(SERVING_HEADER, [serving_row(run) for run in runs]), *notes]
    if payload.slo:
        lines.append(slo_line(payload.slo))
    return lines


def slo_line(slo: SloSummary) -> str:
    """The SLO search's answer in one line: the highest rate meeting it and what that run achieved (none claimed
    when Ctrl-C stopped the search)."""
    target = f"p{slo.percentile:g} <= {ms(slo.target_seconds)} ms"
    if not slo.finished:
        return f"SLO {target}: {slo.note}"
    if slo.best_rate is None:
        return f"SLO {target}: no rate tried meets it ({slo.note}){serve_producer.slo_basis(slo)}"
    return (f"SLO {target}: highest rate meeting it {slo.best_rate:.3g} requests/s, achieved "
            f"{slo.best_achieved_rate:.3g} requests/s ({slo.best_tokens_per_second:,.0f} tokens/s); "
            f"{slo.note}{serve_producer.slo_basis(slo)}")
