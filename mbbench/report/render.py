"""`mbbench report`: records (measured and predicted, any number of directories) -> report.md, index.html, PNGs.

Reads records only (`Record.flatten()` rows). A table cell holds one configuration: records of one model
that differ in a field that changes the number (protocol, backend, dtype, batch, documents, passes,
host, software) get rows of their own, labelled by what differs; repeats of one identity on one host
keep the newest, and the report says which. Output is deterministic: rows are sorted, figures carry
no timestamps, nothing depends on the clock.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")  # no display: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from mbbench import results  # noqa: E402
from mbbench.errors import UserError  # noqa: E402
from mbbench.formatting import significant  # noqa: E402
from mbbench.report.figures import sweep_heatmap  # noqa: E402

SHORT, LONG = ("short-fixed", "short-variable"), ("long-fixed", "long-variable")
COLUMNS = [("short max batch", "max", "short-fixed"), ("short fixed", "tps", "short-fixed"),
           ("short variable", "tps", "short-variable"), ("long max batch", "max", "long-fixed"),
           ("long fixed", "tps", "long-fixed"), ("long variable", "tps", "long-variable")]
# Fields that change a number without being the model, suite or device: records that differ in one of
# them are shown apart, labelled with the field. `batch` and `docs` are relative to the suite's default.
VARIANT_FIELDS = ("protocol", "requested_backend", "dtype", "batch", "docs", "runs", "warmup", "compile",
                  "time_transfer", "weights_sha256", "suite_fingerprint", "device_name", "host", "torch",
                  "transformers", "model_version")
TABLE_WIDE_FIELDS = ("protocol", "dtype")  # they change every number of a row: never left implicit in a table
LABELS = {"requested_backend": "backend", "weights_sha256": "weights", "suite_fingerprint": "suite",
          "device_name": "device", "model_version": "model"}


def default_batch(suite: str) -> int:
    return 32 if suite.startswith("long") else 512


def variant(record: dict) -> dict:
    """The fields of a record that change its number, besides model, suite and device."""
    batch = record.get("batch_size")
    values = {"protocol": record.get("protocol"), "requested_backend": record.get("requested_backend") or "auto",
              "dtype": record.get("dtype"),
              "batch": f"tb{record['token_budget']}" if record.get("token_budget") else
              (None if batch in (None, default_batch(record["suite"])) else batch),
              "docs": record.get("documents") if record.get("subsampled") else None,
              "runs": record.get("runs"), "compile": record.get("compile") or None,
              "time_transfer": record.get("time_transfer") or None, "weights_sha256": record.get("weights_sha256"),
              "warmup": record.get("warmup_batches"),
              "suite_fingerprint": (record.get("suite_fingerprint") or "")[:8] or None,
              "device_name": record.get("device_name"), "model_version": record.get("model_version"),
              "host": record.get("host") if record.get("kind") == "measured" else None,
              "torch": record.get("torch") if record.get("kind") == "measured" else None,
              "transformers": record.get("transformers") if record.get("kind") == "measured" else None}
    return values


def label_variants(records: list[dict]) -> list[dict]:
    """Each record's row label: the model, plus the variant fields that tell its records apart.

    Protocol and dtype label every row of a device's table (of one kind) where they vary, so no row mixes
    them across columns and none is ranked unlabelled against another protocol; the other fields label a
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
                   record.get("measurement"))
        if key in newest:
            old = newest[key]
            versions = (f" ({record.get('model_version')} over {old.get('model_version')})"
                        if record.get("model_version") != old.get("model_version") else "")
            notes.append(f"{record['model']} / {record['suite']} on {record['gpu_dir']}: kept the newest, "
                         f"{record.get('created_at')}, over {old.get('created_at')}{versions}")
        newest[key] = record
    return sorted(newest.values(), key=lambda r: (r["gpu_dir"], r["model"], r["suite"], r["key"])), notes


def answers(record: dict, what: str) -> bool:
    """Whether a record fills a throughput ("tps") or maximum-batch ("max") cell.

    A predicted throughput record also carries the memory model's maximum batch at the suite's length.
    """
    searched = record.get("measurement") == "max_batch"
    if what == "max":
        return searched or (record["kind"] == "predicted" and (record.get("max_batch_size") is not None
                                                               or record.get("status") == "unsupported"))
    return not searched


def cell(records: list[dict], model: str, what: str, suite: str) -> tuple[str, float | None, bool]:
    """(text, value for ranking, predicted?) of one table cell; '–' unsupported, '' missing."""
    matches = [r for r in records if r["model"] == model and r["suite"] == suite
               and answers(r, what) and not r.get("memory_limit_bytes")]
    if not matches:
        return "", None, False
    # a measurement beats a prediction; among repeats the newest (said under "Merged duplicates")
    record = sorted(matches, key=lambda r: (r["kind"] != "measured", r.get("created_at") or ""))[0]
    predicted = record["kind"] == "predicted"
    if record.get("status") == "unsupported":
        return "–", None, predicted
    value = (record.get("max_batch_size") or record.get("max_token_budget")) if what == "max" else \
        record.get("tokens_per_second")
    if value is None:
        return "", None, predicted
    text = f"{value:,}" if what == "max" else significant(value / 1000)
    if predicted:
        return text + " (p)", float(value), predicted
    return text + measured_spread(record, what), float(value), predicted


def measured_spread(record: dict, what: str) -> str:
    """' (±1.2%, 10)': half the IQR over the median of per-pass tokens/s, and the number of passes."""
    if what == "max":
        return f" ({len(record.get('trials') or [])} trials)" if record.get("trials") else ""
    passes = len(record.get("run_seconds") or [])
    stats = record.get("tokens_per_second_stats") or {}
    if passes < 2 or stats.get("iqr_over_median") is None:
        return " (1 pass)" if passes == 1 else ""
    return f" (±{stats['iqr_over_median'] / 2:.1%}, {passes})"


def paper_table(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Rows: models (base group, then large); columns as the paper; best per column in bold."""
    models = sorted({r["model"] for r in records}, key=lambda m: (
        next((r.get("group") or "base") for r in records if r["model"] == m) != "base", m))
    grid = [[cell(records, m, what, suite) for _, what, suite in COLUMNS] for m in models]
    for column in range(len(COLUMNS)):  # measured and predicted cells are ranked apart
        for predicted, mark in ((False, "**"), (True, "_")):
            values = [row[column][1] for row in grid if row[column][1] is not None and row[column][2] == predicted]
            for row in grid:
                text, value, kind = row[column]
                if len(values) > 1 and kind == predicted and value == max(values):
                    row[column] = (f"{mark}{text}{mark}", value, kind)
    header = ["model", *(name for name, _, _ in COLUMNS)]
    return header, [[m, *(c[0] for c in row)] for m, row in zip(models, grid)]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    def fmt(text: str) -> str:
        text = html.escape(str(text))
        if text.startswith("**"):
            return f"<b>{text[2:-2]}</b>"
        return f"<i>{text[1:-1]}</i>" if text.startswith("_") and text.endswith("_") else text
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
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
    if record.get("kind") == "predicted":
        out.append("predicted")
    return ", ".join(out)


def provenance_rows(records: list[dict]) -> list[list[str]]:
    rows = []
    for r in records:
        value = r.get("tokens_per_second")
        rows.append([r["model"], r["suite"], r.get("measurement", "throughput"), r["kind"],
                     f"{value:,.0f}" if value else (str(r.get("max_batch_size") or r.get("max_token_budget") or "–")),
                     r.get("device_name") or "", r.get("driver") or "", r.get("cuda") or "", r.get("torch") or "",
                     str(r.get("backend", "")), r["dtype"], r["protocol"], (r.get("created_at") or "")[:10], flags(r)])
    return rows


PROVENANCE_HEADER = ["model", "suite", "measurement", "kind", "value", "gpu", "driver", "cuda", "torch", "backend",
                     "dtype", "protocol", "date", "flags"]


def basket_figure(records: list[dict], model: str, path: Path) -> Path | None:
    """Tokens/s of one model per suite across GPUs: measured solid, predicted hatched, min-max whiskers."""
    rows = [r for r in records if r["model"] == model and r.get("tokens_per_second") and
            r.get("measurement") != "max_batch" and r["gpu_dir"] != "cpu"]  # a GPU figure: CPU rows are tables
    if not rows:
        return None
    suites = sorted({r["suite"] for r in rows})
    gpus = sorted({(r["gpu_dir"], r["kind"]) for r in rows})
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(suites) * max(1, len(gpus)) / 2), 3.8))
    width = 0.8 / len(gpus)
    for i, (gpu, kind) in enumerate(gpus):
        xs, ys, lo, hi = [], [], [], []
        for j, suite in enumerate(suites):
            match = [r for r in rows if r["gpu_dir"] == gpu and r["kind"] == kind and r["suite"] == suite]
            if match:
                r = match[0]
                stats = r.get("tokens_per_second_stats") or {}
                xs.append(j + i * width)
                ys.append(r["tokens_per_second"] / 1000)
                lo.append(max(0.0, (r["tokens_per_second"] - stats.get("min", r["tokens_per_second"])) / 1000))
                hi.append(max(0.0, (stats.get("max", r["tokens_per_second"]) - r["tokens_per_second"]) / 1000))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=f"{gpu} ({kind})",
               hatch="//" if kind == "predicted" else None, edgecolor="black", linewidth=0.5)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(suites))], suites)
    ax.set_ylabel("thousand tokens / s")
    ax.set_title(f"{model}: tokens/s per suite across GPUs\n(hatched = predicted, whiskers = min-max of passes)",
                 fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def other_suite_rows(records: list[dict]) -> list[list[str]]:
    """Throughput of suites that are not one of the paper's four columns (a user's own suites)."""
    paper = {suite for _, _, suite in COLUMNS}
    rows = []
    for r in records:
        if r["suite"] in paper or r.get("measurement") == "max_batch" or not r.get("tokens_per_second"):
            continue
        text = significant(r["tokens_per_second"] / 1000) + (" (p)" if r["kind"] == "predicted" else
                                                             measured_spread(r, "tps"))
        rows.append([r["gpu_dir"], r["model"], r["suite"], (r.get("suite_fingerprint") or "")[:8], text])
    return sorted(rows)


def workload(record: dict) -> tuple:
    """What two records must share for their tokens/s to form a speedup: the same work on the same machine."""
    return (record["gpu_dir"], record["suite"], record.get("protocol"), record.get("dtype"),
            record.get("documents") if record.get("subsampled") else None, record.get("batch_size"),
            record.get("host") if record.get("kind") == "measured" else None, record.get("kind"))


def speedup_rows(records: list[dict], baseline: str) -> list[list[str]]:
    """Each labelled row's tokens/s over the baseline's on the same workload; rows without any ratio are left out."""
    throughput = [r for r in records if r.get("tokens_per_second") and r.get("measurement") != "max_batch"]
    base = {}
    for r in throughput:
        if r["model"].split(" [")[0] == baseline:
            base.setdefault(workload(r), r["tokens_per_second"])
    rows = []
    for gpu, model in sorted({(r["gpu_dir"], r["model"]) for r in throughput}):
        if model.split(" [")[0] == baseline:
            continue
        cells = []
        for suite in (*SHORT, *LONG):
            mine = next((r for r in throughput if r["gpu_dir"] == gpu and r["model"] == model and r["suite"] == suite),
                        None)
            ratio = mine and base.get(workload(mine))
            cells.append(f"{mine['tokens_per_second'] / ratio:.2f}x" if ratio else "")
        if any(cells):
            rows.append([gpu, model, *cells])
    return rows


PAIRED_HEADER = ["gpu", "suite", "model", "baseline", "ratio (median)", "95% interval", "rounds", "docs", "date",
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
                         f"{interval['low']:.2f}–{interval['high']:.2f}" if interval else (ratio.get("interval_note") or ""),
                         str(r["rounds"]), str(r["num_documents"]), (r.get("created_at") or "")[:10],
                         "busy" if r.get("load_warning") else ""])
    return sorted(rows)


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
        parts += [html_table(*self.table)] if self.table else []
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

LEGEND = ("Throughput in thousands of tokens/s, three significant figures; measured cells give (±half the IQR "
          "over the median of per-pass tokens/s, passes); '–' unsupported, blank missing; **bold** best measured "
          "per column, _italic_ best predicted; (p) predicted.")


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


def build_report(result_dirs: list[str], out: str | Path, model: str = "modernbert-base",
                 baseline: str = "hf-modernbert-base", include_smoke: bool = False) -> Path:
    """Render report.md, index.html and PNGs from the records under `result_dirs` into `out`.

    Smoke records (`--tiny`) are left out unless `include_smoke`. Raises UserError when there are no
    records or `out` is not a directory that can be written.
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
    records = label_variants(records)
    # A failure superseded by a later measurement is history; one that is newest stays visible, apart.
    failed = [r for r in records if r.get("status") == "failed"]
    paired = [r for r in records if r.get("measurement") == "comparison" and r.get("status") == "ok"]
    records = [r for r in records if r.get("status") != "failed" and r.get("measurement") != "comparison"]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot write the report to {out}: {error.strerror or error}") from None
    read = ", ".join(f"{d} ({sum(str(r.get('path') or '').startswith(str(d)) for r in raw)} records)"
                     for d in result_dirs)
    intro = f"Read {read}." + (f" {len(smoke)} smoke (--tiny) records left out." if smoke and not include_smoke
                               else "") + " " + LEGEND
    sections = [Section("Environment", table=(ENVIRONMENT_HEADER, environment_rows([*records, *paired])))]
    sections += [Section(gpu, table=paper_table([r for r in records if r["gpu_dir"] == gpu]))
                 for gpu in sorted({r["gpu_dir"] for r in records})]
    others = other_suite_rows(records)
    if others:
        sections.append(Section("Other suites", "Suites beyond the paper's four (user suites, by fingerprint).",
                                (["device", "model", "suite", "fingerprint", "thousand tokens/s"], others)))
    figure = basket_figure(records, model, out / "basket.png")
    if figure:
        sections.append(Section(f"GPU basket: {model}", image=figure))
    speedups = speedup_rows(records, baseline)
    if speedups:
        sections.append(Section(f"Speedup against {baseline}", "Same suite, protocol, dtype, documents, batch and "
                                "machine; measured and predicted apart.", (["gpu", "model", *SHORT, *LONG], speedups)))
    if paired:
        sections.append(Section("Paired comparisons (interleaved passes)", table=(PAIRED_HEADER, paired_rows(paired))))
    for directory in result_dirs:
        sweep_csv = Path(directory) / "sweeps" / "sweep.csv"
        if sweep_csv.is_file():
            frame = pd.read_csv(sweep_csv)
            for value in ("basket_score", "basket_tokens_per_second"):
                sections.append(Section(f"Sweep: {value}", image=sweep_heatmap(frame, out / f"sweep_{value}.png",
                                                                                value)))
    if failed:
        sections.append(Section("Failed configurations", table=(FAILURE_HEADER, failure_rows(failed))))
    sections.append(Section("Provenance", table=(PROVENANCE_HEADER, provenance_rows(records))))
    if notes:
        sections.append(Section("Merged duplicates", items=notes))
    (out / "report.md").write_text("\n".join(["# mbbench report", "", intro, "", *(s.markdown() for s in sections)]))
    intro_html = html.escape(intro).replace("**bold**", "<b>bold</b>").replace("_italic_", "<i>italic</i>")
    (out / "index.html").write_text(PAGE.render(intro=intro_html, sections=sections))
    return out
