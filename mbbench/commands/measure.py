"""The commands that produce records of one configuration each: run, max-batch, predict and compare.

They parse options, resolve plans (`mbbench.plan`), and produce records through the store (`mbbench.driver`);
a `UserError` becomes one line and exit status 2 (`mbbench.cli.Group`).
"""

from __future__ import annotations

import click

from mbbench import compare as comparison
from mbbench import predict, runner
from mbbench.calibration import default_calibration
from mbbench.commands.common import configs, echo_notes, engine_cache, engine_named, finish, progress_for
from mbbench.commands.console import produce_and_print
from mbbench.commands.options import options
from mbbench.device import check_requested_gpu, detect
from mbbench.driver import job
from mbbench.errors import UserError
from mbbench.plan import RunConfig, max_batch_limits, resolve
from mbbench.progress import progress_bar
from mbbench.report.ratios import ratio_lines
from mbbench.units import SECONDS


@click.command()
@options("models", "suites", "protocol", "backend", "dtype", "batch_size", "token_budget", "docs", "runs", "warmup",
         "device", "gpu", "engine", "threads", "gemm", "elementwise", "out", "force", "compile", "time_transfer",
         "weights", "tiny", "quiet")
@click.option("--max-batch", is_flag=True, hidden=True, help="Deprecated: use `mbbench max-batch`.")
@click.option("--predict", "predict_flag", is_flag=True, hidden=True, help="Deprecated: use `mbbench predict`.")
@click.pass_context
def run(ctx, models, suites, gpu, out_dir, force, quiet, max_batch, predict_flag, compile_model, engine,
        **fields) -> None:
    """Measure tokens/s of MODELs over SUITEs; one record per configuration under OUT/<device>/."""
    if max_batch or predict_flag:
        target = max_batch_command if max_batch else predict_command
        click.echo(f"note: `run --{'max-batch' if max_batch else 'predict'}` is deprecated; use "
                   f"`mbbench {target.name}`", err=True)
        params = dict(ctx.params)
        if predict_flag:
            if gpu == "auto":
                raise UserError("--predict needs --gpu NAME (the basket GPU to predict for)")
            params["gpus"] = (params.pop("gpu"),)
        given = {k for k in params if k not in ctx.params or ctx.get_parameter_source(k).name != "DEFAULT"}
        unknown = sorted(given - {p.name for p in target.params} - {"max_batch", "predict_flag"})
        if unknown:
            flags = ", ".join("--" + {"gpus": "gpu", "passes": "runs"}.get(name, name).replace("_", "-").removesuffix("-model")
                              for name in unknown)
            raise UserError(f"`mbbench {target.name}` cannot honour {flags}")
        return ctx.invoke(target, **{p.name: params.get(p.name, p.default) for p in target.params})
    local = detect(fields["device"])
    check_requested_gpu(gpu, local)
    engine = engine_named(engine, compile_model)
    plans = [resolve(c, device=local) for c in configs(models, suites, engine=engine, engine_cache=engine_cache(),
                                                       **fields)]
    echo_notes(plans, quiet)

    def measure(plan):
        with progress_bar(plan.config.passes, f"{plan.label}: timed passes", enabled=not quiet) as bar:
            say = None if quiet else (lambda message: bar.write(f"[{plan.label}] {message}"))  # above the bar
            return runner.run(plan, say, lambda i, s: bar.advance(seconds=f"{s:.3f}"))

    finish(produce_and_print([job(p, measure) for p in plans], out_dir, force, quiet))


@click.command(name="max-batch")
@options("models", "suites", "protocol", "backend", "dtype", "device", "gpu", "out", "force", "tiny",
         "quiet", "granularity", "safety_margin", "memory_limit")
@click.option("--max-trials", type=int, default=None, help="Stop after N trials (the record gives the bracket).")
@click.option("--max-seconds", type=SECONDS, default=None,
              help="Start no trial that would end after this long (90, 90s, 1.5min, 2h).")
@click.option("--seed", type=int, default=None, help="Start from this size (default: the memory model's).")
@click.option("--emulate-oom-above", type=int, default=None, hidden=True,
              help="CPU twin (tests, rehearsal): trials above this many tokens raise a CUDA out-of-memory.")
def max_batch_command(models, suites, gpu, out_dir, force, quiet, granularity, safety_margin, memory_limit,
                      max_trials, max_seconds, seed, emulate_oom_above, **fields) -> None:
    """Search the largest batch (or packed token budget) that fits, one fresh process per trial (on the torch
    engine: its trials measure the CUDA allocator, so no --engine is offered)."""
    local = detect(fields["device"])
    check_requested_gpu(gpu, local)
    limits = max_batch_limits(granularity, safety_margin, memory_limit, max_trials, max_seconds)
    plans = [resolve(c, "max_batch", device=local, limits=limits) for c in configs(models, suites, **fields)]
    if local.kind != "cuda" and emulate_oom_above is None:
        raise UserError("max-batch searches GPU memory, and this machine has none (on a CPU no out-of-memory error "
                        "ends the search); use `mbbench predict` for the memory model's answer")

    def search(plan):
        say = progress_for(plan, quiet)
        on_trial = (lambda t: say(f"trial {t.size}: {t.status} ({t.seconds:.1f} s)")) if say else None
        return runner.max_batch(plan, progress=say, seed=seed if seed is not None else "predicted",
                                fake_limit_tokens=emulate_oom_above, on_trial=on_trial)

    finish(produce_and_print([job(p, search) for p in plans], out_dir, force, quiet))


@click.command(name="predict")
@options("models", "suites", "protocol", "backend", "dtype", "batch_size", "docs", "out", "force", "quiet")
@click.option("--gpu", "gpus", multiple=True, required=True, help="Repeatable: basket GPUs (`mbbench list gpus`).")
def predict_command(models, suites, gpus, out_dir, force, quiet, **fields) -> None:
    """Predicted records for basket GPUs from the performance and memory models (nothing is measured): PyTorch's
    eager forward on a GPU, so no --engine or --threads is offered."""
    plans = [predict.plan_prediction(c, gpu) for c in configs(models, suites, **fields)
             for gpu in predict.distinct_gpus(gpus)]
    echo_notes(plans, quiet)
    calibration = default_calibration()
    finish(produce_and_print([job(p, lambda plan: predict.predict(plan, calibration)) for p in plans], out_dir, force,
                             quiet))


@click.command()
@options("models", "suites", "protocol", "backend", "dtype", "batch_size", "token_budget", "docs", "runs", "warmup",
         "device", "engine", "threads", "gemm", "elementwise", "out", "force", "time_transfer", "tiny", "quiet")
@click.option("--baseline", default=None, help="The side the others are divided by (default: the last --model).")
def compare(models, suites, backend, engine, out_dir, force, quiet, baseline, **fields) -> None:
    """Interleave MODELs' passes over the same documents; print and record each ratio with an interval of
    stated coverage.

    A MODEL may name its engine, MODEL@ENGINE (hf-modernbert-base@onnxruntime), so one model can run on two
    engines; a bare MODEL runs on --engine. A side that fails parity with torch is left out, with the reason.
    """
    cmp = comparison
    local = detect(fields["device"])
    sides = [cmp.parse_side(text, engine) for text in models]

    def side_configs(suite: str) -> list[RunConfig]:
        return [RunConfig(model=model, suite=suite, backend=backend, engine=side_engine,
                          engine_cache=engine_cache(), **fields) for model, side_engine in sides]

    baseline = cmp.side_label(*(sides[-1] if baseline is None else cmp.parse_side(baseline, engine)))
    comparisons = [cmp.plan_comparison(side_configs(suite), baseline, local) for suite in suites]

    def measure(comparison: cmp.ComparisonPlan):
        passes, suite = comparison.plans[0].config.passes, comparison.identity.suite
        with progress_bar(passes * len(comparison.plans), f"{suite}: paired passes", enabled=not quiet) as bar:
            say = None if quiet else (lambda message: bar.write(f"[compare / {suite}] {message}"))
            return cmp.compare(comparison, lambda model, r, s: bar.advance(model=model), say,
                               on_sides=lambda sides: bar.set_total(passes * sides))

    jobs = [job(c.plans[0], lambda _, c=c: measure(c), c.identity) for c in comparisons]
    code = produce_and_print(jobs, out_dir, force, quiet, ratio_lines)
    finish(code)
