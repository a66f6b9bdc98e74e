"""Terminal output: tables (rich) and the one-row summary of each record a command produced."""

from __future__ import annotations

import sys
from typing import Callable, Iterable, Sequence

import click

from rich.console import Console
from rich.table import Table

from mbbench.driver import produce_all
from mbbench.formatting import significant
from mbbench.predict import over_max_batch
from mbbench.records import Comparison, MaxBatchSearch, Prediction, Record, Throughput
from mbbench.results import Store


def print_table(rows: Sequence[dict], columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Rows (dicts) as an aligned table on stdout: rich on a terminal; plain, never cut or wrapped, otherwise
    (logs, pipes and tests read every character)."""
    columns = list(columns or (rows[0] if rows else []))
    cells = [[_text(row.get(column, "")) for column in columns] for row in rows]
    if not rows:
        click.echo("(nothing)")
    elif sys.stdout.isatty():
        table = Table(*columns, title=title, box=None, pad_edge=False, show_edge=False)
        for row in cells:
            table.add_row(*row)
        Console(highlight=False).print(table)
    else:
        widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
        for line in ([title] if title else []) + ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()] + \
                ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]:
            click.echo(line)


def _text(value) -> str:
    if value is None:
        return ""
    return str(value)


def spread(record: Record) -> str:
    """IQR/median of the per-pass tokens/s (the spread), or why there is none."""
    payload = record.payload
    if not isinstance(payload, Throughput):
        return ""
    if len(payload.run_seconds) < 2:
        return "n/a (1 pass)"
    return f"{payload.tokens_per_second_stats['iqr_over_median']:.1%}"


def _would_not_fit(record: Record) -> str:
    """' (batch > predicted max)' for a prediction whose batch exceeds the predicted maximum batch."""
    payload, batch = record.payload, record.identity.batch_size
    if isinstance(payload, Prediction) and over_max_batch(batch, payload.max_batch_size):
        return f" (batch {batch} > predicted max {payload.max_batch_size}: would run out of memory)"
    return ""


def summary_row(record: Record, path: str | None = None, state: str = "") -> dict:
    """What a record measured, in one row: device, protocol, docs, batches, passes, statistic, value, where."""
    ident, payload = record.identity, record.payload
    tiny = "-tiny" if ident.tiny else ""
    model = " vs ".join(m + tiny for m in [*ident.models[1:], ident.models[0]]) if ident.models else \
        ident.display_model
    backend = (",".join(payload.backends.get(m, "?") for m in [*ident.models[1:], ident.models[0]])
               if isinstance(payload, Comparison) else record.flatten()["backend"])  # what ran, in model order
    row = {"model": model, "suite": ident.suite, "device": record.device.name,
           "kind": record.kind, "protocol": ident.protocol, "backend": backend, "dtype": ident.dtype}
    if isinstance(payload, Throughput):
        row.update(docs=payload.num_documents, batches=payload.num_batches, passes=len(payload.run_seconds),
                   statistic=payload.headline, tokens_per_second=f"{payload.tokens_per_second:,.0f}",
                   **{"iqr/median": spread(record)})
    elif isinstance(payload, Prediction):
        row.update(statistic="predicted", tokens_per_second=significant(payload.tokens_per_second),
                   max_batch=payload.max_batch_size)
    elif isinstance(payload, Comparison):
        row.update(docs=payload.num_documents, passes=f"{payload.rounds} rounds", statistic="paired median ratio",
                   ratio=", ".join(f"{r['model']} {r['median']:.2f}x" for r in payload.paired["ratios"]))
    elif isinstance(payload, MaxBatchSearch):
        row.update(max_batch=payload.max_batch_size or f"{payload.max_token_budget} tokens",
                   trials=len(payload.trials))
    else:
        row.update(tokens_per_second="–", reason=(record.reason or "")[:90])
    row["status"] = record.status + (" (unstable)" if getattr(payload, "unstable", False) else "") + \
        (f" ({state})" if state == "skipped" else "") + _would_not_fit(record)
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
            warning = getattr(outcome.record.payload, "load_warning", None)
            if warning and outcome.state == "ran":
                click.echo(f"warning: {item.label}: {warning}", err=True)
            if extra_lines and outcome.record.status == "ok":
                extra += extra_lines(outcome.record)
    except KeyboardInterrupt:
        click.echo(f"interrupted: {len(written)} record(s) written" + "".join(f"\n  {p}" for p in written), err=True)
        return 130
    print_table(rows, [c for c in dict.fromkeys(k for row in rows for k in row) if c not in ("path", "why", "reason")])
    for row in rows:
        click.echo(f"record: {row['path']}" + (f"  ({row['status']}: {row['why']})" if row["why"] else ""))
    for line in extra:
        click.echo(line)
    return 1 if any(row["status"] == "failed" for row in rows) else 0
