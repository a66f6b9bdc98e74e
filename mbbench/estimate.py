"""How long a measurement will take, said before it starts and again once its first batch has run.

Before the first batch (issue 34: a long-variable CPU run was silent for 11.5 minutes, waiting for it): the
model FLOPs of warmup and every timed pass (`perfmodel.forward_flops`, as MFU counts them) at the fastest rate
this machine can run them, the GEMM rate measured here at the model's own shapes on a CPU
(`bench.matmul.cpu_gemm_rates`) or the GPU's datasheet peak. A model never runs faster than its GEMMs (attention,
norms and activations run slower still), so this is a lower bound: "at least". After the first (cold, so slower)
batch: that batch's time for every batch to come, the time already spent said beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mbbench.formatting import plural

LONG_RUN_S = 600.0  # an estimate above this is a warning: the user may have asked for more than they meant
SHORTEN = "--docs or --runs shorten it (Ctrl-C stops it, nothing is written)"


@dataclass(frozen=True)
class Estimate:
    """A measurement's predicted duration: warmup plus every timed pass."""

    seconds: float
    basis: str  # where the number comes from, for the line people read
    lower_bound: bool  # True: at a peak rate the model cannot beat ("at least")
    shorten: str = SHORTEN  # what the long-run warning suggests: the options that shorten this command

    def line(self, elapsed_s: float | None = None) -> str:
        """'estimated at least 12 min (...)', with the time already spent when given; a warning, with what
        shortens it, when it exceeds LONG_RUN_S."""
        spent = f"; {duration(elapsed_s)} spent so far" if elapsed_s else ""
        what = "at least " if self.lower_bound else ""
        text = f"estimated {what}{duration(self.seconds)} more ({self.basis}{spent})"
        return f"warning: {text}: a long run; {self.shorten}" if self.seconds > LONG_RUN_S else text


def timed_passes(batches: int, passes: int, warmup_batches: int | None) -> float:
    """Passes' worth of batches a measurement runs: warmup (the protocol's batches, at least one; None: a full
    pass) plus every timed pass."""
    warmup = batches if warmup_batches is None else min(max(warmup_batches, 1), batches)
    return passes + warmup / batches


def at_peak(flops_per_pass: float, passes: float, peak_flops: float, peak: str) -> Estimate:
    """`passes` passes of `flops_per_pass` model FLOPs at `peak_flops` FLOP/s (`peak` says which rate)."""
    seconds = flops_per_pass * passes / peak_flops
    return Estimate(seconds, f"{flops_per_pass * passes / 1e12:,.3g} TFLOP of model FLOPs at {peak}", True)


def from_first_batch(first_batch_seconds: float, batches: int, passes: int, warmup_batches: int | None) -> Estimate:
    """What is left after the first batch: its (cold) time for each batch of warmup and every timed pass."""
    count = round(timed_passes(batches, passes, warmup_batches) * batches)
    return Estimate(first_batch_seconds * count, f"{first_batch_seconds:.2f} s for the first batch x "
                                                 f"{plural(count, 'batch')}, warmup included", False)


def duration(seconds: float) -> str:
    """Seconds for people: '45 s', '12 min', '2.5 h'."""
    return f"{seconds:.0f} s" if seconds < 120 else (f"{seconds / 60:.0f} min" if seconds < 7200
                                                      else f"{seconds / 3600:.1f} h")
