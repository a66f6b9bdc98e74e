"""Parity before timing: an engine's output is compared with the torch engine's on real tokens only.

Padding positions are excluded (their values are whatever each engine leaves there). fp32: max |diff| within
1e-4. Half precision: max |diff| / max |reference| within verify's bars (bf16 2e-2, fp16 1e-2). Any NaN or
inf on a real token fails whatever the error, so an engine that is fast and wrong is never timed.
Source of the bars: `mbbench/verify.py` TOLERANCE (a test checks the two stay equal).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from mbbench.batching import Batch, PaddedBatch
from mbbench.dtypes import dtype_name
from mbbench.engines.base import PreparedEngine

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 1e-2}  # = mbbench.verify.TOLERANCE


class ParityFailure(Exception):
    """An engine's output differs from torch's beyond tolerance (or is NaN/inf); carries the result."""

    def __init__(self, result: "ParityResult"):
        super().__init__(result.message)
        self.result = result


@dataclass(frozen=True)
class ParityResult:
    engine: str
    dtype: str
    judged_on: str  # "abs" (fp32) or "rel" (half precision: max |diff| / max |reference|)
    max_abs_error: float  # NaN when the output holds NaN/inf on a real token
    max_rel_error: float
    tolerance: float
    real_tokens: int  # positions compared
    non_finite: int  # real-token values that are NaN or inf in the engine's output

    @property
    def error(self) -> float:
        """The error that is judged against `tolerance`."""
        return self.max_abs_error if self.judged_on == "abs" else self.max_rel_error

    @property
    def passed(self) -> bool:
        return self.non_finite == 0 and math.isfinite(self.error) and self.error <= self.tolerance

    @property
    def message(self) -> str:
        verdict = "matches" if self.passed else "differs from"
        nan = f", {self.non_finite} NaN/inf values on real tokens" if self.non_finite else ""
        return (f"engine {self.engine} {verdict} torch on {self.real_tokens} real tokens ({self.dtype}): max "
                f"{self.judged_on} error {self.error:.3g}, tolerance {self.tolerance:.3g}{nan}")

    def require(self) -> "ParityResult":
        """self when passed; raises ParityFailure (with this result) otherwise."""
        if not self.passed:
            raise ParityFailure(self)
        return self

    def to_dict(self) -> dict:
        """JSON-ready (strict: a NaN error is None, and `non_finite` says how many values were NaN/inf)."""
        values = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        return {**values, "error": values[f"max_{self.judged_on}_error"], "passed": self.passed}


def compare_outputs(engine: str, output: torch.Tensor, reference: torch.Tensor, attention_mask: torch.Tensor,
                    dtype: torch.dtype) -> ParityResult:
    """Compare `output` with `reference`, both (batch, seq, hidden), on positions where `attention_mask` is 1.

    `dtype`: the dtype both ran in (picks the tolerance and absolute vs relative judging).
    Raises ValueError when the shapes differ (a wrong engine, not a numerical miss).
    """
    if output.shape != reference.shape:
        raise ValueError(f"engine {engine} returned shape {tuple(output.shape)}, torch {tuple(reference.shape)}")
    real = attention_mask.bool().to(reference.device)
    out, ref = output.to(reference.device)[real].float(), reference[real].float()  # (real_tokens, hidden)
    non_finite = int((~torch.isfinite(out)).sum())
    if non_finite:
        abs_error = rel_error = float("nan")
    else:
        abs_error = (out - ref).abs().max().item()
        rel_error = abs_error / max(ref.abs().max().item(), 1e-12)
    judged = "abs" if dtype == torch.float32 else "rel"
    return ParityResult(engine, dtype_name(dtype), judged, abs_error, rel_error, TOLERANCE[dtype], int(real.sum()),
                        non_finite)


def check_parity(engine: PreparedEngine, reference: PreparedEngine, batch: Batch, dtype: torch.dtype
                 ) -> ParityResult:
    """Run `batch` through `engine` and the torch `reference` and compare them on real tokens.

    Packed batches hold no padding: every token is compared (outputs are (total, hidden)).
    """
    output, expected = engine(batch), reference(batch)
    if isinstance(batch, PaddedBatch):
        mask = batch.attention_mask
    else:  # packed: (total, hidden) -> (1, total, hidden), all real
        output, expected = output[None], expected[None]
        mask = torch.ones(expected.shape[:2], dtype=torch.int64)
    return compare_outputs(engine.info.name, output, expected, mask, dtype)
