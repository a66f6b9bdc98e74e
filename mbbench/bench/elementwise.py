"""Which element-wise kernel (`models.elementwise.KERNELS`) runs a model's RoPE and gated activation faster here.

Measured once per CPU at the model's own shapes and kept in the kernel cache, like the GEMM kernels
(`bench.matmul.cpu_gemm_rates`, `bench.kernel_store`): Inductor's one-pass kernels save memory traffic, but
compiling them costs seconds and their speed depends on the CPU's vector units and memory, so the choice is a
measurement, recorded with its numbers (`bench.kernel_choice`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import torch

from mbbench.bench import kernel_store
from mbbench.formatting import plural
from mbbench.records import now
from mbbench.models.elementwise import EAGER, INDUCTOR, inductor_refusal, operations

WARMUP = 3  # untimed calls per kernel (the first Inductor call compiles)
ROUNDS = 8  # timed rounds: [min, max] of 8 paired ratios covers their median with probability 99.2%


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
    round_seconds: tuple[tuple[str, tuple[float, ...]], ...] = ()  # (kernel, seconds per round), interleaved
    source: str = kernel_store.MEASURED  # MEASURED, or CACHED: read from the kernel cache
    measured_at: str = ""  # when (UTC)

    @property
    def best(self) -> str:
        return self.seconds[0][0]

    def describe(self) -> str:
        """One line: each kernel's time, how and when it was measured, and Inductor's compile time or error."""
        if self.error:
            return f"Inductor's fused kernels do not run here ({self.error}); eager ATen"
        times = " vs ".join(f"{kernel} {seconds * 1e3:.2f} ms" for kernel, seconds in self.seconds)
        when = "" if self.source == kernel_store.MEASURED else f", measured {self.measured_at}"
        return (f"{times} per layer (RoPE + gated activation, {self.tokens} tokens, {plural(self.threads, 'thread')}, "
                f"best of {self.rounds} interleaved rounds; compiled in {self.compile_seconds:.1f} s; "
                f"{self.source}{when})")


def _one_layer(kernel: str, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, h: torch.Tensor,
               activation: str) -> float:
    ops = operations(kernel)
    gated = ops.gelu_gated if activation == "gelu" else ops.silu_gated
    start = time.perf_counter()
    ops.rotary(qkv[:, :2], cos, sin)
    gated(h)
    return time.perf_counter() - start


def _inputs(tokens: int, heads: int, head_dim: int, gated_width: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """qkv (tokens, 3, heads, head_dim), fp32 cos and sin (tokens, 1, 1, head_dim / 2), h (tokens, 2 · gated_width):
    made inside inference mode and laid out as the model's (`RotaryTables`), for Dynamo guards on both."""
    generator = torch.Generator().manual_seed(0)
    qkv = torch.randn(tokens, 3, heads, head_dim, generator=generator).to(dtype)  # the QKV GEMM's output
    angles = torch.rand(tokens, head_dim // 2, generator=generator) * 100
    cos, sin = angles.cos()[:, None, None, :], angles.sin()[:, None, None, :]
    h = torch.randn(tokens, 2 * gated_width, generator=generator).to(dtype)
    return qkv, cos, sin, h


def measure_elementwise(heads: int, head_dim: int, gated_width: int, activation: str, dtype: torch.dtype,
                        threads: int, tokens: int = 2048, rounds: int = ROUNDS) -> ElementwiseTimes:
    """Each kernel's seconds for one layer's RoPE on (tokens, 3, heads, head_dim) qkv and `activation`-gated
    product on (tokens, 2 · gated_width), measured now. `threads` must be torch's intra-op count now.

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
    with torch.inference_mode():  # as the model runs: Dynamo guards on inference tensors
        inputs = _inputs(tokens, heads, head_dim, gated_width, dtype)
        try:
            compile_seconds = _one_layer(INDUCTOR, *inputs, activation)
        except Exception as error:  # Inductor raises many kinds (lowering, C++ build errors)
            detail = " ".join(str(error).split())[:200]
            return ElementwiseTimes(((EAGER, float("nan")),), tokens, threads, 0, None,
                                    f"{type(error).__name__}: {detail}")
        for _ in range(WARMUP):
            for kernel in kernels:
                _one_layer(kernel, *inputs, activation)
        seconds: dict[str, list[float]] = {kernel: [] for kernel in kernels}
        for round_ in range(rounds):
            for kernel in kernels if round_ % 2 == 0 else reversed(kernels):
                seconds[kernel].append(_one_layer(kernel, *inputs, activation))
    return _ranked(seconds, tokens, threads, rounds, compile_seconds, kernel_store.MEASURED, now())


def _ranked(seconds: dict[str, list[float]] | dict[str, tuple[float, ...]], tokens: int, threads: int, rounds: int,
            compile_seconds: float | None, source: str, measured_at: str) -> ElementwiseTimes:
    ranked = sorted(((kernel, min(s)) for kernel, s in seconds.items()), key=lambda ks: ks[1])
    return ElementwiseTimes(tuple(ranked), tokens, threads, rounds, compile_seconds, None,
                            tuple((kernel, tuple(s)) for kernel, s in seconds.items()), source, measured_at)


def compile_fused(heads: int, head_dim: int, gated_width: int, activation: str, dtype: torch.dtype) -> None:
    """Compile Inductor's kernels for these shapes in this process (one call on a few tokens: the token dimension
    is dynamic), so a model's first batch compiles nothing when the timings came from the cache."""
    with torch.inference_mode():
        _one_layer(INDUCTOR, *_inputs(8, heads, head_dim, gated_width, dtype), activation)


@lru_cache(maxsize=8)
def elementwise_times(heads: int, head_dim: int, gated_width: int, activation: str, dtype: torch.dtype,
                      threads: int, tokens: int = 2048, rounds: int = ROUNDS) -> ElementwiseTimes:
    """`measure_elementwise`'s answer once per CPU: read from the kernel cache (`bench.kernel_store`, keyed by the
    CPU, torch, dtype, threads, shapes, tokens and rounds) when this CPU measured these shapes before (Inductor's
    kernels are then compiled here, `compile_fused`), else measured now and kept. A measurement in which Inductor
    failed is not kept (a compiler installed later changes it). Raises ValueError for another thread count."""
    if threads != torch.get_num_threads():
        raise ValueError(f"measuring for {threads} threads while torch runs {torch.get_num_threads()}")
    if inductor_refusal():
        return measure_elementwise(heads, head_dim, gated_width, activation, dtype, threads, tokens, rounds)
    workload = (("activation", activation), ("dtype", str(dtype).removeprefix("torch.")), ("gated_width", gated_width),
                ("head_dim", head_dim), ("heads", heads), ("rounds", rounds), ("threads", threads), ("tokens", tokens))
    found = kernel_store.load("elementwise", workload)
    if found is not None:
        compile_fused(heads, head_dim, gated_width, activation, dtype)
        return _ranked(found.by_kernel(), tokens, threads, rounds, dict(found.extra).get("compile_seconds"),
                       found.source, found.measured_at)
    times = measure_elementwise(heads, head_dim, gated_width, activation, dtype, threads, tokens, rounds)
    if times.error is None:
        kernel_store.save(kernel_store.KernelTimings("elementwise", workload, times.round_seconds, times.measured_at,
                                                     (("compile_seconds", times.compile_seconds),)))
    return times
