"""Memory model: predicted peak bytes of one inference forward, hence a predicted maximum batch.

peak = weights + activation working set + attention workspace + allocator overhead, where
- weights: parameters x bytes per element;
- activation working set: the largest set of tensors alive at once inside one layer (no autograd
  under inference_mode, so earlier layers' activations are freed): at the GLU step the residual,
  its norm, the fused Wi output, the activation and the product (2H + 2·F_in + F); at attention
  the residual, its norm, packed QKV, rotated q/k (fp32 during RoPE) and the output, plus the attention
  workspace; the peak is the larger of the two steps;
- attention workspace, by the kernel that runs (software.AttentionImpl): fused kernels (flash, memory-efficient,
  flex) keep O(tokens) (the log-sum-exp); eager/math keep LIVE_SCORES B×H×S² score-sized tensors in the model
  dtype (2 for softmax(QKᵀ): the masked scores and the probabilities; 7 for DeBERTa's disentangled attention
  (DebertaV2 disentangled_attention_bias): QKᵀ, the c2p product (S×2k, 2k = S at 512) and its gathered copy, the
  running score, the p2c product and its gathered copy, and a scaled temporary), plus a materialised B×S²
  boolean mask where one is built;
- allocator overhead: a fraction of the activation working set for the caching allocator's fragmentation
  (blocks of hidden and FFN widths interleave); score-sized blocks recur with one size and are reused whole, so
  the workspace carries none. ALLOCATOR_OVERHEAD is the one memory parameter fitted: the median over the paper
  table's max-batch cells of the fraction that reproduces each (calibration.implied_allocator_overhead).
Capacity is in bytes as the device reports it (NVML memory.total; gpu_basket.csv `mem_bytes_reported`). Outside
torch's allocator: the driver's reservation (NVML total − torch total_memory) and the CUDA context.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mbbench.dtypes import bytes_per_element
from mbbench.hardware.gpus import GPU
from mbbench.hardware.shape import Shape
from mbbench.hardware.software import AttentionImpl

ALLOCATOR_OVERHEAD = 0.33  # median of calibration.implied_allocator_overhead() over the 20 cells: 0.331
CUDA_CONTEXT_BYTES = 0.5e9
# NVML memory.total − torch total_memory: the RTX 4090 reports 24,564 MiB to NVML and "23.43 GiB total capacity"
# in the paper's OOM messages (modernbert.md §2) -> 572 MiB; an H100 80GB reports 81,559 MiB vs 79.10 GiB (M).
DRIVER_RESERVED_BYTES = 572 * 2**20
LIVE_SCORES = {"standard": 2, "disentangled": 7}
FUSED_BACKENDS = ("varlen", "flash", "flex", "xformers", "flash_attention_2")


@lru_cache(maxsize=1)
def _reported_bytes() -> dict[str, float]:
    text = resources.files("mbbench").joinpath("data/gpu_basket.csv").read_text(encoding="utf-8")
    return {row["gpu_id"]: float(row["mem_bytes_reported"]) for row in csv.DictReader(text.splitlines())
            if row.get("mem_bytes_reported") not in (None, "", "NA")}


def capacity_bytes(gpu: GPU) -> float:
    """Device memory in bytes as NVML reports it (gpu_basket.csv `mem_bytes_reported` = nvidia-smi memory.total
    MiB × 2²⁰: H200 143,771 MiB = 150.75e9 B from a measured device (issue 16); the other values as nvidia-smi
    prints them for those boards (recollection, M: replace with a measured record's NVML total when one exists).
    For a basket GPU without a reported value (B200, A30): its marketed size read as GiB (HBM/GDDR capacities are
    binary: the A100 80GB reports 81,920 MiB)."""
    return _reported_bytes().get(gpu.id, gpu.memory_gb * 2**30)


def usable_bytes(capacity: float) -> float:
    """What torch's allocator can hand out of a device of `capacity` bytes (NVML): less the driver reservation
    and the CUDA context."""
    return capacity - DRIVER_RESERVED_BYTES - CUDA_CONTEXT_BYTES


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    activations: float
    attention: float
    overhead: float

    @property
    def peak(self) -> float:
        return self.weights + self.activations + self.attention + self.overhead


def weight_bytes(shape: Shape, bytes_per: int) -> float:
    return shape.parameters * bytes_per


def ffn_step_bytes(shape: Shape, tokens: int, bytes_per: int) -> float:
    """Alive at the FFN: the layer input, its norm, the FFN-in output, the activation and the gated product."""
    ffn_in = shape.ffn * (2 if shape.gated else 1)
    return tokens * bytes_per * (2 * shape.hidden + ffn_in + (2 * shape.ffn if shape.gated else shape.ffn))


def attention_step_bytes(shape: Shape, tokens: int, bytes_per: int) -> float:
    """Alive at attention (besides its workspace): the layer input, its norm, packed QKV, rotated q/k in fp32
    and the output."""
    qkv = shape.hidden + 2 * shape.kv_dim
    return tokens * bytes_per * (2 * shape.hidden + qkv + 2 * shape.hidden * (4 / bytes_per) + shape.hidden)


def attention_bytes(shape: Shape, batch: int, seq: int, backend: str | AttentionImpl, bytes_per: int) -> float:
    """Attention workspace in bytes for `batch` rows of `seq` tokens.

    A backend name maps as before (fused names: O(tokens); 'eager': mask + scores; 'sdpa': the boolean mask).
    """
    tokens = batch * seq
    mask = batch * seq * seq  # one boolean per (query, key) pair, shared by heads
    scores = LIVE_SCORES[shape.attention_kind] * batch * shape.heads * seq * seq * bytes_per
    if isinstance(backend, str):
        if backend in FUSED_BACKENDS:
            return tokens * shape.heads * 4
        return mask + scores if backend == "eager" else mask
    if not backend.materialises_scores:
        return tokens * shape.heads * 4 + (mask if backend.mask else 0)
    return scores + (mask if backend.mask else 0)


def estimate(shape: Shape, batch: int, seq: int, dtype_bytes: int = 2,
             backend: str | AttentionImpl = "varlen") -> MemoryEstimate:
    """Peak bytes of one forward over `batch` rows of `seq` tokens with weights of `dtype_bytes` bytes.

    The peak is at the FFN or at attention, whichever holds more: activations are the working set of that step,
    `attention` the workspace when attention is the peak (0 otherwise).
    """
    tokens = batch * seq
    weights = weight_bytes(shape, dtype_bytes)
    ffn = ffn_step_bytes(shape, tokens, dtype_bytes)
    attention_set = attention_step_bytes(shape, tokens, dtype_bytes)
    workspace = attention_bytes(shape, batch, seq, backend, dtype_bytes)
    activations, attention = (ffn, 0.0) if ffn >= attention_set + workspace else (attention_set, workspace)
    return MemoryEstimate(weights, activations, attention, ALLOCATOR_OVERHEAD * activations)


def max_batch(shape: Shape, seq: int, capacity: float, dtype_bytes: int = 2,
              backend: str | AttentionImpl = "varlen", granularity: int = 2) -> int:
    """Largest batch (multiple of `granularity`) of `seq`-token rows whose predicted peak fits in a device of
    `capacity` bytes as NVML reports it (capacity_bytes(gpu)), less the driver reservation and CUDA context."""
    budget = usable_bytes(capacity)
    low, high = 0, granularity
    while estimate(shape, high, seq, dtype_bytes, backend).peak <= budget:
        low, high = high, high * 2
    while high - low > granularity:
        mid = (low + high) // 2 // granularity * granularity
        if mid in (low, high):
            break
        if estimate(shape, mid, seq, dtype_bytes, backend).peak <= budget:
            low = mid
        else:
            high = mid
    return low


def seed_size(shape: Shape, seq: int, capacity: float, dtype: str, backend: str, mode: str,
              granularity: int) -> int | None:
    """Where a max-batch search starts: the memory model's largest batch of `seq`-token rows (mode "batch") or
    packed token budget (mode "tokens", batch × seq) on a device of `capacity` bytes, rounded down to
    `granularity`; None when not even one row fits. `backend`: the attention that the trials run."""
    batch = max_batch(shape, seq, capacity, bytes_per_element(dtype), backend, granularity=1)
    size = (batch * seq if mode == "tokens" else batch) // granularity * granularity
    return size or None
