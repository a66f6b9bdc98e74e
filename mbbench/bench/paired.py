"""Paired, interleaved comparison of several models: ratios of tokens/s with a distribution-free interval.

The paper's claims are ratios ("ModernBERT is 2x faster than ..."). Measuring model A for a while,
then model B, lets anything that changes on a shared machine in between (other jobs, clocks,
thermals) land in the ratio: sequential runs measured 1.18x where interleaved ones gave 1.50x.
Here every round runs one full pass of *every* model over the same documents, back to back, and
the order rotates between rounds so no model always goes first (two models: AB, BA, AB, ...; three:
ABC, BCA, CAB, ...). A round's passes share the machine's state, so each round gives one paired
ratio; the headline is the median of those ratios, and its uncertainty the order-statistic confidence
interval of a median (the interval the sign test inverts: Conover, *Practical Nonparametric Statistics*,
3rd ed., 1999, section 3.2; Hollander, Wolfe & Chicken, *Nonparametric Statistical Methods*, 3rd ed., 2014,
section 3.6). For n independent rounds from any continuous distribution, [x_(k), x_(n+1-k)] covers the true
median with probability exactly 1 - 2 P(Binomial(n, 1/2) <= k - 1), whatever the distribution: no
assumption of normality, and its confidence is what it says at every n. At n < 6 even [min, max] covers
less than 95% (50%, 75%, 87.5%, 93.75% at n = 2..5), so the interval says its own confidence and is never
labelled 95% there. (A percentile bootstrap of the median, used before issue 26, is in effect [min, max] at
such n, yet was labelled 95%: simulated coverage 48%, 75%, 87% at n = 2, 3, 4.)

Passes are timed exactly as `throughput.measure_passes` times them (`timing.timed`: CUDA events,
or perf_counter on CPU, with the device synchronised around each pass). All models must fit on
the device together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from mbbench.bench.throughput import warmup_order
from mbbench.bench.timing import summarize, synchronize, timed
from mbbench.records import CONFIDENCE, Interval, PairedRounds, Ratio, SidePasses, Stats

Timer = Callable[[Callable[[], None], torch.device], float]  # (fn, device) -> seconds, like timing.timed
OnPass = Callable[[str, int, float], None]  # (model, round, seconds), called rounds x models times


@dataclass(frozen=True)
class ModelPasses:
    """One model's timed passes; `pass_seconds[r]` is its pass in round `r`."""

    name: str
    tokens: int  # real (non-padding) tokens in one pass
    pass_seconds: list[float]
    warmup_seconds: float  # first call (compilation, if any) + the warmup batches
    first_call_seconds: float
    warmup_batches: int = 0  # batches the warmup ran (first call included), new shapes included

    @property
    def tokens_per_second(self) -> list[float]:
        return [self.tokens / s for s in self.pass_seconds]

    def summary(self) -> Stats:
        """Statistics of tokens/s over rounds."""
        return summarize(self.tokens_per_second)

    def side(self) -> SidePasses:
        """These passes as a comparison record keeps them."""
        return SidePasses(self.tokens, self.pass_seconds, self.warmup_seconds, self.warmup_batches,
                          self.first_call_seconds, self.summary())


@dataclass(frozen=True)
class PairedResult:
    baseline: str
    order: list[list[str]]  # the order the models ran in, per round
    models: dict[str, ModelPasses]
    ratios: list[Ratio]  # every other model vs the baseline, in the order given

    def rounds(self) -> PairedRounds:
        """As a comparison record keeps it: per model its tokens, pass seconds and tokens/s statistics; the ratios;
        the order."""
        return PairedRounds(self.baseline, self.order, {name: m.side() for name, m in self.models.items()},
                            list(self.ratios))

    def ratio(self, model: str) -> Ratio:
        """The comparison of `model` with the baseline. Raises KeyError for an unknown model or the baseline."""
        for ratio in self.ratios:
            if ratio.model == model:
                return ratio
        raise KeyError(f"no ratio for {model!r} (baseline {self.baseline!r}; models: {list(self.models)})")


def round_order(names: Sequence[str], round_index: int) -> list[str]:
    """The order of round `round_index`: `names` rotated left by the round index.

    Two models give AB, BA, AB, ... (each first in half the rounds); n models give every model each
    position once per n rounds.
    """
    shift = round_index % len(names)
    return list(names[shift:]) + list(names[:shift])


def count_tokens(batches: Sequence) -> int:
    """Real tokens in `batches`: `real_tokens` of mbbench batches, else the element count of tensors."""
    return int(sum(b.real_tokens if hasattr(b, "real_tokens") else b.numel() for b in batches))


def order_statistic_coverage(n: int, k: int) -> float:
    """Exact coverage of [x_(k), x_(n+1-k)] for the median of n i.i.d. continuous values (1 <= k <= n/2)."""
    return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0 ** n


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The narrowest order-statistic interval of the median whose exact coverage is at least `confidence`;
    with too few values for that, [min, max] with its own, lower, coverage (`Interval.confidence`).

    Raises ValueError for fewer than two values or a confidence outside (0, 1).
    """
    if len(values) < 2:
        raise ValueError(f"an interval needs at least two values, got {len(values)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    data, n = sorted(values), len(values)
    k = 1
    while k + 1 <= n // 2 and order_statistic_coverage(n, k + 1) >= confidence:
        k += 1
    return Interval(float(data[k - 1]), float(data[n - k]), order_statistic_coverage(n, k), confidence, order=k)


def paired_ratio(model: ModelPasses, baseline: ModelPasses, confidence: float = CONFIDENCE) -> Ratio:
    """Per-round ratios of tokens/s of `model` over `baseline`, their median and its interval (`median_interval`)."""
    ratios = [m / b for m, b in zip(model.tokens_per_second, baseline.tokens_per_second)]
    median = float(np.median(ratios))
    if len(ratios) < 2:
        return Ratio(model.name, baseline.name, ratios, median, None,
                           f"{len(ratios)} round: an interval needs at least 2 paired rounds")
    interval = median_interval(ratios, confidence)
    note = None if interval.reaches_requested else (
        f"{len(ratios)} rounds reach {interval.confidence:.2%} at most (the range of the ratios); "
        f"{confidence:.0%} needs at least 6 rounds")
    return Ratio(model.name, baseline.name, ratios, median, interval, note)


def run_paired(forwards: Mapping[str, Callable], batches: Sequence | Mapping[str, Sequence], device: torch.device,
               rounds: int, baseline: str | None = None, warmup_batches: int | None = None,
               time_transfer: bool = False, on_pass: OnPass | None = None,
               on_warmup: Callable[[str, float], None] | None = None, timer: Timer = timed,
               confidence: float = CONFIDENCE) -> PairedResult:
    """Warm up every model, then `rounds` rounds of one full pass per model in rotating order.

    `forwards` maps names to callables taking one batch. `batches` is one list shared by all models,
    or a mapping name -> list (models with different layouts, e.g. padded vs packed, over the same
    documents); ratios compare tokens/s, so each model's real tokens count. `baseline` defaults to
    the first name. Warmup is as in `measure_passes`: one call, then the first `warmup_batches`
    batches (None: a full pass), then one batch of every shape not yet run (`throughput.warmup_order`).
    With `time_transfer`, batches stay on the host and passes include their copies. `on_pass(model, round, seconds)` follows every timed pass, `on_warmup(model,
    seconds)` every model's warmup. `timer` is `timing.timed` unless a test injects a fake clock.

    Raises ValueError for no models, `rounds` < 1, an unknown baseline, or a mapping of batches that
    misses a model or has an empty list.
    """
    names = list(forwards)
    baseline = names[0] if baseline is None and names else baseline
    per_model = batches if isinstance(batches, Mapping) else {name: batches for name in names}
    _check_paired(names, rounds, baseline, per_model)
    if isinstance(batches, Mapping):
        staged = {name: _stage(per_model[name], device, time_transfer) for name in names}
    else:
        shared = _stage(batches, device, time_transfer)
        staged = {name: shared for name in names}
    synchronize(device)

    def one_pass(forward: Callable, items: Sequence) -> None:
        for batch in items:
            forward(batch.to(device) if time_transfer else batch)

    first, warmup, warmed = {}, {}, {}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    order = [round_order(names, r) for r in range(rounds)]
    with torch.inference_mode():
        for name in names:
            items, forward = staged[name], forwards[name]
            first[name] = timer(lambda: forward(items[0].to(device)), device)
            indices, _ = warmup_order(items, warmup_batches)
            rest, warmed[name] = [items[i] for i in indices[1:]], len(indices)
            warmup[name] = first[name] + timer(lambda: one_pass(forward, rest), device)
            if on_warmup:
                on_warmup(name, warmup[name])
        for round_index, round_names in enumerate(order):
            for name in round_names:
                elapsed = timer(lambda: one_pass(forwards[name], staged[name]), device)
                seconds[name].append(elapsed)
                if on_pass:
                    on_pass(name, round_index, elapsed)
    models = {name: ModelPasses(name, count_tokens(per_model[name]), seconds[name], warmup[name], first[name],
                                warmed[name])
              for name in names}
    ratios = [paired_ratio(models[name], models[baseline], confidence)
              for name in names if name != baseline]
    return PairedResult(baseline, order, models, ratios)


def _check_paired(names: list[str], rounds: int, baseline: str | None, per_model: Mapping[str, Sequence]) -> None:
    """ValueError for no models, `rounds` < 1, an unknown baseline, or a model without batches."""
    if not names:
        raise ValueError("no models to compare")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not one of the models {names}")
    for name in names:
        if not per_model.get(name):
            raise ValueError(f"no batches for model {name!r}")


def _stage(batches: Sequence, device: torch.device, time_transfer: bool) -> list:
    """The batches as the timed passes read them: on the device, unless the transfer is timed."""
    return list(batches) if time_transfer else [b.to(device) for b in batches]
