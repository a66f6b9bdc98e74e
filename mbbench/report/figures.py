"""Figures (PNG) drawn from records or sweep rows; matplotlib without a display."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from mbbench.files import replace_atomically  # noqa: E402

MODERNBERT_SHAPES = {"base": (768, 2304), "large": (1024, 5248)}
UNITS = {"basket_score": "fraction of dense peak", "basket_tokens_per_second": "tokens/s",
         "scaled_tokens_per_second": "tokens/s", "paper_heuristic": "fraction of SMs"}

# Axis and colour-bar ticks with thousands separators (1,250,000 rather than 1.25e6).
thousands = FuncFormatter(lambda value, _: f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}")


def save_png(fig, path: Path, dpi: int = 110, **options) -> Path:
    """Save `fig` as a PNG, atomically (`files.replace_atomically`), without timestamps (identical reruns);
    `options` go to `savefig` (e.g. bbox_inches)."""
    if not options:
        fig.tight_layout()
    with replace_atomically(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None}, **options)
    plt.close(fig)
    return Path(path)


def sweep_heatmap(frame, path: Path, value: str = "basket_score", best: tuple[int, int] | None = None,
                  title: str = "") -> Path:
    """`value` over hidden x GLU (best over layers; rows where `value` is NaN left blank), ModernBERT's own shapes
    marked, and `best` (hidden, GLU), the ranking's winner, circled; `title` names the metric and workload."""
    table = frame.pivot_table(index="glu", columns="hidden", values=value, aggfunc="max").sort_index()
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(table.columns) + 3), max(3.5, 0.22 * len(table.index) + 2)))
    image = ax.imshow(table.values, aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns], rotation=90, fontsize=7)
    step = max(1, len(table.index) // 20)
    ax.set_yticks(range(0, len(table.index), step), [str(i) for i in table.index[::step]], fontsize=7)
    ax.set_xlabel("hidden")
    ax.set_ylabel("GLU width (Wi output)")
    for label, (hidden, glu) in MODERNBERT_SHAPES.items():
        if hidden in table.columns and glu in table.index:
            ax.plot(list(table.columns).index(hidden), list(table.index).index(glu), "r*", markersize=12)
            ax.annotate(f"ModernBERT-{label}", (list(table.columns).index(hidden), list(table.index).index(glu)),
                        color="red", fontsize=7, xytext=(4, 4), textcoords="offset points")
    if best and best[0] in table.columns and best[1] in table.index:
        spot = (list(table.columns).index(best[0]), list(table.index).index(best[1]))
        ax.plot(*spot, "o", markersize=14, markerfacecolor="none", markeredgecolor="white", markeredgewidth=2)
        ax.annotate(f"rank 1: {best[0]}/{best[1]}", spot, color="white", fontsize=7, xytext=(6, -10),
                    textcoords="offset points")
    name = value.replace("_", " ")
    fig.colorbar(image, ax=ax, label=f"{name} ({UNITS.get(value, 'predicted')})", format=thousands)
    ax.set_title(title or f"{name}, best over layers\n(predicted)", fontsize=9)
    return save_png(fig, path)


@dataclass(frozen=True)
class MeasuredPoint:
    """One shape of a measured sweep in the figure: tokens/s predicted and measured (anchored, with the interval of
    its paired ratio to the anchor)."""

    label: str
    predicted: float
    measured: float
    low: float | None
    high: float | None
    best: bool = False
    tied: bool = False


def measured_vs_predicted(points: list[MeasuredPoint], path: Path, title: str) -> Path:
    """Measured against predicted tokens/s per shape, the measured interval as a bar, the diagonal (prediction
    = measurement) drawn, the ranking's best starred and shapes tied with it ringed. `title` may hold line breaks."""
    fig, ax = plt.subplots(figsize=(7.0, 5.4))
    for point in points:
        below = point.measured - point.low if point.low is not None else 0.0
        above = point.high - point.measured if point.high is not None else 0.0
        ax.errorbar(point.predicted, point.measured, yerr=[[below], [above]], fmt="o", color="C0", markersize=4,
                    capsize=2)
        if len(points) <= 30:
            ax.annotate(point.label, (point.predicted, point.measured), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    values = [v for p in points for v in (p.predicted, p.measured)]
    low, high = min(values) * 0.95, max(values) * 1.05
    ax.plot([low, high], [low, high], "--", color="grey", linewidth=1, label="measured = predicted")
    ringed = False  # the legend names the ring once
    for point in points:
        if point.best:
            ax.plot(point.predicted, point.measured, "*", color="red", markersize=16, label=f"best: {point.label}")
        elif point.tied:
            ax.plot(point.predicted, point.measured, "o", markersize=11, markerfacecolor="none", markeredgecolor="red",
                    label=None if ringed else "tied with the best")
            ringed = True
    ax.set_xlabel("predicted tokens/s")
    ax.set_ylabel("measured tokens/s (anchored median, paired interval)")
    ax.xaxis.set_major_formatter(thousands)
    ax.yaxis.set_major_formatter(thousands)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    return save_png(fig, path)


@dataclass(frozen=True)
class Curve:
    """One configuration's latency percentiles (milliseconds) against x (batch size or offered requests/s)."""

    label: str
    x: list[float]
    percentiles_ms: dict[str, list[float]]  # "p50", "p90", "p99" -> one value per x (crossed at the highest)
    saturated: list[bool] = field(default_factory=list)  # per x: requests went unserved (latency unbounded)
    target_ms: float | None = None  # an SLO, drawn as a horizontal line


STYLES = {"p50": "-", "p90": "--", "p99": ":"}


def latency_curves(curves: list[Curve], path: Path, xlabel: str, title: str, log_x: bool = False) -> Path:
    """Latency percentiles against x, one colour per configuration and one line style per percentile; points of
    an overloaded run are crossed, and each configuration's SLO target is a thin horizontal line of its colour."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for index, curve in enumerate(curves):
        colour = f"C{index % 10}"
        for name, values in curve.percentiles_ms.items():
            ax.plot(curve.x, values, STYLES.get(name, "-"), color=colour, marker="o", markersize=3,
                    label=f"{curve.label} {name}")
        tail = curve.percentiles_ms[max(curve.percentiles_ms, key=lambda name: float(name[1:]))]
        crossed = [(x, y) for x, y, s in zip(curve.x, tail, curve.saturated) if s]  # at the highest percentile
        if crossed:
            ax.plot(*zip(*crossed), "x", color=colour, markersize=9, label=f"{curve.label}: unserved requests")
        if curve.target_ms is not None:
            ax.axhline(curve.target_ms, color=colour, linewidth=0.8, alpha=0.7,
                       label=f"{curve.label} target {curve.target_ms:g} ms")
    if log_x:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6)
    return save_png(fig, path)
