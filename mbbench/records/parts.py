"""Typed parts that several payloads share: how the model was built (`BuildInfo`), how its engine ran
(`EngineInfo`), its accuracy gate (`ParityCheck` of `Agreement`s), the machine's load around a measurement
(`MachineLoad` of `LoadSnapshot`s) and a prediction's `ErrorBand`.

Each is made once where the fact is known (`models.encoders.Encoder.build_info`, an engine's `prepare`,
`engines.parity.ParityResult.check`, `environment.machine_load`, `bands.error_band`) and stored whole; nothing
copies their fields one by one into a payload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BuildInfo:
    """What the model ran on: the attention backend, the GEMM kernel of our models' linears and the kernel of
    their RoPE and gated activation, each with why, and where each kernel choice came from ("measured now",
    "cache", "pinned" or "fixed": `bench.kernel_choice`). None: not recorded (records before the field)."""

    backend: str | None  # the attention implementation that ran
    backend_reason: str | None = None
    gemm: str | None = None  # `models.gemm.KERNELS`
    gemm_reason: str | None = None
    gemm_source: str | None = None
    elementwise: str | None = None  # `models.fused.KERNELS`
    elementwise_reason: str | None = None
    elementwise_source: str | None = None


@dataclass(frozen=True)
class EngineInfo:
    """What a record says about an engine. Seconds are wall-clock (perf_counter or CUDA events).

    `export_seconds`: torch -> ONNX/OpenVINO IR (0.0 on a cache hit, None for torch engines);
    `compile_seconds`: building the runnable (ORT session, OpenVINO compile_model; None for torch-compile,
    whose inductor compiles inside the first call); `first_call_seconds`: the first call on the first
    batch, cold (it includes inductor's compilation for torch-compile).
    """

    name: str
    version: str
    device: str  # the torch device batches come from, e.g. "cpu", "cuda:0"
    provider: str  # what executes: "torch eager", "inductor", "CPUExecutionProvider", "OpenVINO CPU", ...
    threads_intra: int
    threads_inter: int
    graph_optimization: str  # e.g. "ORT_ENABLE_ALL", "inductor mode=default", "eager"
    # ORT: operators of ORT's fusion domains (com.microsoft*) in the optimised graph; OpenVINO: the compiled
    # graph's kernel types (after the CPU plugin's fusions); None for torch engines
    fused_ops: dict[str, int] | None = None
    export_seconds: float | None = None
    compile_seconds: float | None = None
    first_call_seconds: float | None = None
    cache_hit: bool | None = None  # None: the engine uses no export cache
    cache_path: str | None = None
    # the precision the engine computes in, read back where the engine reports it (OpenVINO's
    # INFERENCE_PRECISION_HINT after compile): a canonical dtype name, or "mixed" (ONNX Runtime inserted casts)
    precision: str = ""
    precision_note: str = ""  # why the precision differs from the run's dtype, when it does
    settings: dict[str, str] = field(default_factory=dict)  # engine properties read back after applying them

    @property
    def cold_start_seconds(self) -> float:
        """Export + compile + first call: what a deployment pays once, before warmup (s)."""
        return sum(s or 0.0 for s in (self.export_seconds, self.compile_seconds, self.first_call_seconds))


@dataclass(frozen=True)
class Agreement:
    """How close an output is to a reference on real tokens. Errors are NaN (None once written) when the output
    holds NaN/inf; the cosines are None in records made before they were measured (issue 36)."""

    max_abs_error: float | None  # max |output - reference|
    max_rel_error: float | None  # max |output - reference| / max |reference|
    cosine_min: float | None  # per-token cosine similarity of the hidden vectors: the worst token
    cosine_mean: float | None
    non_finite: int  # real-token values that are NaN or inf in the output

    @property
    def finite(self) -> bool:
        return self.non_finite == 0 and self.max_rel_error is not None and math.isfinite(self.max_rel_error)


@dataclass(frozen=True)
class ParityCheck:
    """One side's accuracy gate as judged (`engines.parity.ParityResult.check`): its agreement with the fp32
    function, with the torch engine in its dtype and the noise floor, the bars and the verdict. `error` is the
    judged number (`judged_on` "abs" or "rel"; None when not finite). Records before issue 36 judged against the
    torch engine only: their `vs_float32` is None and `vs_torch` holds that agreement."""

    engine: str
    dtype: str
    real_tokens: int  # positions compared
    judged_on: str  # "abs" (fp32: max |diff|) or "rel" (reduced precision: max |diff| / max |fp32|)
    error: float | None
    tolerance: float
    cosine_bar: float | None  # the lowest per-token cosine that passes (None in fp32)
    passed: bool
    vs_float32: Agreement | None
    vs_torch: Agreement | None  # None: this side is the torch engine
    noise_floor: Agreement | None  # the torch engine in this dtype against fp32 (None in fp32)


@dataclass(frozen=True)
class LoadSnapshot:
    """How busy the machine is at one instant (`environment.load_snapshot`). Fields that cannot be read are None."""

    time_seconds: float  # time.monotonic()
    load_average_1m: float | None  # os.getloadavg(): runnable (and uninterruptible) tasks, all CPUs
    load_average_5m: float | None
    cpu_count: int  # logical CPUs of the machine (os.cpu_count), what load averages compare with
    gpu_utilization_percent: float | None  # whole device, ours included
    other_gpu_processes: int | None  # compute processes on the device other than this one
    machine_busy_cpu_seconds: float | None  # non-idle CPU time of all CPUs since boot (/proc/stat, steal included)
    process_cpu_seconds: float  # user + system CPU time of this process and its waited-for children


@dataclass(frozen=True)
class MachineLoad:
    """The machine's load at the start and end of a measurement and, when other work competed with it, the
    one-line warning (`environment.busy_warning`; None: the machine was quiet)."""

    start: LoadSnapshot | None
    end: LoadSnapshot | None
    warning: str | None


@dataclass(frozen=True)
class ErrorBand:
    """Where the true value of a predicted number is likely to lie, as factors of the prediction.

    `low` and `high` bound measured / predicted over the validation rows of `basis` (e.g. 0.85 and 1.10: those rows
    measured 85-110% of what the model predicted), widened to contain 1 so the prediction lies inside its band;
    `rows` is how many rows that took and `coverage` which share of them the interval spans. `low` and `high` are
    None when the rows are too few for a band (`thin`; `basis` says how many there were).
    """

    low: float | None
    high: float | None
    basis: str  # which validation rows, in words (`bands.error_band`)
    rows: int = 0
    coverage: str = ""

    @property
    def thin(self) -> bool:
        """Too few rows for a band: none is drawn."""
        return self.low is None or self.high is None

    def around(self, value: float) -> tuple[float, float] | None:
        """(low, high) of `value` (a prediction, in its own unit), or None when the band is too thin."""
        return None if self.thin else (value * self.low, value * self.high)
