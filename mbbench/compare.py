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

import statistics
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from mbbench import engines, environment, loading
from mbbench.batching import Batch
from mbbench.bench.paired import PairedResult, run_paired
from mbbench.engines import DEFAULT_ENGINE, EngineUnavailable, ParityFailure
from mbbench.errors import UserError
from mbbench.formatting import plural
from mbbench.loading import Built, LoadedModel
from mbbench.plan import Plan, RunConfig, describe, resolve, unsupported_record
from mbbench.records import ENGINE_SEPARATOR, BuildInfo, Comparison, Identity, MachineLoad, ParityCheck, Record
from mbbench.runner import model_flops_utilisation, pass_flops, plan_batches, rounds_estimate_line

class TooFewSides(Exception):
    """Fewer than two sides could be prepared and pass the accuracy gate: no ratio can be measured. Carries
    each left-out side's reason."""

    def __init__(self, excluded: dict[str, str]):
        reasons = "; ".join(f"{side}: {why}" for side, why in excluded.items())
        super().__init__(f"fewer than two sides remain to compare ({reasons})")
        self.excluded = excluded


@dataclass
class PreparedSides:
    """The sides that enter the rounds (their loaded models, in the given order) and those left out, with why."""

    loaded: dict[str, LoadedModel] = field(default_factory=dict)
    parity: dict[str, ParityCheck] = field(default_factory=dict)  # side -> its accuracy gate
    excluded: dict[str, str] = field(default_factory=dict)  # side -> why it was left out


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


@dataclass(frozen=True)
class ComparisonPlan:
    """A comparison resolved once on one device: the sides' plans (in the given order), its identity, and the sides
    whose engine cannot run here at all, left out before anything is built (ONNX Runtime in bf16, OpenVINO in bf16
    on a CPU without bf16 units)."""

    plans: list[Plan]
    identity: Identity
    refused: dict[str, str] = field(default_factory=dict)  # side -> why its engine cannot run it here


def plan_comparison(configs: list[RunConfig], baseline: str, device=None) -> ComparisonPlan:
    """Resolve each side's plan on one device and the comparison's identity.

    Every config must name the same suite; `baseline` must be one of the sides (`side_name`). The plans must
    agree on documents, batching, dtype and threads, so the sides see the same work. A side whose engine refuses
    the configuration is kept in the identity and left out with the reason. Raises UserError (fewer than two
    sides that can run, a side given twice, sides that would not run the same work).
    """
    if len(configs) < 2:
        raise UserError("compare needs at least two --model")
    sides = [side_name(c) for c in configs]
    if len(set(sides)) != len(sides):
        raise UserError(f"compare got a side twice: {', '.join(sides)} (one model may run on two engines: "
                        f"MODEL{ENGINE_SEPARATOR}ENGINE)")
    if baseline not in sides:
        raise UserError(f"--baseline {baseline} is not one of the compared sides ({', '.join(sides)})")
    plans, refused = [], {}
    for side, config in zip(sides, configs):
        try:
            plans.append(resolve(config, device=device))
        except EngineUnavailable as refusal:  # this side's engine cannot run here; the others still can
            refused[side] = f"cannot run here: {refusal}"
    if len(plans) < 2:
        raise UserError("compare: fewer than two sides can run here (" + "; ".join(
            f"{side}: {why}" for side, why in refused.items()) + ")")
    first = plans[0]
    for plan in plans[1:]:
        if (plan.documents, plan.batch_size, plan.token_budget, plan.dtype, plan.threads) != \
                (first.documents, first.batch_size, first.token_budget, first.dtype, first.threads):
            raise UserError(f"{side_name(plan.config)} and {side_name(first.config)} would not run the same work "
                            "(documents, batch, dtype, threads); compare runs one workload for every side")
    engine_names = [c.engine for c in configs]
    identity = replace(first.identity, measurement="comparison", model=baseline.partition(ENGINE_SEPARATOR)[0],
                       models=tuple(sides), baseline=baseline, backend=",".join(c.backend for c in configs),
                       engine=engine_names[0] if len(set(engine_names)) == 1 else ",".join(engine_names))
    return ComparisonPlan(plans, identity, refused)


def compare(comparison: ComparisonPlan, on_pass: Callable[[str, int, float], None] | None = None,
            progress: Callable[[str], None] | None = None, on_sides: Callable[[int], None] | None = None) -> Record:
    """Judge each side by the accuracy gate, run the interleaved passes and return the comparison record
    (unsupported if any model cannot run the suite). `on_sides(n)` is told how many sides enter the rounds (some
    may be left out), before the first timed pass.

    Each model is built once through `loading` and readied on each of its sides' engines. A side that cannot be
    prepared or fails the gate is left out with the reason; when that is the baseline, the first measured side in
    the given order becomes the baseline (`baseline_note` says so). Raises TooFewSides (the store records the
    failure) when fewer than two sides remain.
    """
    plans, identity = comparison.plans, comparison.identity
    sides = {side_name(p.config): p for p in plans}
    base_plan = sides.get(identity.baseline_side, plans[0])
    for plan in plans:
        reason = plan.unsupported_reason()
        if reason:
            return replace(unsupported_record(base_plan, reason), identity=identity)
    builds = shared_builds(plans, progress)
    batches = {side: plan_batches(p, builds[side].encoder) for side, p in sides.items()}
    if progress:  # before the sides' engines are prepared: exports and compiles can take minutes
        progress(rounds_estimate_line(sides, batches))
        for side, why in comparison.refused.items():
            progress(f"{side} left out of the rounds: {why}")
    prepared = prepare_sides(sides, builds, batches, progress)
    excluded = {side: (comparison.refused | prepared.excluded)[side] for side in identity.models
                if side in comparison.refused or side in prepared.excluded}
    if len(prepared.loaded) < 2:
        raise TooFewSides(excluded)
    baseline, baseline_note = measured_baseline(identity.baseline_side, list(prepared.loaded), excluded)
    if baseline_note and progress:
        progress(baseline_note)
    if on_sides:
        on_sides(len(prepared.loaded))
    result, load = run_rounds(base_plan, prepared.loaded, batches, baseline, on_pass, progress)
    mfu, mfu_note = side_mfu({side: sides[side] for side in prepared.loaded}, builds, batches, result)
    payload = Comparison(baseline=baseline, num_documents=base_plan.documents, rounds=base_plan.config.passes,
                         paired=result.rounds(),
                         builds={side: side_build(sides[side], builds[side]) for side in prepared.loaded},
                         engines={side: m.engine.info for side, m in prepared.loaded.items()},
                         parity=prepared.parity or None, excluded=excluded or None, baseline_note=baseline_note,
                         mfu=mfu, mfu_note=mfu_note, load=load)
    return Record(kind="measured", status="ok", identity=identity, device=base_plan.device,
                  model=base_plan.model_info(), suite=base_plan.suite_info(), payload=payload,
                  environment=environment.capture())


def run_rounds(base_plan: Plan, loaded: dict[str, LoadedModel], batches: dict[str, list[Batch]], baseline: str,
               on_pass: Callable[[str, int, float], None] | None, progress: Callable[[str], None] | None
               ) -> tuple[PairedResult, MachineLoad]:
    """The interleaved rounds of the measured sides (`bench.paired.run_paired`) and the machine's load around them."""
    if progress:
        progress(f"{plural(base_plan.documents, 'document')}; {len(loaded)} sides interleaved over "
                 f"{plural(base_plan.config.passes, 'round')}")
    start = environment.load_snapshot()
    result = run_paired({side: model.engine for side, model in loaded.items()},
                        {side: batches[side] for side in loaded}, torch.device(base_plan.torch_device),
                        base_plan.config.passes, baseline=baseline, warmup_batches=base_plan.warmup_batches,
                        time_transfer=base_plan.config.time_transfer, on_pass=on_pass)
    threads = loaded[baseline].busy_threads  # one thread setting for every side (`plan_comparison`)
    return result, environment.machine_load(start, environment.load_snapshot(), threads)


def prepare_sides(sides: dict[str, Plan], builds: dict[str, Built], batches: dict[str, list[Batch]],
                  progress: Callable[[str], None] | None = None) -> PreparedSides:
    """Each side's engine readied on its first batch and judged by the accuracy gate (`loading.ready`), in the
    given order.

    A side is left out, with the reason, when its preparation raises anything (the engine cannot run here, its
    export or compile fails, its host memory would not suffice) or it fails the gate: one side never takes
    a comparison down. Sides of one model share the reference outputs (fp32 and torch in the run's dtype).
    """
    result, shared = PreparedSides(), {}
    for side in sides:
        said = (lambda message, side=side: progress(f"{side}: {message}")) if progress else None
        try:
            loaded = loading.ready(builds[side], batches[side], said, shared)
        except ParityFailure as failure:
            result.parity[side] = failure.result.check()
            result.excluded[side] = f"failed the accuracy gate: {failure.result.message}"
        except UserError as refusal:  # EngineUnavailable, host memory: a sentence of its own
            result.excluded[side] = f"cannot run here: {refusal}"
        except Exception as error:  # noqa: BLE001 - any engine error leaves this side out, not the comparison
            result.excluded[side] = f"cannot run here: {describe(error)}"
        else:
            result.loaded[side] = loaded
            if loaded.parity:
                result.parity[side] = loaded.parity.check()
            continue
        if progress:
            progress(f"{side} left out of the rounds: {result.excluded[side]}")
    return result


def side_mfu(sides: dict[str, Plan], builds: dict[str, Built], batches: dict[str, list[Batch]],
             result: PairedResult) -> tuple[dict[str, float] | None, str]:
    """Each measured side's MFU over the comparison (its model FLOPs per pass / its median pass time / the peak), and
    how it was computed: on a CPU the best GEMM measured here in the run's dtype at the side's own GEMM shapes
    (`loading.gemm_rates`, measured once per process and shape); on a GPU the basket's datasheet peak."""
    mfu, notes = {}, set()
    for side, plan in sides.items():
        passes = result.models[side]
        seconds = statistics.median(passes.pass_seconds)
        mfu[side], note = model_flops_utilisation(plan, pass_flops(plan, batches[side]) / seconds, builds[side].rates)
        notes.add(note.split(" (")[0])
    return ({k: v for k, v in mfu.items() if v is not None} or None), "; ".join(sorted(notes))


def side_build(plan: Plan, built: Built) -> BuildInfo:
    """What a measured side ran on: the build's attention and kernels on the torch engine; on torch-compile the
    same traced and compiled by Inductor (whose freezing may prepack the weights for oneDNN on CPUs); an exporting
    engine runs its own graph and kernels (the sides of one model share one build, whose kernels only the torch
    engines call)."""
    info, name = built.info(), plan.engine.name
    if plan.engine.exports:
        own = f"the {name} engine runs its own graph and kernels"
        return replace(info, gemm=name, gemm_reason=own, gemm_source="fixed", elementwise=name,
                       elementwise_reason=own, elementwise_source="fixed")
    if name != DEFAULT_ENGINE:  # torch-compile: Inductor compiles the module the build made
        settings = ", ".join(f"{k}={v}" for k, v in plan.engine.options(torch.device(plan.torch_device)).items())
        traced = f"; traced and compiled by Inductor ({settings})"
        return replace(info, gemm_reason=f"{info.gemm_reason}{traced}",
                       elementwise_reason=f"{info.elementwise_reason}{traced}")
    return info


def measured_baseline(requested: str, measured: list[str], excluded: dict[str, str]) -> tuple[str, str | None]:
    """(the baseline side, a note when it is not the requested one): the requested baseline when it was measured,
    else the first measured side in the given order."""
    if requested in measured:
        return requested, None
    chosen = measured[0]
    return chosen, (f"baseline {requested} was left out ({excluded.get(requested, 'not measured')}); "
                    f"{chosen} is the baseline instead")


def shared_builds(plans: list[Plan], progress: Callable[[str], None] | None = None) -> dict[str, Built]:
    """side -> its built model (`loading.build`), with the side's own plan (its engine); sides of one model on
    different engines share one build (the same module and weights)."""
    built: dict[RunConfig, Built] = {}
    builds = {}
    for plan in plans:
        model_config = replace(plan.config, engine=DEFAULT_ENGINE)
        if model_config not in built:
            built[model_config] = loading.build(plan.model_plan, progress)
        builds[side_name(plan.config)] = replace(built[model_config], model=plan.model_plan)
    return builds
