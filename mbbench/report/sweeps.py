"""Sweeps in reports and on the terminal: a measured sweep's ranking table, rank correlation and figure of
measured against predicted tokens/s (`measured_sweep` makes the records; this module only reads them), and a
predicted sweep's heatmap of the one metric its ranking used, its winner marked (`sweep` writes the CSV)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mbbench.bench.paired import median_interval
from mbbench.files import ENCODING
from mbbench.formatting import plural, significant
from mbbench.measured_sweep import RANKINGS, label, ranked, table_rows
from mbbench.records import MeasuredSweep, Record
from mbbench.report.figures import MeasuredPoint, measured_vs_predicted, sweep_heatmap
from mbbench.report.page import Section
from mbbench.report.selection import Row
from mbbench.sweep import heatmap_title, ranked_frame


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

    def rows(self) -> list[dict]:
        return table_rows(self.payload, self.dtype, self.device)


def workload_text(view: SweepView) -> str:
    """'4,096 tokens per pass (synthetic, 1 batch), float32, 2 threads on AMD EPYC ...'."""
    work = view.payload.workload
    threads = f", {plural(view.threads, 'thread')}" if view.threads else ""
    return (f"{work.tokens_per_pass:,} tokens per pass ({work.source}, {plural(work.batches, 'batch')}, "
            f"{work.real_tokens:,} tokens), {view.dtype}{threads} on {view.device}")


def correlation_text(payload: MeasuredSweep) -> str:
    """The rank agreement in one line: Spearman's rho on the ranking metric and on tokens/s, and the predicted best."""
    rho = payload.rank_correlation
    if not rho.shapes:
        return f"no prediction for this device ({payload.prediction_source}): no rank correlation"
    ranking, tokens = ("undefined" if value is None else f"{value:.2f}" for value in (rho.ranking, rho.tokens_per_second))
    best = max((r for r in ranked(payload) if r.predicted is not None), key=lambda r: r.predicted)
    verdict = "is the measured best" if best.rank == 1 else (
        "is tied with the measured best" if best.tied else f"ranks {best.rank} measured, outside the best's interval")
    return (f"Spearman rank correlation, predicted ({payload.prediction_source}) vs measured: {ranking} on "
            f"the ranking metric, {tokens} on tokens/s, over {plural(rho.shapes, 'shape')}; the "
            f"predicted best {label(best.shape)} {verdict}")


def header_lines(view: SweepView) -> list[str]:
    """What a measured sweep rests on: device and workload, ranking metric, blocks and rounds, completeness."""
    payload = view.payload
    done = "" if payload.complete else f" (partial: {len(payload.candidates)} of {payload.planned} shapes)"
    coverage = median_interval([1.0] * payload.rounds).confidence if payload.rounds >= 2 else None
    ties = (f"'1=' is tied with the best (the {coverage:.1%} interval of its paired ratio to the best reaches 1)"
            if coverage else "one round: no intervals, no ties")
    loose = (f"; fewer than {FEWEST_ROUNDS_FOR_95} rounds: the intervals cover only {coverage:.1%}, so ties are "
             f"loose (--rounds {FEWEST_ROUNDS_FOR_95} for 95%)" if payload.rounds < FEWEST_ROUNDS_FOR_95 else "")
    return [f"measured sweep{done}: {workload_text(view)}",
            f"ranked by {RANKINGS[payload.ranking]}, measured on this device; "
            f"{plural(payload.rounds, 'interleaved round')} per block, every block with the anchor "
            f"{'/'.join(map(str, payload.anchor))}; attention {payload.backend}",
            f"{ties}{loose}",
            "anchored: a shape's median ratio to the anchor (same rounds) x the anchor's median tokens/s, so that "
            "blocks compare; predicted / anchored is the prediction's error; MFU is in the shape's own block",
            f"MFU against {payload.peak_note}"]


FEWEST_ROUNDS_FOR_95 = 6  # the fewest rounds whose median interval covers 95% (bench.paired.median_interval)


def figure(view: SweepView, path: Path) -> Path | None:
    """Measured against predicted tokens/s per shape, diagonal and best marked; None without predictions."""
    points = [MeasuredPoint(label(r.shape), r.shape.predicted_tokens_per_second, r.anchored,
                            *(r.anchored_interval or (None, None)), r.rank == 1, r.tied)
              for r in ranked(view.payload) if r.shape.predicted_tokens_per_second]
    if not points:
        return None
    rho = view.payload.rank_correlation
    shown = ", ".join(f"{name} {value:.2f}" for name, value in (("ranking", rho.ranking),
                                                                ("tokens/s", rho.tokens_per_second))
                      if value is not None)
    title = (f"measured vs predicted ({view.payload.prediction_source})\nbest by "
             f"{view.payload.ranking.replace('throughput', 'tokens/s at equal parameters')}"
             f"{f'; Spearman {shown}' if shown else ''}\n{workload_text(view)}")
    return measured_vs_predicted(points, path, title)


METRIC_NAMES = {"scaled_tokens_per_second": "tokens/s at equal parameters (the ranking)",
                "anchored_tokens_per_second": "tokens/s anchored (the ranking)"}


def _rounded(value: float | None, digits: int = 1) -> float | None:
    """As the sweep's CSV keeps a number (`measured_sweep.table_rows`), so the table and the CSV agree."""
    return None if value is None else round(value, digits)


def table(view: SweepView, top: int | None = None) -> list[dict]:
    """The ranking as people read it, best first: rank, shape, measured tokens/s [interval], the ranking metric
    (named), the prediction, predicted / measured, MFU, and each kernel with where its choice came from."""
    metric = "scaled_tokens_per_second" if view.payload.ranking == "throughput" else "anchored_tokens_per_second"
    out = []
    for row in ranked(view.payload)[:top]:
        shape, interval = row.shape, row.shape.interval
        bounds = f" [{significant(round(interval.low, 1))}, {significant(round(interval.high, 1))}]" if interval else ""
        predicted = _rounded(shape.predicted_tokens_per_second) if shape.predicted_tokens_per_second else None
        ratio = _rounded(row.predicted_over_anchored, 3) if row.predicted_over_anchored else None
        mfu = _rounded(shape.mfu, 4)
        anchored = {} if metric == "anchored_tokens_per_second" else {  # else the ranking column is this one
            "tokens/s anchored": significant(round(row.anchored, 1))}
        out.append({
            "rank": row.rank_text, "hidden": shape.hidden, "glu": shape.glu, "layers": shape.layers,
            "parameters_m": round(shape.parameters / 1e6, 2),
            "tokens/s in its block [interval]": significant(round(shape.tokens_per_second, 1)) + bounds,
            **anchored,
            METRIC_NAMES[metric]: significant(round(row.value, 1)),
            "predicted tokens/s": significant(predicted) if predicted else "",
            "predicted / anchored": f"{ratio:.2f}" if ratio else "",
            "MFU in its block": f"{mfu:.1%}" if mfu is not None else "",
            "GEMM": f"{shape.gemm} ({shape.gemm_source})",
            "element-wise": f"{shape.elementwise} ({shape.elementwise_source})"})
    return out


def predicted_sweep_section(csv_path: Path, out: Path) -> Section:
    """The report's section of a predicted sweep CSV: one heatmap, of the metric its ranking used, winner circled."""
    frame = pd.read_csv(csv_path, encoding=ENCODING)
    shown, metric, winner = ranked_frame(frame)
    image = sweep_heatmap(shown, out / f"sweep_{metric}.png", metric, winner, heatmap_title(frame, metric, ""))
    winner_text = f"; rank 1: hidden {winner[0]}, GLU {winner[1]}" if winner else ""
    return Section(f"Sweep (predicted): ranked by {metric.replace('_', ' ')}",
                   f"{csv_path}: {len(frame)} shapes{winner_text}.", image=image)


def measured_sweep_sections(rows: list[Row], out: Path) -> list[Section]:
    """One section per measured sweep record: what it rests on, the rank agreement, the ranking table (ties shown
    '1='), the figure of measured against predicted tokens/s."""
    sections = []
    for index, row in enumerate(sorted(rows, key=lambda r: (r.gpu, r.created_at)), 1):
        view = SweepView.of_record(row.record)
        shown = table(view)
        header = list(shown[0]) if shown else []
        image = figure(view, out / f"measured_sweep_{index}.png")
        payload = view.payload  # two sweeps on one device and dtype differ in their grid or rounds: say which
        sections.append(Section(f"Measured sweep on {view.device} ({view.dtype}, "
                                f"{plural(len(payload.candidates), 'shape')}, {plural(payload.rounds, 'round')})",
                                ". ".join(header_lines(view)) + f". Record: {row.record.source_path or ''}.",
                                (header, [[str(v) for v in r.values()] for r in shown]), image,
                                [correlation_text(view.payload)]))
    return sections
