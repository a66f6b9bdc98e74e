"""The fits: η_hw per GPU on published TensorRT BERT rows, η_sw(pytorch, simt) on the ModernBERT paper's RTX 4090
table, and the memory model's allocator overhead on that table's max-batch cells.

The cost model (`hardware/`) takes a `perfmodel.Calibration` as an input; this module makes one. It sits above the
model catalogue and the suites because the paper's cells name catalogue models and suites.
Sources:
- data/calibration.csv: NVIDIA's TensorRT BERT demo and MLPerf rows (fp16 rows, batch >= 32, are fitted);
- data/paper_4090.csv: Table 2 of arXiv 2412.13663 (throughput and max batch), transcribed in modernbert.md; one
  cell (RoBERTa-base, short-fixed) carries the paper's spot-check notebook runtime, which contradicts the printed one.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mbbench.hardware import memory, perfmodel, workload
from mbbench.hardware.gpus import basket
from mbbench.hardware.shape import Shape
from mbbench.hardware.software import PYTORCH, TENSORRT, AttentionImpl, Stack, resolve_attention, stack_of_framework
from mbbench.models import registry
from mbbench.suites import load_suite

PAPER_GPU = "RTX4090"
PAPER_DTYPE = "float32"


# ------------------------------------------------------------------------------------ TensorRT BERT rows: η_hw

CALIBRATION_SHAPES = {
    "bert-base": Shape(768, 3072, False, 12, 12, 30522, unpadded=False),
    "bert-large": Shape(1024, 4096, False, 16, 24, 30522, unpadded=False),
}
CALIBRATION_GPU = {"A100-40GB": "A100-SXM4-40GB"}


@dataclass(frozen=True)
class Observation:
    gpu: str
    shape: Shape
    lengths: tuple[int, ...]
    padded_to: int | None
    dtype: str
    tokens_per_second: float
    source: str
    stack: Stack = TENSORRT
    attention: AttentionImpl | None = None
    model: str = ""


@lru_cache(maxsize=1)
def calibration_rows() -> tuple[Observation, ...]:
    """fp16 rows of the published BERT measurements (calibration.csv), batch ≥ 32, with their stack.

    TensorRT's BERT plugins run fused fp16 attention at a fixed sequence length: costed as the memory-efficient
    class of kernel over the (unpadded, fixed) rows. MLPerf rows (int8/fp8 samples/s, variable lengths) are
    not used for fitting (`validation.mlperf_validation` compares their cross-GPU ratios instead).
    """
    text = resources.files("mbbench").joinpath("data/calibration.csv").read_text(encoding="utf-8")
    rows = []
    for row in csv.DictReader(text.splitlines()):
        if row["precision"] not in ("fp16", "bf16") or row["model"] not in CALIBRATION_SHAPES:
            continue
        if not row["batch"].isdigit() or int(row["batch"]) < 32 or not row["tokens_per_s"]:
            continue
        gpu = CALIBRATION_GPU.get(row["gpu_id"], row["gpu_id"])
        if gpu not in basket():
            continue
        seq, batch = int(row["seq_len"]), int(row["batch"])
        dtype = "float16" if row["precision"] == "fp16" else "bfloat16"
        impl = AttentionImpl("tensorrt", "mem_efficient", True, dtype, reason="TensorRT fused MHA plugin")
        rows.append(Observation(gpu, CALIBRATION_SHAPES[row["model"]], (seq,) * batch, None, dtype,
                                float(row["tokens_per_s"]), row["source"], stack_of_framework(row["stack"]), impl,
                                row["model"]))
    return tuple(rows)


def observed_efficiency(obs: Observation, software: float = 1.0) -> float:
    """η_hw implied by one observation given η_sw = `software`: solves measured time T =
    gemm/(η_hw·η_sw) + kernel/η_hw + memory, i.e. η_hw = (gemm/η_sw + kernel) / (T − memory)."""
    cost = perfmodel.raw_batch_time(obs.shape, list(obs.lengths), basket()[obs.gpu], obs.dtype, obs.padded_to, obs.attention,
                          obs.stack)
    measured = sum(obs.lengths) / obs.tokens_per_second
    return (cost.gemm_seconds / software + cost.kernel_seconds) / max(measured - cost.memory_seconds, 1e-12)


def fit_efficiencies(observations: list[Observation]) -> dict[str, float]:
    """η_hw per GPU: the median over that GPU's observations of the η that reproduces each (stack-aware)."""
    per_gpu: dict[str, list[float]] = {}
    for obs in observations:
        per_gpu.setdefault(obs.gpu, []).append(observed_efficiency(obs, perfmodel.DEFAULT_SOFTWARE.get(
            (obs.stack.name, perfmodel.gemm_path(perfmodel.gemm_dtype(obs.dtype, obs.stack))), 1.0)))
    return {gpu: statistics.median(values) for gpu, values in per_gpu.items()}


# ------------------------------------------------------------------------- the paper's RTX 4090 table: η_sw

def _suite_tokens(suite_name: str) -> int:
    return sum(load_suite(suite_name).lengths)


@dataclass(frozen=True)
class PaperRow:
    group: str
    paper_model: str
    model: str  # registry name
    backend: str
    suite: str
    timing_batch: int
    tokens_per_second: float  # what the cell is validated against: the printed value, or the notebook's
    max_batch_size: int | None
    measured: bool  # False: the paper derived the value from the fixed-length time
    printed_tokens_per_second: float  # Table 2 as printed
    note: str = ""  # why tokens_per_second differs from the printed value


@lru_cache(maxsize=1)
def paper_rows() -> tuple[PaperRow, ...]:
    """The paper's RTX 4090 table (data/paper_4090.csv), every cell with its registry model and backend.

    A cell whose printed runtime is contradicted by the paper's own spot-check notebook carries the notebook's
    runtime (`notebook_seconds`, for the suite's whole document set) and a note: its tokens/s is the suite's
    real tokens over that runtime, and the printed value is kept in `printed_tokens_per_second`.
    """
    text = resources.files("mbbench").joinpath("data/paper_4090.csv").read_text(encoding="utf-8")
    rows = []
    for r in csv.DictReader(text.splitlines()):
        printed = float(r["kilo_tokens_per_s"]) * 1e3
        validated = _suite_tokens(r["suite"]) / float(r["notebook_seconds"]) if r["notebook_seconds"] else printed
        rows.append(PaperRow(r["group"], r["paper_model"], r["model"], r["backend"], r["suite"], int(r["timing_batch"]),
                             validated, int(r["max_batch"]) if r["max_batch"] else None, r["measured"] == "yes",
                             printed, r["note"]))
    return tuple(rows)


def paper_timing_batch(model: str, suite: str) -> int | None:
    """The batch (documents) the paper timed `model` on `suite` with: Table 2's `timing_batch` (224 for
    DeBERTa-v3-base, 396 for RoBERTa-large, 128 for DeBERTa-v3-large, 256/16 for GTE-en-MLM-large, else 512/32);
    None when the table has no such cell (a model or suite the paper did not time)."""
    return next((row.timing_batch for row in paper_rows() if row.model == model and row.suite == suite), None)


@dataclass(frozen=True)
class PaperSetup:
    shape: Shape
    lengths: tuple[int, ...]
    attention: AttentionImpl
    pad_to: int
    max_length: int


@lru_cache(maxsize=None)
def paper_setup(model: str, backend: str, suite_name: str) -> PaperSetup:
    """Shape, suite lengths and attention of a paper cell (the paper's environment; lengths beyond the registry's
    maximum are allowed: the paper ran NomicBERT at 8192)."""
    spec, suite = registry.get_spec(model), load_suite(suite_name)
    shape = registry.shape_of(spec)
    impl = resolve_attention(backend, PAPER_DTYPE, basket()[PAPER_GPU], family=spec.family,
                             packed_model=spec.unpadded, head_dim=shape.head_dim, environment="paper",
                             rotary=registry.rotary_code(spec))
    return PaperSetup(shape, tuple(suite.lengths), impl, suite.definition.max_length, suite.definition.max_length)


@lru_cache(maxsize=None)
def _paper_raw(model: str, backend: str, suite: str, batch: int) -> workload.SuiteSeconds:
    s = paper_setup(model, backend, suite)
    unit = perfmodel.Calibration({PAPER_GPU: 1.0}, {k: 1.0 for k in perfmodel.DEFAULT_SOFTWARE})
    return workload.suite_seconds(s.shape, list(s.lengths), batch, basket()[PAPER_GPU], PAPER_DTYPE, s.attention,
                                  s.pad_to, unit, PYTORCH)


def fit_software(calibration: perfmodel.Calibration, exclude_models: tuple[str, ...] = ()) -> float:
    """Fit η_sw(pytorch, simt) in place: the median over the paper table's measured throughput cells (minus
    `exclude_models`) of the η_sw that reproduces each, given η_hw(RTX 4090) from `calibration`.

    Measured time T = F/(η_hw·η_sw) + K/η_hw + M (F: compute-bound GEMMs; K: fused attention; M: memory-bound)
    -> η_sw = F / (η_hw·(T − M) − K). One parameter, fitted on fp32 PyTorch rows: it carries SIMT fp32 GEMMs'
    achieved fraction and PyTorch's overheads relative to TensorRT fp16.
    """
    eta_hw, _ = calibration.hardware(basket()[PAPER_GPU])
    implied = []
    for row in paper_rows():
        if not row.measured or row.model in exclude_models:
            continue
        raw = _paper_raw(row.model, row.backend, row.suite, row.timing_batch)
        measured_seconds = raw.real_tokens / row.tokens_per_second
        denominator = eta_hw * (measured_seconds - raw.memory_raw) - raw.kernel_raw
        if denominator > 0:
            implied.append(raw.framework_raw / denominator)
    value = statistics.median(implied)
    calibration.software[("pytorch", "simt")] = value
    calibration.software_sources[("pytorch", "simt")] = (
        f"fitted on {len(implied)} measured cells of the ModernBERT paper's RTX 4090 table"
        + (f" without {', '.join(exclude_models)}" if exclude_models else ""))
    return value


def implied_allocator_overhead(exclude_models: tuple[str, ...] = ()) -> list[float]:
    """Per max-batch cell of the paper table: the allocator overhead (fraction of activations) at which the
    measured max batch exactly fills the RTX 4090 (NVML bytes less reservation and context)."""
    usable = memory.usable_bytes(memory.capacity_bytes(basket()[PAPER_GPU]))
    values = []
    for row in paper_rows():
        if not row.max_batch_size or row.model in exclude_models:
            continue
        s = paper_setup(row.model, row.backend, row.suite)
        e = memory.estimate(s.shape, row.max_batch_size, s.max_length, 4, s.attention)
        values.append((usable - e.weights - e.attention) / e.activations - 1.0)
    return values


# ----------------------------------------------------------------------------------------------- calibrate

def calibrate(extra: list[Observation] | None = None, software: bool = True,
              exclude_models: tuple[str, ...] = ()) -> perfmodel.Calibration:
    """η_hw on calibration.csv (+ `extra`, stack-aware); with `software`, η_sw(pytorch, simt) on the paper's 4090
    table (`fit_software`) leaving out `exclude_models`."""
    calibration = perfmodel.Calibration(fit_efficiencies([*calibration_rows(), *(extra or [])]))
    if software:
        fit_software(calibration, exclude_models)
    return calibration


@lru_cache(maxsize=1)
def default_calibration() -> perfmodel.Calibration:
    """The calibration every prediction uses unless given another: `calibrate()` once per process."""
    return calibrate()
