"""validate-model: predictions against published and measured numbers, per source and per model.

Sources (ValidationRow.source):
- `paper-4090`: every measured cell of the ModernBERT paper's RTX 4090 table (data/paper_4090.csv, transcribed
  from modernbert.md: Table 2 throughput and max batch; cells Table 11 has no runtime for are 'derived' and
  skipped), predicted under the paper protocol (fp32 weights, timing batch, rows padded to the suite maximum,
  each model's default attention in the paper's environment). Throughput rows here were in the fit of η_sw.
  One cell (RoBERTa-base, short-fixed) is validated against the paper's spot-check notebook runtime, which
  contradicts the printed one; `paper-4090-as-printed` shows the printed value's error beside it.
- `paper-4090-lomo`: the same throughput cells, each predicted with η_sw fitted without the rows of its model
  family (both sizes, padded and unpadded variants).
- `calibration-logo` / `calibration-lomo`: TensorRT BERT rows (calibration.csv) predicted with η_hw fitted
  without that GPU (spec regression) / without that model.
- `mlperf-ratio`: MLPerf BERT-99 offline samples/s (TensorRT harness, int8/fp8; never fitted) as ratios to the
  A100-SXM4-80GB, against predicted fp16 ratios (int8/fp8 peaks are 2× fp16 on every GPU involved).
- `measured`: our measured GPU records (dicts), predicted with the record's backend, dtype, batch and protocol.

The fits themselves are `mbbench.calibration`'s; this module only compares. `error_band` turns these rows
into the band every predicted record carries.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mbbench.calibration import (CALIBRATION_GPU, CALIBRATION_SHAPES, PAPER_DTYPE, PAPER_GPU, Observation, PaperRow,
                                 calibrate, calibration_rows, default_calibration, fit_efficiencies, fit_software,
                                 paper_rows, paper_setup)
from mbbench.hardware import perfmodel, workload
from mbbench.hardware.gpus import GPU, basket, lookup
from mbbench.hardware.software import PYTORCH, TENSORRT, AttentionImpl, resolve_attention
from mbbench.models import registry
from mbbench.plan import PROTOCOLS
from mbbench.records import ErrorBand
from mbbench.suites import load_suite

MLPERF_REFERENCE_GPU = "A100-SXM4-80GB"


@dataclass(frozen=True)
class ValidationRow:
    source: str
    model: str
    suite: str
    gpu: str
    metric: str  # "tokens_per_second", "max_batch_size" or "throughput_ratio"
    measured: float
    predicted: float
    stack: str = "pytorch"
    backend: str = ""
    in_fit: bool = False  # whether this measurement entered the fit that produced the prediction
    note: str = ""  # where the measured value differs from the source's printed one, and why

    @property
    def error(self) -> float:
        """predicted / measured − 1."""
        return self.predicted / self.measured - 1.0


def predict_paper_row(row: PaperRow, calibration: perfmodel.Calibration) -> workload.SuitePrediction:
    s = paper_setup(row.model, row.backend, row.suite)
    return workload.predict_suite(s.shape, list(s.lengths), row.timing_batch, basket()[PAPER_GPU], PAPER_DTYPE,
                                  s.attention, s.pad_to, calibration, PYTORCH, s.max_length)


def leave_one_gpu_out(observations: list[Observation]) -> list[dict]:
    """Predict each GPU's rows with η_hw derived only from the other GPUs (spec regression)."""
    fitted = fit_efficiencies(observations)
    out = []
    for obs in observations:
        gpu = basket()[obs.gpu]
        others = perfmodel.Calibration({g: e for g, e in fitted.items() if g != obs.gpu})
        p = perfmodel.predict(obs.shape, list(obs.lengths), gpu, obs.dtype, obs.padded_to, others, obs.attention, obs.stack)
        out.append({"gpu": obs.gpu, "source": obs.source, "model": obs.model, "tokens": sum(obs.lengths),
                    "measured": obs.tokens_per_second, "predicted": p.tokens_per_second,
                    "error": p.tokens_per_second / obs.tokens_per_second - 1.0})
    return out


def paper_validation(calibration: perfmodel.Calibration | None = None, lomo: bool = True) -> list[ValidationRow]:
    """Throughput and max batch of every measured cell of the paper table; with `lomo`, throughput again with
    η_sw fitted without the cell's model family (leave-one-model-out)."""
    calibration = calibration or default_calibration()
    rows = []
    for row in paper_rows():
        if not row.measured:
            continue
        p = predict_paper_row(row, calibration)
        rows.append(ValidationRow("paper-4090", row.model, row.suite, PAPER_GPU, "tokens_per_second",
                                  row.tokens_per_second, p.tokens_per_second, "pytorch", p.attention.backend, True,
                                  row.note))
        if row.note:  # the printed value too, so a reader sees what it would give
            rows.append(ValidationRow("paper-4090-as-printed", row.model, row.suite, PAPER_GPU, "tokens_per_second",
                                      row.printed_tokens_per_second, p.tokens_per_second, "pytorch",
                                      p.attention.backend, False, "Table 2 as printed; see the paper-4090 row"))
        if row.max_batch_size:
            rows.append(ValidationRow("paper-4090", row.model, row.suite, PAPER_GPU, "max_batch_size",
                                      row.max_batch_size, p.max_batch_size, "pytorch", p.attention.backend, False))
    if lomo:
        families: dict[str, tuple[str, ...]] = {}
        for model in sorted({r.model for r in paper_rows()}):
            family = registry.get_spec(model).family
            families[family] = (*families.get(family, ()), model)
        for family, models in families.items():
            held_out = perfmodel.Calibration(dict(calibration.efficiencies))
            fit_software(held_out, models)
            for row in paper_rows():
                if row.model in models and row.measured:
                    p = predict_paper_row(row, held_out)
                    rows.append(ValidationRow("paper-4090-lomo", row.model, row.suite, PAPER_GPU, "tokens_per_second",
                                              row.tokens_per_second, p.tokens_per_second, "pytorch",
                                              p.attention.backend, False, row.note))
    return rows


def calibration_validation() -> list[ValidationRow]:
    """TensorRT rows predicted with η_hw fitted without their GPU (leave-one-GPU-out, spec regression) and
    without their model (leave-one-model-out)."""
    observations = list(calibration_rows())
    rows = [ValidationRow("calibration-logo", r["model"], f"fixed-{r['tokens']}", r["gpu"], "tokens_per_second",
                          r["measured"], r["predicted"], "tensorrt", "tensorrt")
            for r in leave_one_gpu_out(observations)]
    for model in sorted({o.model for o in observations}):
        fitted = perfmodel.Calibration(fit_efficiencies([o for o in observations if o.model != model]))
        for o in observations:
            if o.model != model:
                continue
            p = perfmodel.predict(o.shape, list(o.lengths), basket()[o.gpu], o.dtype, o.padded_to, fitted,
                                  o.attention, o.stack)
            rows.append(ValidationRow("calibration-lomo", model, f"fixed-{len(o.lengths)}x{o.lengths[0]}", o.gpu,
                                      "tokens_per_second", o.tokens_per_second, p.tokens_per_second, "tensorrt",
                                      "tensorrt"))
    return rows


def mlperf_validation(calibration: perfmodel.Calibration | None = None) -> list[ValidationRow]:
    """MLPerf BERT-99 offline samples/s as ratios to the A100-SXM4-80GB vs predicted fp16 ratios (never fitted)."""
    calibration = calibration or calibrate(software=False)
    text = resources.files("mbbench").joinpath("data/calibration.csv").read_text(encoding="utf-8")
    measured = {}
    for row in csv.DictReader(text.splitlines()):
        if "MLPerf" in row["framework"] and row["sequences_per_s"]:
            gpu = CALIBRATION_GPU.get(row["gpu_id"], row["gpu_id"])
            measured.setdefault(gpu, []).append(float(row["sequences_per_s"]))
    shape = CALIBRATION_SHAPES["bert-large"]
    impl = AttentionImpl("tensorrt", "mem_efficient", True, "float16", reason="TensorRT fused MHA plugin")

    def rate(gpu: GPU) -> float:
        prediction = perfmodel.predict(shape, [384] * 128, gpu, "float16", None, calibration, impl, TENSORRT)
        return prediction.tokens_per_second

    reference_measured = statistics.median(measured[MLPERF_REFERENCE_GPU])
    reference = rate(lookup(MLPERF_REFERENCE_GPU))
    return [ValidationRow("mlperf-ratio", "bert-large", "squad-v1.1-offline", gpu, "throughput_ratio",
                          value / reference_measured, rate(lookup(gpu)) / reference, "tensorrt", "tensorrt")
            for gpu, values in sorted(measured.items()) if gpu != MLPERF_REFERENCE_GPU for value in values]


def record_validation(records: list[dict] | tuple[dict, ...],
                      calibration: perfmodel.Calibration | None = None) -> list[ValidationRow]:
    """Measured GPU records (`Record.flatten()` rows) against predictions for the same configuration."""
    calibration = calibration or default_calibration()
    rows = []
    for record in records:
        gpu_id, model = record.get("gpu_id"), record.get("registry_model")
        if record.get("kind") != "measured" or record.get("status") != "ok" or not gpu_id or record.get("tiny"):
            continue
        if record.get("measurement") not in ("throughput", "max_batch") or model not in registry.MODELS:
            continue
        spec, suite, gpu = registry.get_spec(model), load_suite(record["suite"]), lookup(gpu_id)
        shape = registry.shape_of(spec)
        impl = resolve_attention(record.get("backend") or "auto", record["dtype"], gpu, family=spec.family,
                                 packed_model=spec.unpadded, head_dim=shape.head_dim, environment="transformers5",
                                 rotary=registry.rotary_code(spec))
        if record["measurement"] == "max_batch":
            if record.get("max_batch_size"):  # a search over rows of the suite's maximum length
                p = workload.predict_suite(shape, [suite.definition.max_length], 1, gpu, record["dtype"], impl,
                                           suite.definition.max_length, calibration, PYTORCH,
                                           suite.definition.max_length)
                rows.append(ValidationRow("measured", model, record["suite"], gpu.id, "max_batch_size",
                                          record["max_batch_size"], p.max_batch_size, "pytorch", impl.backend))
            continue
        lengths = suite.lengths[:record.get("num_documents") or len(suite.lengths)]
        pad_to = suite.definition.max_length if PROTOCOLS[record.get("protocol", "paper")].pad_to_suite_max else None
        p = workload.predict_suite(shape, lengths, record.get("batch_size") or 32, gpu, record["dtype"], impl, pad_to,
                                   calibration, PYTORCH, suite.definition.max_length)
        rows.append(ValidationRow("measured", model, record["suite"], gpu.id, "tokens_per_second",
                                  record["tokens_per_second"], p.tokens_per_second, "pytorch", impl.backend))
    return rows


def validation_tables(records: list[dict] | tuple[dict, ...] = ()) -> list[ValidationRow]:
    """Every validation row: the paper table (in-fit and leave-one-model-out), the calibration data's
    leave-one-GPU-out and leave-one-model-out, MLPerf cross-GPU ratios, and `records` when given."""
    calibration = default_calibration()
    return [*paper_validation(calibration), *calibration_validation(), *mlperf_validation(),
            *record_validation(records, calibration)]


def median_errors(rows: list[ValidationRow]) -> dict[tuple[str, str], float]:
    """Median |error| per (source, metric)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row.source, row.metric), []).append(abs(row.error))
    return {key: statistics.median(values) for key, values in groups.items()}


# ------------------------------------------------------------------------------------------- error bands

@lru_cache(maxsize=1)
def _published_rows() -> tuple[ValidationRow, ...]:
    """The validation rows of published numbers (no records): computed once per process (seconds)."""
    calibration = default_calibration()
    return (*paper_validation(calibration), *calibration_validation(), *mlperf_validation())


def _ratios(rows: list[ValidationRow]) -> list[float]:
    """measured / predicted of each row."""
    return [row.measured / row.predicted for row in rows]


def error_band(gpu_id: str, dtype: str) -> ErrorBand:
    """The band of measured / predicted tokens/s that validation gives a prediction for `gpu_id` in `dtype`.

    - On the paper's GPU in its dtype (RTX 4090, fp32 PyTorch): the paper table's leave-one-model-out rows
      (`paper-4090-lomo`), whose software efficiency was fitted without the row's model family.
    - Elsewhere the hardware transfer compounds with the stack: the GPU's own leave-one-GPU-out rows
      (`calibration-logo`, η_hw fitted without that GPU) and MLPerf ratio rows (`mlperf-ratio`); for a GPU with
      none, those rows of every GPU. The band is the hardware rows' range of measured / predicted times the
      paper rows' range (`[h_lo·s_lo, h_hi·s_hi]`).

    The band is where past measurements fell, not a confidence interval: with H100's MLPerf ratios over-predicted
    by about 40%, the band of an H100 prediction lies below the prediction itself.
    """
    rows = [r for r in _published_rows() if r.metric != "max_batch_size"]
    software = [r for r in rows if r.source == "paper-4090-lomo"]
    s_lo, s_hi = min(_ratios(software)), max(_ratios(software))
    if gpu_id == PAPER_GPU and dtype == PAPER_DTYPE:
        return ErrorBand(s_lo, s_hi, f"paper-4090-lomo ({len(software)} cells, fp32 PyTorch on the RTX 4090)",
                         len(software))
    hardware_sources = ("calibration-logo", "mlperf-ratio")
    own = [r for r in rows if r.source in hardware_sources and r.gpu == gpu_id]
    hardware = own or [r for r in rows if r.source in hardware_sources]
    where = f"{gpu_id}'s own" if own else f"every GPU's ({gpu_id} has none)"
    h_lo, h_hi = min(_ratios(hardware)), max(_ratios(hardware))
    return ErrorBand(h_lo * s_lo, h_hi * s_hi,
                     f"{where} leave-one-GPU-out and MLPerf rows ({len(hardware)}) x paper-4090-lomo "
                     f"({len(software)})", len(hardware) + len(software))


def max_batch_band() -> ErrorBand:
    """The band of measured / predicted maximum batch: the paper table's max-batch cells (RTX 4090, fp32; the
    allocator overhead was fitted on them, so this is the in-fit spread; the memory model is the same on every
    GPU)."""
    rows = [r for r in _published_rows() if r.source == "paper-4090" and r.metric == "max_batch_size"]
    return ErrorBand(min(_ratios(rows)), max(_ratios(rows)), f"paper-4090 max batch ({len(rows)} cells, in fit)",
                     len(rows))
