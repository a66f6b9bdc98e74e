"""Measured bf16 matmul peak (large square GEMM, warmup, CUDA events): the MFU denominator."""

from __future__ import annotations

import argparse
import json

import torch

from mbbench.bench.timing import summarize, timed


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=8192)
    args = parser.parse_args()
    result = matmul_peak(args.n)
    json.dump(result, open(args.out, "w"), indent=2)
    print(f"bf16 matmul {args.n}^3: {result['tflops_median']:.1f} TFLOP/s median")
