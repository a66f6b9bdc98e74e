"""The GEMM kernel our own models' linears run on: torch's default, or oneDNN with prepacked weights on CPUs.

torch's fp32 `mm`/`addmm` on CPU go to MKL, which on AMD processors does not take its AVX-512 path; oneDNN
(`torch.ops.mkldnn._linear_pointwise`, the kernel Inductor's CPU freezing uses) does, and a weight reordered
once into its blocked layout (`_reorder_linear_weight`) saves the per-call repacking. Which is faster depends
on the CPU, so the runner measures both once per process at the model's own GEMM shapes
(`bench.matmul.cpu_gemm_rates`), builds the model on the faster one and records which and why. On CUDA the
default (cuBLAS) always runs.

A packed layer keeps its `nn.Linear` (and so its state-dict name): the packed copy is an attribute beside it,
made by `pack` after the weights are final (loaded, cast, moved), and `linear`/`add_linear` use it when present.
"""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

TORCH = "torch"  # F.linear / addmm: MKL on CPU, cuBLAS on CUDA
ONEDNN_PACKED = "onednn-packed"  # oneDNN with weights reordered once (CPU only)
KERNELS = (TORCH, ONEDNN_PACKED)
PACKED = "_mbbench_packed_weight"  # attribute of an nn.Linear holding its oneDNN-packed weight


def packed_weight(weight: torch.Tensor, kernel: str) -> torch.Tensor:
    """An (out, in) weight in `kernel`'s layout: as is for TORCH, oneDNN's blocked layout otherwise."""
    weight = weight.detach()
    return torch.ops.mkldnn._reorder_linear_weight(weight) if kernel == ONEDNN_PACKED else weight


def linear_with(kernel: str, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`x @ W.T` on `kernel` with W from `packed_weight` ((tokens, in) -> (tokens, out))."""
    if kernel == ONEDNN_PACKED:
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")
    return F.linear(x, weight)


@lru_cache(maxsize=None)
def onednn_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch and CPU run oneDNN's linear with prepacked weights in `dtype` (fp16 needs AVX-NE-CONVERT
    or AVX512-FP16, which many CPUs lack: then the default kernel runs)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(8, 8, dtype=dtype))
    except RuntimeError:
        return False
    return True


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """`x @ layer.weight.T` for a bias-free linear, (tokens, in) -> (tokens, out), on the layer's kernel."""
    packed = layer.__dict__.get(PACKED)
    return F.linear(x, layer.weight) if packed is None else linear_with(ONEDNN_PACKED, x, packed)


def add_linear(residual: torch.Tensor, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """`residual + x @ layer.weight.T` as one GEMM accumulating onto the residual (the sum is rounded once).

    (tokens, in) x, (tokens, out) residual. Saves the separate element-wise add (a full read and write of the
    hidden states) per residual branch: `addmm` on the default kernel, oneDNN's `sum` post-op when packed.
    """
    packed = layer.__dict__.get(PACKED)
    if packed is None:
        return torch.addmm(residual, x, layer.weight.t())
    return torch.ops.mkldnn._linear_pointwise.binary(x, residual, packed, None, "add")


def pack(module: nn.Module, kernel: str) -> int:
    """Give every bias-free `nn.Linear` of `module` its weight in `kernel`'s layout (TORCH: drop packed copies).

    Call after the weights are final: a later `.to()` or load does not update the packed copy. Returns the
    number of layers packed. Raises ValueError for an unknown kernel or a linear with a bias.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown GEMM kernel {kernel!r}; choose from {', '.join(KERNELS)}")
    count = 0
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            if layer.bias is not None:
                raise ValueError("gemm.pack handles bias-free linears only")
            layer.__dict__.pop(PACKED, None)
            if kernel == ONEDNN_PACKED:
                layer.__dict__[PACKED] = packed_weight(layer.weight, kernel)
                count += 1
    return count


def unpacked_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` whose linears run torch's kernel: oneDNN-packed copies are opaque tensors that
    `copy.deepcopy` cannot read, so they are left out of the copy (mapped to None, then dropped)."""
    skip = {id(layer.__dict__[PACKED]): None for layer in module.modules() if PACKED in layer.__dict__}
    duplicate = copy.deepcopy(module, memo=skip)
    for layer in duplicate.modules():
        layer.__dict__.pop(PACKED, None)
    return duplicate
