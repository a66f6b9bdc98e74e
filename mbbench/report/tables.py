"""The report's cells and rows from typed `Row`s: the paper's table per device, other suites, failures, the
provenance of every record read and the machines they came from. Cells are text; ranking marks are `Emphasis`."""

from __future__ import annotations

from mbbench.formatting import max_batch_text, plural, significant
from mbbench.records import ENGINE_SEPARATOR, Comparison, MaxBatchSearch
from mbbench.report.selection import ENGINE_BEFORE_THE_AXIS, Row

SHORT, LONG = ("short-fixed", "short-variable"), ("long-fixed", "long-variable")
COLUMNS = [("short max batch", "max", "short-fixed"), ("short fixed", "tps", "short-fixed"),
           ("short variable", "tps", "short-variable"), ("long max batch", "max", "long-fixed"),
           ("long fixed", "tps", "long-fixed"), ("long variable", "tps", "long-variable")]


class Emphasis(str):
    """A cell's text marked best of its column: bold (measured) or italic (predicted), in markdown and HTML."""

    def __new__(cls, text: str, style: str):
        made = super().__new__(cls, text)
        made.style = style
        return made


def answers(row: Row, what: str) -> bool:
    """Whether a row fills a throughput ("tps") or maximum-batch ("max") cell. A predicted throughput record also
    carries the memory model's maximum batch at the suite's length."""
    searched = row.measurement == "max_batch"
    if what == "max":
        return searched or (row.kind == "predicted" and (row.max_batch_size is not None or row.status == "unsupported"))
    return not searched


def rank_group(row: Row) -> tuple:
    """Cells ranked against each other (bold, italic) share kind, protocol, dtype and device (an Intel CPU's row
    is never best against an AMD one's in the one `cpu` table): like with like."""
    return row.kind, row.identity.protocol, row.identity.dtype, row.device_name


def _limited(row: Row) -> bool:
    return isinstance(row.payload, MaxBatchSearch) and bool(row.payload.memory_limit_bytes)


def _newest_first(text: str) -> tuple:
    """A sort key that orders strings (ISO dates) newest first."""
    return tuple(-ord(c) for c in text)


def cell(rows: list[Row], label: str, what: str, suite: str) -> tuple[str, float | None, tuple | None]:
    """(text, value for ranking, rank group) of one table cell; '–' unsupported, '' missing.

    A measurement beats a prediction; among repeats the newest (said under "Merged duplicates"). A prediction
    that would not fit is shown, marked, and never ranked.
    """
    matches = [r for r in rows if r.label == label and r.suite == suite and answers(r, what) and not _limited(r)]
    if not matches:
        return "", None, None
    row = min(matches, key=lambda r: (r.kind != "measured", _newest_first(r.created_at)))
    group = rank_group(row)
    if row.status == "unsupported":
        return "–", None, group
    value = (row.max_batch_size or row.max_token_budget) if what == "max" else row.headline
    if value is None:
        why = row.not_finite()
        return (f"n/a ({why})" if why else ""), None, group
    budget = what == "max" and not row.max_batch_size
    payload = row.payload
    if what == "max" and row.kind == "measured" and payload.capped:  # a lower bound: never ranked best
        return max_batch_text(value, len(payload.trials), True, payload.bracket, " tokens" if budget else ""), None, \
            group
    text = f"{value:,}" + (" tokens" if budget else "") if what == "max" else significant(value / 1000)
    if row.kind == "predicted":
        return text + predicted_band(row, what), (None if row.status == "would-not-fit" else float(value)), group
    return text + measured_spread(row, what), float(value), group


def predicted_band(row: Row, what: str) -> str:
    """' (p: 854–1,090)': predicted, with the range its error band gives (in the cell's unit); ', would not fit'
    for a configuration over its predicted maximum batch."""
    payload = row.payload
    band = getattr(payload, "max_batch_band" if what == "max" else "error_band", None)
    value = row.max_batch_size if what == "max" else getattr(payload, "tokens_per_second", None)
    text = "p"
    if band and value and band.thin:
        text += ": band too thin"
    elif band and value:
        low, high = band.around(value)
        text += f": {low:,.0f}–{high:,.0f}" if what == "max" else \
            f": {significant(low / 1000)}–{significant(high / 1000)}"
    if row.status == "would-not-fit" and what != "max":
        text += ", would not fit"
    return f" ({text})"


def measured_spread(row: Row, what: str) -> str:
    """' (±1.2%, 10 passes)': half the IQR over the median of per-pass tokens/s and the number of passes, with
    'busy' or 'unstable' where the record says so."""
    if what == "max":
        trials = row.payload.trials if isinstance(row.payload, MaxBatchSearch) else []
        return f" ({plural(len(trials), 'trial')})" if trials else ""
    spread = row.stats.iqr_over_median if row.stats else None
    marks = [*(["busy"] if row.busy else []), *(["unstable"] if row.unstable else [])]
    parts = ([f"±{spread / 2:.1%}"] if row.passes > 1 and spread is not None else []) + \
        ([plural(row.passes, "pass")] if row.passes else []) + marks
    return f" ({', '.join(parts)})" if parts else ""


def paper_table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Rows: models (base group, then large); columns as the paper, with units; best of each column and rank group
    marked (`Emphasis`)."""
    def group(label: str) -> str:
        return next((r.record.model.group if r.record.model else None) or "base" for r in rows if r.label == label)

    labels = sorted({r.label for r in rows}, key=lambda label: (group(label) != "base", label))
    grid = [[cell(rows, label, what, suite) for _, what, suite in COLUMNS] for label in labels]
    for column in range(len(COLUMNS)):  # ranked like with like: kind, protocol and dtype (`rank_group`)
        for ranked in {line[column][2] for line in grid if line[column][1] is not None}:
            values = [line[column][1] for line in grid if line[column][1] is not None and line[column][2] == ranked]
            for line in grid:
                text, value, kind = line[column]
                if len(values) > 1 and kind == ranked and value == max(values):
                    line[column] = (Emphasis(text, "b" if ranked[0] == "measured" else "i"), value, kind)
    header = ["model", *(f"{name} ({'docs' if what == 'max' else 'k tok/s'})" for name, what, _ in COLUMNS)]
    return header, [[label, *(c[0] for c in line)] for label, line in zip(labels, grid)]


def other_suite_rows(rows: list[Row]) -> list[list[str]]:
    """Throughput of suites that are not one of the paper's four columns (a user's own suites)."""
    paper = {suite for _, _, suite in COLUMNS}
    out = []
    for r in rows:
        if r.suite in paper or r.measurement == "max_batch" or not r.headline:
            continue
        text = significant(r.headline / 1000) + (predicted_band(r, "tps") if r.kind == "predicted" else
                                                 measured_spread(r, "tps"))
        out.append([r.gpu, r.label, r.suite, r.identity.suite_fingerprint[:8], text])
    return sorted(out)


FAILURE_HEADER = ["gpu", "model", "suite", "protocol", "engine", "backend", "dtype", "date", "reason"]


def failure_rows(rows: list[Row]) -> list[list[str]]:
    """Configurations whose newest record says failed (a matrix task that ran out of memory, lost its node...)."""
    return [[r.gpu, r.label, r.suite, r.identity.protocol, r.engine, r.identity.backend, r.identity.dtype, r.date,
             r.record.reason or ""] for r in sorted(rows, key=lambda r: (r.gpu, r.label, r.suite, r.key))]


def side_label(side: str) -> str:
    """A comparison's side with its engine always named: 'modernbert-base@torch', 'bert-base@onnxruntime'."""
    return side if ENGINE_SEPARATOR in side else f"{side}{ENGINE_SEPARATOR}{ENGINE_BEFORE_THE_AXIS}"


def flags(row: Row) -> str:
    """Everything a provenance row should say about its record, comma-separated."""
    payload = row.payload
    out = [*(["unstable"] if row.unstable else []), *(["throttled"] if row.throttled else []),
           *([f"subsampled ({row.num_documents} docs)"] if row.subsampled else [])]
    if isinstance(payload, MaxBatchSearch) and payload.memory_limit_bytes:
        out.append(f"emulated {payload.memory_limit_bytes / 1e9:.0f} GB limit")
    out += [*(["schema 1"] if row.record.migrated_from == 1 else []), *(["busy"] if row.busy else []),
            *(["would not fit"] if row.status == "would-not-fit" else []),
            *(["from a paired comparison"] if row.from_comparison else []),
            *([f"superseded by the {row.superseded_by}"] if row.superseded_by else [])]
    if row.payload_not_finite():
        out.append("not finite, shown as missing: " + ", ".join(row.not_finite(n) for n in row.payload_not_finite()))
    out += [*(["capped search: a lower bound"] if getattr(payload, "capped", False) else []),
            *(["an older repeat of its identity: the newest is shown"] if row.older_repeat else [])]
    out += [f"{side_label(side)} superseded by the {by}" for side, by in row.sides_superseded.items()]
    excluded = payload.excluded if isinstance(payload, Comparison) else None
    out += [f"{side_label(side)} left out: {why}" for side, why in (excluded or {}).items()]
    if row.status == "failed":
        out.append(f"failed: {row.record.reason or 'no reason recorded'}")
    return ", ".join(out)


def counted(rows: list[Row]) -> str:
    """'85 records: 75 predicted, 9 measured, 1 failed' (a failure counted once, as failed)."""
    kinds = [("failed" if r.status == "failed" else r.kind or "unknown") for r in rows]
    parts = [f"{kinds.count(kind)} {kind}" for kind in sorted(set(kinds))]
    return f"{plural(len(rows), 'record')}: {', '.join(parts)}"


ENVIRONMENT_HEADER = ["device", "driver", "cuda", "torch", "transformers", "host", "records", "load 1m / cpus",
                      "warning"]


def environment_rows(rows: list[Row]) -> list[list[str]]:
    """Each distinct machine and software stack the measured records came from: how many records, the range of
    1-minute load averages at their start, and how many were measured on a busy machine."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        if r.kind == "measured":
            device = r.record.device
            groups.setdefault((r.device_name, device.driver, device.cuda, r.torch, r.transformers, r.host),
                              []).append(r)
    out = []
    for key, members in sorted(groups.items(), key=lambda kv: [str(v) for v in kv[0]]):
        starts = [r.load.start for r in members if r.load and r.load.start]
        loads = sorted(s.load_average_1m for s in starts if s.load_average_1m is not None)
        cpus = next((s.cpu_count for s in starts if s.cpu_count), "?")
        load = "" if not loads else (f"{loads[0]:.2f} / {cpus}" if loads[0] == loads[-1]
                                     else f"{loads[0]:.2f}–{loads[-1]:.2f} / {cpus}")
        busy = sum(1 for r in members if r.busy)
        out.append([*(str(v or "") for v in key), str(len(members)), load,
                    f"busy ({busy} of {len(members)})" if busy else ""])
    return out


PROVENANCE_HEADER = ["gpu", "model", "suite", "measurement", "kind", "value", "engine", "backend", "dtype",
                     "protocol", "date", "flags"]


def provenance_value(row: Row) -> str:
    """The record's number with its unit: thousand tokens/s like the tables, or a max batch in documents."""
    if row.headline:
        return f"{significant(row.headline / 1000)}k tok/s"
    searched = row.max_batch_size or row.max_token_budget
    unit = " docs" if row.max_batch_size else " tokens"
    payload = row.payload
    if searched and getattr(payload, "capped", False):
        return max_batch_text(searched, len(payload.trials), True, payload.bracket, unit)
    if searched:
        return f"{searched:,}{unit}"
    if row.not_finite():
        return f"n/a ({row.not_finite()})"
    if isinstance(payload, Comparison) and row.status == "ok":
        return comparison_value(row)
    return "–"


def comparison_value(row: Row) -> str:
    """Each side of a comparison with its engine, its tokens/s and its ratio over the baseline (in the order the
    record names them): 'modernbert-base@torch (baseline) 0.676k tok/s, bert-base@onnxruntime 0.434k tok/s
    (0.65x)'."""
    payload: Comparison = row.payload
    ratios = {r.model: r.median for r in payload.paired.ratios}
    sides = payload.paired.models
    parts = []
    for side in [m for m in row.identity.models if m in sides]:
        median = sides[side].tokens_per_second_stats.median
        value = f" {significant(median / 1000)}k tok/s" if median is not None else ""
        role = " (baseline)" if side == payload.baseline else ""
        ratio = f" ({ratios[side]:.2f}x)" if side in ratios else ""
        parts.append(f"{side_label(side)}{role}{value}{ratio}")
    return ", ".join(parts)


def engines_of(row: Row) -> str:
    """The engine a record ran on; a comparison's, one per side in the record's order."""
    if row.measurement == "comparison":
        return ", ".join(side_label(side).partition(ENGINE_SEPARATOR)[2] for side in row.identity.models)
    return row.engine


def provenance_rows(rows: list[Row]) -> list[list[str]]:
    """One row per record read (older repeats, superseded and failed ones included, marked): where each number
    came from. A comparison's row names each side with its engine. Software versions are in the Environment
    table."""
    def model(r: Row) -> str:
        sides = r.identity.models if r.measurement == "comparison" else ()
        return " vs ".join(map(side_label, sides)) if sides else r.model

    return [[r.gpu, model(r), r.suite, r.measurement, r.kind, provenance_value(r), engines_of(r), str(r.backend or ""),
             r.identity.dtype, r.identity.protocol, r.date, flags(r)]
            for r in sorted(rows, key=lambda r: (r.gpu, r.model, r.suite, r.key))]
