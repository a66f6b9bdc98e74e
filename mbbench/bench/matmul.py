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

import torch

from mbbench.bench import kernel_store
from mbbench.bench.kernel_store import KernelTimings
from mbbench.bench.timing import summarize, timed
from mbbench.formatting import plural
from mbbench.files import write_json
from mbbench.models.gemm import KERNELS, ONEDNN_PACKED, linear_with, onednn_available, packed_weight


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


def time_gemm(rows: int, k: int, n: int, dtype: torch.dtype, kernels: list[str], rounds: int,
              warmup: int = WARMUP) -> dict[str, list[float]]:
    """Seconds of one (rows, k) x (k, n) product on each kernel, per round, measured now.

    The kernels run interleaved (torch, oneDNN, then oneDNN, torch, ...) so a busy moment hits both, after `warmup`
    untimed calls each (thread pools, kernel selection, caches). Returns kernel -> seconds per round.
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, k, generator=generator, dtype=dtype)
    weight = torch.randn(n, k, generator=generator, dtype=dtype) * 0.02
    packed = {kernel: packed_weight(weight, kernel) for kernel in kernels}

    def one_call(kernel: str) -> float:
        start = time.perf_counter()
        linear_with(kernel, x, packed[kernel])
        return time.perf_counter() - start

    seconds: dict[str, list[float]] = {kernel: [] for kernel in kernels}
    with torch.inference_mode():
        for _ in range(warmup):
            for kernel in kernels:
                one_call(kernel)
        for round_ in range(rounds):
            for kernel in kernels if round_ % 2 == 0 else reversed(kernels):
                seconds[kernel].append(one_call(kernel))
    return seconds


def gemm_timings(k: int, n: int, dtype: torch.dtype, threads: int, rows: int = KERNEL_ROWS,
                 rounds: int = ROUNDS) -> KernelTimings:
    """Every runnable kernel's seconds per round on a (rows, k) x (k, n) product at `threads` intra-op threads:
    from the kernel cache (`bench.kernel_store`) when this CPU has measured it, else measured now and kept.
    `threads` must be torch's thread count now (it is part of the key)."""
    workload = (("dtype", str(dtype).removeprefix("torch.")), ("in", k), ("out", n), ("rounds", rounds),
                ("rows", rows), ("threads", threads))
    return kernel_store.cached("gemm", workload,
                               lambda: (time_gemm(rows, k, n, dtype, runnable_kernels(dtype), rounds), {}))


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
