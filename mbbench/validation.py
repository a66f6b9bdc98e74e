"""validate-model: predictions against published and measured numbers, per source, architecture and model.

Sources (ValidationRow.source), and whether a fit read the row (`in_fit`) or no fit reads its data (`held_out`):
- `paper-4090`: every measured cell of the ModernBERT paper's RTX 4090 table (data/paper_4090.csv, transcribed
  from modernbert.md: Table 2 throughput and max batch; cells Table 11 has no runtime for are 'derived' and
  skipped), predicted under the paper protocol (fp32 weights, timing batch, rows padded to the suite maximum,
  each model's default attention in the paper's environment). Throughput rows here were in the fit of η_sw.
  One cell (RoBERTa-base, short-fixed) is validated against the paper's spot-check notebook runtime, which
  contradicts the printed one; `paper-4090-as-printed` shows the printed value's error beside it.
- `paper-4090-lomo`: the same throughput cells, each predicted with η_sw fitted without the rows of its model
  family (both sizes, padded and unpadded variants).
- `calibration-logo` / `calibration-lomo`: TensorRT demo rows (calibration.csv) predicted with every constant
  refitted without that GPU's demo rows (spec model) / without that model's rows.
- `mlperf-fit` / `mlperf-holdout`: MLPerf BERT offline samples/s per GPU as ratios to the A100 of a reference round
  (data/mlperf_bert.csv), against predicted fp16 ratios; fit rows set η_hw of their GPU (pooled with its demo rows
  where it has them: `calibration.fit_hardware`), hold-out rows no constant reads.
- `pytorch-fit` / `pytorch-logo` / `pytorch-holdout`: published PyTorch BERT-large rows (data/published_bert.csv):
  the rows η_sw(pytorch, tensor) is fitted on, the same rows with η_sw fitted without that GPU's rows, and rows no
  constant reads.
- `measured`: our measured GPU records (dicts), predicted with the record's backend, dtype, batch and protocol.

The fits themselves are `mbbench.calibration`'s; this module only compares. `mbbench.bands` turns these rows into
the band every predicted record carries.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import lru_cache

from mbbench import published
from mbbench.calibration import (PAPER_DTYPE, PAPER_GPU, PaperRow, calibrate, default_calibration, fit_efficiencies,
                                 fit_rows, fit_software, measured_mlperf_ratio, paper_rows, paper_setup,
                                 predicted_mlperf_ratio)
from mbbench.hardware import perfmodel, workload
from mbbench.hardware.gpus import basket, lookup
from mbbench.hardware.software import PYTORCH, resolve_attention
from mbbench.models import registry
from mbbench.plan import PROTOCOLS
from mbbench.published import calibration_rows, published_rows
from mbbench.suites import load_suite

HELD_OUT_SOURCES = ("mlperf-holdout", "pytorch-holdout")


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
    path: str = "tensor"  # the GEMM path of the stack that ran: "tensor", "tf32" or "simt"

    @property
    def error(self) -> float:
        """predicted / measured − 1."""
        return self.predicted / self.measured - 1.0

    @property
    def architecture(self) -> str:
        return basket()[self.gpu].architecture

    @property
    def held_out(self) -> bool:
        """No fitted constant reads this row's data (the tracked hold-out)."""
        return self.source in HELD_OUT_SOURCES


def predict_paper_row(row: PaperRow, calibration: perfmodel.Calibration) -> workload.SuitePrediction:
    s = paper_setup(row.model, row.backend, row.suite)
    return workload.predict_suite(s.shape, list(s.lengths), row.timing_batch, basket()[PAPER_GPU], PAPER_DTYPE,
                                  s.attention, s.pad_to, calibration, PYTORCH, s.max_length)


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
                                  row.note, "simt"))
        if row.note:  # the printed value too, so a reader sees what it would give
            rows.append(ValidationRow("paper-4090-as-printed", row.model, row.suite, PAPER_GPU, "tokens_per_second",
                                      row.printed_tokens_per_second, p.tokens_per_second, "pytorch",
                                      p.attention.backend, False, "Table 2 as printed; see the paper-4090 row", "simt"))
        if row.max_batch_size:
            rows.append(ValidationRow("paper-4090", row.model, row.suite, PAPER_GPU, "max_batch_size",
                                      row.max_batch_size, p.max_batch_size, "pytorch", p.attention.backend, True,
                                      path="simt"))
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
                                              p.attention.backend, False, row.note, "simt"))
    return rows


def _demo_row(source: str, obs: published.Observation, calibration: perfmodel.Calibration) -> ValidationRow:
    p = perfmodel.predict(obs.shape, list(obs.lengths), basket()[obs.gpu], obs.dtype, obs.padded_to, calibration,
                          obs.attention, obs.stack)
    return ValidationRow(source, obs.model, f"fixed-{len(obs.lengths)}x{obs.lengths[0]}", obs.gpu,
                         "tokens_per_second", obs.tokens_per_second, p.tokens_per_second, "tensorrt", "tensorrt")


def leave_one_gpu_out() -> list[ValidationRow]:
    """Each GPU's TensorRT demo rows predicted with every constant refitted without them: its η_hw comes from its
    MLPerf fit row where it has one (the T4, the L4: these rows then measure how far the two sources disagree), else
    from the spec model (its architecture's other GPUs)."""
    rows = []
    for gpu in sorted({o.gpu for o in calibration_rows()}):
        without = calibrate(software=False, without_gpus=(gpu,))
        rows += [_demo_row("calibration-logo", o, without) for o in calibration_rows() if o.gpu == gpu]
    return rows


def calibration_validation() -> list[ValidationRow]:
    """TensorRT demo rows predicted without their GPU (leave-one-GPU-out) and without their model
    (leave-one-model-out: η_hw per GPU fitted on the other model's rows)."""
    observations = list(calibration_rows())
    rows = leave_one_gpu_out()
    for model in sorted({o.model for o in observations}):
        fitted = perfmodel.Calibration(fit_efficiencies([o for o in observations if o.model != model]))
        rows += [_demo_row("calibration-lomo", o, fitted) for o in observations if o.model == model]
    return rows


def mlperf_validation(calibration: perfmodel.Calibration | None = None) -> list[ValidationRow]:
    """MLPerf BERT offline ratios to the reference round's A100 against predicted fp16 ratios: fit rows (in fit)
    and hold-out rows (read by no fit); `reference` and `excluded` rows are not compared."""
    calibration = calibration or default_calibration()
    rows = []
    for row in published.mlperf_rows():
        if row.use not in ("fit", "holdout"):
            continue
        reference = published.mlperf_reference(row, published.mlperf_rows())
        note = "; ".join(filter(None, [f"{row.label} / {reference.label} A100", row.note]))
        rows.append(ValidationRow(f"mlperf-{row.use}", "bert-large", "squad-v1.1-offline", row.gpu,
                                  "throughput_ratio", measured_mlperf_ratio(row),
                                  predicted_mlperf_ratio(row, calibration), "tensorrt", "tensorrt", row.use == "fit",
                                  note))
    return rows


def _published_row(source: str, row: published.PublishedRow, calibration: perfmodel.Calibration) -> ValidationRow:
    gpu = basket()[row.gpu]
    p = perfmodel.predict(row.shape, row.lengths, gpu, row.dtype, row.seq_len, calibration, row.attention, row.stack)
    path = perfmodel.gemm_path(perfmodel.gemm_dtype(row.dtype, row.stack))
    return ValidationRow(source, row.model, f"fixed-{row.batch}x{row.seq_len}", row.gpu, "tokens_per_second",
                         row.tokens_per_second, p.tokens_per_second, "pytorch", "eager", source == "pytorch-fit",
                         f"{row.framework}, {'tf32' if path == 'tf32' else row.dtype}", path)


def pytorch_validation(calibration: perfmodel.Calibration | None = None) -> list[ValidationRow]:
    """Published PyTorch rows: the fit rows in fit, again with η_sw fitted without their GPU's rows
    (leave-one-GPU-out), and the hold-out rows."""
    calibration = calibration or default_calibration()
    rows = [_published_row("pytorch-fit", r, calibration) for r in fit_rows(published_rows())]
    for gpu in sorted({r.gpu for r in fit_rows(published_rows())}):
        without = calibrate(pytorch_without_gpus=(gpu,))
        rows += [_published_row("pytorch-logo", r, without) for r in fit_rows(published_rows()) if r.gpu == gpu]
    rows += [_published_row("pytorch-holdout", r, calibration) for r in published_rows() if r.use == "holdout"]
    return rows


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
                                          record["max_batch_size"], p.max_batch_size, "pytorch", impl.backend,
                                          path=_path(record["dtype"])))
            continue
        lengths = suite.lengths[:record.get("num_documents") or len(suite.lengths)]
        pad_to = suite.definition.max_length if PROTOCOLS[record.get("protocol", "paper")].pad_to_suite_max else None
        p = workload.predict_suite(shape, lengths, record.get("batch_size") or 32, gpu, record["dtype"], impl, pad_to,
                                   calibration, PYTORCH, suite.definition.max_length)
        rows.append(ValidationRow("measured", model, record["suite"], gpu.id, "tokens_per_second",
                                  record["tokens_per_second"], p.tokens_per_second, "pytorch", impl.backend,
                                  path=_path(record["dtype"])))
    return rows


def _path(dtype: str) -> str:
    return perfmodel.gemm_path(perfmodel.gemm_dtype(dtype, PYTORCH))


def validation_tables(records: list[dict] | tuple[dict, ...] = ()) -> list[ValidationRow]:
    """Every validation row: the published rows (`published_validation`) and `records` when given."""
    return [*published_validation(), *record_validation(records, default_calibration())]


@lru_cache(maxsize=1)
def published_validation() -> tuple[ValidationRow, ...]:
    """The rows of published numbers (no records): the paper table (in-fit and leave-one-model-out), the TensorRT
    demo rows' leave-one-GPU-out and leave-one-model-out, MLPerf ratios and PyTorch rows; once per process."""
    calibration = default_calibration()
    return (*paper_validation(calibration), *calibration_validation(), *mlperf_validation(calibration),
            *pytorch_validation(calibration))


@dataclass(frozen=True)
class ErrorSummary:
    """|error| of a group of rows: how many, the median and the worst (fractions)."""

    rows: int
    median: float
    worst: float


def summarise(rows: list[ValidationRow]) -> ErrorSummary:
    """Median and worst |error| of `rows`; ValueError when there are none."""
    errors = [abs(r.error) for r in rows]
    if not errors:
        raise ValueError("no rows to summarise")
    return ErrorSummary(len(errors), statistics.median(errors), max(errors))


def median_errors(rows: list[ValidationRow]) -> dict[tuple[str, str], float]:
    """Median |error| per (source, metric)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row.source, row.metric), []).append(abs(row.error))
    return {key: statistics.median(values) for key, values in groups.items()}


def architecture_errors(rows: list[ValidationRow]) -> dict[tuple[str, str], ErrorSummary]:
    """|error| per (architecture, stack) over throughput rows no fit read for their own prediction (in_fit False;
    max-batch rows and the contradicted as-printed cell left out)."""
    groups: dict[tuple[str, str], list[ValidationRow]] = {}
    for row in rows:
        if row.in_fit or row.metric == "max_batch_size" or row.source == "paper-4090-as-printed":
            continue
        groups.setdefault((row.architecture, row.stack), []).append(row)
    return {key: summarise(group) for key, group in sorted(groups.items())}


def held_out(rows: list[ValidationRow]) -> list[ValidationRow]:
    """The tracked hold-out: rows whose data no fitted constant reads."""
    return [r for r in rows if r.held_out]


def repeats_a_fit_row(row: ValidationRow) -> bool:
    """A held-out MLPerf row on a GPU that has an MLPerf fit row: the same GPU and harness in another round, so its
    error measures the round-to-round repeat of a fitted value, not a transfer (the H100s' v2.1, v3.1 and v4.0 rows,
    the L4's v3.1 row)."""
    fitted = {r.gpu for r in published.mlperf_rows() if r.use == "fit"}
    return row.source == "mlperf-holdout" and row.gpu in fitted
