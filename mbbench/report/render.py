"""`mbbench report`: records (measured and predicted, any number of directories) -> report.md, index.html, PNGs.

Reads records only (`Record.flatten()` rows). A table cell holds one configuration: records of one model
that differ in a field that changes the number (protocol, backend, dtype, batch, documents, passes,
host, software) get rows of their own, labelled by what differs; repeats of one identity on one host
keep the newest, and the report says which. A measurement re-measured later (the same model, suite,
protocol, dtype, batch and documents on the same device, by a throughput run or a paired comparison)
is superseded: out of the tables, listed in the provenance. A comparison's per-model tokens/s fill the
tables like a run's, and its paired ratio is the one speedup the report gives for that pair.

Output is deterministic: rows are sorted and figures carry no timestamps; the one date on the page is
the day it was generated (SOURCE_DATE_EPOCH, when set, fixes it).
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")  # no display: figures are files
import matplotlib.pyplot as plt  # noqa: E402

import mbbench  # noqa: E402
from mbbench import results  # noqa: E402
from mbbench.calibration import paper_timing_batch  # noqa: E402
from mbbench.environment import git_commit  # noqa: E402
from mbbench.bench.latency import shown_percentile  # noqa: E402
from mbbench.compare import interval_label  # noqa: E402
from mbbench.errors import UserError  # noqa: E402
from mbbench.files import write_text  # noqa: E402
from mbbench.formatting import max_batch_text, plural, significant  # noqa: E402
from mbbench.hardware.perfmodel import MODEL_VERSION  # noqa: E402
from mbbench.records import ENGINE_SEPARATOR, LATER_FIELDS  # noqa: E402
from mbbench.serve import slo_basis  # noqa: E402
from mbbench.report.figures import Curve, latency_curves, save_png, thousands  # noqa: E402
from mbbench.report.sweeps import measured_sweep_sections, predicted_sweep_section  # noqa: E402

SHORT, LONG = ("short-fixed", "short-variable"), ("long-fixed", "long-variable")
COLUMNS = [("short max batch", "max", "short-fixed"), ("short fixed", "tps", "short-fixed"),
           ("short variable", "tps", "short-variable"), ("long max batch", "max", "long-fixed"),
           ("long fixed", "tps", "long-fixed"), ("long variable", "tps", "long-variable")]
# Fields that change a number without being the model, suite or device: records that differ in one of
# them are shown apart, labelled with the field. `batch` and `docs` are relative to the suite's default.
VARIANT_FIELDS = ("protocol", "engine", "requested_backend", "dtype", "threads", "batch", "docs", "runs", "warmup",
                  "time_transfer", "weights_sha256", "suite_fingerprint", "device_name", "cpu_isa", "host", "torch",
                  "transformers", "model_version", "matmul_precision")
# They change every number of a row: never left implicit in a table (and cells are ranked within one of each).
TABLE_WIDE_FIELDS = ("protocol", "dtype", "device_name")
LABELS = {"requested_backend": "backend", "weights_sha256": "weights", "suite_fingerprint": "suite",
          "device_name": "device", "cpu_isa": "units", "model_version": "model"}


ENGINE_BEFORE_THE_AXIS = LATER_FIELDS["engine"]  # what a record without an engine ran: torch


def threads_label(record: dict) -> str | None:
    """'2' (intra-op threads), '2/4' when inter-op threads are not 1; None where not recorded (GPU runs)."""
    intra, inter = record.get("threads"), record.get("interop_threads")
    if intra is None:
        return None
    return str(intra) if inter in (None, 1) else f"{intra}/{inter}"


def default_batch(suite: str, model: str | None = None, protocol: str | None = None) -> int:
    """The batch a record of `model` on `suite` gets unless asked otherwise (`plan.default_batch_size`)."""
    paper = paper_timing_batch(model, suite) if model and protocol == "paper" else None
    return paper or (32 if suite.startswith("long") else 512)


def variant(record: dict) -> dict:
    """The fields of a record that change its number, besides model, suite and device."""
    batch = record.get("batch_size")
    values = {"protocol": record.get("protocol"), "requested_backend": record.get("requested_backend") or "auto",
              "dtype": record.get("dtype"),
              "batch": f"tb{record['token_budget']}" if record.get("token_budget") else
              (None if batch in (None, default_batch(record["suite"], record.get("registry_model"),
                                                     record.get("protocol"))) else batch),
              "docs": record.get("documents") if record.get("subsampled") else None,
              "runs": record.get("runs"), "engine": record.get("engine") or ENGINE_BEFORE_THE_AXIS,
              "threads": threads_label(record),
              "time_transfer": record.get("time_transfer") or None, "weights_sha256": record.get("weights_sha256"),
              "warmup": record.get("warmup_batches"),
              "suite_fingerprint": (record.get("suite_fingerprint") or "")[:8] or None,
              "matmul_precision": record.get("matmul_precision") or "highest",
              "device_name": record.get("device_name"), "cpu_isa": record.get("cpu_isa"),
              "model_version": record.get("model_version"),
              "host": record.get("host") if record.get("kind") == "measured" else None,
              "torch": record.get("torch") if record.get("kind") == "measured" else None,
              "transformers": record.get("transformers") if record.get("kind") == "measured" else None}
    return values


def label_variants(records: list[dict]) -> list[dict]:
    """Each record's row label: the model, plus the variant fields that tell its records apart.

    Protocol, dtype and device name label every row of a table (of one kind) where they vary, so no row mixes
    them across columns and none is ranked unlabelled against another protocol or machine; the other fields label a
    model's rows where two records of one suite differ in them.
    """
    by_model: dict[tuple, list[dict]] = {}
    by_table: dict[tuple, list[dict]] = {}
    for record in records:  # per device; measured and predicted records are labelled among their own kind
        by_model.setdefault((record["gpu_dir"], record["model"], record.get("kind")), []).append(record)
        by_table.setdefault((record["gpu_dir"], record.get("kind")), []).append(record)
    labelled = []
    for (gpu_dir, model, kind), group in by_model.items():
        table = by_table[(gpu_dir, kind)]
        suites = {r["suite"] for r in group}
        differing = [f for f in VARIANT_FIELDS
                     if (f in TABLE_WIDE_FIELDS and len({str(variant(r)[f]) for r in table}) > 1)
                     or any(len({str(variant(r)[f]) for r in group if r["suite"] == suite}) > 1 for suite in suites)]
        for record in group:
            values = variant(record)
            parts = [f"{LABELS.get(f, f)}={values[f]}" for f in differing if values[f] is not None]
            labelled.append(record | {"model": model + (f" [{', '.join(parts)}]" if parts else "")})
    return labelled


FAILURE_HEADER = ["gpu", "model", "suite", "protocol", "backend", "dtype", "date", "reason"]


def failure_rows(records: list[dict]) -> list[list[str]]:
    """Configurations whose newest record says failed (a matrix task that ran out of memory, lost its node...)."""
    return [[r.get("gpu_dir", ""), r["model"], r["suite"], r.get("protocol", ""), r.get("requested_backend") or "",
             r.get("dtype", ""), (r.get("created_at") or "")[:10], r.get("reason") or ""]
            for r in sorted(records, key=lambda r: (r["gpu_dir"], r["model"], r["suite"], r["key"]))]


def merge(records: list[dict]) -> tuple[list[dict], list[str]]:
    """Keep the newest record of each identity per host; say which were kept over which."""
    newest: dict[tuple, dict] = {}
    notes = []
    for record in sorted(records, key=lambda r: (r.get("created_at") or "", r.get("path") or "")):
        key = (record["key"], record.get("host") if record.get("kind") == "measured" else None)
        if record.get("kind") == "predicted":  # a newer prediction of the same workload supersedes an older model's
            key = ("predicted", record["gpu_dir"], record["model"], record["suite"], record.get("protocol"),
                   record.get("requested_backend"), record.get("dtype"), record.get("batch_size"),
                   record.get("documents"), record.get("measurement"))
        if key in newest:
            old = newest[key]
            versions = (f" ({record.get('model_version')} over {old.get('model_version')})"
                        if record.get("model_version") != old.get("model_version") else "")
            notes.append(f"{record['model']} / {record['suite']} on {record['gpu_dir']}: kept the newest, "
                         f"{record.get('created_at')}, over {old.get('created_at')}{versions}")
        newest[key] = record
    return sorted(newest.values(), key=lambda r: (r["gpu_dir"], r["model"], r["suite"], r["key"])), notes


def comparison_throughput(record: dict) -> list[dict]:
    """A comparison's per-model tokens/s as throughput rows: the median of per-pass tokens/s over its rounds, so
    the tables, the speedup and the paired ratio tell one story."""
    rows = []
    tiny = "-tiny" if record.get("tiny") else ""
    for name, side in (record.get("paired") or {}).get("models", {}).items():
        stats = side.get("tokens_per_second_stats") or {}
        if stats.get("median") is None:
            continue
        model, _, engine = name.partition(ENGINE_SEPARATOR)  # a side is MODEL or MODEL@ENGINE
        rows.append(record | {
            "engine": engine or ENGINE_BEFORE_THE_AXIS, "parity": (record.get("parity") or {}).get(name),
            "engine_info": (record.get("engines") or {}).get(name), "cold_start_seconds": None,
            "model": model + tiny, "registry_model": model, "measurement": "throughput",
            "key": f"{record['key']}:{name}",
            "tokens_per_second": stats["median"], "tokens_per_second_stats": stats, "headline": "median",
            "run_seconds": side.get("pass_seconds"), "backend": (record.get("backends") or {}).get(name),
            "requested_backend": side_backend(record, name), "models": None,
            "subsampled": (record.get("documents") or 0) < (record.get("suite_documents") or 0),
            "from_comparison": True, "paired": None})
    return rows


def measured_workload(record: dict) -> tuple:
    """What a re-measurement shares with the measurement it supersedes: model, suite, protocol, dtype, batch,
    documents and options on one device and host (passes, warmup and software may differ: they are how it was
    measured again; another host or device, even under one host name, is another machine, shown apart)."""
    return (record["gpu_dir"], record.get("device_name"), record.get("host"), record.get("registry_model"), record.get("tiny"), record["suite"],
            record.get("suite_fingerprint"), record.get("protocol"), record.get("dtype"), record.get("batch_size"),
            record.get("token_budget"), record.get("documents"), record.get("requested_backend"), record.get("compile"),
            record.get("engine") or ENGINE_BEFORE_THE_AXIS, record.get("threads"), record.get("interop_threads"),
            record.get("time_transfer"), record.get("weights_sha256"))


def supersede(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(current, superseded): of the measured throughput rows of one workload (`measured_workload`), only the newest
    is current; each older one gets `superseded_by` (the newer one's date and file) and leaves the tables."""
    newest: dict[tuple, dict] = {}
    for r in records:
        if r.get("kind") == "measured" and r.get("measurement") == "throughput" and r.get("status") == "ok":
            key = measured_workload(r)
            if key not in newest or (r.get("created_at") or "") > (newest[key].get("created_at") or ""):
                newest[key] = r
    current, superseded = [], []
    for r in records:
        winner = newest.get(measured_workload(r)) if r.get("kind") == "measured" and \
            r.get("measurement") == "throughput" else None
        if winner is None or winner is r:
            current.append(r)
        else:
            source = "comparison" if winner.get("from_comparison") else "run"
            superseded.append(r | {"superseded_by": f"{source} of {(winner.get('created_at') or '')[:10]}"})
    return current, superseded


def answers(record: dict, what: str) -> bool:
    """Whether a record fills a throughput ("tps") or maximum-batch ("max") cell.

    A predicted throughput record also carries the memory model's maximum batch at the suite's length.
    """
    searched = record.get("measurement") == "max_batch"
    if what == "max":
        return searched or (record["kind"] == "predicted" and (record.get("max_batch_size") is not None
                                                               or record.get("status") == "unsupported"))
    return not searched


def headline(record: dict) -> float | None:
    """The tokens/s a record stands for: for a median headline the median of per-pass tokens/s (the statistic
    whose IQR the report gives beside it; records made before the two agreed keep their stats' median)."""
    stats = record.get("tokens_per_second_stats") or {}
    if record.get("headline") == "median" and stats.get("median") is not None:
        return stats["median"]
    return record.get("tokens_per_second")


def rank_group(record: dict) -> tuple:
    """Cells ranked against each other (bold, italic) share kind, protocol, dtype and device (an Intel CPU's row
    is never best against an AMD one's in the one `cpu` table): like with like."""
    return record.get("kind"), record.get("protocol"), record.get("dtype"), record.get("device_name")


def cell(records: list[dict], model: str, what: str, suite: str) -> tuple[str, float | None, tuple | None]:
    """(text, value for ranking, rank group) of one table cell; '–' unsupported, '' missing.

    A measurement beats a prediction; among repeats the newest (said under "Merged duplicates"). A prediction
    that would not fit is shown, marked, and never ranked.
    """
    matches = [r for r in records if r["model"] == model and r["suite"] == suite
               and answers(r, what) and not r.get("memory_limit_bytes")]
    if not matches:
        return "", None, None
    record = min(matches, key=lambda r: (r["kind"] != "measured", _negated(r.get("created_at") or "")))
    group = rank_group(record)
    if record.get("status") == "unsupported":
        return "–", None, group
    value = (record.get("max_batch_size") or record.get("max_token_budget")) if what == "max" else headline(record)
    if value is None:
        why = not_finite(record)
        return (f"n/a ({why})" if why else ""), None, group
    budget = what == "max" and not record.get("max_batch_size")
    if what == "max" and record["kind"] == "measured" and record.get("capped"):  # a lower bound: never ranked best
        return max_batch_text(value, len(record.get("trials") or []), True, record.get("bracket"),
                              " tokens" if budget else ""), None, group
    text = f"{value:,}" + (" tokens" if budget else "") if what == "max" else significant(value / 1000)
    if record["kind"] == "predicted":
        text += predicted_band(record, what)
        return text, (None if record.get("status") == "would-not-fit" else float(value)), group
    return text + measured_spread(record, what), float(value), group


def not_finite(record: dict, field: str = "tokens_per_second") -> str:
    """Why a record's number is missing when it was NaN or infinite ("tokens/s was nan"), else ""."""
    value = (record.get("non_finite") or {}).get(f"payload.{field}")
    return f"{field.replace('_per_second', '/s').replace('_', ' ')} was {value}" if value else ""


def _negated(text: str) -> tuple:
    """A sort key that orders strings (ISO dates) newest first."""
    return tuple(-ord(c) for c in text)


def predicted_band(record: dict, what: str) -> str:
    """' (p: 854–1,090)': predicted, with the range its error band gives (in the cell's unit); ', would not fit'
    for a configuration over its predicted maximum batch."""
    band = record.get("max_batch_band" if what == "max" else "error_band")
    value = record.get("max_batch_size") if what == "max" else record.get("tokens_per_second")
    text = "p"
    if band and value and band.get("low") is None:
        text += ": band too thin"
    elif band and value:
        low, high = band["low"] * value, band["high"] * value
        text += f": {low:,.0f}–{high:,.0f}" if what == "max" else \
            f": {significant(low / 1000)}–{significant(high / 1000)}"
    if record.get("status") == "would-not-fit" and what != "max":
        text += ", would not fit"
    return f" ({text})"


def measured_spread(record: dict, what: str) -> str:
    """' (±1.2%, 10 passes)': half the IQR over the median of per-pass tokens/s and the number of passes, with
    'busy' or 'unstable' where the record says so."""
    if what == "max":
        return f" ({plural(len(record['trials']), 'trial')})" if record.get("trials") else ""
    passes = len(record.get("run_seconds") or [])
    stats = record.get("tokens_per_second_stats") or {}
    marks = [*(["busy"] if record.get("load_warning") else []),
             *(["unstable"] if (stats.get("iqr_over_median") or 0) > 0.10 else [])]
    parts = ([f"±{stats['iqr_over_median'] / 2:.1%}"] if passes > 1 and stats.get("iqr_over_median") is not None
             else []) + ([plural(passes, "pass")] if passes else []) + marks
    return f" ({', '.join(parts)})" if parts else ""


class Emphasis(str):
    """A cell's text marked best of its column: bold (measured) or italic (predicted), in markdown and HTML."""

    def __new__(cls, text: str, style: str):
        made = super().__new__(cls, text)
        made.style = style
        return made


def paper_table(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Rows: models (base group, then large); columns as the paper, with units; best of each column and rank group
    marked (`Emphasis`)."""
    models = sorted({r["model"] for r in records}, key=lambda m: (
        next((r.get("group") or "base") for r in records if r["model"] == m) != "base", m))
    grid = [[cell(records, m, what, suite) for _, what, suite in COLUMNS] for m in models]
    for column in range(len(COLUMNS)):  # ranked like with like: kind, protocol and dtype (`rank_group`)
        for group in {row[column][2] for row in grid if row[column][1] is not None}:
            values = [row[column][1] for row in grid if row[column][1] is not None and row[column][2] == group]
            for row in grid:
                text, value, kind = row[column]
                if len(values) > 1 and kind == group and value == max(values):
                    row[column] = (Emphasis(text, "b" if group[0] == "measured" else "i"), value, kind)
    header = ["model", *(f"{name} ({'docs' if what == 'max' else 'k tok/s'})" for name, what, _ in COLUMNS)]
    return header, [[m, *(c[0] for c in row)] for m, row in zip(models, grid)]


MARKDOWN_SPECIAL = re.compile(r"([\\`*_|<>])")


def markdown_text(text: object) -> str:
    """A cell as markdown: characters markdown would read as syntax (`|` splits a row, `*` and `_` emphasise)
    escaped; our own marks (`Emphasis`) added around the escaped text."""
    escaped = MARKDOWN_SPECIAL.sub(r"\\\1", str(text))
    style = getattr(text, "style", None)
    return f"**{escaped}**" if style == "b" else (f"_{escaped}_" if style == "i" else escaped)


def html_text(text: object) -> str:
    escaped = html.escape(str(text))
    style = getattr(text, "style", None)
    return f"<{style}>{escaped}</{style}>" if style else escaped


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(markdown_text(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(markdown_text(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def flags(record: dict) -> str:
    out = []
    stats = record.get("tokens_per_second_stats") or {}
    if (stats.get("iqr_over_median") or 0) > 0.10:
        out.append("unstable")
    if (record.get("telemetry") or {}).get("throttled"):
        out.append("throttled")
    if record.get("subsampled"):
        out.append(f"subsampled ({record.get('num_documents')} docs)")
    if record.get("memory_limit_bytes"):
        out.append(f"emulated {record['memory_limit_bytes'] / 1e9:.0f} GB limit")
    if record.get("migrated_from"):
        out.append("schema 1")
    if record.get("load_warning"):
        out.append("busy")
    if record.get("status") == "would-not-fit":
        out.append("would not fit")
    if record.get("from_comparison"):
        out.append("from a paired comparison")
    if record.get("superseded_by"):
        out.append(f"superseded by the {record['superseded_by']}")
    if record.get("non_finite"):
        out.append("not finite, shown as missing: " + ", ".join(
            not_finite(record, k.removeprefix("payload.")) for k in sorted(record["non_finite"]) if k.startswith("payload.")))
    if record.get("capped"):
        out.append("capped search: a lower bound")
    if record.get("older_repeat"):
        out.append("an older repeat of its identity: the newest is shown")
    out += [f"{side_label(side)} superseded by the {by}" for side, by in (record.get("sides_superseded") or {}).items()]
    out += [f"{side_label(side)} left out: {why}" for side, why in (record.get("excluded") or {}).items()]
    if record.get("status") == "failed":
        out.append(f"failed: {record.get('reason') or 'no reason recorded'}")
    return ", ".join(out)


def side_label(side: str) -> str:
    """A comparison's side with its engine always named: 'modernbert-base@torch', 'bert-base@onnxruntime'."""
    return side if ENGINE_SEPARATOR in side else f"{side}{ENGINE_SEPARATOR}{ENGINE_BEFORE_THE_AXIS}"


def comparison_value(record: dict) -> str:
    """Each side of a comparison with its engine, its tokens/s and its ratio over the baseline (in the order the
    record names them): 'modernbert-base@torch (baseline) 0.676k tok/s, bert-base@onnxruntime 0.434k tok/s
    (0.65x)'."""
    ratios = {r["model"]: r["median"] for r in record["paired"]["ratios"]}
    parts = []
    sides = record["paired"].get("models", {})
    for side in [m for m in record.get("models") or [] if m in sides]:
        median = (sides[side].get("tokens_per_second_stats") or {}).get("median")
        value = f" {significant(median / 1000)}k tok/s" if median is not None else ""
        role = " (baseline)" if side == record.get("baseline") else ""
        ratio = f" ({ratios[side]:.2f}x)" if side in ratios else ""
        parts.append(f"{side_label(side)}{role}{value}{ratio}")
    return ", ".join(parts)


def provenance_value(record: dict) -> str:
    """The record's number with its unit: thousand tokens/s like the tables, or a max batch in documents."""
    value = headline(record)
    if value:
        return f"{significant(value / 1000)}k tok/s"
    searched = record.get("max_batch_size") or record.get("max_token_budget")
    unit = " docs" if record.get("max_batch_size") else " tokens"
    if searched and record.get("capped"):
        return max_batch_text(searched, len(record.get("trials") or []), True, record.get("bracket"), unit)
    if searched:
        return f"{searched:,}{unit}"
    if not_finite(record):
        return f"n/a ({not_finite(record)})"
    if record.get("measurement") == "comparison" and record.get("status") == "ok":
        return comparison_value(record)
    return "–"


def engines_of(record: dict) -> str:
    """The engine a record ran on; a comparison's, one per side in the record's order."""
    if record.get("measurement") == "comparison":
        return ", ".join(side_label(side).partition(ENGINE_SEPARATOR)[2] for side in record.get("models") or [])
    return record.get("engine") or ENGINE_BEFORE_THE_AXIS


def provenance_rows(records: list[dict]) -> list[list[str]]:
    """One row per record read (older repeats, superseded and failed ones included, marked): where each number
    came from. A comparison's row names each side with its engine. Software versions are in the Environment
    table."""
    def model(r: dict) -> str:
        sides = r.get("models") if r.get("measurement") == "comparison" else None
        return " vs ".join(map(side_label, sides)) if sides else r["model"]

    return [[r["gpu_dir"], model(r), r["suite"], r.get("measurement", "throughput"), r["kind"],
             provenance_value(r), engines_of(r), str(r.get("backend") or ""), r.get("dtype") or "",
             r.get("protocol") or "", (r.get("created_at") or "")[:10], flags(r)]
            for r in sorted(records, key=lambda r: (r["gpu_dir"], r["model"], r["suite"], r["key"]))]


PROVENANCE_HEADER = ["gpu", "model", "suite", "measurement", "kind", "value", "engine", "backend", "dtype",
                     "protocol", "date", "flags"]


def what_became_of(read: list[dict], kept: list[dict], superseded: list[dict]) -> list[dict]:
    """Every record read, once each, marked with what became of it: an older repeat of an identity (`merge` kept
    the newest), superseded by a re-measurement (`supersede`; a comparison's sides each on their own)."""
    kept_ids = {id(r) for r in kept}
    later = {(r["key"], r.get("host")): r["superseded_by"] for r in superseded}
    marked = []
    for r in read:
        sides = {side: later[(f"{r['key']}:{side}", r.get("host"))] for side in r.get("models") or []
                 if (f"{r['key']}:{side}", r.get("host")) in later} if r.get("measurement") == "comparison" else {}
        marked.append(r | {"older_repeat": id(r) not in kept_ids, "sides_superseded": sides,
                           "superseded_by": later.get((r["key"], r.get("host")))})
    return marked


def counted(records: list[dict]) -> str:
    """'85 records: 75 predicted, 9 measured, 1 failed' (a failure counted once, as failed)."""
    kinds = [("failed" if r.get("status") == "failed" else r.get("kind") or "unknown") for r in records]
    parts = [f"{kinds.count(kind)} {kind}" for kind in sorted(set(kinds))]
    return f"{plural(len(records), 'record')}: {', '.join(parts)}"


def basket_rows(records: list[dict], model: str) -> list[dict]:
    """The GPU records of `model` (every labelled variant) with a tokens/s: the basket figure's data."""
    return [r for r in records if r["model"].split(" [")[0] == model and headline(r) and
            r.get("measurement") != "max_batch" and r["gpu_dir"] != "cpu"]  # a GPU figure: CPU rows are tables


def basket_bars(records: list[dict], model: str) -> list[tuple[str, str, str]]:
    """(GPU, kind, row label) of each bar: a bar per GPU, kind and labelled variant, so no GPU with records is
    left out and none hides another's variant."""
    return sorted({(r["gpu_dir"], r["kind"], r["model"]) for r in basket_rows(records, model)})


def basket_figure(records: list[dict], model: str, path: Path) -> Path | None:
    """Tokens/s of one model per suite across GPUs, a bar per GPU, kind and labelled variant (protocol, dtype ...):
    measured solid with min-max whiskers where there are passes, predicted hatched with their error band."""
    rows = basket_rows(records, model)
    if not rows:
        return None
    suites = sorted({r["suite"] for r in rows})
    bars = basket_bars(records, model)
    fig, ax = plt.subplots(figsize=(min(14.0, max(9.0, 0.5 * len(suites) * len(bars))), 5.0))
    width = 0.8 / len(bars)
    for i, (gpu, kind, label) in enumerate(bars):
        xs, ys, lows, highs = [], [], [], []
        for j, suite in enumerate(suites):
            match = [r for r in rows if (r["gpu_dir"], r["kind"], r["model"], r["suite"]) == (gpu, kind, label, suite)]
            if match:
                value = headline(match[0])
                low, high = whisker(match[0], value)
                xs.append(j + i * width)
                ys.append(value / 1000)
                lows.append(low / 1000)
                highs.append(high / 1000)
        variant_text = label[len(model):].strip(" []")
        ax.bar(xs, ys, width, label=f"{gpu} {variant_text} ({kind})".replace("  ", " "),
               hatch="//" if kind == "predicted" else None, edgecolor="black", linewidth=0.5)
        spans = [(x, lo, hi) for x, lo, hi in zip(xs, lows, highs) if hi > lo]  # whiskers only where there is a range
        if spans:  # drawn as a span, not symmetric around the bar: a band need not be centred on its prediction
            ax.errorbar([x for x, _, _ in spans], [(lo + hi) / 2 for _, lo, hi in spans],
                        yerr=[(hi - lo) / 2 for _, lo, hi in spans], fmt="none", ecolor="black", capsize=2,
                        linewidth=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(suites))], suites)
    ax.set_ylabel("thousand tokens/s")
    ax.yaxis.set_major_formatter(thousands)
    ax.set_title(f"{model}: tokens/s per suite and GPU\n(hatched: predicted, whisker = error band; "
                 "solid: measured, whisker = min-max of passes)", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    save_png(fig, path, dpi=100, bbox_inches="tight")
    return path


def whisker(record: dict, value: float) -> tuple[float, float]:
    """(low, high) tokens/s of a bar's whisker: a prediction's error band, the min and max of a measurement's
    passes, or the value itself (no whisker) for one pass or a record without either."""
    band = record.get("error_band")
    if record["kind"] == "predicted":  # a band contains its prediction; one too thin to draw has no whisker
        return (band["low"] * value, band["high"] * value) if band and band.get("low") is not None else (value, value)
    stats = record.get("tokens_per_second_stats") or {}
    if len(record.get("run_seconds") or []) < 2:
        return value, value
    low, high = stats.get("min"), stats.get("max")  # None where a pass's value was not finite
    return min(value, value if low is None else low), max(value, value if high is None else high)


def other_suite_rows(records: list[dict]) -> list[list[str]]:
    """Throughput of suites that are not one of the paper's four columns (a user's own suites)."""
    paper = {suite for _, _, suite in COLUMNS}
    rows = []
    for r in records:
        if r["suite"] in paper or r.get("measurement") == "max_batch" or not headline(r):
            continue
        text = significant(headline(r) / 1000) + (predicted_band(r, "tps") if r["kind"] == "predicted" else
                                                   measured_spread(r, "tps"))
        rows.append([r["gpu_dir"], r["model"], r["suite"], (r.get("suite_fingerprint") or "")[:8], text])
    return sorted(rows)


def workload(record: dict) -> tuple:
    """What two records must share for their tokens/s to form a speedup: the same work on the same machine."""
    return (record["gpu_dir"], record["suite"], record.get("protocol"), record.get("dtype"),
            record.get("documents") if record.get("subsampled") else None, record.get("batch_size"),
            record.get("host") if record.get("kind") == "measured" else None, record.get("kind"),
            record.get("threads"), record.get("interop_threads"))


def pairing(record: dict) -> tuple:
    """What a comparison and a table row must share for the comparison's ratio to be the row's speedup: the same
    device and host, suite, protocol, dtype, documents, batch and threads (the engine is in the side's name)."""
    return (record["gpu_dir"], record.get("device_name"), record.get("host"), record["suite"],
            record.get("suite_fingerprint"), record.get("protocol"), record.get("dtype"), record.get("documents"),
            record.get("batch_size"), record.get("token_budget"), record.get("threads"), record.get("interop_threads"),
            bool(record.get("tiny")), record.get("time_transfer"), record.get("matmul_precision"))


def side_backend(comparison: dict, side: str) -> str:
    """The attention backend a comparison asked for on one side ('auto' unless given)."""
    asked = dict(zip(comparison.get("models") or [], (comparison.get("requested_backend") or "").split(",")))
    return asked.get(side) or "auto"


def paired_ratio(paired: list[dict], mine: dict, baseline: str) -> str:
    """'1.69x [1.65, 1.73] (95% CI)': the newest comparison's ratio of `mine`'s model (on its engine) over
    `baseline` (on torch) on `mine`'s workload (`pairing`: device, suite, protocol, dtype, documents, batch,
    threads; the same requested backend), or ''. A comparison whose baseline was `mine`'s model gives the inverse
    ratio, its interval inverted (x -> 1/x keeps the order statistics' coverage)."""
    engine = mine.get("engine") or ENGINE_BEFORE_THE_AXIS
    side = mine.get("registry_model") + ("" if engine == ENGINE_BEFORE_THE_AXIS else f"@{engine}")
    found = []
    for r in paired:
        if pairing(r) != pairing(mine) or side_backend(r, side) != (mine.get("requested_backend") or "auto"):
            continue
        for ratio in r["paired"]["ratios"]:
            if (ratio["model"], ratio["baseline"]) == (side, baseline):
                found.append((r.get("created_at") or "", ratio, False))
            elif (ratio["model"], ratio["baseline"]) == (baseline, side):
                found.append((r.get("created_at") or "", ratio, True))
    if not found:
        return ""
    _, ratio, inverse = max(found, key=lambda item: item[0])
    median, interval = ratio["median"], ratio.get("interval")
    if not interval:
        return f"{1 / median if inverse else median:.2f}x"
    low, high = (1 / interval["high"], 1 / interval["low"]) if inverse else (interval["low"], interval["high"])
    return f"{1 / median if inverse else median:.2f}x [{low:.2f}, {high:.2f}] ({interval_label(interval)})"


def speedup_rows(records: list[dict], baseline: str, paired: list[dict] = ()) -> list[list[str]]:
    """Each labelled row's tokens/s over the baseline's (on torch) on the same workload and threads; rows without
    any ratio are left out. The baseline model on another engine gets its speedup over torch.

    One number per claim: where a paired comparison measured the pair on that device and suite, its ratio (median
    of per-round ratios, with its interval and that interval's confidence) is the cell, as in the paired table; otherwise the ratio of the
    two current (not superseded) records' headlines.
    """
    throughput = [r for r in records if headline(r) and r.get("measurement") != "max_batch"]

    def is_baseline(record: dict) -> bool:  # the baseline model on torch: other engines of it get a speedup
        return record["model"].split(" [")[0] == baseline and (record.get("engine") or ENGINE_BEFORE_THE_AXIS) == \
            ENGINE_BEFORE_THE_AXIS

    base = {}
    for r in throughput:
        if is_baseline(r):
            base.setdefault(workload(r), headline(r))
    rows = []
    baseline_rows = {(r["gpu_dir"], r["model"]) for r in throughput if is_baseline(r)}
    for gpu, model in sorted({(r["gpu_dir"], r["model"]) for r in throughput}):
        if (gpu, model) in baseline_rows:
            continue
        cells = []
        for suite in (*SHORT, *LONG):
            mine = next((r for r in throughput if r["gpu_dir"] == gpu and r["model"] == model and r["suite"] == suite),
                        None)
            measured_pair = paired_ratio(list(paired), mine, baseline) if mine and mine["kind"] == "measured" else ""
            ratio = mine and base.get(workload(mine))
            cells.append(measured_pair or (f"{headline(mine) / ratio:.2f}x" if ratio else ""))
        if any(cells):
            rows.append([gpu, model, *cells])
    return rows


ENGINES_HEADER = ["device", "model", "engine", "suite", "thousand tokens/s", "parity error", "threads",
                  "cold start (s)", "engine version", "date"]


def engine_rows(records: list[dict]) -> list[list[str]]:
    """Model x engine per suite, from measured throughput records: tokens/s, the parity error against torch (max
    |diff| on real tokens), intra-op threads and the cold start (export + compile + first call)."""
    rows = []
    for r in records:
        value = headline(r)
        if r.get("kind") != "measured" or r.get("measurement") != "throughput" or not value:  # None: non-finite
            continue
        parity, info = r.get("parity") or {}, r.get("engine_info") or {}
        error = parity.get("error")
        cold = r.get("cold_start_seconds")
        if cold is None and info:  # a comparison's side: its engine's export, compile and first call
            cold = sum(info.get(k) or 0.0 for k in ("export_seconds", "compile_seconds", "first_call_seconds"))
        rows.append([r["gpu_dir"], r["model"], r.get("engine") or ENGINE_BEFORE_THE_AXIS, r["suite"],
                     significant(value / 1000) + measured_spread(r, "tps"),
                     "reference" if not parity else (f"{error:.1e}" if error is not None else "NaN"),
                     threads_label(r) or "", f"{cold:.2f}" if cold is not None else "",
                     info.get("version") or r.get("torch") or "", (r.get("created_at") or "")[:10]])
    return sorted(rows)


PAIRED_HEADER = ["gpu", "suite", "model", "baseline", "ratio (median)", "interval (confidence)", "rounds", "docs", "date",
                 "warning"]


def paired_rows(records: list[dict]) -> list[list[str]]:
    """One row per ratio of each comparison record: the paper's claims as measured, with their spread."""
    rows = []
    for r in records:
        tiny = " (tiny)" if r.get("tiny") else ""  # both sides of a tiny comparison are tiny models
        for ratio in r["paired"]["ratios"]:
            interval = ratio.get("interval")
            rows.append([r["gpu_dir"], r["suite"], ratio["model"] + tiny, ratio["baseline"] + tiny,
                         f"{ratio['median']:.2f}x",
                         f"{interval['low']:.2f}–{interval['high']:.2f} ({interval_label(interval)})" if interval
                         else (ratio.get("interval_note") or ""),
                         str(r["rounds"]), str(r["num_documents"]), (r.get("created_at") or "")[:10],
                         ", ".join(w for w in ("busy" if r.get("load_warning") else "",
                                               "too few rounds for 95%" if interval and not
                                               interval.get("confidence", 1) >= interval.get("requested", 0) else "")
                                   if w)])
    return sorted(rows)


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e3:,.1f}"


def _label(record: dict) -> str:
    return f"{record['model']} / {record['suite']} ({record['gpu_dir']})"


LATENCY_HEADER = ["device", "model", "suite", "layout", "batch", "requests", "p50 ms", "p90 ms", "p99 ms", "tokens/s",
                  "requests/s", "untimed new shapes", "cold start", "date", "warning"]


def latency_rows(records: list[dict]) -> list[list[str]]:
    """One row per batch size of each latency record: percentiles ('≈max' where no request lies beyond one),
    throughput, the requests that met a new shape (run once untimed first), and the model's cold start."""
    rows = []
    for r in records:
        cold = f"load {r.get('load_seconds') or 0:.2f} s + first call {_ms(r.get('first_call_s'))} ms (document 0)"
        for point in r["points"]:
            stats = point["latency_s"]
            rows.append([r["gpu_dir"], r["model"], r["suite"], r.get("layout") or "", str(point["batch_size"]),
                         str(point["requests"]), *(shown_percentile(stats, k) for k in ("p50", "p90", "p99")),
                         f"{point['tokens_per_second']:,.0f}", f"{point['requests_per_second']:,.2f}",
                         str(point.get("shape_warmup_requests", "")), cold, (r.get("created_at") or "")[:10],
                         "busy" if r.get("load_warning") else ""])
    return rows


def latency_sections(records: list[dict], out: Path) -> list[Section]:
    """The latency table and a figure of percentiles against batch size (none without latency records)."""
    if not records:
        return []
    curves = [Curve(_label(r), [p["batch_size"] for p in r["points"]],
                    {name: [p["latency_s"][name] * 1e3 for p in r["points"]] for name in ("p50", "p90", "p99")})
              for r in records]
    figure = latency_curves(curves, out / "latency.png", "documents per request (batch size)",
                            "Per-request latency against batch size (closed loop)", log_x=True)
    return [Section("Latency per request", "Closed loop, one request at a time, each drawing its documents from "
                    "the suite; milliseconds per request, real tokens/s. '≈max': a percentile with no request beyond "
                    "it (p99 needs 100 requests for one), so the largest latency, not a tail estimate. A request "
                    "that met a shape not run before ran once untimed first (counted): these are latencies of shapes "
                    "already run.", (LATENCY_HEADER, latency_rows(records)), figure)]


SERVING_HEADER = ["device", "model", "suite", "batches", "clock", "offered/s", "arrived/s", "achieved/s", "p50 ms",
                  "p90 ms", "p99 ms", "queue p99 ms", "batch mean", "tokens/s", "unserved", "new-shape batches (busy)"]


def serving_rows(records: list[dict]) -> list[list[str]]:
    """One row per offered rate of each serving record (ascending): the rates offered, drawn and achieved, total
    latency ('≈max' where no request lies beyond a percentile), queue, batches, throughput, and the batches of
    new shapes with their share of the busy time (older records: blank)."""
    rows = []
    for r in records:
        batches = f"{r.get('layout')}, {r.get('max_batch_tokens')} tokens" + (", sorted" if r.get("sort_by_length")
                                                                              else "")
        for run in sorted(r["serving_runs"], key=lambda run: run["offered_rate"]):
            total = run.get("total_s") or {}
            new_shapes = (f"{run['new_shape_batches']} of {run['batches']} ({run['new_shape_share']:.0%})"
                          if "new_shape_batches" in run else "")
            rows.append([r["gpu_dir"], r["model"], r["suite"], batches, r.get("clock") or "",
                         f"{run['offered_rate']:g}", f"{run['arrived_rate']:.3g}" if "arrived_rate" in run else "",
                         f"{run['achieved_rate']:.3g}", *(shown_percentile(total, k) if total else ""
                                                          for k in ("p50", "p90", "p99")),
                         _ms((run.get("queue_s") or {}).get("p99")),
                         f"{(run.get('batch_size') or {}).get('mean', 0):.2f}", f"{run['tokens_per_second']:,.0f}",
                         str(run["unserved"]), new_shapes])
    return rows


def slo_items(records: list[dict]) -> list[str]:
    """Each SLO search's answer: the highest rate meeting the target and the throughput its run achieved."""
    items = []
    for r in records:
        slo = r.get("slo")
        if not slo:
            continue
        target = f"p{slo['percentile']:g} <= {_ms(slo['target_s'])} ms"
        answer = (f"{slo['best_rate']:.3g} requests/s (achieved {slo['best_achieved_rate']:.3g} requests/s, "
                  f"{slo['best_tokens_per_second']:,.0f} tokens/s)" if slo.get("best_rate") is not None
                  else "no rate tried")
        items.append(f"{_label(r)}: SLO {target}: {answer}; {slo['note']}{slo_basis(slo)}")
    return items


def serving_sections(records: list[dict], out: Path) -> list[Section]:
    """The serving table, each SLO's answer, and a figure of latency percentiles against offered load with the
    target drawn (none without serving records)."""
    if not records:
        return []
    curves = []
    for r in records:
        runs = sorted((run for run in r["serving_runs"] if run.get("total_s")), key=lambda run: run["offered_rate"])
        curves.append(Curve(_label(r), [run["offered_rate"] for run in runs],
                            {name: [run["total_s"][name] * 1e3 for run in runs] for name in ("p50", "p90", "p99")},
                            [run["unserved"] > 0 for run in runs],
                            (r.get("slo") or {}).get("target_s", 0) * 1e3 or None))
    figure = latency_curves(curves, out / "serving.png", "offered load (requests/s)",
                            "Total request latency against offered load (open loop, dynamic batching)")
    return [Section("Serving: latency against offered load", "Open-loop Poisson arrivals through a dynamic batcher "
                    "into one worker; total = queue + inference, milliseconds per request; an overloaded run "
                    "leaves requests unserved (crossed in the figure). Arrived/s is what the seeded draw brought "
                    "(a short window draws off the offered rate); achieved/s below it is not overload unless "
                    "requests went unserved. A batch of a new shape is served as it comes, its first call in the "
                    "latencies (its share of the busy time given); '≈max': no request beyond that percentile.", (SERVING_HEADER, serving_rows(records)),
                    figure, slo_items(records))]


def embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


@dataclass
class Section:
    """One part of the report, built once and rendered to markdown and HTML alike."""

    title: str
    text: str = ""
    table: tuple[list[str], list[list[str]]] | None = None
    image: Path | None = None
    items: list[str] = field(default_factory=list)
    folded: bool = False  # HTML: the table folded under its title (long reference material)

    def markdown(self) -> str:
        parts = [f"## {self.title}", ""]
        parts += [self.text, ""] if self.text else []
        parts += [markdown_table(*self.table), ""] if self.table else []
        parts += [f"![{self.title}]({self.image.name})", ""] if self.image else []
        parts += [*(f"- {item}" for item in self.items), ""] if self.items else []
        return "\n".join(parts)

    def html(self) -> str:
        parts = [f"<h2>{html.escape(self.title)}</h2>"]
        parts += [f"<p>{html.escape(self.text)}</p>"] if self.text else []
        table = html_table(*self.table) if self.table else ""
        parts += [f"<details><summary>{len(self.table[1])} rows</summary>{table}</details>" if self.folded else table]
        parts += [f"<img alt='{html.escape(self.title)}' src='{embed(self.image)}'>"] if self.image else []
        parts += ["<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in self.items) + "</ul>"] if self.items else []
        return "".join(parts)


PAGE = jinja2.Template("""<!doctype html><html><head><meta charset='utf-8'><title>mbbench report</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #999;padding:2px 6px;font-size:13px}img{max-width:100%}</style>
<script>window.addEventListener('load',()=>{for(const i of document.images){
i.setAttribute('data-loaded',String(i.complete&&i.naturalWidth>0));}document.body.setAttribute('data-ready','1');});
</script></head><body><h1>mbbench report</h1><p>{{ intro }}</p>
{% for section in sections %}{{ section.html() }}
{% endfor %}</body></html>
""")

LEGEND = ("Throughput in thousands of tokens/s (k tok/s) of real tokens, three significant figures; max batch in "
          "documents (or tokens, for a packed budget). Measured cells give (±half the IQR over the median of "
          "per-pass tokens/s, passes, and 'busy' or 'unstable' where the record says so); predicted cells "
          "(p: low–high) the band of past errors for that GPU's architecture and stack, which contains the "
          "prediction (past predictions were off by that much; 'band too thin' where too few rows exist), and "
          "'would not fit' where the batch exceeds the predicted maximum. '–' unsupported, blank "
          "missing; **bold** best measured and _italic_ best predicted per column among rows of one device, "
          "protocol and dtype. '≥ N (capped ...)': a max-batch search stopped by its trial or time cap (a lower "
          "bound, never "
          "ranked best); 'n/a (... was nan)': a value that was not finite.")


def generated_line(when: datetime | None = None) -> str:
    """'Generated 2026-12-01 by mbbench 0.1.0 (commit 9465c10), performance model perfmodel-3.' The date is
    today's in UTC, or SOURCE_DATE_EPOCH's when set (reproducible builds)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = when or (datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc))
    commit = git_commit()
    return (f"Generated {when:%Y-%m-%d} by mbbench {mbbench.__version__} (commit {commit[:12] if commit else 'unknown'}"
            f"{', uncommitted changes' if commit and commit.endswith('-dirty') else ''}), "
            f"performance model {MODEL_VERSION}.")


def section_text(records: list[dict]) -> str:
    """What every number of a GPU's table was measured or predicted in: kind, protocol and dtype."""
    setups = sorted({(r.get("kind") or "", r.get("protocol") or "", r.get("dtype") or "") for r in records})
    return "Records: " + "; ".join(f"{kind}, {protocol} protocol, {dtype}" for kind, protocol, dtype in setups) + "."


def environment_rows(records: list[dict]) -> list[list[str]]:
    """Each distinct machine and software stack the measured records came from: how many records, the range of
    1-minute load averages at their start, and how many were measured on a busy machine."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("kind") == "measured":
            key = (r.get("device_name"), r.get("driver"), r.get("cuda"), r.get("torch"), r.get("transformers"),
                   r.get("host"))
            groups.setdefault(key, []).append(r)
    rows = []
    for key, members in sorted(groups.items(), key=lambda kv: [str(v) for v in kv[0]]):
        starts = [(r.get("load") or {}).get("start") or {} for r in members]
        loads = sorted(s["load_average_1m"] for s in starts if s.get("load_average_1m") is not None)
        cpus = next((s["cpu_count"] for s in starts if s.get("cpu_count")), "?")
        load = "" if not loads else (f"{loads[0]:.2f} / {cpus}" if loads[0] == loads[-1]
                                     else f"{loads[0]:.2f}–{loads[-1]:.2f} / {cpus}")
        busy = sum(1 for r in members if r.get("load_warning"))
        rows.append([*(str(v or "") for v in key), str(len(members)), load,
                     f"busy ({busy} of {len(members)})" if busy else ""])
    return rows


ENVIRONMENT_HEADER = ["device", "driver", "cuda", "torch", "transformers", "host", "records", "load 1m / cpus",
                      "warning"]


def environment_section(read: list[dict]) -> Section:
    """The Environment table over every measured record read (repeats, superseded and failed ones included, as in
    the provenance), with the counts that tie it to the records read."""
    measured = [r for r in read if r.get("kind") == "measured"]
    return Section("Environment", f"The {plural(len(measured), 'measured record')} of the {len(read)} read, by "
                   f"machine and software ({counted(read)}).", (ENVIRONMENT_HEADER, environment_rows(measured)))


def build_report(result_dirs: list[str], out: str | Path, model: str | None = None,
                 baseline: str = "hf-modernbert-base", include_smoke: bool = False) -> Path:
    """Render report.md, index.html and PNGs from the records under `result_dirs` into `out`.

    `model`: the model of the GPU-basket figure (None: modernbert-base, when it has records). Smoke records
    (`--tiny`) are left out unless `include_smoke`. Raises UserError when there are no records, when `model` is
    given and has none, or when `out` is not a directory that can be written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; the report needs a directory")
    raw = [r.flatten() for r in results.read_records(result_dirs)]
    smoke = [r for r in raw if r.get("tiny")]
    raw = raw if include_smoke else [r for r in raw if not r.get("tiny")]
    if not raw:
        raise UserError(f"no records found in {', '.join(map(str, result_dirs))}: nothing to report"
                        + (f" ({len(smoke)} smoke records left out; --include-smoke shows them)" if smoke else ""))
    records, notes = merge(raw)
    kept = list(records)  # the newest of each identity: an older repeat is marked so in the provenance
    sweeps = [r for r in records if r.get("measurement") == "measured_sweep"]  # sections of their own
    records = [r for r in records if r.get("measurement") != "measured_sweep"]
    records += [row for r in records if r.get("measurement") == "comparison" and r.get("status") == "ok"
                for row in comparison_throughput(r)]
    records, superseded = supersede(records)
    paired = [r for r in records if r.get("measurement") == "comparison" and r.get("status") == "ok"]
    records = label_variants([r for r in records if r.get("measurement") != "comparison"])
    # A failure superseded by a later measurement is history; one that is newest stays visible, apart.
    failed = [r for r in records if r.get("status") == "failed"]
    served = {kind: [r for r in records if r.get("measurement") == kind and r.get("status") == "ok"]
              for kind in ("latency", "serving")}  # sections of their own, never a throughput cell
    records = [r for r in records if r.get("status") != "failed" and r.get("measurement") not in served]
    if model is not None and not any(r["model"].split(" [")[0] == model for r in records):
        raise UserError(f"no records of model {model!r} in {', '.join(map(str, result_dirs))} (models with records: "
                        f"{', '.join(sorted({r.get('registry_model') or r['model'] for r in records}))})")
    model = model or "modernbert-base"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot write the report to {out}: {error.strerror or error}") from None
    read = ", ".join(f"{d} ({sum(str(r.get('path') or '').startswith(str(d)) for r in raw)} records)"
                     for d in result_dirs)
    intro = f"{generated_line()} Read {read}." + (f" {len(smoke)} smoke (--tiny) records left out."
                                                  if smoke and not include_smoke else "") + " " + LEGEND
    sections = [environment_section(raw)]
    sections += [Section(gpu, section_text(mine), paper_table(mine))
                 for gpu in sorted({r["gpu_dir"] for r in records})
                 for mine in [[r for r in records if r["gpu_dir"] == gpu]]]
    others = other_suite_rows(records)
    if others:
        sections.append(Section("Other suites", "Suites beyond the paper's four (user suites, by fingerprint).",
                                (["device", "model", "suite", "fingerprint", "thousand tokens/s"], others)))
    figure = basket_figure(records, model, out / "basket.png")
    if figure:
        sections.append(Section(f"GPU basket: {model}", image=figure))
    speedups = speedup_rows(records, baseline, paired)
    if speedups:
        sections.append(Section(f"Speedup against {baseline}", "Tokens/s over the baseline's: same suite, protocol, "
                                "dtype, documents, batch, threads and machine; measured and predicted apart. Where a "
                                "paired comparison measured the pair on that workload (and engine), its median ratio "
                                "[interval] (the interval's confidence) is the cell.",
                                (["gpu", "model", *(f"{s} (x)" for s in (*SHORT, *LONG))], speedups)))
    if len({r.get("engine") or ENGINE_BEFORE_THE_AXIS for r in records}) > 1:
        sections.append(Section("Engines", "Each model on each engine it ran on, per suite. Parity: max |difference| "
                                "from the torch engine on the first batch's real tokens, checked before timing. Cold "
                                "start: export + compile + first call, apart from warmup and the timed passes.",
                                (ENGINES_HEADER, engine_rows(records))))
    if paired:
        sections.append(Section("Paired comparisons (interleaved passes)", table=(PAIRED_HEADER, paired_rows(paired))))
    sections += latency_sections(served["latency"], out) + serving_sections(served["serving"], out)
    sections += [predicted_sweep_section(Path(directory) / "sweeps" / "sweep.csv", out, Section)
                 for directory in result_dirs if (Path(directory) / "sweeps" / "sweep.csv").is_file()]
    sections += measured_sweep_sections(sweeps, out, Section)
    if failed:
        sections.append(Section("Failed configurations", table=(FAILURE_HEADER, failure_rows(failed))))
    sections.append(Section("Provenance", f"Every record read, one row each ({counted(raw)}): older repeats, "
                            "superseded and failed ones included, marked; a comparison's row names each side with its "
                            "engine. Software versions are in the Environment table.",
                            (PROVENANCE_HEADER, provenance_rows(what_became_of(raw, kept, superseded))), folded=True))
    if notes:
        sections.append(Section("Merged duplicates", items=notes))
    # both pages are rendered before either is written, and each replaces the old one whole (UTF-8, any locale)
    markdown = "\n".join(["# mbbench report", "", intro, "", *(s.markdown() for s in sections)])
    intro_html = html.escape(intro).replace("**bold**", "<b>bold</b>").replace("_italic_", "<i>italic</i>")
    page = PAGE.render(intro=intro_html, sections=sections)
    write_text(out / "report.md", markdown)
    write_text(out / "index.html", page)
    return out
