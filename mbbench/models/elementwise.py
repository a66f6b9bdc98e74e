"""The element-wise work of our own models: eager ATen, or one Inductor-generated kernel per operation.

Two operations between the GEMMs read and write activation-sized tensors several times in eager mode:

- RoPE on q and k (`rotary`): eager ATen runs six broadcasting passes over half-width temporaries (see
  `apply_rotary`); Inductor fuses them into one pass that reads qkv and writes the rotated q, k.
- The gated MLP activation (`gated`, GeGLU's `gelu(inputs) * gate`, SwiGLU's `silu(gate) * value`): eager
  writes the activation, then reads it back for the product; fused, one pass.

The fused kernels are `torch.compile`d from the same formulas the eager path computes, in the same order of
operations, with Inductor rounding every intermediate to its dtype as eager does (`emulate_precision_casts`:
in bf16/fp16 eager rounds `gelu(x)` before the product). RoPE is bit-equal to eager; GELU and SiLU go through
Inductor's own vectorised erf/exp, bit-equal to ATen's at ModernBERT-base's widths on AVX-512 and otherwise
within a few ulps (tests hold both; `verify` checks both kernels against transformers). Each dtype and shape
gets its own kernel (no automatic dynamic shapes, so a second model's width does not generalise the first's
kernel); the token dimension is marked dynamic, so one compiled kernel serves every batch, and a batch of fewer
than two tokens runs eagerly (torch.compile specialises sizes 0 and 1). Past `RECOMPILE_LIMIT` kernels of one
operation in a process (dtypes x shapes x thread counts), Dynamo runs the eager formula instead of failing.

Which is faster depends on the machine, so on CPUs the runner measures both once per process at the model's
shapes (`bench.elementwise.elementwise_times`) and records which ran and why; the whole graph is compiled
anyway under the torch-compile engine, and on GPUs the eager path runs (the fused kernels are not measured
there yet). LayerNorm stays eager: ATen's is one pass already, and the residual add before it is folded into the
output GEMM (`gemm.add_linear`), so nothing is left to fuse there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

EAGER = "eager"  # ATen operations, one per formula step
INDUCTOR = "inductor"  # one torch.compile'd (Inductor) kernel per operation, dynamic in the token count
KERNELS = (EAGER, INDUCTOR)
RECOMPILE_LIMIT = 64  # compiled kernels per operation and process (Dynamo's default, 8, is a matrix's few models)

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact (erf) GELU, as ModernBERT's "gelu"
    "silu": F.silu,  # NeoBERT's SwiGLU
}


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on (..., head_dim) x, computed in fp32 and returned in x's dtype; fp32 cos, sin broadcast over
    (..., head_dim / 2).

    Bit-equal to transformers' `(x.float() * cat(cos, cos) + rotate_half(x.float()) * cat(sin, sin)).to(x.dtype)`:
    per half that is `x1·cos - x2·sin` and `x2·cos + x1·sin` (adding a negated product is subtracting it,
    exactly). The fp32 upcast happens inside each product (x is read in its own dtype) and each half's sum is
    written straight into the output in x's dtype, so no fp32 copy of x, doubled table, rotated copy or final
    concatenation is materialised: 6 element-wise passes over half-width tensors.
    """
    first, second = x.chunk(2, dim=-1)  # (..., head_dim / 2) views
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    out_first, out_second = out.chunk(2, dim=-1)
    torch.sub(first * cos, second * sin, out=out_first)  # the fp32 result is rounded once, into x's dtype
    torch.add(second * cos, first * sin, out=out_second)
    return out


def rotary_formula(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`apply_rotary`'s arithmetic written for a compiler: the same fp32 products and sums, one concatenation
    (which Inductor turns into writes of the two halves, so no temporary survives)."""
    first, second = x.chunk(2, dim=-1)  # (..., head_dim / 2) views
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1).to(x.dtype)


def gated(h: torch.Tensor, activation: str) -> torch.Tensor:
    """(tokens, 2 · width) -> (tokens, width): `activation(first half) * second half` (GeGLU, SwiGLU)."""
    first, second = h.chunk(2, dim=-1)  # (tokens, width) views
    return ACTIVATIONS[activation](first) * second


def _gelu_gated(h: torch.Tensor) -> torch.Tensor:
    return gated(h, "gelu")


def _silu_gated(h: torch.Tensor) -> torch.Tensor:
    return gated(h, "silu")


@lru_cache(maxsize=None)
def _compiled(fn: Callable) -> Callable:
    """`fn` compiled once per process (Inductor; compiling happens on the first call of each specialisation).
    Not `fullgraph`: past the recompile limit Dynamo then runs `fn` eagerly rather than raising."""
    return torch.compile(fn, dynamic=False, options={"emulate_precision_casts": True})


def _dynamic_tokens(fn: Callable, eager: Callable) -> Callable:
    """`fn` compiled with dim 0 (tokens) of every tensor argument dynamic, so one kernel serves every batch; a
    batch of 0 or 1 tokens (sizes torch.compile always specialises) runs `eager`."""
    compiled = _compiled(fn)

    def run(*args):
        if args[0].shape[0] < 2:
            return eager(*args)
        for arg in args:
            if arg.shape[0] == args[0].shape[0]:
                torch._dynamo.mark_dynamic(arg, 0)
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            return compiled(*args)

    return run


def inductor_refusal() -> str | None:
    """Why Inductor's CPU kernels cannot be built here (it compiles C++), or None.

    Inductor's own lookup answers (`torch._inductor.cpp_builder.get_cpp_compiler`: `$CXX` as it was when torch
    imported Inductor's config, else `g++`, each run with --version), so this check and Inductor's build never
    disagree: a `$CXX` that does not run is refused before a model is built, and one that runs is taken even
    where no `g++` is on PATH.
    """
    # Inductor is torch's lazily loaded compiler (torch.compile imports it on first use); importing it with this
    # module would add about a second to every command, most of which never compile.
    from torch._inductor import config as inductor_config
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as error:  # InvalidCxxCompiler, or anything else its lookup raises
        tried = ", ".join(str(c) for c in inductor_config.cpp.cxx if c) or "nothing"
        return (f"Inductor compiles C++ kernels on CPUs and its compiler lookup found none that runs (tried "
                f"{tried}: {type(error).__name__}); set $CXX to a C++ compiler that runs")
    return None


@dataclass(frozen=True)
class Elementwise:
    """The element-wise operations one model runs, on one kernel."""

    kernel: str  # one of KERNELS
    rotary: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, cos, sin) -> rotated x
    gelu_gated: Callable[[torch.Tensor], torch.Tensor]  # (tokens, 2w) -> (tokens, w)
    silu_gated: Callable[[torch.Tensor], torch.Tensor]


EAGER_OPS = Elementwise(EAGER, apply_rotary, _gelu_gated, _silu_gated)


@lru_cache(maxsize=None)
def operations(kernel: str) -> Elementwise:
    """The operations on `kernel`. Raises ValueError for an unknown kernel."""
    if kernel == EAGER:
        return EAGER_OPS
    if kernel != INDUCTOR:
        raise ValueError(f"unknown element-wise kernel {kernel!r}; choose from {', '.join(KERNELS)}")
    return Elementwise(INDUCTOR, _dynamic_tokens(rotary_formula, apply_rotary),
                       _dynamic_tokens(_gelu_gated, _gelu_gated), _dynamic_tokens(_silu_gated, _silu_gated))


def use(module: nn.Module, kernel: str) -> int:
    """Run every element-wise site of `module` (submodules with an `elementwise` attribute) on `kernel`.
    Returns the number of sites. Raises ValueError for an unknown kernel."""
    ops = operations(kernel)
    sites = [m for m in module.modules() if isinstance(getattr(m, "elementwise", None), Elementwise)]
    for site in sites:
        site.elementwise = ops
    return len(sites)
