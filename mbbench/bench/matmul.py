"""Measured GEMM peaks, the MFU denominators a datasheet cannot give.

- `matmul_peak`: a large square GEMM on a GPU (warmup, CUDA events), bf16 by default.
- `cpu_gemm_rates`: on a CPU, the model's own GEMM shapes on every kernel our models can run
  (`models.gemm.KERNELS`: torch's MKL path and oneDNN with prepacked weights), each shape timed once per CPU
  and kept in the kernel cache (`bench.kernel_store`, `gemm_timings`). The best rate is the CPU's measured peak
  for that model (CPU records' MFU divides by it); the paired rounds behind it choose the kernel the runner
  builds with (`bench.kernel_choice`).
  A CPU's datasheet peak (cores x clock x FMA units x vector width) is not reported by the OS, and the clock
  under vector load and the kernels' use of AVX-512 vary by vendor: measured, it is what this machine runs.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Hashable

import torch

from mbbench.bench import kernel_store
from mbbench.bench.kernel_store import KernelTimings
from mbbench.bench.timing import summarize, timed
from mbbench.formatting import plural
from mbbench.files import write_json
from mbbench.models.gemm import KERNELS, ONEDNN_PACKED, linear_with, onednn_available, packed_weight
from mbbench.records import now


def matmul_peak(n: int = 8192, dtype: torch.dtype = torch.bfloat16, warmup: int = 10, repeats: int = 30,
                device: str = "cuda") -> dict:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(warmup):
        a @ b
    seconds = [timed(lambda: a @ b, torch.device(device)) for _ in range(repeats)]
    stats = summarize(seconds)
    flops = 2 * n ** 3
    return {"n": n, "dtype": str(dtype), "seconds": seconds, "tflops_median": flops / stats.median / 1e12,
            "tflops_best": flops / stats.min / 1e12}


WARMUP = 3  # untimed calls per kernel before the timed rounds
ROUNDS = 8  # timed rounds per shape: [min, max] of 8 paired ratios covers their median with probability 99.2%
KERNEL_ROWS = 2048  # rows (tokens) of every product the kernel cache times


def runnable_kernels(dtype: torch.dtype) -> list[str]:
    """The GEMM kernels (`models.gemm.KERNELS`) that run `dtype` on this CPU, the default first."""
    return [k for k in KERNELS if k != ONEDNN_PACKED or onednn_available(dtype)]


def gemm_calls(rows: int, k: int, n: int, dtype: torch.dtype, kernels: list[str]) -> dict[str, Callable[[], float]]:
    """Per kernel, a call that times one (rows, k) x (k, n) product (seconds), on seeded inputs made once."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, k, generator=generator, dtype=dtype)
    weight = torch.randn(n, k, generator=generator, dtype=dtype) * 0.02

    def timed_call(kernel: str, packed: torch.Tensor) -> Callable[[], float]:
        def call() -> float:
            start = time.perf_counter()
            linear_with(kernel, x, packed)
            return time.perf_counter() - start
        return call

    return {kernel: timed_call(kernel, packed_weight(weight, kernel)) for kernel in kernels}


def time_interleaved(calls: dict[Hashable, dict[str, Callable[[], float]]], rounds: int,
                     warmup: int = WARMUP) -> dict[Hashable, dict[str, list[float]]]:
    """Seconds per round of every (workload, kernel) call, measured now, all interleaved: round r runs every
    workload (in an order rotated by r) and within it every kernel (torch, oneDNN, then oneDNN, torch, ...), so a
    busy moment falls on all alike; `warmup` untimed calls each first (thread pools, kernel selection, caches)."""
    names = list(calls)
    seconds = {name: {kernel: [] for kernel in calls[name]} for name in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                for call in calls[name].values():
                    call()
        for round_ in range(rounds):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                kernels = list(calls[name]) if round_ % 2 == 0 else list(reversed(calls[name]))
                for kernel in kernels:
                    seconds[name][kernel].append(calls[name][kernel]())
    return seconds


def time_gemm(rows: int, k: int, n: int, dtype: torch.dtype, kernels: list[str], rounds: int,
              warmup: int = WARMUP) -> dict[str, list[float]]:
    """Seconds of one (rows, k) x (k, n) product on each kernel, per round, kernels interleaved, measured now."""
    return time_interleaved({(k, n): gemm_calls(rows, k, n, dtype, kernels)}, rounds, warmup)[(k, n)]


def gemm_workload(k: int, n: int, dtype: torch.dtype, threads: int, rows: int, rounds: int) -> kernel_store.Workload:
    """The kernel cache's key of one GEMM shape's timings (besides the CPU)."""
    return (("dtype", str(dtype).removeprefix("torch.")), ("in", k), ("out", n), ("rounds", rounds), ("rows", rows),
            ("threads", threads))


def gemm_timings(k: int, n: int, dtype: torch.dtype, threads: int, rows: int = KERNEL_ROWS,
                 rounds: int = ROUNDS) -> KernelTimings:
    """Every runnable kernel's seconds per round on a (rows, k) x (k, n) product at `threads` intra-op threads:
    from the kernel cache (`bench.kernel_store`) when this CPU has measured it, else measured now and kept.
    `threads` must be torch's thread count now (it is part of the key)."""
    return kernel_store.cached("gemm", gemm_workload(k, n, dtype, threads, rows, rounds),
                               lambda: (time_gemm(rows, k, n, dtype, runnable_kernels(dtype), rounds), {}))


def prefetch_gemm_timings(shapes: list[tuple[int, int]], dtype: torch.dtype, threads: int, rows: int = KERNEL_ROWS,
                          rounds: int = ROUNDS) -> int:
    """Measure every (in, out) shape the kernel cache lacks, all shapes interleaved round by round
    (`time_interleaved`), and keep each: shapes that a sweep compares then share the machine's noise instead of
    each meeting its own moment. Returns how many shapes were measured."""
    missing = [shape for shape in dict.fromkeys(shapes)
               if kernel_store.load("gemm", gemm_workload(*shape, dtype, threads, rows, rounds)) is None]
    if not missing:
        return 0
    kernels = runnable_kernels(dtype)
    seconds = time_interleaved({shape: gemm_calls(rows, *shape, dtype, kernels) for shape in missing}, rounds)
    for shape in missing:
        kernel_store.save(KernelTimings("gemm", gemm_workload(*shape, dtype, threads, rows, rounds),
                                        tuple((kernel, tuple(values)) for kernel, values in seconds[shape].items()),
                                        now()))
    return len(missing)


@dataclass(frozen=True)
class GemmRates:
    """GFLOP/s of each GEMM kernel at a model's shapes on this CPU, and the paired rounds behind them."""

    rates: tuple[tuple[str, float], ...]  # (kernel, GFLOP/s of its fastest round), fastest first
    shapes: tuple[tuple[int, int], ...]  # (in, out) of each weight GEMM of one layer
    tokens: int  # rows of every product
    threads: int
    rounds: int
    seconds: float  # wall time of what was measured now (0 when every shape came from the cache)
    # (kernel, seconds per round summed over the shapes): round r of every kernel ran interleaved, shape by shape
    round_seconds: tuple[tuple[str, tuple[float, ...]], ...] = ()
    source: str = kernel_store.MEASURED  # MEASURED, or CACHED when every shape was read from the kernel cache
    measured_at: str = ""  # when (UTC) the oldest of its shapes was measured

    @property
    def best(self) -> str:
        return self.rates[0][0]

    @property
    def peak_flops(self) -> float:
        """The best kernel's rate in FLOP/s: the measured peak."""
        return self.rates[0][1] * 1e9

    def describe(self) -> str:
        """One line: what was measured, how, when, and each kernel's rate."""
        shapes = ", ".join(f"{k}x{n}" for k, n in self.shapes)
        rates = " vs ".join(f"{kernel} {gflops:.0f}" for kernel, gflops in self.rates)
        when = "" if self.source == kernel_store.MEASURED else f", measured {self.measured_at}"
        return (f"{rates} GFLOP/s: {self.tokens}-token products at the model's GEMM shapes ({shapes}), "
                f"{plural(self.threads, 'thread')}, best of {self.rounds} interleaved rounds ({self.source}{when})")


@lru_cache(maxsize=64)
def cpu_gemm_rates(shapes: tuple[tuple[int, int], ...], dtype: torch.dtype, threads: int,
                   tokens: int = KERNEL_ROWS, rounds: int = ROUNDS) -> GemmRates:
    """Each kernel's GFLOP/s on `tokens`-row products with the (in, out) weights of `shapes`, once per process.

    Each distinct shape's kernels are timed in interleaved rounds (`time_gemm`), or read from the kernel cache
    where this CPU timed that shape before (`gemm_timings`). A kernel's rate is its fastest round of the summed
    shapes: other processes only ever add time, so the minimum estimates what the machine runs (as
    `matmul_peak`'s "best"). `threads` is torch's intra-op thread count, part of both caches' keys. About 2 s on
    two cores at ModernBERT-base's shapes when measured; a file read when cached.
    """
    began = time.perf_counter()
    timings = {shape: gemm_timings(*shape, dtype, threads, tokens, rounds) for shape in dict.fromkeys(shapes)}
    kernels = list(timings[shapes[0]].by_kernel())
    # round r of one layer: every weight GEMM's round r, a shape used twice counted twice
    totals = {kernel: [sum(timings[shape].by_kernel()[kernel][r] for shape in shapes) for r in range(rounds)]
              for kernel in kernels}
    flops = 2 * tokens * sum(k * n for k, n in shapes)
    rates = sorted(((kernel, flops / min(s) / 1e9) for kernel, s in totals.items()), key=lambda kv: -kv[1])
    measured_now = any(t.source == kernel_store.MEASURED for t in timings.values())
    return GemmRates(tuple(rates), shapes, tokens, threads, rounds,
                     time.perf_counter() - began if measured_now else 0.0,
                     tuple((kernel, tuple(s)) for kernel, s in totals.items()),
                     kernel_store.MEASURED if measured_now else kernel_store.CACHED,
                     min(t.measured_at for t in timings.values()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=8192)
    args = parser.parse_args()
    result = matmul_peak(args.n)
    write_json(args.out, result)
    print(f"bf16 matmul {args.n}^3: {result['tflops_median']:.1f} TFLOP/s median")
