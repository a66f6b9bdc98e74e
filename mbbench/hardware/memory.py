"""Memory model: predicted peak bytes of one inference forward, hence a predicted maximum batch.

peak = weights + activation working set + attention workspace + allocator overhead, where
- weights: parameters x bytes per element;
- activation working set: the largest set of tensors alive at once inside one layer (no autograd
  under inference_mode, so earlier layers' activations are freed): at the GLU step the residual,
  its norm, the fused Wi output, the activation and the product (2H + 2·F_in + F); at attention
  the residual, its norm, packed QKV, rotated q/k (fp32 during RoPE) and the output;
- attention workspace: fused/varlen kernels keep O(tokens) (the log-sum-exp); padded paths with a
  materialised mask keep batch x seq² booleans; eager keeps fp32 scores and probabilities;
- allocator overhead: a fraction for fragmentation and rounding (caching allocator blocks).
The CUDA context (about 0.5 GB) is outside torch's counters but inside the card's memory, so the
capacity for activations is total memory minus context minus weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from mbbench.hardware.perfmodel import Shape

ALLOCATOR_OVERHEAD = 0.10
CUDA_CONTEXT_BYTES = 0.5e9


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


def activation_bytes(shape: Shape, tokens: int, bytes_per: int) -> float:
    ffn_in = shape.ffn * (2 if shape.gated else 1)
    glu_step = 2 * shape.hidden + ffn_in + (2 * shape.ffn if shape.gated else shape.ffn)
    attention_step = 2 * shape.hidden + 3 * shape.hidden + 2 * shape.hidden * (4 / bytes_per) + shape.hidden
    return tokens * bytes_per * max(glu_step, attention_step)


def attention_bytes(shape: Shape, batch: int, seq: int, backend: str, bytes_per: int) -> float:
    tokens = batch * seq
    if backend in ("varlen", "flash", "flex", "xformers", "flash_attention_2"):
        return tokens * shape.heads * 4  # log-sum-exp per query and head
    mask = batch * seq * seq  # one boolean per (query, key) pair, shared by heads
    if backend == "eager":
        return mask + 2 * batch * shape.heads * seq * seq * 4  # fp32 scores and probabilities
    # sdpa: the memory-efficient kernel tiles the scores; the materialised mask remains
    return mask


def estimate(shape: Shape, batch: int, seq: int, dtype_bytes: int = 2, backend: str = "varlen") -> MemoryEstimate:
    weights = weight_bytes(shape, dtype_bytes)
    activations = activation_bytes(shape, batch * seq, dtype_bytes)
    attention = attention_bytes(shape, batch, seq, backend, dtype_bytes)
    return MemoryEstimate(weights, activations, attention, ALLOCATOR_OVERHEAD * (activations + attention))


def max_batch(shape: Shape, seq: int, capacity_bytes: float, dtype_bytes: int = 2, backend: str = "varlen",
              granularity: int = 2) -> int:
    """Largest batch (multiple of `granularity`) whose predicted peak fits in `capacity_bytes` less the context."""
    budget = capacity_bytes - CUDA_CONTEXT_BYTES
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
