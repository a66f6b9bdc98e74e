"""Command line: a thin layer that parses options and calls the library.

`run | max-batch | predict | matrix | verify | sweep | validate-model | report | list`. A `UserError`
anywhere becomes a one-line message and exit status 2; nothing is written before inputs are validated.
Ctrl-C exits 130 and names the records already written.
"""

from __future__ import annotations

import sys

import click

from mbbench.console import produce_and_print
from mbbench.driver import job
from mbbench.errors import UserError
from mbbench.cli_options import options
from mbbench.plan import RunConfig


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as error:
            click.echo(f"mbbench: error: {error}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:  # commands that write records say which before this; the rest just stop
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=Group)
@click.version_option(package_name="mbbench")
def cli() -> None:
    """Benchmark encoder transformers (ModernBERT and competitors) and explore hardware-aware shapes."""


def configs(models, suites, **fields) -> list[RunConfig]:
    return [RunConfig(model=m, suite=s, **fields) for m in models for s in suites]


def finish(code: int) -> None:
    if code:
        sys.exit(code)


def progress_for(plan, quiet: bool):
    return None if quiet else (lambda message: click.echo(f"[{plan.label}] {message}", err=True))


def echo_notes(plans, quiet: bool) -> None:
    """Each distinct note of the resolved plans (subsampling, a dtype overriding the protocol, ...), on stderr."""
    if not quiet:
        for note in sorted({n for p in plans for n in p.notes}):
            click.echo(note, err=True)


@cli.command()
@options("models", "suites", "protocol", "backend", "dtype", "batch_size", "token_budget", "docs", "runs", "warmup",
         "device", "gpu", "out", "force", "compile", "time_transfer", "weights", "tiny", "quiet")
@click.option("--max-batch", is_flag=True, hidden=True, help="Deprecated: use `mbbench max-batch`.")
@click.option("--predict", "predict_flag", is_flag=True, hidden=True, help="Deprecated: use `mbbench predict`.")
@click.pass_context
def run(ctx, models, suites, gpu, out_dir, force, quiet, max_batch, predict_flag, compile_model, **fields) -> None:
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
            flags = ", ".join("--" + {"gpus": "gpu"}.get(name, name).replace("_", "-").removesuffix("-model")
                              for name in unknown)
            raise UserError(f"`mbbench {target.name}` cannot honour {flags}")
        return ctx.invoke(target, **{p.name: params.get(p.name, p.default) for p in target.params})
    from mbbench import runner
    from mbbench.hardware.gpus import check_requested_gpu, detect
    from mbbench.plan import resolve
    from mbbench.progress import progress_bar

    local = detect(fields["device"])
    check_requested_gpu(gpu, local)
    plans = [resolve(c, device=local) for c in configs(models, suites, compile=compile_model, **fields)]
    echo_notes(plans, quiet)

    def measure(plan):
        with progress_bar(plan.config.runs, f"{plan.label}: timed passes", enabled=not quiet) as bar:
            record = runner.run(plan, progress_for(plan, quiet), lambda i, s: bar.advance(seconds=f"{s:.3f}"))
        if getattr(record.payload, "unstable", False) and not quiet:
            click.echo(f"warning: {plan.label}: IQR/median above 10%: the result is unstable", err=True)
        return record

    finish(produce_and_print([job(p, measure) for p in plans], out_dir, force, quiet))


@cli.command(name="max-batch")
@options("models", "suites", "protocol", "backend", "dtype", "device", "gpu", "out", "force", "tiny", "quiet",
         "granularity", "safety_margin", "memory_limit")
@click.option("--max-trials", type=int, default=None, help="Stop after N trials (the record gives the bracket).")
@click.option("--max-seconds", type=float, default=None, help="Start no trial that would end after S seconds.")
@click.option("--seed", type=int, default=None, help="Start from this size (default: the memory model's).")
@click.option("--emulate-oom-above", type=int, default=None, hidden=True,
              help="CPU twin (tests, rehearsal): trials above this many tokens raise a CUDA out-of-memory.")
def max_batch_command(models, suites, gpu, out_dir, force, quiet, granularity, safety_margin, memory_limit,
                      max_trials, max_seconds, seed, emulate_oom_above, **fields) -> None:
    """Search the largest batch (or packed token budget) that fits, one fresh process per trial."""
    from mbbench import runner
    from mbbench.hardware.gpus import check_requested_gpu, detect
    from mbbench.plan import resolve

    local = detect(fields["device"])
    check_requested_gpu(gpu, local)
    limits = runner.max_batch_limits(granularity, safety_margin, memory_limit, max_trials, max_seconds)
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


@cli.command(name="predict")
@options("models", "suites", "protocol", "backend", "dtype", "batch_size", "out", "force", "quiet")
@click.option("--gpu", "gpus", multiple=True, required=True, help="Repeatable: basket GPUs (`mbbench list gpus`).")
def predict_command(models, suites, gpus, out_dir, force, quiet, **fields) -> None:
    """Predicted records for basket GPUs from the performance and memory models (nothing is measured)."""
    from mbbench import predict

    plans = [predict.plan_prediction(c, gpu) for c in configs(models, suites, **fields) for gpu in gpus]
    echo_notes(plans, quiet)
    finish(produce_and_print([job(p, predict.predict) for p in plans], out_dir, force, quiet))


@cli.command()
@options("models", "suites", "protocol", "backend", "dtype", "batch_size", "token_budget", "docs", "runs", "warmup",
         "device", "out", "force", "time_transfer", "tiny", "quiet")
@click.option("--baseline", default=None, help="The model the others are divided by (default: the last --model).")
def compare(models, suites, backend, out_dir, force, quiet, baseline, **fields) -> None:
    """Interleave MODELs' passes over the same documents; print and record each ratio with a 95% interval."""
    from mbbench import compare as cmp
    from mbbench.hardware.gpus import detect
    from mbbench.progress import progress_bar

    local = detect(fields["device"])
    baseline = baseline or models[-1]
    pairs = [cmp.plan_comparison(configs(models, (suite,), backend=backend, **fields), baseline, local)
             for suite in suites]

    def measure(plans, identity):
        with progress_bar(plans[0].config.runs * len(plans), f"{identity.suite}: paired passes",
                          enabled=not quiet) as bar:
            say = None if quiet else (lambda message: click.echo(f"[compare / {identity.suite}] {message}", err=True))
            return cmp.compare(plans, identity, lambda model, r, s: bar.advance(model=model), say)

    jobs = [job(plans[0], lambda _, plans=plans, identity=identity: measure(plans, identity), identity)
            for plans, identity in pairs]
    code = produce_and_print(jobs, out_dir, force, quiet, cmp.ratio_lines)
    finish(code)


@cli.command()
@click.option("--file", "matrix_file", default=None, help="A matrix TOML file (axes and [options]).")
@click.option("--model", "models", multiple=True, help="Repeatable.")
@click.option("--suite", "suites", multiple=True, help="Repeatable: a suite name or a .toml path.")
@click.option("--protocol", "protocols", multiple=True, type=click.Choice(["rigorous", "paper"]))
@click.option("--backend", "backends", multiple=True, help="Repeatable; combinations a model lacks are left out.")
@click.option("--dtype", "dtypes", multiple=True, help="Repeatable; default the protocol's.")
@click.option("--gpu", "gpus", multiple=True, help="Repeatable GPU types (basket names or Ray accelerator types).")
@click.option("--docs", type=int, default=None)
@click.option("--runs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--token-budget", type=int, default=None)
@click.option("--warmup", "warmup_batches", type=int, default=None)
@click.option("--device", default=None, help="cpu or cuda (default: this machine's; with --ray, cuda).")
@click.option("--compile/--no-compile", "compile", default=None)
@click.option("--tiny/--no-tiny", default=None)
@click.option("--weights", default=None, help="A checkpoint directory, present on every node.")
@options("out")
@click.option("--force", is_flag=True, help="Re-run every configuration, even those with records.")
@click.option("--retry-failed", is_flag=True, help="Re-run configurations whose record says failed.")
@click.option("--dry-run", is_flag=True, help="Show what would run and what is already done; run nothing.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Run on a Ray cluster: Ray's default address, or ADDRESS (auto, ray://head:10001).")
@click.option("--cpus-per-task", type=float, default=1.0, show_default=True)
@options("quiet")
def matrix(matrix_file, models, suites, protocols, backends, dtypes, gpus, out_dir, force, retry_failed, dry_run,
           ray_address, cpus_per_task, quiet, **run_options) -> None:
    """Run models x suites x protocols x backends x dtypes x GPU types, locally or on Ray (docs/cluster.md)."""
    from mbbench import matrix as mx
    from mbbench.console import print_table, summary_row

    say = None if quiet else (lambda message: click.echo(message, err=True))
    axes = {"models": models, "suites": suites, "protocols": protocols, "backends": backends, "dtypes": dtypes,
            "gpus": gpus}
    tasks, root, executor = mx.prepare(matrix_file, axes, run_options, ray_address, cpus_per_task, out_dir, say)
    if dry_run:
        to_run, skipped = mx.partition(tasks, mx.existing_records(root), force, retry_failed)
        print_table([mx.plan_row(t, "run") for t in to_run] + [mx.plan_row(o.task, f"done ({o.status})")
                                                               for o in skipped])
        click.echo(f"{len(to_run)} to run, {len(skipped)} already recorded (dry run: nothing ran)")
        return

    from mbbench.progress import progress_bar

    bars = []  # one bar over the configurations that run, with an ETA; made when the first one finishes

    def report(outcome, index: int, total: int) -> None:
        if not bars:
            bars.append(progress_bar(total, "matrix", enabled=not quiet, unit="config"))
        result = outcome.record.tokens_per_second
        text = f"{result:,.0f} tokens/s" if result else (outcome.record.reason or outcome.status)
        line = f"[{index}/{total}] {outcome.task.label}: {outcome.status}: {text} -> {outcome.path}"
        warning = getattr(outcome.record.payload, "load_warning", None)
        line += f"\nwarning: {outcome.task.label}: {warning}" if warning else ""
        if bars[0].enabled:
            bars[0].write(line)
        elif say:
            say(line)
        bars[0].advance()

    try:
        outcomes = mx.run_matrix(tasks, root, executor, force, retry_failed, on_outcome=report)
        for bar in bars:
            bar.close()
    except KeyboardInterrupt:
        click.echo("interrupted: every record that finished is written; run the same command to resume", err=True)
        sys.exit(130)
    print_table([summary_row(o.record, str(o.path), o.state) | {"gpu_type": o.task.accelerator or ""}
                 for o in outcomes])
    ran = sum(o.state == "ran" for o in outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    for outcome in failed:
        click.echo(f"failed: {outcome.task.label}: {outcome.record.reason}")
    click.echo(f"{ran} ran, {len(outcomes) - ran} already recorded, {len(failed)} failed; records under {root}")
    if failed:
        click.echo("failed configurations keep their records; --retry-failed runs them again", err=True)
        sys.exit(1)


from mbbench import cli_explore  # noqa: E402,F401  (registers verify, sweep, validate-model, report, list)


def main() -> None:
    cli(prog_name="mbbench")


if __name__ == "__main__":  # `python -m mbbench.cli`: run the imported module, where every command is registered
    from mbbench.cli import main as imported_main

    imported_main()
