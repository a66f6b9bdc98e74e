"""A comparison's ratios in words, for the report's tables and the terminal alike: '1.52x [1.45, 1.60] (95% CI)'."""

from __future__ import annotations

from mbbench.records import Comparison, Interval, Ratio, Record

FEW_ROUNDS = 6  # below this no interval of a median reaches 95% (bench.paired)


def interval_label(interval: Interval) -> str:
    """'96.9% CI' (its exact coverage), '87.5% CI, short of 95%: too few rounds', or for records made before
    issue 26 '95% bootstrap CI' (a percentile bootstrap, whose real coverage at few rounds was far below it)."""
    if interval.bootstrap:
        return f"{interval.confidence:.0%} bootstrap CI"
    label = f"{interval.confidence * 100:.3g}% CI"
    return label if interval.reaches_requested else f"{label}, short of {interval.requested:.0%}: too few rounds"


def ratio_text(ratio: Ratio) -> str:
    """'1.52x [1.45, 1.60] (95% CI)', '1.52x [1.45, 1.60] (87.5% CI, short of 95%: too few rounds)' or
    '1.52x (no interval: ...)'."""
    interval = ratio.interval
    if interval:
        return f"{ratio.median:.2f}x [{interval.low:.2f}, {interval.high:.2f}] ({interval_label(interval)})"
    return f"{ratio.median:.2f}x ({ratio.interval_note or 'no interval'})"


def inverse_text(ratio: Ratio) -> str:
    """The ratio the other way round (baseline over model), its interval inverted: x -> 1/x keeps the order
    statistics' coverage. '0.59x [0.57, 0.61] (95% CI)'."""
    interval = ratio.interval
    if not interval:
        return f"{1 / ratio.median:.2f}x"
    return f"{1 / ratio.median:.2f}x [{1 / interval.high:.2f}, {1 / interval.low:.2f}] ({interval_label(interval)})"


def tier_line(record: Record) -> str:
    """The precision tier of a comparison: every measured side computes in the record's dtype (read back from each
    engine, `engines.check_precision`), so no ratio mixes tiers."""
    dtype = record.identity.dtype
    return f"tier {dtype}: every measured side computes in {dtype} (read back from its engine)"


def ratio_lines(record: Record) -> list[str]:
    """One line per ratio of a comparison record, with a warning when the rounds are too few; the tier, a
    baseline that changed, each side's MFU and the sides left out. Nothing for other records."""
    payload = record.payload
    if not isinstance(payload, Comparison):
        return []
    rounds = payload.rounds
    note = f" (only {rounds} round{'s' if rounds != 1 else ''}: no 95% interval below 6; use --runs 10 or more)" \
        if rounds < FEW_ROUNDS else ""
    tiny = "-tiny" if record.identity.tiny else ""
    lines = [tier_line(record)] + ([payload.baseline_note] if payload.baseline_note else [])
    if payload.mfu:
        lines.append("MFU: " + ", ".join(f"{side}{tiny} {value:.2f}" for side, value in payload.mfu.items())
                     + f" ({payload.mfu_note})")
    lines += [f"{r.model}{tiny} / {r.baseline}{tiny} = {ratio_text(r)}, {rounds} paired "
              f"round{'s' if rounds != 1 else ''}" + note for r in payload.paired.ratios]
    return lines + [f"{side}{tiny}: left out, {reason}" for side, reason in (payload.excluded or {}).items()]
