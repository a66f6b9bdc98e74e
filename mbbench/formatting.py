"""Numbers for people: as many digits as the measurement supports."""

from __future__ import annotations

import math


def significant(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant figures, with thousands separators (2093.1 -> '2,090', 0.4741 -> '0.474')."""
    if value == 0:
        return "0"
    places = digits - 1 - math.floor(math.log10(abs(value)))  # negative: round to tens, hundreds, ...
    return f"{round(value, places):,.{max(0, places)}f}"


def plural(count: int, noun: str) -> str:
    """'1 pass', '3 passes', '1 batch', '2 batches', '1 document', '8 documents'."""
    return f"{count:,} {noun if count == 1 else noun + ('es' if noun.endswith(('s', 'ch', 'sh', 'x')) else 's')}"


def max_batch_text(result: int, trials: int, capped: bool = False, bracket: tuple | list | None = None,
                   unit: str = "", ascii_only: bool = False) -> str:
    """A max-batch result for people: '664 (9 trials)', or for a search stopped by its trial or time cap a
    lower bound, '≥ 4 (capped after 3 trials; fits 4, 8 ran out)' (`ascii_only`: '>=', for terminals whose
    encoding has no '≥'). `bracket` is (largest that fit, smallest that ran out or None)."""
    value = f"{result:,}{unit}"
    if not capped:
        return f"{value} ({plural(trials, 'trial')})"
    fit, failed = tuple(bracket) if bracket else (result, None)
    reach = f"fits {fit:,}" + (f", {failed:,} ran out" if failed is not None else ", none ran out")
    return f"{'>=' if ascii_only else '≥'} {value} (capped after {plural(trials, 'trial')}; {reach})"
