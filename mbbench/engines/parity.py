"""The accuracy gate before timing: every side's output judged against the function it computes.

The function is the side's own weights run in fp32 by torch eager (`models.encoders.float32_twin`), on the real
tokens of the parity batch (padding positions hold whatever each engine leaves there). Three numbers describe
how far an output is from it (`Agreement`): max |diff| / max |fp32| (relative error), and the per-token cosine
similarity, its minimum and mean.

- **fp32 sides**: max |diff| to torch eager fp32 within `FLOAT32_MAX_ABS` (1e-4, verify's fp32 bar).
- **Reduced precision (bf16, fp16)**: a rounding is judged against the dtype's own noise floor, torch eager's
  error in that dtype measured on the same batch (another rounding is not the truth: issue 36 saw OpenVINO bf16
  ten times closer to fp32 than torch bf16, refused for differing from it). A side passes when its relative
  error is within `NOISE_MULTIPLE` times the floor's and its minimum cosine clears `COSINE_BAR` (or, when torch
  eager itself is below that bar, torch eager's own minimum cosine). So an engine at least as close to fp32 as
  torch's own rounding never fails. The torch engine in that dtype is the floor itself; it must clear
  `COSINE_BAR`.
- **Always a failure**: any NaN or inf on a real token, and a relative error of `MAX_REL_ERROR` (10%) or more.

The record keeps the side's agreement with fp32, with the torch engine in its dtype, the noise floor, the bars
and the verdict (`ParityResult.check`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from mbbench.batching import Batch, PaddedBatch
from mbbench.dtypes import dtype_name
from mbbench.engines.base import PreparedEngine
from mbbench.records import Agreement, ParityCheck

# fp32: max |diff| to torch eager fp32. The bar verify has always used for fp32 (mbbench/verify.py TOLERANCE):
# reordered fp32 sums of a 22-layer encoder stay near 1e-5.
FLOAT32_MAX_ABS = 1e-4
# Reduced precision: allowed relative error as a multiple of torch eager's own (the triangle inequality: a second
# rounding of the floor's size, made at other points, e.g. inductor's fused bf16 kernels, at most doubles the
# distance to the function). Measured on hf-modernbert-base bf16, 4 x 512, random init: torch eager 0.044 (the
# issue's AMX Xeon); inductor 0.86x and OpenVINO 0.07x of it (docs/engines.md).
NOISE_MULTIPLE = 2.0
# Per-token cosine to fp32: text-embeddings-inference's test bar for embeddings (its tests assert cosine >= 0.999
# between its outputs and the reference; /work/shared/reference/intel-cpu.md section 4).
COSINE_BAR = 0.999
# Always a failure: 10% of the output's scale is a broken result, not a rounding (bf16 keeps 8 bits: 0.4% per
# rounding; a 22-layer encoder's measured floor is 4.4%).
MAX_REL_ERROR = 0.1


class ParityFailure(Exception):
    """A side's output fails the accuracy gate (or is NaN/inf); carries the result."""

    def __init__(self, result: "ParityResult"):
        super().__init__(result.message)
        self.result = result


def agreement(output: torch.Tensor, reference: torch.Tensor, real: torch.Tensor) -> Agreement:
    """Compare `output` with `reference`, both (batch, seq, hidden), on positions where `real` (batch, seq) is 1.

    Raises ValueError when the shapes differ (a wrong engine, not a numerical miss).
    """
    if output.shape != reference.shape:
        raise ValueError(f"output has shape {tuple(output.shape)}, the reference {tuple(reference.shape)}")
    mask = real.bool().to(reference.device)
    out, ref = output.to(reference.device)[mask].double(), reference[mask].double()  # (real_tokens, hidden)
    non_finite = int((~torch.isfinite(out)).sum())
    if non_finite:
        nan = float("nan")
        return Agreement(nan, nan, nan, nan, non_finite)
    max_abs = (out - ref).abs().max().item()
    cosine = F.cosine_similarity(out, ref, dim=-1)  # (real_tokens,)
    return Agreement(max_abs, max_abs / max(ref.abs().max().item(), 1e-12), cosine.min().item(),
                     cosine.mean().item(), 0)


@dataclass(frozen=True)
class ParityResult:
    """One side's accuracy gate: its agreement with fp32, with the torch engine in its dtype, the noise floor,
    the bars it was judged on and the verdict."""

    engine: str
    dtype: str
    real_tokens: int  # positions compared
    vs_float32: Agreement  # against the same weights in fp32, torch eager: what is judged
    vs_torch: Agreement | None  # against the torch engine in the same dtype (None: this side is that engine)
    noise_floor: Agreement | None  # the torch engine in this dtype against fp32 (None in fp32)

    @property
    def judged_on(self) -> str:
        """"abs" (fp32: max |diff|) or "rel" (reduced precision: max |diff| / max |fp32|)."""
        return "abs" if self.dtype == "float32" else "rel"

    @property
    def error(self) -> float:
        """The error against fp32 that is judged against `tolerance`."""
        return self.vs_float32.max_abs_error if self.judged_on == "abs" else self.vs_float32.max_rel_error

    @property
    def is_floor(self) -> bool:
        """This side is the torch engine in reduced precision: its error is the noise floor."""
        return self.judged_on == "rel" and self.vs_torch is None

    @property
    def tolerance(self) -> float:
        """The largest error that passes (reduced precision: also always below `MAX_REL_ERROR`)."""
        if self.judged_on == "abs":
            return FLOAT32_MAX_ABS
        if self.is_floor or self.noise_floor is None:
            return MAX_REL_ERROR
        return min(NOISE_MULTIPLE * self.noise_floor.max_rel_error, MAX_REL_ERROR)

    @property
    def cosine_bar(self) -> float | None:
        """The lowest per-token cosine that passes (None in fp32)."""
        if self.judged_on == "abs":
            return None
        if self.is_floor or self.noise_floor is None or not self.noise_floor.finite:
            return COSINE_BAR
        return min(COSINE_BAR, self.noise_floor.cosine_min)

    @property
    def passed(self) -> bool:
        agreement_ = self.vs_float32
        if not agreement_.finite or not self.error <= self.tolerance:
            return False
        if self.judged_on == "abs":
            return True
        return self.error < MAX_REL_ERROR and agreement_.cosine_min >= self.cosine_bar

    @property
    def message(self) -> str:
        verdict = "passes" if self.passed else "fails"
        head = f"{self.engine} ({self.dtype}) against the fp32 function on {self.real_tokens} real tokens: "
        if not self.vs_float32.finite:
            return head + f"{self.vs_float32.non_finite} NaN/inf values (bar {self.tolerance:.3g}, finite): fails"
        if self.judged_on == "abs":
            return head + f"max abs error {self.error:.3g} (bar {self.tolerance:.3g}): {verdict}"
        floor = ("it is the noise floor" if self.is_floor else
                 f"torch eager {self.dtype}: {self.noise_floor.max_rel_error:.3g}, bar {self.tolerance:.3g}")
        return head + (f"max rel error {self.error:.3g} ({floor}), min cosine {self.vs_float32.cosine_min:.6f} "
                       f"(bar {self.cosine_bar:.6f}): {verdict}")

    def require(self) -> "ParityResult":
        """self when passed; raises ParityFailure (with this result) otherwise."""
        if not self.passed:
            raise ParityFailure(self)
        return self

    def check(self) -> ParityCheck:
        """The gate as a record keeps it: the agreements, the bars, the judged `error` and the verdict."""
        return ParityCheck(self.engine, self.dtype, self.real_tokens, self.judged_on, self.error, self.tolerance,
                           self.cosine_bar, self.passed, self.vs_float32, self.vs_torch, self.noise_floor)


@dataclass(frozen=True)
class References:
    """The outputs a side is judged against on one batch: the fp32 function and the torch engine in the run's
    dtype (the same tensor in fp32). Computed once per model and batch, shared by the sides of one model."""

    float32: torch.Tensor  # (batch, seq, hidden) or (total, hidden) for packed batches
    torch: torch.Tensor
    dtype: torch.dtype  # the run's dtype


def references(torch_engine: Callable[[Batch], torch.Tensor], batch: Batch, dtype: torch.dtype,
               float32: Callable[[Batch], torch.Tensor] | None = None) -> References:
    """Run `batch` through the torch engine in `dtype` and through `float32`, the fp32 twin of its model
    (`models.encoders.float32_twin` under inference mode); None: the torch engine is that function (fp32 on
    torch's kernels), run once."""
    same = torch_engine(batch)
    return References(same if float32 is None else float32(batch), same, dtype)


def _real_positions(batch: Batch, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output as (batch, seq, hidden), real mask (batch, seq)): packed outputs (total, hidden) -> (1, total, hidden),
    every token real."""
    if isinstance(batch, PaddedBatch):
        return output, batch.attention_mask
    return output[None], torch.ones(output.shape[:1], dtype=torch.int64)[None]


def judge(engine: str, output: torch.Tensor, refs: References, batch: Batch, is_torch_engine: bool
          ) -> ParityResult:
    """The accuracy gate of one side's `output` on `batch` (see the module docstring). `is_torch_engine`: this
    side is the torch engine in the run's dtype (its error is the noise floor)."""
    out, real = _real_positions(batch, output)
    f32, _ = _real_positions(batch, refs.float32)
    same, _ = _real_positions(batch, refs.torch)
    vs_float32 = agreement(out, f32, real)
    floor = None if refs.dtype == torch.float32 else agreement(same, f32, real)
    vs_torch = None if is_torch_engine else agreement(out, same, real)
    return ParityResult(engine, dtype_name(refs.dtype), int(real.sum()), vs_float32, vs_torch, floor)


def check_parity(engine: PreparedEngine, refs: References, batch: Batch, is_torch_engine: bool = False
                 ) -> ParityResult:
    """Run `batch` through `engine` and judge its output against `refs` (from `references`)."""
    return judge(engine.info.name, engine(batch), refs, batch, is_torch_engine)
