"""Sweeps in reports and on the terminal: a measured sweep's ranking table, rank correlation and figure of
measured against predicted tokens/s (`measured_sweep` makes the records; this module only reads them), and a
predicted sweep's heatmap of the one metric its ranking used, its winner marked (`sweep` writes the CSV)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from mbbench.files import ENCODING
from mbbench.formatting import plural, significant
from mbbench.measured_sweep import RANKINGS, label, ranked, table_rows
from mbbench.records import MeasuredSweep, Record, SweepCandidate
from mbbench.report.figures import MeasuredPoint, measured_vs_predicted, sweep_heatmap


@dataclass(frozen=True)
class SweepView:
    """A measured sweep record as the report and the terminal read it: the payload and the header fields they name."""

    payload: MeasuredSweep
    dtype: str
    device: str
    threads: int | None
    created_at: str

    @classmethod
    def of_record(cls, record: Record) -> "SweepView":
        return cls(record.payload, record.identity.dtype, record.device.name, record.identity.threads,
                   record.created_at)

    @classmethod
    def of_row(cls, row: dict) -> "SweepView":
        """From a `Record.flatten()` row (the report's input): the payload rebuilt from its fields."""
        values = {f.name: row[f.name] for f in fields(MeasuredSweep)}
        values["candidates"] = [SweepCandidate(**c) for c in values["candidates"]]
        return cls(MeasuredSweep(**values), row["dtype"], row["device_name"], row.get("threads"),
                   row.get("created_at") or "")

    def rows(self) -> list[dict]:
        return table_rows(self.payload, self.dtype, self.device)


def workload_text(view: SweepView) -> str:
    """'4,096 tokens per pass (synthetic, 1 batch), float32, 2 threads on AMD EPYC ...'."""
    work = view.payload.workload
    threads = f", {plural(view.threads, 'thread')}" if view.threads else ""
    return (f"{work['tokens_per_pass']:,} tokens per pass ({work['source']}, {plural(work['batches'], 'batch')}, "
            f"{work['real_tokens']:,} tokens), {view.dtype}{threads} on {view.device}")


def correlation_text(payload: MeasuredSweep) -> str:
    """The rank agreement in one line: Spearman's rho on the ranking metric and on tokens/s, and the predicted best."""
    rho = payload.rank_correlation
    if not rho.get("shapes"):
        return f"no prediction for this device ({payload.prediction_source}): no rank correlation"
    shown = {name: "undefined" if value is None else f"{value:.2f}" for name, value in rho.items() if name != "shapes"}
    best = max((r for r in ranked(payload) if r.predicted is not None), key=lambda r: r.predicted)
    verdict = "is the measured best" if best.rank == 1 else (
        "is tied with the measured best" if best.tied else f"ranks {best.rank} measured, outside the best's interval")
    return (f"Spearman rank correlation, predicted ({payload.prediction_source}) vs measured: {shown['ranking']} on "
            f"the ranking metric, {shown['tokens_per_second']} on tokens/s, over {plural(rho['shapes'], 'shape')}; "
            f"the "
            f"predicted best {label(best.shape)} {verdict}")


def header_lines(view: SweepView) -> list[str]:
    """What a measured sweep rests on: device and workload, ranking metric, blocks and rounds, completeness."""
    payload = view.payload
    done = "" if payload.complete else f" (partial: {len(payload.candidates)} of {payload.planned} shapes)"
    return [f"measured sweep{done}: {workload_text(view)}",
            f"ranked by {RANKINGS[payload.ranking]}, measured on this device; "
            f"{plural(payload.rounds, 'interleaved round')} per block, every block with the anchor {'/'.join(map(str, payload.anchor))}; attention "
            f"{payload.backend}; '1=' is tied with the best (its paired interval reaches it)",
            f"MFU against {payload.peak_note}"]


def figure(view: SweepView, path: Path) -> Path | None:
    """Measured against predicted tokens/s per shape, diagonal and best marked; None without predictions."""
    points = [MeasuredPoint(label(r.shape), r.shape.predicted_tokens_per_second, r.anchored,
                            *(r.anchored_interval or (None, None)), r.rank == 1, r.tied)
              for r in ranked(view.payload) if r.shape.predicted_tokens_per_second]
    if not points:
        return None
    rho = view.payload.rank_correlation
    shown = ", ".join(f"{name} {value:.2f}" for name, value in (("ranking", rho.get("ranking")),
                                                                ("tokens/s", rho.get("tokens_per_second")))
                      if value is not None)
    title = (f"measured vs predicted ({view.payload.prediction_source})\nbest by "
             f"{view.payload.ranking.replace('throughput', 'tokens/s at equal parameters')}"
             f"{f'; Spearman {shown}' if shown else ''}\n{workload_text(view)}")
    return measured_vs_predicted(points, path, title)


METRIC_NAMES = {"scaled_tokens_per_second": "tokens/s at equal parameters (the ranking)",
                "anchored_tokens_per_second": "tokens/s anchored (the ranking)"}


def table(view: SweepView, top: int | None = None) -> list[dict]:
    """The ranking as people read it, best first: rank, shape, measured tokens/s [interval], the ranking metric
    (named), the prediction, predicted / measured, MFU, and each kernel with where its choice came from."""
    out = []
    for row in view.rows()[:top]:
        interval = (f" [{significant(row['tokens_per_second_low'])}, {significant(row['tokens_per_second_high'])}]"
                    if row["tokens_per_second_low"] is not None else "")
        out.append({
            "rank": row["rank"], "hidden": row["hidden"], "glu": row["glu"], "layers": row["layers"],
            "parameters_m": row["parameters_m"],
            "tokens/s in its block [interval]": significant(row["tokens_per_second"]) + interval,
            METRIC_NAMES[row["ranked_by"]]: significant(row[row["ranked_by"]]),
            "predicted tokens/s": significant(row["predicted_tokens_per_second"])
            if row["predicted_tokens_per_second"] else "",
            "predicted / measured": f"{row['predicted_over_measured']:.2f}" if row["predicted_over_measured"] else "",
            "MFU": f"{row['mfu']:.1%}" if row["mfu"] is not None else "",
            "GEMM": f"{row['gemm']} ({row['gemm_source']})",
            "element-wise": f"{row['elementwise']} ({row['elementwise_source']})"})
    return out


def ranked_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, str, tuple[int, int] | None]:
    """A predicted sweep's CSV rows as every heatmap draws them: (rows with the ranking metric blank where a shape
    was not ranked with the usual ones, the metric, the winner's (hidden, GLU)). The metric is the CSV's
    `ranked_by` column; CSVs written before it existed ranked by scaled tokens/s when they have it."""
    metric = frame["ranked_by"].iloc[0] if "ranked_by" in frame else (
        "scaled_tokens_per_second" if "scaled_tokens_per_second" in frame else "basket_score")
    shown = frame.copy()
    if "ranked" in shown:
        shown[metric] = shown[metric].where(shown["ranked"].astype(bool))
    winner = shown.sort_values("rank").iloc[0] if "rank" in shown else None
    return shown, metric, (int(winner["hidden"]), int(winner["glu"])) if winner is not None else None


def heatmap_title(frame: pd.DataFrame, metric: str, where: str) -> str:
    """'scaled tokens per second (the ranking), best over layers / predicted over T4, L4; 16,384 tokens per pass,
    bfloat16' (the workload where the CSV names it)."""
    workload = (f"\n{int(frame['tokens_per_pass'].iloc[0]):,} tokens per pass, {frame['dtype'].iloc[0]}"
                if {"tokens_per_pass", "dtype"} <= set(frame.columns) else "")  # its own line: never cut off
    return f"{metric.replace('_', ' ')} (the ranking), best over layers\npredicted{where}{workload}"


def predicted_sweep_section(csv_path: Path, out: Path, section) -> object:
    """The report's section of a predicted sweep CSV: one heatmap, of the metric its ranking used, winner circled."""
    frame = pd.read_csv(csv_path, encoding=ENCODING)
    shown, metric, winner = ranked_frame(frame)
    image = sweep_heatmap(shown, out / f"sweep_{metric}.png", metric, winner, heatmap_title(frame, metric, ""))
    winner_text = f"; rank 1: hidden {winner[0]}, GLU {winner[1]}" if winner else ""
    return section(f"Sweep (predicted): ranked by {metric.replace('_', ' ')}",
                   f"{csv_path}: {len(frame)} shapes{winner_text}.", image=image)


def measured_sweep_sections(rows: list[dict], out: Path, section) -> list:
    """One section per measured sweep record (`Record.flatten()` rows): what it rests on, the rank agreement, the
    ranking table (ties shown '1='), the figure of measured against predicted tokens/s. `section` is the
    report's Section class (title, text, table, image, items)."""
    sections = []
    for index, row in enumerate(sorted(rows, key=lambda r: (r["gpu_dir"], r.get("created_at") or "")), 1):
        view = SweepView.of_row(row)
        shown = table(view)
        header = list(shown[0]) if shown else []
        image = figure(view, out / f"measured_sweep_{index}.png")
        sections.append(section(f"Measured sweep on {view.device} ({view.dtype})",
                                " ".join(header_lines(view)) + f" Record: {row.get('path') or ''}.",
                                (header, [[str(v) for v in r.values()] for r in shown]), image,
                                [correlation_text(view.payload)]))
    return sections
