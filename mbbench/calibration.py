"""The fits: η_hw per GPU on TensorRT demo rows and MLPerf fit rows (pooled), the spec model (power per SM, an
intercept per architecture) for GPUs without them, η_sw(pytorch, simt) on the ModernBERT paper's RTX 4090 table,
η_sw(pytorch, tensor) per architecture on published PyTorch rows, and the memory model's allocator overhead on the
paper's max-batch cells.

The cost model (`hardware/`) takes a `perfmodel.Calibration` as an input; this module makes one. It sits above the
model catalogue and the suites because the paper's cells name catalogue models and suites. Every fit reads only rows
whose use is `fit` (`mbbench.published`); `holdout` rows are validation's alone.
Sources:
- data/calibration.csv: NVIDIA's TensorRT demo/BERT tables (fp16 rows, batch >= 32);
- data/mlperf_bert.csv: MLPerf BERT offline ratios to the A100 (fit rows: η_hw of the H100s, and pooled with the
  demo rows for the T4 and L4);
- data/published_bert.csv: NVIDIA's PyTorch BERT-large tables (fit rows: η_sw of the tensor-core path);
- data/paper_4090.csv: Table 2 of arXiv 2412.13663 (throughput and max batch), transcribed in modernbert.md; one
  cell (RoBERTa-base, short-fixed) carries the paper's spot-check notebook runtime, which contradicts the printed one.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mbbench import published
from mbbench.hardware import memory, perfmodel, workload
from mbbench.hardware.gpus import GPU, basket
from mbbench.hardware.shape import Shape
from mbbench.hardware.software import PYTORCH, TENSORRT, AttentionImpl, Stack, resolve_attention
from mbbench.models import registry
from mbbench.published import (CALIBRATION_SHAPES, MLPERF_LENGTHS, TENSORRT_ATTENTION, MlperfRow,
                               Observation, PublishedRow, calibration_rows)
from mbbench.suites import load_suite

PAPER_GPU = "RTX4090"
TENSOR_CORE_PATHS = ("tensor", "tf32")  # GEMM paths on tensor cores: one η_sw(pytorch) for both
PAPER_DTYPE = "float32"


# ------------------------------------------------------------------------------------ TensorRT demo rows: η_hw

def observed_efficiency(obs: Observation, software: float = 1.0) -> float:
    """η_hw implied by one observation given η_sw = `software`: solves measured time T =
    gemm/(η_hw·η_sw) + kernel/η_hw + memory, i.e. η_hw = (gemm/η_sw + kernel) / (T − memory)."""
    cost = perfmodel.raw_batch_time(obs.shape, list(obs.lengths), basket()[obs.gpu], obs.dtype, obs.padded_to,
                                    obs.attention, obs.stack)
    measured = sum(obs.lengths) / obs.tokens_per_second
    return (cost.gemm_seconds / software + cost.kernel_seconds) / max(measured - cost.memory_seconds, 1e-12)


def fit_efficiencies(observations: list[Observation]) -> dict[str, float]:
    """η_hw per GPU: the median over that GPU's observations of the η that reproduces each (stack-aware)."""
    per_gpu: dict[str, list[float]] = {}
    for obs in observations:
        per_gpu.setdefault(obs.gpu, []).append(observed_efficiency(obs, perfmodel.DEFAULT_SOFTWARE.get(
            (obs.stack.name, perfmodel.gemm_path(perfmodel.gemm_dtype(obs.dtype, obs.stack))), 1.0)))
    return {gpu: statistics.median(values) for gpu, values in per_gpu.items()}


# ------------------------------------------------------------------------------- MLPerf ratios and η from them

def mlperf_rate(gpu: GPU, calibration: perfmodel.Calibration, stack: Stack = TENSORRT) -> float:
    """Predicted tokens/s of BERT-large on `stack` (NVIDIA's TensorRT harness) at fp16 over MLPERF_LENGTHS: the rate
    an MLPerf ratio compares (int8 and fp8 run at twice the fp16 dense peak on every GPU compared, so fp16 rates
    give the same ratio)."""
    return perfmodel.predict(CALIBRATION_SHAPES["bert-large"], list(MLPERF_LENGTHS), gpu, "float16", None,
                             calibration, TENSORRT_ATTENTION, stack).tokens_per_second


def measured_mlperf_ratio(row: MlperfRow) -> float:
    """Samples/s per GPU of `row` over its reference A100's."""
    return row.per_gpu / published.mlperf_reference(row, published.mlperf_rows()).per_gpu


def predicted_mlperf_ratio(row: MlperfRow, calibration: perfmodel.Calibration) -> float:
    """The model's ratio of `row`'s GPU to its reference A100."""
    reference = published.mlperf_reference(row, published.mlperf_rows())
    return mlperf_rate(basket()[row.gpu], calibration, row.stack) / mlperf_rate(basket()[reference.gpu], calibration,
                                                                               reference.stack)


def implied_mlperf_efficiency(row: MlperfRow, calibration: perfmodel.Calibration) -> float:
    """The η_hw of `row`'s GPU at which the predicted ratio equals the measured one, the reference's η from
    `calibration`: its TensorRT time T = (F + K)/η_hw + M gives η_hw = (F + K) / (T − M) (η_sw(tensorrt) ≡ 1)."""
    reference = published.mlperf_reference(row, published.mlperf_rows())
    target_rate = measured_mlperf_ratio(row) * mlperf_rate(basket()[reference.gpu], calibration, reference.stack)
    cost = perfmodel.raw_batch_time(CALIBRATION_SHAPES["bert-large"], list(MLPERF_LENGTHS), basket()[row.gpu],
                                    "float16", None, TENSORRT_ATTENTION, row.stack)
    measured = sum(MLPERF_LENGTHS) / target_rate
    return (cost.gemm_seconds + cost.kernel_seconds) / max(measured - cost.memory_seconds, 1e-12)


# ------------------------------------------------------------------------------------------- the spec model

def within_architecture_slope(points: dict[str, list[tuple[float, float]]]) -> float:
    """Least-squares slope of ln η on ln(W per SM) with one intercept per architecture (fixed effects): only
    architectures with two GPUs or more inform it; 0 when none has."""
    numerator = denominator = 0.0
    for values in points.values():
        if len(values) < 2:
            continue
        mx, my = statistics.mean(x for x, _ in values), statistics.mean(y for _, y in values)
        numerator += sum((x - mx) * (y - my) for x, y in values)
        denominator += sum((x - mx) ** 2 for x, _ in values)
    return numerator / denominator if denominator else 0.0


def pool_sources(demo: dict[str, float], mlperf: dict[str, list[float]]) -> dict[str, float]:
    """η_hw per GPU from every fit source that measured it: the geometric mean of its TensorRT demo η (`demo`)
    and the mean η its MLPerf fit rows imply (`mlperf`), one vote per source whatever its row count.

    Why: the two NVIDIA sources disagree on the low-power cards (the T4's MLPerf v0.7 row implies η 18 % above its
    demo rows, the L4’s v3.0 row 56 % above), and neither is privileged: the demo runs one fixed shape with generic
    plugins, MLPerf a harness tuned per GPU. A GPU with one source keeps it."""
    pooled = dict(demo)
    for gpu_id, etas in mlperf.items():
        eta = statistics.mean(etas)
        pooled[gpu_id] = math.sqrt(demo[gpu_id] * eta) if gpu_id in demo else eta
    return pooled


@dataclass(frozen=True)
class HardwareFit:
    """η_hw per GPU that has fit rows (`efficiencies`, pooled over sources) and the spec model for the others."""

    efficiencies: dict[str, float]
    spec: perfmodel.SpecModel


def fit_hardware(demo: dict[str, float], mlperf_fit: list[MlperfRow]) -> HardwareFit:
    """η_hw per GPU with fit rows, and the spec model over them.

    1. A provisional spec model on the demo rows' η alone (`demo`) costs each MLPerf fit row's reference A100
       where it has no demo rows of its own; each MLPerf fit row then implies an η for its GPU
       (`implied_mlperf_efficiency`).
    2. Each GPU's η pools its sources (`pool_sources`): one point per GPU.
    3. The spec model: the slope within architectures over the demo rows' η alone (`within_architecture_slope`:
       one source, one stack, so that the slope measures power per SM and not a disagreement between sources), and
       each architecture's intercept as the mean over its GPUs' pooled η. Hopper's intercept comes from MLPerf
       alone; Turing's from the T4's pooled η, so that a leave-one-GPU-out of the T4 (demo rows removed) still has
       one, from its MLPerf row.
    """
    slope = within_architecture_slope(efficiency_points(demo))
    provisional = perfmodel.Calibration(dict(demo), spec=_spec_from_points(demo, {}, slope))
    implied: dict[str, list[float]] = {}
    labels: dict[str, list[str]] = {}
    for row in mlperf_fit:
        implied.setdefault(row.gpu, []).append(implied_mlperf_efficiency(row, provisional))
        labels.setdefault(row.gpu, []).append(row.label)
    pooled = pool_sources(demo, implied)
    origins = {gpu_id: "; ".join(filter(None, ["TensorRT demo rows" if gpu_id in demo else "",
                                               *labels.get(gpu_id, [])])) for gpu_id in pooled}
    return HardwareFit(pooled, _spec_from_points(pooled, origins, slope))


def efficiency_points(efficiencies: dict[str, float]) -> dict[str, list[tuple[float, float]]]:
    """(ln W per SM, ln η) per GPU, grouped by architecture."""
    points: dict[str, list[tuple[float, float]]] = {}
    for gpu_id, eta in sorted(efficiencies.items()):
        gpu = basket()[gpu_id]
        points.setdefault(gpu.architecture, []).append((math.log(perfmodel.watts_per_sm(gpu)), math.log(eta)))
    return points


def _spec_from_points(efficiencies: dict[str, float], origins: dict[str, str], slope: float) -> perfmodel.SpecModel:
    """The spec model over one η per GPU: `slope`, and each architecture's intercept as the mean over its GPUs."""
    sources: dict[str, list[str]] = {}
    for gpu_id in sorted(efficiencies):
        sources.setdefault(basket()[gpu_id].architecture, []).append(
            f"{gpu_id} ({origins.get(gpu_id, 'TensorRT demo rows')})")
    intercepts = {arch: statistics.mean(y - slope * x for x, y in values)
                  for arch, values in efficiency_points(efficiencies).items()}
    return perfmodel.SpecModel(slope, intercepts, {arch: "; ".join(s) for arch, s in sources.items()},
                               max(efficiencies.values()))


# ---------------------------------------------------------------------- published PyTorch rows: η_sw(tensor)

def implied_software(row: PublishedRow, calibration: perfmodel.Calibration) -> float:
    """η_sw at which the model reproduces `row` given η_hw from `calibration`: η_sw = F / (η_hw·(T − M) − K)."""
    gpu = basket()[row.gpu]
    cost = perfmodel.raw_batch_time(row.shape, row.lengths, gpu, row.dtype, row.seq_len, row.attention, row.stack)
    eta_hw, _ = calibration.hardware(gpu)
    measured = row.batch / row.sequences_per_s
    return cost.gemm_seconds / max(eta_hw * (measured - cost.memory_seconds) - cost.kernel_seconds, 1e-12)


def fit_pytorch_tensor(calibration: perfmodel.Calibration, rows: list[PublishedRow]) -> float:
    """Fit η_sw(pytorch, tensor) in place: the median implied η_sw per architecture that has rows
    (`architecture_software`), and over every row for the others (`software`). Returns the pooled value.

    The TF32 path takes the same values: PyTorch runs TF32 GEMMs through the same cuBLAS tensor-core kernels and the
    same framework as fp16 ones, and no fit row is TF32 (the published TF32 rows are held out)."""
    by_architecture: dict[str, list[float]] = {}
    for row in rows:
        by_architecture.setdefault(basket()[row.gpu].architecture, []).append(implied_software(row, calibration))
    pooled = statistics.median(v for values in by_architecture.values() for v in values)
    source = (f"fitted on {sum(map(len, by_architecture.values()))} published PyTorch fp16 rows (NVIDIA "
              f"DeepLearningExamples, Triton); per architecture for {', '.join(sorted(by_architecture))}, their median "
              "elsewhere")
    for path in TENSOR_CORE_PATHS:
        calibration.software[("pytorch", path)] = pooled
        calibration.software_sources[("pytorch", path)] = source if path == "tensor" else f"the tensor path's: {source}"
        for arch, values in by_architecture.items():
            calibration.architecture_software[("pytorch", path, arch)] = statistics.median(values)
    return pooled


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

def fit_rows(rows: tuple) -> list:
    """The rows of a published table a fit may read: those whose use is `fit`."""
    return [row for row in rows if row.use == "fit"]


def calibrate(software: bool = True, exclude_models: tuple[str, ...] = (), without_gpus: tuple[str, ...] = (),
              pytorch_without_gpus: tuple[str, ...] = ()) -> perfmodel.Calibration:
    """Every fit, in order: η_hw on the TensorRT demo rows (less `without_gpus`'s) pooled with the MLPerf fit rows
    and the spec model over them (`fit_hardware`), and with `software`: η_sw(pytorch, simt) on the paper's 4090
    table less `exclude_models`, and η_sw(pytorch, tensor) on the published PyTorch fit rows less
    `pytorch_without_gpus`'s."""
    demo = fit_efficiencies([o for o in calibration_rows() if o.gpu not in without_gpus])
    fitted = fit_hardware(demo, fit_rows(published.mlperf_rows()))
    calibration = perfmodel.Calibration(dict(fitted.efficiencies), spec=fitted.spec)
    if software:
        fit_software(calibration, exclude_models)
        fit_pytorch_tensor(calibration, [r for r in fit_rows(published.published_rows())
                                         if r.gpu not in pytorch_without_gpus])
    return calibration


@lru_cache(maxsize=1)
def default_calibration() -> perfmodel.Calibration:
    """The calibration every prediction uses unless given another: `calibrate()` once per process."""
    return calibrate()
