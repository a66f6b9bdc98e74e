"""Latency and serving records in the report: a table per kind, each SLO's answer, and latency percentiles drawn
against batch size and against offered load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mbbench.bench.latency import shown_percentile
from mbbench.records import Latency, Serving
from mbbench.report.figures import Curve, latency_curves
from mbbench.report.page import Section
from mbbench.report.selection import Row
from mbbench.serve import slo_basis

SHOWN = (50, 90, 99)  # the percentiles the tables and figures give


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e3:,.1f}"


def _label(row: Row) -> str:
    return f"{row.label} / {row.suite} ({row.gpu})"


def figure_labels(rows: list[Row], labels: list[str]) -> list[str]:
    """`labels` (one per row), each a label several records share followed by its record's date and time, so a
    figure's legend tells apart records of one model and suite run with other settings."""
    shared = {label for label in labels if labels.count(label) > 1}
    return [f"{label}, {row.created_at[:16].replace('T', ' ')}" if label in shared else label
            for row, label in zip(rows, labels)]


LATENCY_HEADER = ["device", "model", "suite", "layout", "batch", "requests", "p50 ms", "p90 ms", "p99 ms", "tokens/s",
                  "requests/s", "untimed new shapes", "cold start", "date", "warning"]


def latency_rows(rows: list[Row]) -> list[list[str]]:
    """One row per batch size of each latency record: percentiles ('≈max' where no request lies beyond one),
    throughput, the requests that met a new shape (run once untimed first), and the model's cold start."""
    out = []
    for r in rows:
        payload: Latency = r.payload
        setup = payload.setup
        cold = f"load {setup.load_seconds or 0:.2f} s + first call {_ms(setup.first_call_seconds)} ms (document 0)"
        label = r.label if payload.complete else f"{r.label} (partial: {len(payload.points)} of " \
                                                 f"{len(payload.planned_batch_sizes)} batch sizes)"
        for point in payload.points:
            untimed = "" if point.shape_warmup_requests is None else str(point.shape_warmup_requests)
            kept = next((k for k in payload.kept or [] if point.batch_size in k.batch_sizes), None)
            if kept:  # measured by an earlier, interrupted run: its date and load, not the record's
                date, busy, cold_start = kept.created_at[:10], bool(kept.load and kept.load.warning), "an earlier run's"
            else:
                date, busy, cold_start = r.date, r.busy, cold
            out.append([r.gpu, label, r.suite, setup.layout, str(point.batch_size), str(point.requests),
                        *(shown_percentile(point.latency_seconds, p) for p in SHOWN),
                        f"{point.tokens_per_second:,.0f}", f"{point.requests_per_second:,.2f}", untimed, cold_start,
                        date, "busy" if busy else ""])
    return out


def latency_sections(rows: list[Row], out: Path) -> list[Section]:
    """The latency table and a figure of percentiles against batch size (none without latency records)."""
    if not rows:
        return []
    labels = figure_labels(rows, [_label(r) for r in rows])
    curves = [Curve(label, [p.batch_size for p in r.payload.points],
                    {f"p{n}": [p.latency_seconds.at(n) * 1e3 for p in r.payload.points] for n in SHOWN})
              for r, label in zip(rows, labels)]
    figure = latency_curves(curves, out / "latency.png", "documents per request (batch size)",
                            "Per-request latency against batch size (closed loop)", log_x=True)
    return [Section("Latency per request", "Closed loop, one request at a time, each drawing its documents from "
                    "the suite; milliseconds per request, real tokens/s. '≈max': a percentile with no request beyond "
                    "it (p99 needs 100 requests for one), so the largest latency, not a tail estimate. A request "
                    "that met a shape not run before ran once untimed first (counted): these are latencies of shapes "
                    "already run.", (LATENCY_HEADER, latency_rows(rows)), figure)]


SERVING_HEADER = ["device", "model", "suite", "batches", "clock", "offered/s", "arrived/s", "achieved/s", "p50 ms",
                  "p90 ms", "p99 ms", "queue p99 ms", "batch mean", "tokens/s", "unserved", "new-shape batches (busy)",
                  "date", "warning"]


def partial_label(row: Row) -> str:
    """The model's label, marked when Ctrl-C stopped the record before every planned rate ran or its SLO search
    finished: '... (partial: 1 of 2 rates)'."""
    payload: Serving = row.payload
    if payload.complete:
        return row.label
    planned = payload.planned_rates or []
    search = "; the SLO search did not finish" if payload.slo and not payload.slo.finished else ""
    return f"{row.label} (partial: {sum(r in payload.rates for r in planned)} of {len(planned)} rates{search})"


def serving_rows(rows: list[Row]) -> list[list[str]]:
    """One row per offered rate of each serving record (ascending): the rates offered, drawn and achieved, total
    latency ('≈max' where no request lies beyond a percentile), queue, batches, throughput, the batches of new
    shapes with their share of the busy time (older records: blank), and when and under what load it ran (a run
    kept from an earlier, interrupted run: that run's)."""
    out = []
    for r in rows:
        payload: Serving = r.payload
        batches = f"{payload.setup.layout}, {payload.max_batch_tokens} tokens" + (
            ", sorted" if payload.sort_by_length else "")
        label = partial_label(r)
        for run in sorted(payload.runs, key=lambda run: run.offered_rate):
            total = run.total_seconds
            new_shapes = (f"{run.new_shape_batches} of {run.batches} ({run.new_shape_share:.0%})"
                          if run.new_shape_batches is not None else "")
            kept = next((k for k in payload.kept or [] if run.offered_rate in k.rates), None)
            date, busy = (kept.created_at[:10], bool(kept.load and kept.load.warning)) if kept else (r.date, r.busy)
            out.append([r.gpu, label, r.suite, batches, payload.setup.clock, f"{run.offered_rate:g}",
                        f"{run.arrived_rate:.3g}" if run.arrived_rate is not None else "",
                        f"{run.achieved_rate:.3g}", *(shown_percentile(total, p) if total else "" for p in SHOWN),
                        _ms(run.queue_seconds.p99 if run.queue_seconds else None),
                        f"{run.batch_size.mean if run.batch_size else 0:.2f}", f"{run.tokens_per_second:,.0f}",
                        str(run.unserved), new_shapes, date, "busy" if busy else ""])
    return out


def slo_items(rows: list[Row]) -> list[str]:
    """Each SLO search's answer: the highest rate meeting the target and the throughput its run achieved (none
    claimed for a search Ctrl-C stopped)."""
    items = []
    for r in rows:
        slo = r.payload.slo
        if not slo:
            continue
        target = f"p{slo.percentile:g} <= {_ms(slo.target_seconds)} ms"
        if not slo.finished:
            items.append(f"{_label(r)}: SLO {target}: {slo.note}")
            continue
        answer = (f"{slo.best_rate:.3g} requests/s (achieved {slo.best_achieved_rate:.3g} requests/s, "
                  f"{slo.best_tokens_per_second:,.0f} tokens/s)" if slo.best_rate is not None else "no rate tried")
        items.append(f"{_label(r)}: SLO {target}: {answer}; {slo.note}{slo_basis(slo)}")
    return items


def serving_curve(row: Row) -> Curve:
    """Total latency percentiles of one serving record against offered load, overloaded runs marked."""
    payload: Serving = row.payload
    runs = sorted((run for run in payload.runs if run.total_seconds), key=lambda run: run.offered_rate)
    target = payload.slo.target_seconds * 1e3 if payload.slo else None
    return Curve(_label(row), [run.offered_rate for run in runs],
                 {f"p{n}": [run.total_seconds.at(n) * 1e3 for run in runs] for n in SHOWN},
                 [run.unserved > 0 for run in runs], target or None)


def serving_sections(rows: list[Row], out: Path) -> list[Section]:
    """The serving table, each SLO's answer, and a figure of latency percentiles against offered load with the
    target drawn (none without serving records)."""
    if not rows:
        return []
    labels = figure_labels(rows, [f"{partial_label(r)} / {r.suite} ({r.gpu})" for r in rows])
    curves = [replace(serving_curve(r), label=label) for r, label in zip(rows, labels)]
    figure = latency_curves(curves, out / "serving.png", "offered load (requests/s)",
                            "Total request latency against offered load (open loop, dynamic batching)")
    return [Section("Serving: latency against offered load", "Open-loop Poisson arrivals through a dynamic batcher "
                    "into one worker; total = queue + inference, milliseconds per request; an overloaded run "
                    "leaves requests unserved (crossed in the figure). Arrived/s is what the seeded draw brought "
                    "(a short window draws off the offered rate); achieved/s below it is not overload unless "
                    "requests went unserved. A batch of a new shape is served as it comes, its first call in the "
                    "latencies (its share of the busy time given); '≈max': no request beyond that percentile.",
                    (SERVING_HEADER, serving_rows(rows)), figure, slo_items(rows))]
