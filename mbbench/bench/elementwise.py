"""Which element-wise kernel (`models.fused.KERNELS`) runs a model's RoPE and gated activation faster here.

Measured once per process at the model's own shapes, like the GEMM kernels (`bench.matmul.cpu_gemm_rates`):
Inductor's one-pass kernels save memory traffic, but compiling them costs seconds and their speed depends on
the CPU's vector units and memory, so the choice is a measurement, recorded with its numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import torch

from mbbench.formatting import plural
from mbbench.models.fused import EAGER, INDUCTOR, inductor_refusal, operations

WARMUP = 3  # untimed calls per kernel (the first Inductor call compiles)


@dataclass(frozen=True)
class ElementwiseTimes:
    """Seconds per layer of each kernel's RoPE + gated activation at a model's shapes (the best of interleaved
    rounds), or why Inductor could not run."""

    seconds: tuple[tuple[str, float], ...]  # (kernel, seconds per layer), fastest first
    tokens: int
    threads: int
    rounds: int
    compile_seconds: float | None  # Inductor's compile (its first call), None when it failed
    error: str | None = None  # why Inductor did not compile or run here

    @property
    def best(self) -> str:
        return self.seconds[0][0]

    def describe(self) -> str:
        """One line: each kernel's time, how it was measured, and Inductor's compile time or error."""
        if self.error:
            return f"Inductor's fused kernels do not run here ({self.error}); eager ATen"
        times = " vs ".join(f"{kernel} {seconds * 1e3:.2f} ms" for kernel, seconds in self.seconds)
        return (f"{times} per layer (RoPE + gated activation, {self.tokens} tokens, {plural(self.threads, 'thread')}, "
                f"best of {self.rounds} interleaved rounds; compiled in {self.compile_seconds:.1f} s)")


def _one_layer(kernel: str, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, h: torch.Tensor,
               activation: str) -> float:
    ops = operations(kernel)
    gated = ops.gelu_gated if activation == "gelu" else ops.silu_gated
    start = time.perf_counter()
    ops.rotary(qkv[:, :2], cos, sin)
    gated(h)
    return time.perf_counter() - start


@lru_cache(maxsize=8)
def elementwise_times(heads: int, head_dim: int, gated_width: int, activation: str, dtype: torch.dtype,
                      threads: int, tokens: int = 2048, rounds: int = 5) -> ElementwiseTimes:
    """Each kernel's seconds for one layer's RoPE on (tokens, 3, heads, head_dim) qkv and `activation`-gated
    product on (tokens, 2 · gated_width), once per process. `threads` must be torch's intra-op count now (it is
    part of the cache key, and Inductor's kernels are compiled for it).

    Kernels run interleaved after `WARMUP` calls each; each kernel's time is its fastest round (other processes
    only add time). Inductor's first call compiles (seconds, cached on disk for later processes). The inputs are
    made inside inference mode, as the model's activations are, so the kernels compiled here are the ones the
    model's forward then calls (no recompile on its first batch). If Inductor cannot run (no C++ compiler, a
    failed compile) eager is the answer and the reason is kept. Raises ValueError for another thread count.
    """
    if threads != torch.get_num_threads():
        raise ValueError(f"measuring for {threads} threads while torch runs {torch.get_num_threads()}")
    refusal = inductor_refusal()
    if refusal:
        return ElementwiseTimes(((EAGER, float("nan")),), tokens, threads, 0, None, refusal)
    kernels = [EAGER, INDUCTOR]
    compile_seconds = None
    with torch.inference_mode():  # as the model runs: Dynamo guards on inference tensors
        generator = torch.Generator().manual_seed(0)
        qkv = torch.randn(tokens, 3, heads, head_dim, generator=generator).to(dtype)  # the QKV GEMM's output
        angles = torch.rand(tokens, head_dim // 2, generator=generator) * 100
        # fp32 (tokens, 1, 1, head_dim / 2) views, laid out as `RotaryTables` returns them (Dynamo guards on strides)
        cos, sin = angles.cos()[:, None, None, :], angles.sin()[:, None, None, :]
        h = torch.randn(tokens, 2 * gated_width, generator=generator).to(dtype)
        try:
            compile_seconds = _one_layer(INDUCTOR, qkv, cos, sin, h, activation)
        except Exception as error:  # Inductor raises many kinds (lowering, C++ build errors)
            detail = " ".join(str(error).split())[:200]
            return ElementwiseTimes(((EAGER, float("nan")),), tokens, threads, 0, None,
                                    f"{type(error).__name__}: {detail}")
        for _ in range(WARMUP):
            for kernel in kernels:
                _one_layer(kernel, qkv, cos, sin, h, activation)
        seconds: dict[str, list[float]] = {kernel: [] for kernel in kernels}
        for round_ in range(rounds):
            for kernel in kernels if round_ % 2 == 0 else reversed(kernels):
                seconds[kernel].append(_one_layer(kernel, qkv, cos, sin, h, activation))
    ranked = sorted(((kernel, min(s)) for kernel, s in seconds.items()), key=lambda ks: ks[1])
    return ElementwiseTimes(tuple(ranked), tokens, threads, rounds, compile_seconds)
