"""The payload of a measured sweep: candidate shapes of our reference ModernBERT measured on this device,
interleaved in blocks with one anchor shape, beside each shape's prediction (`measured_sweep`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mbbench.records.parts import MachineLoad
from mbbench.records.stats import Interval


@dataclass(frozen=True)
class SweepGrid:
    """The grid asked for: widths, GLU widths and depths (each a list), the head dimension, and `--params` as
    [target parameters, tolerance fraction] (None: no constraint)."""

    hidden: list[int]
    glu: list[int]
    layers: list[int]
    head_dim: int
    params: list[float] | None


@dataclass(frozen=True)
class SweepWorkload:
    """The one workload every shape ran: tokens per pass (the budget), its batches, documents and real tokens, and
    where the documents came from ("synthetic" or a suite's name)."""

    tokens_per_pass: int
    batches: int
    documents: int
    real_tokens: int
    source: str


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho of predicted against measured over the shapes with a prediction: on the ranking metric and on
    anchored tokens/s (None: undefined, below two shapes or a constant side)."""

    ranking: float | None
    tokens_per_second: float | None
    shapes: int
@dataclass(frozen=True)
class SweepCandidate:
    """One shape of a measured sweep: its passes, interval, prediction and the kernels it ran on.

    Tokens/s are of real tokens per pass over the sweep's workload. `anchor_ratios[r]` is its tokens/s over the
    anchor shape's in round r of the same block: paired, so the machine's state in that round cancels, and
    shapes of different blocks compare through the anchor (`measured_sweep`).
    """

    hidden: int
    glu: int  # fused Wi width (2 x intermediate)
    layers: int
    heads: int
    parameters: int
    block: int  # the block of interleaved rounds that measured it (the anchor runs in every block)
    round_tokens_per_second: list[float]  # one per round
    anchor_ratios: list[float]  # one per round
    tokens_per_second: float  # median of round_tokens_per_second
    interval: Interval | None  # that median's order-statistic interval; None below 2 rounds
    predicted_tokens_per_second: float | None
    prediction_parts: dict[str, float]  # predicted seconds per pass by part (CPU: gemm, attention, elementwise)
    flops_per_pass: float  # model FLOPs (`perfmodel.forward_flops`)
    mfu: float | None
    gemm: str
    gemm_source: str  # "measured now", "cache", "pinned" or "fixed" (`bench.kernel_choice`)
    gemm_reason: str
    elementwise: str
    elementwise_source: str
    elementwise_reason: str
    warmup_seconds: float
    measured_at: str  # UTC, when its block finished

    @property
    def label(self) -> str:
        return f"{self.hidden}/{self.glu}/{self.layers}"


@dataclass(frozen=True)
class MeasuredSweep:
    """Candidate shapes of our reference ModernBERT measured on this device, interleaved round by round in blocks
    that all include one anchor shape, beside each shape's prediction for this device (`measured_sweep`).

    `complete` is False while shapes of the grid remain (an interrupted sweep keeps what it measured; a rerun
    measures the rest). The ranking and its statistics are computed from `candidates` by
    `measured_sweep.ranked` and stored in `rank_correlation` (Spearman's rho of predicted against measured,
    on the ranking metric and on anchored tokens/s) and `predicted_best_tied`.
    """

    kind: ClassVar[str] = "measured_sweep"
    grid: SweepGrid
    workload: SweepWorkload
    backend: str  # the attention backend that ran
    backend_reason: str
    rounds: int
    block: int  # shapes per block besides the anchor
    anchor: list[int]  # (hidden, glu, layers) of the shape every block runs
    anchor_rounds: list[list[float]]  # per block, the anchor's tokens/s in each round
    candidates: list[SweepCandidate]
    planned: int  # shapes in the grid
    ranking: str  # the metric shapes are ranked by (`measured_sweep.RANKINGS`)
    scale_parameters: float  # the parameter count the equal-parameter metric scales every shape to
    prediction_source: str  # what predicted (the CPU cost model, or the GPU model for the detected GPU)
    peak_flops: float | None  # the MFU denominator (FLOP/s)
    peak_note: str
    rank_correlation: RankCorrelation
    predicted_best_tied: bool | None  # the predicted best is the measured best or tied with it (None: no prediction)
    load: MachineLoad | None

    @property
    def complete(self) -> bool:
        return len(self.candidates) >= self.planned


