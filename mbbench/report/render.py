"""`mbbench report`: records (measured and predicted, any number of directories) -> report.md, index.html, PNGs.

Reads typed records only, as `selection.Row`s. A table cell holds one configuration: records of one model that
differ in a field that changes the number (protocol, backend, dtype, batch, documents, passes, host, software)
get rows of their own, labelled by what differs; repeats of one identity on one host keep the newest, and the
report says which. A measurement re-measured later (the same model, suite, protocol, dtype, batch and documents on
the same device, by a throughput run or a paired comparison) is superseded: out of the tables, listed in the
provenance. A comparison's per-model tokens/s fill the tables like a run's, and its paired ratio is the one
speedup the report gives for that pair.

Output is deterministic: rows are sorted and figures carry no timestamps; the one date on the page is the day it
was generated (SOURCE_DATE_EPOCH, when set, fixes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mbbench import results
from mbbench.errors import UserError
from mbbench.formatting import plural
from mbbench.report.basket import basket_figure
from mbbench.report.comparisons import ENGINES_HEADER, PAIRED_HEADER, engine_rows, paired_rows, speedup_rows
from mbbench.report.page import LEGEND, Section, generated_line, write_pages
from mbbench.report.selection import Row, label_variants, merge, row_of, side_rows, supersede, what_became_of
from mbbench.report.serving import latency_sections, serving_sections
from mbbench.report.sweeps import measured_sweep_sections, predicted_sweep_section
from mbbench.report.tables import (ENVIRONMENT_HEADER, FAILURE_HEADER, LONG, PROVENANCE_HEADER, SHORT, counted,
                                   environment_rows, failure_rows, other_suite_rows, paper_table, provenance_rows)


@dataclass
class Selected:
    """The rows each part of the report shows, chosen once from the rows read."""

    read: list[Row]  # every record read (smoke ones left out unless asked for)
    kept: list[Row]  # the newest of each identity (`merge`)
    notes: list[str]  # which repeats were kept over which
    tables: list[Row] = field(default_factory=list)  # labelled rows of the throughput and max-batch tables
    superseded: list[Row] = field(default_factory=list)
    paired: list[Row] = field(default_factory=list)  # comparisons that measured
    sweeps: list[Row] = field(default_factory=list)  # measured sweeps
    latency: list[Row] = field(default_factory=list)
    serving: list[Row] = field(default_factory=list)
    failed: list[Row] = field(default_factory=list)  # a failure no later measurement replaced


def _ok(row: Row, measurement: str) -> bool:
    return row.measurement == measurement and row.status == "ok"


def select(read: list[Row]) -> Selected:
    """Merge repeats, add each comparison's sides, supersede re-measurements and label what is left; then sort the
    rows into the report's parts (measured sweeps, comparisons, latency and serving get sections of their own)."""
    kept, notes = merge(read)
    chosen = Selected(read, kept, notes, sweeps=[r for r in kept if r.measurement == "measured_sweep"])
    rows = [r for r in kept if r.measurement != "measured_sweep"]
    rows += [side for r in rows if _ok(r, "comparison") for side in side_rows(r)]
    rows, chosen.superseded = supersede(rows)
    chosen.paired = [r for r in rows if _ok(r, "comparison")]
    rows = label_variants([r for r in rows if r.measurement != "comparison"])
    chosen.failed = [r for r in rows if r.status == "failed"]  # a failure superseded later is history
    chosen.latency = [r for r in rows if _ok(r, "latency")]
    chosen.serving = [r for r in rows if _ok(r, "serving")]
    chosen.tables = [r for r in rows if r.status != "failed" and r.measurement not in ("latency", "serving")]
    return chosen


def read_rows(result_dirs: list[str], include_smoke: bool) -> tuple[list[Row], list[Row]]:
    """(the rows to report, the smoke rows left out); UserError when nothing is left to report."""
    rows = [row_of(record) for record in results.read_records(result_dirs)]
    smoke = [r for r in rows if r.identity.tiny]
    rows = rows if include_smoke else [r for r in rows if not r.identity.tiny]
    if not rows:
        raise UserError(f"no records found in {', '.join(map(str, result_dirs))}: nothing to report"
                        + (f" ({len(smoke)} smoke records left out; --include-smoke shows them)" if smoke else ""))
    return rows, smoke


def environment_section(read: list[Row]) -> Section:
    """The Environment table over every measured record read (repeats, superseded and failed ones included, as in
    the provenance), with the counts that tie it to the records read."""
    measured = [r for r in read if r.kind == "measured"]
    failed = sum(r.status == "failed" for r in measured)
    return Section("Environment", f"The {plural(len(measured), 'measured record')} of the {len(read)} read"
                   + (f" ({failed} of them failed)" if failed else "") + ", by machine and software.",
                   (ENVIRONMENT_HEADER, environment_rows(measured)))


def section_text(rows: list[Row]) -> str:
    """What every number of a GPU's table was measured or predicted in: kind, protocol and dtype."""
    setups = sorted({(r.kind, r.identity.protocol, r.identity.dtype) for r in rows})
    return "Records: " + "; ".join(f"{kind}, {protocol} protocol, {dtype}" for kind, protocol, dtype in setups) + "."


def table_sections(tables: list[Row], model: str, baseline: str, paired: list[Row], out: Path) -> list[Section]:
    """The paper's table per device, other suites, the basket figure, the speedups and the engines."""
    sections = [Section(gpu, section_text(mine), paper_table(mine)) for gpu in sorted({r.gpu for r in tables})
                for mine in [[r for r in tables if r.gpu == gpu]]]
    others = other_suite_rows(tables)
    if others:
        sections.append(Section("Other suites", "Suites beyond the paper's four (user suites, by fingerprint).",
                                (["device", "model", "suite", "fingerprint", "thousand tokens/s"], others)))
    figure = basket_figure(tables, model, out / "basket.png")
    if figure:
        sections.append(Section(f"GPU basket: {model}", image=figure))
    speedups = speedup_rows(tables, baseline, paired)
    if speedups:
        sections.append(Section(f"Speedup against {baseline}", "Tokens/s over the baseline's: same suite, protocol, "
                                "dtype, documents, batch, threads and machine; measured and predicted apart. Where a "
                                "paired comparison measured the pair on that workload (and engine), its median ratio "
                                "[interval] (the interval's confidence) is the cell.",
                                (["gpu", "model", *(f"{s} (x)" for s in (*SHORT, *LONG))], speedups)))
    if len({r.engine for r in tables}) > 1:
        sections.append(Section("Engines", "Each model on each engine it ran on, per suite. Parity error: the accuracy "
                                "gate's judged error against the same weights in fp32 (torch eager) on the first "
                                "batch's real tokens, checked before timing: max |difference| in fp32, max |difference| "
                                "/ max |fp32| in bf16 and fp16 ('reference': the fp32 function itself; records before "
                                "issue 36: against the torch engine). Cold start: export + compile + first call, apart "
                                "from warmup and the timed passes.",
                                (ENGINES_HEADER, engine_rows(tables))))
    return sections


def closing_sections(chosen: Selected) -> list[Section]:
    """Failures, the provenance of every record read, and which repeats were merged."""
    sections = [Section("Failed configurations", table=(FAILURE_HEADER, failure_rows(chosen.failed)))] \
        if chosen.failed else []
    marked = what_became_of(chosen.read, chosen.kept, chosen.superseded)
    sections.append(Section("Provenance", f"Every record read, one row each ({counted(chosen.read)}): older repeats, "
                            "superseded and failed ones included, marked; a comparison's row names each side with its "
                            "engine. Software versions are in the Environment table.",
                            (PROVENANCE_HEADER, provenance_rows(marked)), folded=True))
    return sections + ([Section("Merged duplicates", items=chosen.notes)] if chosen.notes else [])


def sections_of(chosen: Selected, result_dirs: list[str], out: Path, model: str, baseline: str) -> list[Section]:
    """Every section of the page, in order."""
    sections = [environment_section(chosen.read), *table_sections(chosen.tables, model, baseline, chosen.paired, out)]
    if chosen.paired:
        sections.append(Section("Paired comparisons (interleaved passes)",
                                table=(PAIRED_HEADER, paired_rows(chosen.paired))))
    sections += latency_sections(chosen.latency, out) + serving_sections(chosen.serving, out)
    sections += [predicted_sweep_section(Path(directory) / "sweeps" / "sweep.csv", out)
                 for directory in result_dirs if (Path(directory) / "sweeps" / "sweep.csv").is_file()]
    return sections + measured_sweep_sections(chosen.sweeps, out) + closing_sections(chosen)


def report_model(chosen: Selected, model: str | None, result_dirs: list[str]) -> str:
    """The model of the basket figure: `model`, which must have records (UserError), else modernbert-base."""
    if model is not None and not any(r.label.split(" [")[0] == model for r in chosen.tables):
        raise UserError(f"no records of model {model!r} in {', '.join(map(str, result_dirs))} (models with records: "
                        f"{', '.join(sorted({r.registry_model for r in chosen.tables}))})")
    return model or "modernbert-base"


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
    read, smoke = read_rows(result_dirs, include_smoke)
    chosen = select(read)
    model = report_model(chosen, model, result_dirs)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot write the report to {out}: {error.strerror or error}") from None
    counts = ", ".join(f"{d} ({sum(str(r.record.source_path or '').startswith(str(d)) for r in read)} records)"
                       for d in result_dirs)
    intro = f"{generated_line()} Read {counts}." + (f" {len(smoke)} smoke (--tiny) records left out."
                                                    if smoke and not include_smoke else "") + " " + LEGEND
    write_pages(out, intro, sections_of(chosen, result_dirs, out, model, baseline))
    return out

