"""Rows that compare: each model's speedup over the baseline (a paired comparison's ratio where one measured the
pair), every paired ratio with its interval, and each model on each engine it ran on."""

from __future__ import annotations

from mbbench.formatting import significant
from mbbench.records import Comparison, Ratio
from mbbench.report.ratios import interval_label, inverse_text, ratio_text
from mbbench.report.selection import ENGINE_BEFORE_THE_AXIS, Row, side_backend, threads_label
from mbbench.report.tables import LONG, SHORT, measured_spread


def workload(row: Row) -> tuple:
    """What two rows must share for their tokens/s to form a speedup: the same work on the same machine."""
    ident = row.identity
    return (row.gpu, row.suite, ident.protocol, ident.dtype, ident.documents if row.subsampled else None,
            ident.batch_size, row.host if row.kind == "measured" else None, row.kind, ident.threads,
            ident.interop_threads)


def pairing(row: Row) -> tuple:
    """What a comparison and a table row must share for the comparison's ratio to be the row's speedup: the same
    device and host, suite, protocol, dtype, documents, batch and threads (the engine is in the side's name)."""
    ident = row.identity
    return (row.gpu, row.device_name, row.host, row.suite, ident.suite_fingerprint, ident.protocol, ident.dtype,
            ident.documents, ident.batch_size, ident.token_budget, ident.threads, ident.interop_threads, ident.tiny,
            ident.time_transfer, ident.matmul_precision)


def paired_ratio(paired: list[Row], mine: Row, baseline: str) -> str:
    """'1.69x [1.65, 1.73] (95% CI)': the newest comparison's ratio of `mine`'s model (on its engine) over
    `baseline` (on torch) on `mine`'s workload (`pairing`; the same requested backend), or ''. A comparison whose
    baseline was `mine`'s model gives the inverse ratio, its interval inverted (`ratios.inverse_text`)."""
    side = mine.registry_model + ("" if mine.engine == ENGINE_BEFORE_THE_AXIS else f"@{mine.engine}")
    found: list[tuple[str, Ratio, bool]] = []
    for row in paired:
        if pairing(row) != pairing(mine) or side_backend(row.identity, side) != (mine.requested_backend or "auto"):
            continue
        payload: Comparison = row.payload
        for ratio in payload.paired.ratios:
            if (ratio.model, ratio.baseline) in ((side, baseline), (baseline, side)):
                found.append((row.created_at, ratio, ratio.model == baseline))
    if not found:
        return ""
    _, ratio, inverse = max(found, key=lambda item: item[0])
    if inverse:
        return inverse_text(ratio)
    return ratio_text(ratio) if ratio.interval else f"{ratio.median:.2f}x"


def _is_baseline(row: Row, baseline: str) -> bool:
    """The baseline model on torch: other engines of it get a speedup."""
    return row.label.split(" [")[0] == baseline and row.engine == ENGINE_BEFORE_THE_AXIS


def speedup_rows(rows: list[Row], baseline: str, paired: list[Row] = ()) -> list[list[str]]:
    """Each labelled row's tokens/s over the baseline's (on torch) on the same workload and threads; rows without
    any ratio are left out. The baseline model on another engine gets its speedup over torch.

    One number per claim: where a paired comparison measured the pair on that device and suite, its ratio (median
    of per-round ratios, with its interval and that interval's confidence) is the cell, as in the paired table;
    otherwise the ratio of the two current (not superseded) records' headlines.
    """
    throughput = [r for r in rows if r.headline and r.measurement != "max_batch"]
    base = {}
    for r in throughput:
        if _is_baseline(r, baseline):
            base.setdefault(workload(r), r.headline)
    out = []
    baseline_rows = {(r.gpu, r.label) for r in throughput if _is_baseline(r, baseline)}
    for gpu, label in sorted({(r.gpu, r.label) for r in throughput}):
        if (gpu, label) in baseline_rows:
            continue
        cells = []
        for suite in (*SHORT, *LONG):
            mine = next((r for r in throughput if r.gpu == gpu and r.label == label and r.suite == suite), None)
            measured_pair = paired_ratio(list(paired), mine, baseline) if mine and mine.kind == "measured" else ""
            ratio = mine and base.get(workload(mine))
            cells.append(measured_pair or (f"{mine.headline / ratio:.2f}x" if ratio else ""))
        if any(cells):
            out.append([gpu, label, *cells])
    return out


ENGINES_HEADER = ["device", "model", "engine", "suite", "thousand tokens/s", "parity error", "threads",
                  "cold start (s)", "engine version", "date"]


def engine_rows(rows: list[Row]) -> list[list[str]]:
    """Model x engine per suite, from measured throughput rows: tokens/s, the parity error against the fp32
    function (or, before issue 36, torch), intra-op threads and the cold start (export + compile + first call)."""
    out = []
    for r in rows:
        if r.kind != "measured" or r.measurement != "throughput" or not r.headline:  # None: non-finite
            continue
        parity, info = r.parity, r.engine_info
        cold = r.cold_start_seconds
        if cold is None and info:  # a comparison's side: its engine's export, compile and first call
            cold = info.cold_start_seconds
        error = "reference" if not parity else (f"{parity.error:.1e}" if parity.error is not None else "NaN")
        out.append([r.gpu, r.label, r.engine, r.suite, significant(r.headline / 1000) + measured_spread(r, "tps"),
                    error, threads_label(r.identity) or "", f"{cold:.2f}" if cold is not None else "",
                    (info.version if info else None) or r.torch or "", r.date])
    return sorted(out)


PAIRED_HEADER = ["gpu", "suite", "model", "baseline", "ratio (median)", "interval (confidence)", "rounds", "docs",
                 "dtype", "date", "warning"]


def paired_rows(rows: list[Row]) -> list[list[str]]:
    """One row per ratio of each comparison record: the paper's claims as measured, with their spread."""
    out = []
    for r in rows:
        payload: Comparison = r.payload
        tiny = " (tiny)" if r.identity.tiny else ""  # both sides of a tiny comparison are tiny models
        for ratio in payload.paired.ratios:
            interval = ratio.interval
            short = interval is not None and not interval.reaches_requested
            warning = ", ".join(w for w in ("busy" if r.busy else "", "too few rounds for 95%" if short else "") if w)
            out.append([r.gpu, r.suite, ratio.model + tiny, ratio.baseline + tiny, f"{ratio.median:.2f}x",
                        f"{interval.low:.2f}–{interval.high:.2f} ({interval_label(interval)})" if interval
                        else (ratio.interval_note or ""), str(payload.rounds), str(payload.num_documents),
                        r.identity.dtype, r.date, warning])
    return sorted(out)
