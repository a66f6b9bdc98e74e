"""Measured GEMM peaks, the MFU denominators a datasheet cannot give.

- `matmul_peak`: a large square GEMM on a GPU (warmup, CUDA events), bf16 by default.
- `cpu_gemm_rates`: on a CPU, the model's own GEMM shapes on every kernel our models can run
  (`models.gemm.KERNELS`: torch's MKL path and oneDNN with prepacked weights). The best rate is the CPU's
  measured peak for that model (CPU records' MFU divides by it) and names the kernel the runner builds with.
  A CPU's datasheet peak (cores x clock x FMA units x vector width) is not reported by the OS, and the clock
  under vector load and the kernels' use of AVX-512 vary by vendor: measured, it is what this machine runs.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from functools import lru_cache

import torch

from mbbench.formatting import plural
from mbbench.bench.timing import summarize, timed
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


@dataclass(frozen=True)
class GemmRates:
    """GFLOP/s of each GEMM kernel at a model's shapes on this CPU (the best of interleaved rounds)."""

    rates: tuple[tuple[str, float], ...]  # (kernel, GFLOP/s), fastest first
    shapes: tuple[tuple[int, int], ...]  # (in, out) of each weight GEMM of one layer
    tokens: int  # rows of every product
    threads: int
    rounds: int
    seconds: float  # wall time of the measurement

    @property
    def best(self) -> str:
        return self.rates[0][0]

    @property
    def peak_flops(self) -> float:
        """The best kernel's rate in FLOP/s: the measured peak."""
        return self.rates[0][1] * 1e9

    def describe(self) -> str:
        """One line: what was measured, how, and each kernel's rate."""
        shapes = ", ".join(f"{k}x{n}" for k, n in self.shapes)
        rates = " vs ".join(f"{kernel} {gflops:.0f}" for kernel, gflops in self.rates)
        return (f"{rates} GFLOP/s: {self.tokens}-token products at the model's GEMM shapes ({shapes}), "
                f"{plural(self.threads, 'thread')}, best of {self.rounds} interleaved rounds")


@lru_cache(maxsize=8)
def cpu_gemm_rates(shapes: tuple[tuple[int, int], ...], dtype: torch.dtype, threads: int, tokens: int = 2048,
                   rounds: int = 5) -> GemmRates:
    """Each kernel's GFLOP/s on `tokens`-row products with the (in, out) weights of `shapes`, once per process.

    The kernels run interleaved (torch, oneDNN, torch, ...) so a busy moment hits both; after `WARMUP` untimed
    calls each (thread pools, kernel selection, caches) the fastest of `rounds` rounds is each kernel's rate: other
    processes only ever add time, so the minimum is the estimate of what the machine runs (as `matmul_peak`'s
    "best"). `threads` is torch's intra-op thread count, part of the cache key because the answer depends on it.
    About 1 s on two cores at ModernBERT-base's shapes.
    """
    kernels = [k for k in KERNELS if k != ONEDNN_PACKED or onednn_available(dtype)]
    generator = torch.Generator().manual_seed(0)
    inputs = {k: torch.randn(tokens, k, generator=generator, dtype=dtype) for k in {k for k, _ in shapes}}
    weights = [torch.randn(n, k, generator=generator, dtype=dtype) * 0.02 for k, n in shapes]
    packed = {kernel: [packed_weight(w, kernel) for w in weights] for kernel in kernels}

    def one_pass(kernel: str) -> float:
        start = time.perf_counter()
        for w, p in zip(weights, packed[kernel]):
            linear_with(kernel, inputs[w.shape[1]], p)
        return time.perf_counter() - start

    began = time.perf_counter()
    with torch.inference_mode():
        for _ in range(WARMUP):
            for kernel in kernels:
                one_pass(kernel)
        seconds = {kernel: [] for kernel in kernels}
        for round_ in range(rounds):
            for kernel in kernels if round_ % 2 == 0 else reversed(kernels):
                seconds[kernel].append(one_pass(kernel))
    flops = 2 * tokens * sum(k * n for k, n in shapes)
    rates = sorted(((k, flops / min(s) / 1e9) for k, s in seconds.items()), key=lambda kv: -kv[1])
    return GemmRates(tuple(rates), shapes, tokens, threads, rounds, time.perf_counter() - began)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=8192)
    args = parser.parse_args()
    result = matmul_peak(args.n)
    write_json(args.out, result)
    print(f"bf16 matmul {args.n}^3: {result['tflops_median']:.1f} TFLOP/s median")
