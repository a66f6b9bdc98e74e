"""Terminal output: tables (rich) and the one-row summary of each record a command produced."""

from __future__ import annotations

import sys
from typing import Callable, Iterable, Sequence

import click

from rich.console import Console
from rich.table import Table

from mbbench.driver import produce_all
from mbbench.formatting import max_batch_text, plural, significant
from mbbench.records import UNSTABLE_IQR, Comparison, Latency, MaxBatchSearch, Prediction, Record, Serving, Throughput
from mbbench.results import Store


def print_table(rows: Sequence[dict], columns: Sequence[str] | None = None, title: str | None = None,
                console: Console | None = None) -> None:
    """Rows (dicts) as an aligned table on stdout, no cell ever cut.

    On a terminal (or `console`, e.g. a test's Console(width=80)) a table wider than the console is printed as
    one block per row, a field per line (`field  value`), so the number a command was run for is always whole.
    Elsewhere (logs, pipes, tests) plain aligned lines, never cut or wrapped.
    """
    columns = list(columns or (rows[0] if rows else []))
    cells = [[_text(row.get(column, "")) for column in columns] for row in rows]
    if not rows:
        click.echo("(nothing)")
        return
    if console is None and not sys.stdout.isatty():
        for line in ([title] if title else []) + _aligned([columns, *cells]):
            click.echo(line)
        return
    console = console or Console(highlight=False)
    table = Table(*columns, title=title, box=None, pad_edge=False, show_edge=False)
    for row in cells:
        table.add_row(*row)
    if max(len(line) for line in _aligned([columns, *cells])) <= console.width:  # its natural width fits
        console.print(table)
        return
    for index, row in enumerate(cells):  # too wide: one block per row, each value whole (folded if longer)
        block = Table(box=None, pad_edge=False, show_header=False, title=title if index == 0 else None)
        block.add_column(no_wrap=True, style="bold")
        block.add_column(overflow="fold")
        for column, text in zip(columns, row):
            if text:
                block.add_row(column, text)
        console.print(block)
        if index < len(cells) - 1:
            console.print()


def _aligned(lines: list[list[str]]) -> list[str]:
    """Rows of cells as lines, each column padded to its widest cell."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """A header and rows of text as aligned plain lines (every character kept)."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *rows]]


def _text(value) -> str:
    if value is None:
        return ""
    return str(value)


def _count(value: float | None) -> str:
    """'12,345', or why there is no number (a NaN or infinite value is recorded as null)."""
    return "n/a (not finite)" if value is None or value != value or value in (float("inf"), float("-inf")) \
        else f"{value:,.0f}"


def spread(record: Record) -> str:
    """IQR/median of the per-pass tokens/s (the spread), or why there is none."""
    payload = record.payload
    if not isinstance(payload, Throughput):
        return ""
    if len(payload.run_seconds) < 2:
        return "n/a (1 pass)"
    value = payload.tokens_per_second_stats.iqr_over_median
    return "n/a (not finite)" if value is None or value != value else f"{value:.1%}"


def likely_range(payload: Prediction) -> str:
    """'854k–1.09M': the tokens/s the prediction's error band gives (it contains the prediction), 'no band: too thin:
    0 Blackwell TensorRT rows and ...' where validation has too few rows of a kind, or '' without a band."""
    if payload.error_band is not None and payload.error_band.thin:
        return f"no band: {payload.error_band.basis}"
    band = payload.tokens_per_second_range
    return "–".join(_short(value) for value in band) if band else ""


def _short(value: float) -> str:
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return significant(value / scale) + suffix
    return significant(value)


def load_warning(record: Record) -> str | None:
    """The busy-machine warning of a measurement (and of the earlier runs a resumed latency or serving record kept
    points from, each named), or None."""
    payload = record.payload
    load = payload.setup.load if isinstance(payload, (Latency, Serving)) else getattr(payload, "load", None)
    warnings = [load.warning] if load and load.warning else []
    for kept in getattr(payload, "kept", None) or []:
        if kept.load and kept.load.warning:
            warnings.append(f"{kept.named} (kept from the run of {kept.created_at}): {kept.load.warning}")
    return "; ".join(warnings) or None


def mfu_above_one(payload) -> str:
    """The MFUs above 1 a payload holds ("1.65", or "modernbert-base 1.65" per comparison side), or ""."""
    if isinstance(getattr(payload, "mfu", None), dict):
        return ", ".join(f"{side} {value:.2f}" for side, value in payload.mfu.items() if value > 1)
    mfu = getattr(payload, "mfu", None)
    return f"{mfu:.2f}" if isinstance(mfu, float) and mfu > 1 else ""


def warnings_of(record: Record) -> list[str]:
    """Every warning a record carries: a busy machine, an unstable spread, a prediction that would not fit, a search
    stopped by its caps, an MFU above 1, a matrix task that overlapped others."""
    payload = record.payload
    busy = load_warning(record)
    out = [busy] if busy else []
    if getattr(payload, "unstable", False):
        out.append(f"IQR/median {payload.tokens_per_second_stats.iqr_over_median:.1%} is above "
                   f"{UNSTABLE_IQR:.0%}: the result is unstable")
    if record.status == "would-not-fit":
        out.append(f"{record.reason}; the numbers are what it would do if it fitted")
    if isinstance(payload, MaxBatchSearch) and payload.capped:
        out.append(f"the search stopped at its caps: the answer is at least {payload.result} ({payload.note})")
    above = mfu_above_one(payload)
    if above:
        out.append(f"MFU above 1 ({above}): the GEMM peak it divides by was measured low (a busy machine when it was "
                   "measured, kept in the kernel cache, or a tiny model's small GEMMs); not a utilisation")
    overlapped = (record.execution or {}).get("overlapping")
    if overlapped:
        out.append(f"measured while other tasks ran on this host ({', '.join(overlapped)}): its numbers are not "
                   "of the machine alone")
    return out


def what_ran(record: Record) -> list[str]:
    """What a measurement's numbers mean: passes, their duration, threads, and that only real tokens count."""
    payload, threads = record.payload, (record.environment or {}).get("cpu_threads")
    on = f" on {plural(threads, 'thread')}" if threads and record.device.kind == "cpu" else ""
    if isinstance(payload, Throughput):
        return [f"{record.identity.display_model} / {record.identity.suite}: {plural(len(payload.run_seconds), 'pass')} "
                f"in {sum(payload.run_seconds):.1f} s (warmup {payload.warmup_seconds:.1f} s){on}; tokens/s counts "
                f"real tokens only ({payload.real_tokens:,} per pass; {payload.padded_tokens:,} with padding); "
                f"{payload.headline} of the passes"]
    if isinstance(payload, Comparison):
        models = payload.paired.models
        seconds = sum(sum(m.pass_seconds) for m in models.values())
        rates = ", ".join(f"{name} {m.tokens_per_second_stats.median:,.0f}" for name, m in models.items()
                          if m.tokens_per_second_stats.median is not None)
        return [f"{record.identity.suite}: {plural(payload.rounds, 'round')} in {seconds:.1f} s{on}; median tokens/s "
                f"(real tokens only): {rates}"]
    return []


def _side_backend(payload: Comparison, side: str) -> str:
    """The attention backend one side of a comparison ran, "-" for a side not built."""
    build = payload.builds.get(side)
    return build.backend if build and build.backend else "-"


def summary_row(record: Record, path: str | None = None, state: str = "") -> dict:
    """What a record measured, in one row: device, protocol, docs, batches, passes, statistic, value, where."""
    ident, payload = record.identity, record.payload
    tiny = "-tiny" if ident.tiny else ""
    model = " vs ".join(m + tiny for m in ident.models) if ident.models else ident.display_model
    backend = (",".join(_side_backend(payload, m) for m in ident.models)  # what ran, in the given order
               if isinstance(payload, Comparison) else record.backend)  # "-": left out, nothing ran
    row = {"model": model, "suite": ident.suite, "device": record.device.label,
           "kind": record.kind, "protocol": ident.protocol, "engine": ident.engine, "backend": backend,
           "dtype": ident.dtype, "threads": ident.threads}
    if isinstance(payload, Throughput):
        row.update(docs=payload.num_documents, batches=payload.num_batches, passes=len(payload.run_seconds),
                   statistic=payload.headline, tokens_per_second=_count(payload.tokens_per_second),
                   **{"iqr/median": spread(record)})
        if payload.parity:
            row["parity error"] = f"{payload.parity.error:.1e}" if payload.parity.error is not None else "NaN"
    elif isinstance(payload, Prediction):
        row.update(statistic="predicted", tokens_per_second=significant(payload.tokens_per_second),
                   likely=likely_range(payload), max_batch=payload.max_batch_size)
    elif isinstance(payload, Comparison):
        row.update(docs=payload.num_documents, passes=plural(payload.rounds, "round"), statistic="paired median ratio",
                   ratio=", ".join(f"{r.model} {r.median:.2f}x" for r in payload.paired.ratios))
    elif isinstance(payload, Latency):
        row.update(batch_sizes=",".join(str(b) for b in payload.batch_sizes),
                   requests=sum(p.requests for p in payload.points), statistic="per request (below)")
    elif isinstance(payload, Serving):
        best = payload.best_rate
        row.update(rates=",".join(f"{r:g}" for r in sorted(payload.rates)), statistic="per rate (below)",
                   slo_rate="" if payload.slo is None else "unfinished" if not payload.slo.finished else
                   (f"{best:.3g}/s" if best is not None else "none"))
    elif isinstance(payload, MaxBatchSearch):
        row.update(max_batch=max_batch_text(payload.result, len(payload.trials), payload.capped, payload.bracket,
                                            "" if payload.mode == "batch" else " tokens", ascii_only=True))
    else:
        row.update(tokens_per_second="–", reason=(record.reason or "")[:90])
    row["status"] = record.status + (" (unstable)" if getattr(payload, "unstable", False) else "") + \
        (" (busy)" if load_warning(record) else "") + \
        (" (capped: a lower bound)" if getattr(payload, "capped", False) else "") + \
        (" (partial)" if getattr(payload, "complete", True) is False else "") + \
        (f" ({state})" if state == "skipped" else "")
    if path:
        row["record"] = path
    return row


def produce_and_print(jobs: Iterable, out_dir: str, force: bool, quiet: bool,
                      extra_lines: Callable[[Record], list[str]] | None = None) -> int:
    """Produce every job through the store, print one table and each record's path; the exit status.

    0 when every configuration has a record that is not a failure, 1 when one failed, 130 on Ctrl-C
    (after naming the records already written). `extra_lines(record)` adds lines under the table.
    """
    store = Store(out_dir)
    rows, written, extra = [], [], []
    try:
        for item, outcome in produce_all(jobs, store, force):
            if outcome.state == "skipped" and not quiet:
                click.echo(f"skip {item.label}: record of {outcome.record.created_at} exists ({outcome.path}); "
                           "--force to re-run", err=True)
            written += [str(outcome.path)] if outcome.state == "ran" else []
            rows.append(summary_row(outcome.record, state=outcome.state) | {"path": str(outcome.path),
                                                                             "why": outcome.record.reason})
            for warning in warnings_of(outcome.record):
                click.echo(f"warning: {item.label}: {warning}", err=True)
            if outcome.record.status == "ok":
                extra += what_ran(outcome.record) + (extra_lines(outcome.record) if extra_lines else [])
    except KeyboardInterrupt as stop:
        partial = getattr(stop, "path", None)  # errors.Interrupted: what finished of the interrupted one
        rerun = "the same command without --force" if force else "the same command"
        written += [f"{partial} (partial: {rerun} measures the rest)"] if partial else []
        click.echo(f"interrupted: {len(written)} record(s) written" + "".join(f"\n  {p}" for p in written), err=True)
        kept = getattr(stop, "kept", None)
        if kept:
            click.echo(f"  kept {kept}: a complete record is not replaced by an interrupted --force run; what that "
                       "run had measured is dropped", err=True)
        return 130
    print_table(rows, [c for c in dict.fromkeys(k for row in rows for k in row) if c not in ("path", "why", "reason")])
    for row in rows:
        click.echo(f"record: {row['path']}" + (f"  ({row['status']}: {row['why']})" if row["why"] else ""))
    for line in extra:
        click.echo(line)
    return 1 if any(row["status"] == "failed" for row in rows) else 0
