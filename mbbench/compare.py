"""Paired comparisons: several models over the same documents, passes interleaved, ratios with intervals.

The paper's claims are ratios; measured minutes apart on a shared machine, a ratio drifts with the
machine's load (1.18x sequentially vs 1.50x interleaved for the same pair on CPU). Here every round
runs one pass of each model in rotating order (AB, BA, ...), so both see the same conditions, and the
result is the median per-round ratio with an order-statistic interval of its exact coverage (`bench.paired`), recorded as a
`Comparison` record.

A side is a model on an engine: `MODEL@ENGINE` (`hf-modernbert-base@onnxruntime`), or a bare `MODEL` on the
command's `--engine` (torch by default), so one model may appear on two engines. Every side on an engine
other than torch is checked against torch on its first batch before any round; a side that fails is left
out of the rounds with its reason in the record, as long as the baseline and one other side remain.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from mbbench import engines, environment
from mbbench.bench.paired import run_paired
from mbbench.engines import DEFAULT_ENGINE, EngineUnavailable, ParityFailure, ParityResult
from mbbench.errors import UserError
from mbbench.formatting import plural
from mbbench.models.encoders import Encoder
from mbbench.plan import Plan, RunConfig, resolve, unsupported_record
from mbbench.records import ENGINE_SEPARATOR, Comparison, Identity, Record
from mbbench.runner import build, check_engine_memory, prepare
from mbbench.suites import make_batches, select_documents

class TooFewSides(ParityFailure):
    """Parity left out the baseline or every side but one: no ratio can be measured."""

    def __init__(self, result: ParityResult, note: str):
        Exception.__init__(self, f"{result.message}; {note}")
        self.result = result


def parse_side(text: str, engine: str = DEFAULT_ENGINE) -> tuple[str, str]:
    """`MODEL@ENGINE` -> (model, engine); a bare `MODEL` runs on `engine`. UserError for an empty part or an
    unknown engine."""
    model, _, named = text.partition(ENGINE_SEPARATOR)
    if not model or (ENGINE_SEPARATOR in text and not named):
        raise UserError(f"--model {text!r}: expected MODEL or MODEL{ENGINE_SEPARATOR}ENGINE "
                        f"(e.g. hf-modernbert-base{ENGINE_SEPARATOR}onnxruntime)")
    engines.get_engine(named or engine)
    return model, named or engine


def side_label(model: str, engine: str) -> str:
    """A comparison side's name: the model, with `@engine` unless it runs on torch."""
    return model if engine == DEFAULT_ENGINE else f"{model}{ENGINE_SEPARATOR}{engine}"


def side_name(config: RunConfig) -> str:
    """The side a config runs: `side_label` of its model and engine."""
    return side_label(config.model, config.engine)


def plan_comparison(configs: list[RunConfig], baseline: str, device=None) -> tuple[list[Plan], Identity]:
    """Resolve each side's plan on one device and the comparison's identity.

    Every config must name the same suite; `baseline` must be one of the sides (`side_name`). The plans must
    agree on documents, batching, dtype and threads, so the sides see the same work. Raises UserError.
    """
    if len(configs) < 2:
        raise UserError("compare needs at least two --model")
    sides = [side_name(c) for c in configs]
    if len(set(sides)) != len(sides):
        raise UserError(f"compare got a side twice: {', '.join(sides)} (one model may run on two engines: "
                        f"MODEL{ENGINE_SEPARATOR}ENGINE)")
    if baseline not in sides:
        raise UserError(f"--baseline {baseline} is not one of the compared sides ({', '.join(sides)})")
    plans = [resolve(c, device=device) for c in configs]
    first = plans[0]
    for plan in plans[1:]:
        if (plan.documents, plan.batch_size, plan.token_budget, plan.dtype, plan.threads) != \
                (first.documents, first.batch_size, first.token_budget, first.dtype, first.threads):
            raise UserError(f"{side_name(plan.config)} and {side_name(first.config)} would not run the same work "
                            "(documents, batch, dtype, threads); compare runs one workload for every side")
    ordered = [baseline, *(m for m in sides if m != baseline)]
    by_side = sorted(plans, key=lambda p: ordered.index(side_name(p.config)))
    backends = ",".join(p.config.backend for p in by_side)
    engine_names = [p.engine for p in by_side]
    identity = replace(first.identity, measurement="comparison", model=baseline.partition(ENGINE_SEPARATOR)[0],
                       models=tuple(ordered), backend=backends,
                       engine=engine_names[0] if len(set(engine_names)) == 1 else ",".join(engine_names))
    return plans, identity


def compare(plans: list[Plan], identity: Identity, on_pass: Callable[[str, int, float], None] | None = None,
            progress: Callable[[str], None] | None = None, on_sides: Callable[[int], None] | None = None) -> Record:
    """Check each side's parity, run the interleaved passes and return the comparison record (unsupported if
    any model cannot run the suite). `on_sides(n)` is told how many sides enter the rounds (some may be left out),
    before the first timed pass.

    Raises TooFewSides (a ParityFailure: the store records the failure) when parity leaves out the baseline
    or every other side.
    """
    sides = {side_name(p.config): p for p in plans}
    baseline = identity.models[0]
    base_plan = sides[baseline]
    for plan in plans:
        reason = plan.unsupported_reason()
        if reason:
            return replace(unsupported_record(base_plan, reason), identity=identity)
    engines.apply_threads(base_plan.threads)  # before any model is built: one setting for every side
    encoders = shared_encoders(plans, progress)
    indices = select_documents(base_plan.suite, base_plan.documents)
    batches = {side: make_batches(
        p.suite, indices, encoders[side].layout, p.batch_size, p.token_budget, encoders[side].pad_token_id,
        pad_to=p.suite.definition.max_length if p.protocol.pad_to_suite_max else None) for side, p in sides.items()}
    device = torch.device(base_plan.torch_device)
    forwards, infos, parity, excluded = {}, {}, {}, {}
    for side in identity.models:
        try:
            check_engine_memory(sides[side], encoders[side], batches[side])
            prepared, checked = prepare(sides[side], encoders[side], batches[side][0], progress)
        except (ParityFailure, EngineUnavailable) as failure:
            result = failure.result if isinstance(failure, ParityFailure) else None
            excluded[side] = f"failed parity: {result.message}" if result else f"cannot run here: {failure}"
            if result:
                parity[side] = result.to_dict()
            if progress:
                progress(f"{side} left out of the rounds: {excluded[side]}")
            if side == baseline or len(identity.models) - len(excluded) < 2:
                if result is None:
                    raise
                raise TooFewSides(result, f"{side} left out, fewer than two sides (with the baseline "
                                  f"{baseline}) remain to compare") from None
            continue
        forwards[side], infos[side] = prepared, prepared.info.to_dict()
        if checked:
            parity[side] = checked.to_dict()
    if on_sides:
        on_sides(len(forwards))
    if progress:
        progress(f"{plural(len(indices), 'document')}; {len(forwards)} sides interleaved over "
                 f"{plural(base_plan.config.passes, 'round')}")
    start = environment.load_snapshot()
    result = run_paired(forwards, {side: batches[side] for side in forwards}, device, base_plan.config.passes,
                        baseline=baseline, warmup_batches=base_plan.warmup_batches,
                        time_transfer=base_plan.config.time_transfer, on_pass=on_pass)
    end = environment.load_snapshot()
    paired = result.to_dict() | {"load": {"start": start.to_dict(), "end": end.to_dict()},
                                 "load_warning": environment.busy_warning(start, end, base_plan.threads.intra)}
    payload = Comparison(baseline=baseline, num_documents=len(indices), rounds=base_plan.config.passes,
                         backends={side: encoders[side].backend for side in identity.models}, paired=paired,
                         engines=infos, parity=parity or None, excluded=excluded or None,
                         gemms={side: {"kernel": encoders[side].gemm, "reason": encoders[side].gemm_reason,
                                       "source": encoders[side].gemm_source} for side in identity.models},
                         elementwise={side: {"kernel": encoders[side].elementwise,
                                             "reason": encoders[side].elementwise_reason,
                                             "source": encoders[side].elementwise_source}
                                      for side in identity.models})
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


def shared_encoders(plans: list[Plan], progress: Callable[[str], None] | None = None) -> dict[str, Encoder]:
    """side -> its encoder; sides of one model on different engines share one (the same module and weights)."""
    built: dict[RunConfig, Encoder] = {}
    encoders = {}
    for plan in plans:
        model_config = replace(plan.config, engine=DEFAULT_ENGINE, compile=False)
        if model_config not in built:
            built[model_config] = build(plan, progress)
        encoders[side_name(plan.config)] = built[model_config]
    return encoders


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
    lines = [f"{r['model']}{tiny} / {r['baseline']}{tiny} = {ratio_text(r)}, {rounds} paired "
             f"round{'s' if rounds != 1 else ''}" + note for r in record.payload.paired["ratios"]]
    return lines + [f"{side}{tiny}: left out, {reason}" for side, reason in (record.payload.excluded or {}).items()]
