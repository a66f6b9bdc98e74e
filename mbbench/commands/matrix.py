"""`mbbench matrix`: models x suites x protocols x backends x dtypes x engines x GPU types, locally or on Ray.

Planning, resume and execution are `mbbench.matrix`'s (and `mbbench.cluster`'s for Ray); this module turns the
command line into a matrix, picks the executor and prints what happened.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import click

from mbbench import matrix as mx
from mbbench.cluster import RayExecutor, import_ray
from mbbench.commands.console import print_table, summary_row, warnings_of
from mbbench.commands.options import options
from mbbench.progress import progress_bar
from mbbench.results import check_writable
from mbbench.units import number


def prepare(matrix_file: str | None, axes: dict, run_options: dict, ray_address: str | None, cpus_per_task: float,
            out_dir: str, say: Callable[[str], None] | None,
            dry_run: bool = False) -> tuple[list[mx.Task], Path, mx.Executor]:
    """What `mbbench matrix` runs: (tasks, results root, executor), every input validated first. A dry run of a
    matrix that names GPU types plans every one, as a cluster would run it, whatever this machine has; one that
    names none plans what this machine would run (its device and dtype), so it sees the records a run resumes."""
    use_ray = ray_address is not None
    if use_ray:
        import_ray()  # fail now, with the install hint, not after planning
    file_data = mx.read_matrix_file(matrix_file) if matrix_file else {}
    spec = mx.build_spec(file_data, axes, run_options)
    as_cluster = use_ray or (dry_run and bool(spec.gpus))
    tasks = mx.plan_matrix(spec, as_cluster, " ".join(["mbbench", *sys.argv[1:]]), say)
    root = check_writable(out_dir)
    executor = RayExecutor(ray_address or None, cpus_per_task, say) if use_ray else mx.LocalExecutor(say)
    return tasks, root, executor


@click.command()
@click.option("--file", "matrix_file", default=None, help="A matrix TOML file (axes and [options]).")
@click.option("--model", "models", multiple=True, help="Repeatable.")
@click.option("--suite", "suites", multiple=True, help="Repeatable: a suite name or a .toml path.")
@click.option("--protocol", "protocols", multiple=True, type=click.Choice(["rigorous", "paper"]))
@click.option("--backend", "backends", multiple=True, help="Repeatable; combinations a model lacks are left out.")
@click.option("--dtype", "dtypes", multiple=True, help="Repeatable; default the protocol's.")
@click.option("--engine", "engines", multiple=True,
              help="Repeatable: torch (default), torch-compile, onnxruntime, openvino; combinations a model's layout "
                   "refuses are left out.")
@click.option("--gpu", "gpus", multiple=True, help="Repeatable GPU types (basket names or Ray accelerator types).")
@click.option("--docs", type=int, default=None)
@click.option("--runs", type=int, default=None, help="Timed passes over the suite.")
@click.option("--batch-size", type=int, default=None)
@click.option("--token-budget", type=int, default=None)
@click.option("--warmup", "warmup_batches", type=int, default=None)
@click.option("--device", default=None, help="cpu or cuda (default: this machine's; with --ray, cuda).")
@click.option("--compile/--no-compile", "compile", default=None, help="Deprecated: --engine torch-compile.")
@options("threads")
@click.option("--tiny/--no-tiny", default=None)
@click.option("--weights", default=None, help="A checkpoint directory, present on every node.")
@options("out")
@click.option("--force", is_flag=True, help="Re-run every configuration, even those with records.")
@click.option("--retry-failed", is_flag=True, help="Re-run configurations whose record says failed.")
@click.option("--dry-run", is_flag=True, help="Show what would run and what is already done; run nothing.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Run on a Ray cluster: Ray's default address, or ADDRESS (auto, ray://head:10001).")
@click.option("--cpus-per-task", type=number(0.0, None, low_open=True), default=1.0, show_default=True,
              help="CPUs Ray reserves per task (a positive number).")
@options("quiet")
def matrix(matrix_file, models, suites, protocols, backends, dtypes, engines, gpus, out_dir, force, retry_failed,
           dry_run, ray_address, cpus_per_task, quiet, **run_options) -> None:
    """Run models x suites x protocols x backends x dtypes x engines x GPU types, locally or on Ray
    (docs/cluster.md)."""
    say = None if quiet else (lambda message: click.echo(message, err=True))
    axes = {"models": models, "suites": suites, "protocols": protocols, "backends": backends, "dtypes": dtypes,
            "engines": engines, "gpus": gpus}
    tasks, root, executor = prepare(matrix_file, axes, run_options, ray_address, cpus_per_task, out_dir, say,
                                    dry_run)
    if dry_run:
        to_run, skipped = mx.partition(tasks, mx.open_store(root), force, retry_failed)
        print_table([mx.plan_row(t, "run") for t in to_run] + [mx.plan_row(o.task, f"done ({o.status})")
                                                               for o in skipped])
        click.echo(f"{len(to_run)} to run, {len(skipped)} already recorded (dry run: nothing ran)")
        return

    bars = []  # one bar over the configurations that run, with an ETA; made when the first one finishes

    def report(outcome, index: int, total: int) -> None:
        if not bars:
            bars.append(progress_bar(total, "matrix", enabled=not quiet, unit="config"))
        result = outcome.record.tokens_per_second
        text = f"{result:,.0f} tokens/s" if result else (outcome.record.reason or outcome.status)
        line = f"[{index}/{total}] {outcome.task.label}: {outcome.status}: {text} -> {outcome.path}"
        line += "".join(f"\nwarning: {outcome.task.label}: {w}" for w in warnings_of(outcome.record))
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
