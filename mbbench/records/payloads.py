"""The payloads of measured throughput, a max-batch search, a prediction, a paired comparison and a failure.

Every field is typed: a part several payloads share is one of `records.parts` or `records.stats`, never a dict of
strings. Seconds are `_seconds`. Files of older schemas are brought to these fields by `records.migrate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from mbbench.records.parts import BuildInfo, EngineInfo, ErrorBand, MachineLoad, ParityCheck
from mbbench.records.stats import Interval, Stats


@dataclass(frozen=True)
class Throughput:
    """Timed passes over a suite. Seconds per pass in `run_seconds`; tokens/s of real (unpadded) tokens."""

    kind: ClassVar[str] = "throughput"
    build: BuildInfo
    num_documents: int
    subsampled: bool
    real_tokens: int
    padded_tokens: int
    num_batches: int
    warmup_batches: int  # batches the warmup ran, first call included (records before issue 26: as asked)
    shape_warmup_batches: int | None  # of warmup_batches, run only because their shape was new (None: older)
    warmup_seconds: float
    first_call_seconds: float
    run_seconds: list[float]
    headline: str  # "median" or "mean" of the pass times
    tokens_per_second: float
    tokens_per_second_stats: Stats  # of per-pass tokens/s
    timer: str  # "cuda-events" or "perf_counter"
    unstable: bool  # the spread of per-pass tokens/s is above `stats.UNSTABLE_IQR`
    compile_seconds: float | None
    telemetry: dict[str, Any] | None  # `bench.telemetry.summarize`: NVML power, clocks, energy, throttling
    flops_per_pass: float | None
    mfu: float | None
    mfu_note: str | None
    peak_memory_bytes: int | None
    load: MachineLoad | None  # the machine's load around the timed passes
    engine_info: EngineInfo | None  # how the engine ran: versions, threads read back, the cold start's steps
    parity: ParityCheck | None  # the accuracy gate on the first batch (None for the torch engine)
    cold_start_seconds: float | None  # export + compile + the first call, apart from warmup and passes


@dataclass(frozen=True)
class Trial:
    """One trial of a max-batch search: a size run once in a fresh process (`bench.maxbatch`)."""

    size: int
    status: str  # "ok" or "oom"
    peak_bytes: int | None = None
    seconds: float = 0.0
    detail: str | None = None  # the OOM's message when it was not the typed torch.cuda.OutOfMemoryError


@dataclass(frozen=True)
class MaxBatchSearch:
    """The largest batch (documents at the suite's maximum length) or packed token budget that fits."""

    kind: ClassVar[str] = "max_batch"
    mode: str  # "batch" or "tokens"
    sequence_length: int
    granularity: int
    safety_margin: float
    memory_limit_bytes: int | None
    largest_ok: int
    result: int  # largest_ok less the margin, rounded down to the granularity
    trials: list[Trial]
    search_seconds: float
    device_memory_bytes: int | None
    peak_bytes_at_result: int | None
    capped: bool  # stopped by a trial or time cap before the bracket closed
    bracket: tuple[int, int | None] | None  # (largest that fit, smallest that did not)
    seed: int | None  # where the search started (the memory model's prediction)
    note: str

    @property
    def max_batch_size(self) -> int | None:
        return self.result if self.mode == "batch" else None

    @property
    def max_token_budget(self) -> int | None:
        return self.result if self.mode == "tokens" else None


@dataclass(frozen=True)
class Prediction:
    """The performance and memory models' answer for a configuration on a basket GPU, with the error bands the
    validation of its GPU and stack gives (None in records made before bands existed)."""

    kind: ClassVar[str] = "prediction"
    model_version: str
    tokens_per_second: float
    real_tokens: int
    mfu: float
    max_batch_size: int | None
    efficiency: float
    efficiency_source: str
    peak_tflops: float
    shape: dict[str, Any]  # `hardware.shape.Shape` as a dict: the layer above records knows the type
    attention: str
    notes: tuple[str, ...]
    error_band: ErrorBand | None  # of tokens_per_second
    max_batch_band: ErrorBand | None  # of max_batch_size

    @property
    def tokens_per_second_range(self) -> tuple[float, float] | None:
        """(low, high) tokens/s the error band gives, or None without one (or with one too thin to draw)."""
        return self.error_band.around(self.tokens_per_second) if self.error_band else None


@dataclass(frozen=True)
class SidePasses:
    """One side's passes in a comparison; `pass_seconds[r]` is its pass in round r."""

    tokens: int  # real tokens in one pass
    pass_seconds: list[float]
    warmup_seconds: float  # first call (compilation, if any) + the warmup batches
    warmup_batches: int | None  # batches the warmup ran (None: records before issue 26)
    first_call_seconds: float
    tokens_per_second_stats: Stats  # over rounds


@dataclass(frozen=True)
class Ratio:
    """`model` vs `baseline`: its tokens/s over the baseline's, one ratio per round (>1: faster), their median and
    its interval (None below two rounds: `interval_note` says why)."""

    model: str
    baseline: str
    ratios: list[float]
    median: float
    interval: Interval | None
    interval_note: str | None


@dataclass(frozen=True)
class PairedRounds:
    """Interleaved rounds of several sides (`bench.paired.PairedResult.rounds`): per side its passes, the ratios of
    every other side over the baseline, and the order the sides ran in per round."""

    baseline: str
    order: list[list[str]]
    models: dict[str, SidePasses]
    ratios: list[Ratio]

    def ratio(self, model: str) -> Ratio:
        """The ratio of `model`; KeyError when absent."""
        for ratio in self.ratios:
            if ratio.model == model:
                return ratio
        raise KeyError(f"no ratio for {model!r} (baseline {self.baseline!r})")


@dataclass(frozen=True)
class Comparison:
    """Interleaved passes of several models over the same documents: paired ratios against a baseline, each with the
    order-statistic interval of its median (exact coverage in the interval's `confidence`)."""

    kind: ClassVar[str] = "comparison"
    baseline: str
    num_documents: int
    rounds: int
    paired: PairedRounds
    builds: dict[str, BuildInfo]  # side -> what it was built on (every side, a left-out one included)
    engines: dict[str, EngineInfo] | None  # side -> the engine that ran it (measured sides)
    parity: dict[str, ParityCheck] | None  # side -> its accuracy gate (sides on an engine other than torch)
    excluded: dict[str, str] | None  # side -> why it was left out of the rounds (failed the gate, could not run)
    baseline_note: str | None  # why the baseline is not the one asked for (it was left out), else None
    # side -> model FLOPs utilisation over its median pass (CPU: of the GEMM peak measured here in the run's dtype
    # at the side's shapes; GPU: of the datasheet peak), and how
    mfu: dict[str, float] | None
    mfu_note: str
    load: MachineLoad | None  # the machine's load around the interleaved rounds

    def ratio(self, model: str) -> Ratio:
        """The ratio of `model`; KeyError when absent."""
        return self.paired.ratio(model)


@dataclass(frozen=True)
class Failure:
    """No number: the configuration failed (error) or cannot run (unsupported); the header has the reason."""

    kind: ClassVar[str] = "failure"
    error_type: str | None = None
    backend: str | None = None
    engine: str | None = None  # the engine that was asked for
    parity: ParityCheck | None = None  # a failed accuracy gate: the error and the tolerance
