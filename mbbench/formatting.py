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
