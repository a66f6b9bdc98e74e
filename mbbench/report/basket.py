"""The GPU-basket figure: one model's tokens/s per suite across GPUs, measured and predicted."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are files
import matplotlib.pyplot as plt  # noqa: E402

from mbbench.records import Prediction  # noqa: E402
from mbbench.report.figures import save_png, thousands  # noqa: E402
from mbbench.report.selection import Row  # noqa: E402


def basket_rows(rows: list[Row], model: str) -> list[Row]:
    """The GPU rows of `model` (every labelled variant) with a tokens/s: the basket figure's data."""
    return [r for r in rows if r.label.split(" [")[0] == model and r.headline and r.measurement != "max_batch"
            and r.gpu != "cpu"]  # a GPU figure: CPU rows are tables


def basket_bars(rows: list[Row], model: str) -> list[tuple[str, str, str]]:
    """(GPU, kind, row label) of each bar: a bar per GPU, kind and labelled variant, so no GPU with records is
    left out and none hides another's variant."""
    return sorted({(r.gpu, r.kind, r.label) for r in basket_rows(rows, model)})


def whisker(row: Row, value: float) -> tuple[float, float]:
    """(low, high) tokens/s of a bar's whisker: a prediction's error band, the min and max of a measurement's
    passes, or the value itself (no whisker) for one pass or a record without either."""
    if row.kind == "predicted":  # a band contains its prediction; one too thin to draw has no whisker
        band = row.payload.error_band if isinstance(row.payload, Prediction) else None
        return band.around(value) if band and not band.thin else (value, value)
    if row.passes < 2 or row.stats is None:
        return value, value
    low, high = row.stats.min, row.stats.max  # None where a pass's value was not finite
    return min(value, value if low is None else low), max(value, value if high is None else high)


def _bar_values(rows: list[Row], bar: tuple[str, str, str], suites: list[str], width: float, index: int) -> tuple:
    """(x, thousand tokens/s, whisker low, whisker high) of one bar's suites, where it has a record."""
    xs, ys, lows, highs = [], [], [], []
    for j, suite in enumerate(suites):
        match = [r for r in rows if (r.gpu, r.kind, r.label, r.suite) == (*bar, suite)]
        if match:
            value = match[0].headline
            low, high = whisker(match[0], value)
            xs.append(j + index * width)
            ys.append(value / 1000)
            lows.append(low / 1000)
            highs.append(high / 1000)
    return xs, ys, lows, highs


def basket_figure(rows: list[Row], model: str, path: Path) -> Path | None:
    """Tokens/s of one model per suite across GPUs, a bar per GPU, kind and labelled variant (protocol, dtype ...):
    measured solid with min-max whiskers where there are passes, predicted hatched with their error band."""
    mine = basket_rows(rows, model)
    if not mine:
        return None
    suites = sorted({r.suite for r in mine})
    bars = basket_bars(rows, model)
    fig, ax = plt.subplots(figsize=(min(14.0, max(9.0, 0.5 * len(suites) * len(bars))), 5.0))
    width = 0.8 / len(bars)
    for i, (gpu, kind, label) in enumerate(bars):
        xs, ys, lows, highs = _bar_values(mine, (gpu, kind, label), suites, width, i)
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
