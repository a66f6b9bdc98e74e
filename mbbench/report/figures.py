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
         "paper_heuristic": "fraction of SMs"}

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


def sweep_heatmap(frame, path: Path, value: str = "basket_score") -> Path:
    """Value over hidden x GLU (best over layers), ModernBERT's own shapes marked."""
    table = frame.pivot_table(index="glu", columns="hidden", values=value, aggfunc="max").sort_index()
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(table.columns) + 2), max(3, 0.22 * len(table.index) + 1.5)))
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
    name = value.replace("_", " ")
    fig.colorbar(image, ax=ax, label=f"{name} ({UNITS.get(value, 'predicted')})", format=thousands)
    ax.set_title(f"{name}, best over layers\n(predicted)", fontsize=9)
    return save_png(fig, path)


@dataclass(frozen=True)
class Curve:
    """One configuration's latency percentiles (milliseconds) against x (batch size or offered requests/s)."""

    label: str
    x: list[float]
    percentiles_ms: dict[str, list[float]]  # "p50", "p90", "p99" -> one value per x
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
        crossed = [(x, y) for x, y, s in zip(curve.x, curve.percentiles_ms.get("p99", []), curve.saturated) if s]
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
