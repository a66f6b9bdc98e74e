"""The band every prediction carries: a stated interval of past relative errors (measured / predicted) for its GPU's
architecture and stack, from validation rows whose own prediction no fit read.

A prediction for a GPU in a dtype runs PyTorch on one GEMM path (`simt` for fp32, `tensor` for fp16/bf16):
- direct: when validation holds at least MIN_ROWS rows of that GPU itself on PyTorch and that path, of at least
  MIN_DIRECT_MODELS models (the RTX 4090's paper table in fp32), the band is their range: rows of one model at one
  length (the A100 80GB's three BERT-large rows at 384 tokens) would state a spread they cannot know for others;
- composed: otherwise the range over the architecture's TensorRT rows (the hardware transfer: leave-one-GPU-out
  demo rows and MLPerf hold-out ratios) times the range over PyTorch rows of that path on any GPU (the software:
  leave-one-GPU-out and hold-out rows);
- too thin: fewer than MIN_ROWS rows in either part (an architecture with no published rows, the B200's Blackwell):
  no band; the record says how many rows there were instead of drawing one.
Each interval is the minimum to the maximum of its rows (it covers all of them), widened to contain 1, the
prediction itself: the point is always inside its band. A band is where past predictions fell, not a confidence
interval.
"""

from __future__ import annotations

from mbbench.hardware import perfmodel
from mbbench.hardware.gpus import basket
from mbbench.hardware.software import PYTORCH
from mbbench.records import ErrorBand
from mbbench.validation import ValidationRow, published_validation

MIN_ROWS = 3
MIN_DIRECT_MODELS = 2
HARDWARE_SOURCES = ("calibration-logo", "mlperf-holdout")
SOFTWARE_SOURCES = {"tensor": ("pytorch-logo", "pytorch-holdout"), "simt": ("paper-4090-lomo",),
                    "tf32": ("pytorch-holdout",)}


def _range(rows: list[ValidationRow]) -> tuple[float, float]:
    """(min, max) of measured / predicted over `rows`."""
    ratios = [row.measured / row.predicted for row in rows]
    return min(ratios), max(ratios)


def _sources(rows: list[ValidationRow]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.source] = counts.get(row.source, 0) + 1
    return ", ".join(f"{source} {count}" for source, count in counts.items())


def _band(low: float, high: float, basis: str, rows: int) -> ErrorBand:
    return ErrorBand(min(low, 1.0), max(high, 1.0), basis, rows, f"min-max of all {rows} rows, widened to contain 1")


def software_rows(path: str, rows: list[ValidationRow] | None = None) -> list[ValidationRow]:
    """PyTorch rows of GEMM path `path` whose prediction no fit read (throughput only)."""
    rows = list(published_validation()) if rows is None else rows
    return [r for r in rows if r.source in SOFTWARE_SOURCES.get(path, ()) and r.path == path
            and r.metric == "tokens_per_second"]


def hardware_rows(architecture: str, rows: list[ValidationRow] | None = None) -> list[ValidationRow]:
    """TensorRT rows of GPUs of `architecture` whose prediction no fit read."""
    rows = list(published_validation()) if rows is None else rows
    return [r for r in rows if r.source in HARDWARE_SOURCES and r.architecture == architecture]


def error_band(gpu_id: str, dtype: str) -> ErrorBand:
    """The band of measured / predicted tokens/s for a PyTorch prediction on basket GPU `gpu_id` in `dtype`
    (module docstring: direct, composed or too thin)."""
    gpu = basket()[gpu_id]
    path = perfmodel.gemm_path(perfmodel.gemm_dtype(gpu.effective_dtype(dtype), PYTORCH))
    software = software_rows(path)
    direct = [r for r in software if r.gpu == gpu_id]
    if len(direct) >= MIN_ROWS and len({r.model for r in direct}) >= MIN_DIRECT_MODELS:
        return _band(*_range(direct), f"{gpu_id}'s own PyTorch {path} rows ({_sources(direct)})", len(direct))
    hardware = hardware_rows(gpu.architecture)
    if len(hardware) < MIN_ROWS or len(software) < MIN_ROWS:
        return ErrorBand(None, None, f"too thin: {len(hardware)} {gpu.architecture} TensorRT rows and "
                                     f"{len(software)} PyTorch {path} rows (a band needs {MIN_ROWS} of each)",
                         len(hardware) + len(software), "no band")
    (h_low, h_high), (s_low, s_high) = _range(hardware), _range(software)
    basis = (f"{gpu.architecture} TensorRT rows ({_sources(hardware)}) x PyTorch {path} rows "
             f"({_sources(software)})")
    return _band(h_low * s_low, h_high * s_high, basis, len(hardware) + len(software))


def max_batch_band() -> ErrorBand:
    """The band of measured / predicted maximum batch: the paper table's max-batch cells (RTX 4090, fp32; the
    allocator overhead was fitted on them, so this is the in-fit spread; the memory model is the same on every
    GPU)."""
    rows = [r for r in published_validation() if r.source == "paper-4090" and r.metric == "max_batch_size"]
    return _band(*_range(rows), f"paper-4090 max batch ({len(rows)} cells, in fit)", len(rows))
