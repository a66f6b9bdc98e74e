"""A whole suite predicted: the performance model over its batches and the memory model at its longest rows.

`predict_suite` is what predicted records, the CLI and validation call: documents of `lengths` are cut into
batches of `batch_size` in order (as the runner does), each batch costed by perfmodel (padded to `pad_to`, or to
the batch maximum, when the attention implementation runs padded rows), and the maximum batch predicted for rows of
the suite's longest length (the paper's fixed-set protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

from mbbench.dtypes import bytes_per_element
from mbbench.hardware import memory, perfmodel
from mbbench.hardware.gpus import GPU
from mbbench.hardware.shape import Shape
from mbbench.hardware.software import PYTORCH, AttentionImpl, Stack


@dataclass(frozen=True)
class SuiteSeconds:
    seconds: float  # one pass over every document, after η
    flops: float  # model FLOPs of that pass (perfmodel.forward_flops per batch)
    real_tokens: int
    executed_tokens: int  # real + padding
    framework_raw: float = 0.0  # before η: compute-bound GEMMs (÷ η_hw·η_sw)
    kernel_raw: float = 0.0  # before η: fused attention kernels (÷ η_hw)
    memory_raw: float = 0.0  # memory-bound work (no η)
    peak_seconds: float = 0.0  # the FLOPs at their dtypes' dense peaks (perfmodel.peak_seconds): MFU's numerator


@dataclass(frozen=True)
class SuitePrediction:
    """Predicted throughput and memory of one pass over a suite (units: seconds, FLOPs, tokens/s, bytes)."""

    seconds: float
    flops: float
    tokens_per_second: float  # real tokens / seconds
    mfu: float  # FLOPs at their dtypes' dense peaks (GEMMs, attention) over the predicted seconds
    max_batch_size: int  # rows of max_length tokens that fit (memory model)
    peak_memory_bytes: float  # predicted peak at `batch_size` rows of max_length tokens
    compute_dtypes: dict[str, str]  # {"weights", "gemm", "attention"}
    attention: AttentionImpl
    efficiency: float  # η_hw × η_sw applied to framework work
    efficiency_source: str  # "fitted" or "from-specs" (η_hw)
    capacity_bytes: float  # device memory as NVML reports it
    notes: tuple[str, ...] = ()


def suite_seconds(shape: Shape, lengths: list[int], batch_size: int, gpu: GPU, dtype: str,
                  attention: AttentionImpl | None, pad_to: int | None, calibration: perfmodel.Calibration,
                  stack: Stack = PYTORCH) -> SuiteSeconds:
    """Seconds and FLOPs of one pass over documents of `lengths` (in order) in batches of `batch_size`.

    pad_to: padded implementations pad every row to this length (the paper pads to the suite maximum); None pads
    to each batch's maximum. Identical batches are costed once.
    """
    seconds = flops = framework = kernel = memory_bound = ideal = 0.0
    executed = 0
    cache: dict[tuple[int, ...], perfmodel.Prediction] = {}
    impl = attention or perfmodel.default_attention(shape, gpu, dtype)
    for start in range(0, len(lengths), batch_size):
        batch = tuple(lengths[start:start + batch_size])
        if batch not in cache:
            padded_to = None if impl.packed else (pad_to or max(batch))
            cache[batch] = perfmodel.predict(shape, list(batch), gpu, dtype, padded_to, calibration, impl, stack)
        p = cache[batch]
        seconds += p.seconds
        flops += p.flops
        framework += p.framework_raw
        kernel += p.kernel_raw
        memory_bound += p.memory_raw
        ideal += p.peak_seconds
        executed += sum(batch) if impl.packed else len(batch) * (pad_to or max(batch))
    return SuiteSeconds(seconds, flops, sum(lengths), executed, framework, kernel, memory_bound, ideal)


def predict_suite(shape: Shape, lengths: list[int], batch_size: int, gpu: GPU, dtype: str,
                  attention: AttentionImpl, pad_to: int | None, calibration: perfmodel.Calibration,
                  stack: Stack = PYTORCH, max_length: int | None = None) -> SuitePrediction:
    """Predicted throughput, MFU, max batch and peak memory of one pass over documents of `lengths`.

    dtype: the weights' dtype, canonical and one `gpu` has (`software.check_dtype`, run when the attention was
    resolved); attention: software.resolve_attention(...); pad_to: padded rows' length (paper protocol: the suite
    maximum); max_length: rows for the memory model (default max(lengths)); calibration: the efficiencies
    (`mbbench.calibration.default_calibration()` for the fitted ones).
    """
    timing = suite_seconds(shape, lengths, batch_size, gpu, dtype, attention, pad_to, calibration, stack)
    gemm_dtype = perfmodel.gemm_dtype(dtype, stack)
    eta, eta_source = calibration.efficiency(gpu, stack, dtype)
    seq = max_length or max(lengths)
    width = bytes_per_element(dtype)
    capacity = memory.capacity_bytes(gpu)
    notes = [attention.reason]
    if attention.compute_dtype != dtype:
        notes.append(f"attention computes in {attention.compute_dtype} under {dtype} weights")
    if not attention.packed and pad_to:
        notes.append(f"padded execution: rows padded to {pad_to} tokens "
                     f"({timing.executed_tokens - timing.real_tokens} padding tokens computed)")
    return SuitePrediction(
        seconds=timing.seconds, flops=timing.flops, tokens_per_second=timing.real_tokens / timing.seconds,
        mfu=timing.peak_seconds / timing.seconds,
        max_batch_size=memory.max_batch(shape, seq, capacity, width, attention),
        peak_memory_bytes=memory.estimate(shape, batch_size, seq, width, attention).peak,
        compute_dtypes={"weights": dtype, "gemm": gemm_dtype, "attention": attention.compute_dtype},
        attention=attention, efficiency=eta, efficiency_source=eta_source, capacity_bytes=capacity,
        notes=tuple(notes))
