"""Terminal output: tables (rich) and the one-row summary of each record a command produced."""

from __future__ import annotations

import sys
from typing import Sequence

from mbbench.records import MaxBatchSearch, Prediction, Record, Throughput


def print_table(rows: Sequence[dict], columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Rows (dicts) as an aligned table on stdout; plain text when stdout is not a terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 240, highlight=False,
                      soft_wrap=False)
    if not rows:
        console.print("(nothing)")
        return
    columns = list(columns or rows[0])
    table = Table(*columns, title=title, box=None, pad_edge=False, show_edge=False)
    for row in rows:
        table.add_row(*(_text(row.get(column, "")) for column in columns))
    console.print(table)


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


def summary_row(record: Record, path: str | None = None, state: str = "") -> dict:
    """What a record measured, in one row: device, protocol, docs, batches, passes, statistic, value, where."""
    ident, payload = record.identity, record.payload
    row = {"model": ident.display_model, "suite": ident.suite, "device": record.device.name,
           "kind": record.kind, "protocol": ident.protocol, "backend": record.flatten()["backend"],
           "dtype": ident.dtype}
    if isinstance(payload, Throughput):
        row.update(docs=payload.num_documents, batches=payload.num_batches, passes=len(payload.run_seconds),
                   statistic=payload.headline, tokens_per_second=f"{payload.tokens_per_second:,.0f}",
                   **{"iqr/median": spread(record)})
    elif isinstance(payload, Prediction):
        row.update(statistic="predicted", tokens_per_second=f"{payload.tokens_per_second:,.3g}",
                   max_batch=payload.max_batch_size)
    elif isinstance(payload, MaxBatchSearch):
        row.update(max_batch=payload.max_batch_size or f"{payload.max_token_budget} tokens",
                   trials=len(payload.trials))
    else:
        row.update(tokens_per_second="–", reason=(record.reason or "")[:90])
    row["status"] = record.status + (f" ({state})" if state == "skipped" else "")
    if path:
        row["record"] = path
    return row
