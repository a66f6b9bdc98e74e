"""Measured sweeps in reports and on the terminal: the ranking table, the rank correlation, and the figure of
measured against predicted tokens/s (`measured_sweep` makes the records; this module only reads them)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from mbbench.formatting import plural, significant
from mbbench.measured_sweep import RANKINGS, label, ranked, table_rows
from mbbench.records import MeasuredSweep, Record, SweepCandidate
from mbbench.report.figures import MeasuredPoint, measured_vs_predicted


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
    verdict = "is the measured best" if best.rank == 1 else ("is tied with the measured best" if best.tied else
                                                              f"ranks {best.rank} measured, outside the best's interval")
    return (f"Spearman rank correlation, predicted ({payload.prediction_source}) vs measured: {shown['ranking']} on "
            f"the ranking metric, {shown['tokens_per_second']} on tokens/s, over {rho['shapes']} shapes; the "
            f"predicted best {label(best.shape)} {verdict}")


def header_lines(view: SweepView) -> list[str]:
    """What a measured sweep rests on: device and workload, ranking metric, blocks and rounds, completeness."""
    payload = view.payload
    done = "" if payload.complete else f" (partial: {len(payload.candidates)} of {payload.planned} shapes)"
    return [f"measured sweep{done}: {workload_text(view)}",
            f"ranked by {RANKINGS[payload.ranking]}, measured on this device; {payload.rounds} interleaved rounds "
            f"per block, every block with the anchor {'/'.join(map(str, payload.anchor))}; attention "
            f"{payload.backend}; '1=' is tied with the best (its paired interval reaches it)",
            f"MFU against {payload.peak_note}"]


def figure(view: SweepView, path: Path) -> Path | None:
    """Measured against predicted tokens/s per shape, diagonal and best marked; None without predictions."""
    points = [MeasuredPoint(label(r.shape), r.shape.predicted_tokens_per_second, r.shape.tokens_per_second,
                            (r.shape.interval or {}).get("low"), (r.shape.interval or {}).get("high"),
                            r.rank == 1, r.tied)
              for r in ranked(view.payload) if r.shape.predicted_tokens_per_second]
    if not points:
        return None
    rho = view.payload.rank_correlation.get("ranking")
    title = (f"measured vs predicted ({view.payload.prediction_source}); best by "
             f"{view.payload.ranking.replace('throughput', 'tokens/s at equal parameters')}"
             f"{'' if rho is None else f', Spearman {rho:.2f}'}\n{workload_text(view)}")
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
            "parameters_m": row["parameters_m"], "tokens/s [interval]": significant(row["tokens_per_second"]) + interval,
            METRIC_NAMES[row["ranked_by"]]: significant(row[row["ranked_by"]]),
            "predicted tokens/s": significant(row["predicted_tokens_per_second"])
            if row["predicted_tokens_per_second"] else "",
            "predicted / measured": f"{row['predicted_over_measured']:.2f}" if row["predicted_over_measured"] else "",
            "MFU": f"{row['mfu']:.1%}" if row["mfu"] is not None else "",
            "GEMM": f"{row['gemm']} ({row['gemm_source']})",
            "element-wise": f"{row['elementwise']} ({row['elementwise_source']})"})
    return out
