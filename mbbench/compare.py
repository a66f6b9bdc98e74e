"""Paired comparisons: several models over the same documents, passes interleaved, ratios with intervals.

The paper's claims are ratios; measured minutes apart on a shared machine, a ratio drifts with the
machine's load (1.18x sequentially vs 1.50x interleaved for the same pair on CPU). Here every round
runs one pass of each model in rotating order (AB, BA, ...), so both see the same conditions, and the
result is the median per-round ratio with an order-statistic interval of its exact coverage (`bench.paired`), recorded as a
`Comparison` record.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from mbbench import environment
from mbbench.bench.paired import run_paired
from mbbench.errors import UserError
from mbbench.formatting import plural
from mbbench.plan import Plan, RunConfig, resolve, unsupported_record
from mbbench.records import Comparison, Identity, Record
from mbbench.runner import build
from mbbench.suites import make_batches, select_documents


def plan_comparison(configs: list[RunConfig], baseline: str, device=None) -> tuple[list[Plan], Identity]:
    """Resolve each model's plan on one device and the comparison's identity.

    Every config must name the same suite; `baseline` must be one of the models. The plans must agree
    on documents, batching, dtype and protocol, so the models see the same work. Raises UserError.
    """
    if len(configs) < 2:
        raise UserError("compare needs at least two --model")
    models = [c.model for c in configs]
    if len(set(models)) != len(models):
        raise UserError(f"compare got a model twice: {', '.join(models)}")
    if baseline not in models:
        raise UserError(f"--baseline {baseline} is not one of the compared models ({', '.join(models)})")
    plans = [resolve(c, device=device) for c in configs]
    first = plans[0]
    for plan in plans[1:]:
        if (plan.documents, plan.batch_size, plan.token_budget, plan.dtype) != \
                (first.documents, first.batch_size, first.token_budget, first.dtype):
            raise UserError(f"{plan.config.model} and {first.config.model} would not run the same work "
                            "(documents, batch, dtype); compare runs one workload for every model")
    ordered = [baseline, *(m for m in models if m != baseline)]
    backends = ",".join(p.config.backend for p in sorted(plans, key=lambda p: ordered.index(p.config.model)))
    identity = replace(first.identity, measurement="comparison", model=baseline, models=tuple(ordered),
                       backend=backends)
    return plans, identity


def compare(plans: list[Plan], identity: Identity, on_pass: Callable[[str, int, float], None] | None = None,
            progress: Callable[[str], None] | None = None) -> Record:
    """Run the interleaved passes and return the comparison record (unsupported if any model cannot run)."""
    base_plan = next(p for p in plans if p.config.model == identity.model)
    for plan in plans:
        reason = plan.unsupported_reason()
        if reason:
            return replace(unsupported_record(base_plan, reason), identity=identity)
    encoders = {p.config.model: build(p, progress) for p in plans}
    indices = select_documents(base_plan.suite, base_plan.documents)
    batches = {p.config.model: make_batches(
        p.suite, indices, encoders[p.config.model].layout, p.batch_size, p.token_budget,
        encoders[p.config.model].pad_token_id,
        pad_to=p.suite.definition.max_length if p.protocol.pad_to_suite_max else None) for p in plans}
    forwards = {name: encoder.__call__ for name, encoder in encoders.items()}
    if progress:
        progress(f"{plural(len(indices), 'document')}; {len(plans)} models interleaved over "
                 f"{plural(base_plan.config.passes, 'round')}")
    start = environment.load_snapshot()
    result = run_paired({m: forwards[m] for m in identity.models}, batches, torch.device(base_plan.torch_device),
                        base_plan.config.passes, baseline=identity.model, warmup_batches=base_plan.warmup_batches,
                        time_transfer=base_plan.config.time_transfer, on_pass=on_pass)
    end = environment.load_snapshot()
    paired = result.to_dict() | {"load": {"start": start.to_dict(), "end": end.to_dict()},
                                 "load_warning": environment.busy_warning(start, end, torch.get_num_threads())}
    payload = Comparison(baseline=identity.model, num_documents=len(indices), rounds=base_plan.config.passes,
                         backends={name: encoder.backend for name, encoder in encoders.items()}, paired=paired)
    return Record(kind="measured", status="ok", identity=identity, device=base_plan.device,
                  model=base_plan.model_info(), suite=base_plan.suite_info(), payload=payload,
                  environment=environment.capture())


def interval_label(interval: dict) -> str:
    """'96.9% CI' (its exact coverage), '87.5% CI, short of 95%: too few rounds', or for records made before
    issue 26 '95% bootstrap CI' (a percentile bootstrap, whose real coverage at few rounds was far below it)."""
    if "resamples" in interval:
        return f"{interval['confidence']:.0%} bootstrap CI"
    label = f"{interval['confidence'] * 100:.3g}% CI"
    requested = interval.get("requested", interval["confidence"])
    return label if interval["confidence"] >= requested else f"{label}, short of {requested:.0%}: too few rounds"


def ratio_text(ratio: dict) -> str:
    """'1.52x [1.45, 1.60] (95% CI)', '1.52x [1.45, 1.60] (87.5% CI, short of 95%: too few rounds)' or
    '1.52x (no interval: ...)'."""
    interval = ratio.get("interval")
    if interval:
        return f"{ratio['median']:.2f}x [{interval['low']:.2f}, {interval['high']:.2f}] ({interval_label(interval)})"
    return f"{ratio['median']:.2f}x ({ratio.get('interval_note') or 'no interval'})"


FEW_ROUNDS = 6  # below this no interval of a median reaches 95% (bench.paired)


def ratio_lines(record: Record) -> list[str]:
    """One line per ratio of a comparison record, with a warning when the rounds are too few."""
    rounds = record.payload.rounds
    note = f" (only {rounds} round{'s' if rounds != 1 else ''}: no 95% interval below 6; use --runs 10 or more)" \
        if rounds < FEW_ROUNDS else ""
    tiny = "-tiny" if record.identity.tiny else ""
    return [f"{r['model']}{tiny} / {r['baseline']}{tiny} = {ratio_text(r)}, {rounds} paired "
            f"round{'s' if rounds != 1 else ''}" + note for r in record.payload.paired["ratios"]]
