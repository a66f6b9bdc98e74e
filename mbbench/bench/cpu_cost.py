"""The CPU cost model: one forward's seconds as the sum of its parts, each part timed apart on this CPU.

For a ModernBERT shape and a packed workload (documents per batch), per batch of T tokens:

    GEMMs        layers x sum over the four weight GEMMs (Wqkv, Wo, Wi, Wo) of their seconds at T rows, each
                 shape timed at its own (in, out) on the kernel the model runs: `bench.matmul.gemm_timings`, the
                 kernel cache's entry (KERNEL_ROWS rows, fastest of its interleaved rounds), scaled by T / rows
    attention    global layers x one global attention call + local layers x one ±window call, timed on the
                 batch's own documents (cu_seqlens) with the backend the model runs, once per head count
    element-wise layers x (RoPE on q, k + the gated activation) on the model's element-wise kernel, plus the
                 LayerNorms (2 x layers + 1: the embeddings', each layer's but the first attention norm, the
                 final), each timed once per width at the workload's largest batch and scaled by T

What it leaves out: the embedding gather, the per-forward layout (`packed_layout`, the backend's `prepare`:
masks or tiles), the reshapes and views between operations, Python and dispatcher time per operation, and
any interaction between consecutive operations (each part is timed alone, hot, on its own inputs: a real
forward reads activations another operation just wrote, which may or may not still be in cache). So it
predicts the order of shapes better than their absolute speed; `mbbench sweep --measure` reports both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from mbbench.bench.matmul import KERNEL_ROWS, ROUNDS, gemm_timings
from mbbench.hardware.shape import Shape
from mbbench.models.attention import get_backend, packed_layout
from mbbench.models.elementwise import operations

WARMUP = 3  # untimed calls of each part (the first Inductor call compiles)
PART_ROUNDS = 10  # timed calls of each attention and element-wise part; the fastest counts (a busy core stalls
# a tiny operation for milliseconds: the minimum of ten is its undisturbed time)


@dataclass(frozen=True)
class PassCost:
    """Predicted seconds of one pass over the workload, by part."""

    gemm_seconds: float
    attention_seconds: float
    elementwise_seconds: float
    tokens: int  # real tokens of one pass

    @property
    def seconds(self) -> float:
        return self.gemm_seconds + self.attention_seconds + self.elementwise_seconds

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def _fastest(call: Callable[[], object], rounds: int = PART_ROUNDS, warmup: int = WARMUP) -> float:
    """The fastest of `rounds` timed calls after `warmup` untimed ones (s): other processes only add time."""
    with torch.inference_mode():
        for _ in range(warmup):
            call()
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return min(times)


def gemm_layer_seconds(shape: Shape, tokens: int, kernel: str, dtype: torch.dtype, threads: int) -> float:
    """Seconds of one layer's four weight GEMMs at `tokens` rows on `kernel`: each shape's fastest round in the
    kernel cache (KERNEL_ROWS rows, measured now when this CPU has not timed it), scaled linearly in rows."""
    return sum(gemm_timings(k, n, dtype, threads, KERNEL_ROWS, ROUNDS).fastest(kernel) * tokens / KERNEL_ROWS
               for k, n in shape.gemms().values())


@lru_cache(maxsize=256)
def attention_seconds(heads: int, head_dim: int, lengths: tuple[int, ...], window: int | None, backend: str,
                      dtype: torch.dtype) -> float:
    """Seconds of one attention call (`backend.attend`) on packed (tokens, heads, head_dim) q, k, v over documents
    of `lengths`, global (`window` None) or ±`window`; the backend's per-forward `prepare` is outside the clock."""
    runner = get_backend(backend, "cpu", dtype, needs_window=window is not None)
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    total = int(cu_seqlens[-1])
    layout = packed_layout(cu_seqlens, max(lengths), total)
    context = runner.prepare(layout, {window})
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(total, heads, head_dim, generator=generator).to(dtype) for _ in range(3))
    return _fastest(lambda: runner.attend(q, k, v, layout, context, window, head_dim ** -0.5))


@lru_cache(maxsize=256)
def width_seconds(part: str, width: int, head_dim: int, tokens: int, kernel: str, dtype: torch.dtype) -> float:
    """Seconds of one element-wise part at `tokens` tokens: "layernorm" on (tokens, width), "rope" on q and k of
    (tokens, 3, width / head_dim, head_dim) qkv, "gated" (GeGLU) on (tokens, width), the fused input's width."""
    generator = torch.Generator().manual_seed(0)
    ops = operations(kernel)
    if part == "layernorm":
        x, weight = torch.randn(tokens, width, generator=generator).to(dtype), torch.ones(width, dtype=dtype)
        return _fastest(lambda: F.layer_norm(x, (width,), weight, None, 1e-5))
    if part == "rope":
        qkv = torch.randn(tokens, 3, width // head_dim, head_dim, generator=generator).to(dtype)
        angles = torch.rand(tokens, head_dim // 2, generator=generator) * 100
        cos, sin = angles.cos()[:, None, None, :], angles.sin()[:, None, None, :]  # (tokens, 1, 1, head_dim / 2)
        return _fastest(lambda: ops.rotary(qkv[:, :2], cos, sin))
    if part == "gated":
        h = torch.randn(tokens, width, generator=generator).to(dtype)
        return _fastest(lambda: ops.gelu_gated(h))
    raise ValueError(f"unknown element-wise part {part!r}")


def predict_pass(shape: Shape, batches: Sequence[Sequence[int]], dtype: torch.dtype, threads: int, gemm: str,
                 elementwise: str, backend: str) -> PassCost:
    """Predicted seconds of one pass over `batches` (each a list of document lengths, tokens) by a ModernBERT of
    `shape` on this CPU, its linears on `gemm`, RoPE and GeGLU on `elementwise`, attention on `backend` (a
    resolved name: sdpa, windowed, ...). `threads` must be torch's intra-op count now. What the sum leaves out
    is in the module docstring."""
    largest = max(sum(lengths) for lengths in batches)
    local = [layer for layer in range(shape.layers) if not shape.is_global(layer)]
    norm = width_seconds("layernorm", shape.hidden, shape.head_dim, largest, elementwise, dtype) / largest
    rope = width_seconds("rope", shape.hidden, shape.head_dim, largest, elementwise, dtype) / largest
    gated = width_seconds("gated", 2 * shape.ffn, shape.head_dim, largest, elementwise, dtype) / largest
    gemm_seconds = attention = elementwise_seconds = 0.0
    for lengths in batches:
        tokens = sum(lengths)
        gemm_seconds += shape.layers * gemm_layer_seconds(shape, tokens, gemm, dtype, threads)
        elementwise_seconds += tokens * (shape.layers * (rope + gated) + (2 * shape.layers + 1) * norm)
        key = (shape.heads, shape.head_dim, tuple(lengths))
        attention += (shape.layers - len(local)) * attention_seconds(*key, None, backend, dtype)
        if local:
            attention += len(local) * attention_seconds(*key, shape.window, backend, dtype)
    return PassCost(gemm_seconds, attention, elementwise_seconds, sum(sum(lengths) for lengths in batches))
