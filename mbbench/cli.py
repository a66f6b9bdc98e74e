"""Command line: `mbbench run | sweep | report | list | verify | maxbatch | validate-model | matrix | env`.

Every command reads options, calls the library, and prints. A `UserError` anywhere becomes a one-line
message and exit status 2; nothing is written before inputs are validated.
"""

from __future__ import annotations

import sys

import click

from mbbench.dtypes import parse_dtype
from mbbench.errors import UserError


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as error:
            click.echo(f"mbbench: error: {error}", err=True)
            ctx.exit(2)


@click.group(cls=Group)
@click.version_option(package_name="mbbench")
def cli() -> None:
    """Benchmark encoder transformers (ModernBERT and competitors) and explore hardware-aware shapes."""


def echo_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """A plain aligned text table (the same rows the records hold)."""
    if not rows:
        click.echo("(nothing)")
        return
    columns = columns or list(rows[0])
    cells = [[str(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    click.echo("  ".join(col.ljust(w) for col, w in zip(columns, widths)))
    click.echo("  ".join("-" * w for w in widths))
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)))


# ----------------------------------------------------------------------------------------------------- verify

@cli.command()
@click.option("--model", default="modernbert-base", show_default=True, help="A ModernBERT-architecture model name.")
@click.option("--config", "config_name", default=None, help="Use a preset shape instead (tiny, base, large).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", "dtypes", multiple=True, help="Repeatable; default float32 (and bfloat16 on CUDA).")
@click.option("--backend", "backends", multiple=True, help="Repeatable; default every backend available here.")
def verify(model: str, config_name: str | None, device: str, dtypes: tuple[str, ...], backends: tuple[str, ...]) -> None:
    """Check every attention backend and layout against eager fp32 and transformers' ModernBertModel."""
    from mbbench.models import registry
    from mbbench.models.config import preset
    from mbbench.verify import verify as run_verify

    if config_name:
        cfg = preset(config_name)
    else:
        spec = registry.get_spec(model)
        if spec.kind != "reference":
            raise UserError(f"verify checks ModernBERT-architecture models; {model} is {spec.family}")
        cfg = registry.model_config(spec)
    chosen = [parse_dtype(d) for d in dtypes] or ([parse_dtype("float32")] +
                                                 ([parse_dtype("bfloat16")] if device.startswith("cuda") else []))
    checks = run_verify(cfg, device=device, dtypes=tuple(chosen), backends=list(backends) or None)
    echo_table([{"backend": c.backend, "dtype": c.dtype, "layout": c.layout, "against": c.against,
                 "max_abs_error": f"{c.max_abs_error:.2e}", "max_rel_error": f"{c.max_rel_error:.2e}",
                 "tolerance": f"{c.tolerance:.0e}", "result": "pass" if c.passed else "FAIL"} for c in checks])
    failed = [c for c in checks if not c.passed]
    if failed:
        click.echo(f"{len(failed)} of {len(checks)} checks failed", err=True)
        sys.exit(1)
    click.echo(f"all {len(checks)} checks passed")


# -------------------------------------------------------------------------------------------------------- run

DEFAULT_CPU_DOCS = 16  # the built-in default job on a GPU-less machine: about two minutes on 2 cores


def summary_row(record: dict) -> dict:
    stats = record.get("tokens_per_second_stats") or {}
    tps = record.get("tokens_per_second")
    row = {"model": record["model"], "suite": record["suite"], "kind": record["kind"], "status": record["status"],
           "backend": record.get("backend"), "dtype": record["dtype"], "docs": record.get("num_documents", ""),
           "batch": record.get("batch_size") or f"tb{record.get('token_budget')}",
           "tokens_per_second": f"{tps:,.0f}" if tps else "–",
           "iqr/median": f"{stats['iqr_over_median']:.1%}" if stats else "",
           "gpu": record["gpu"]["name"] if record.get("gpu") else ""}
    if record.get("measurement") == "max_batch":
        row["max_batch"] = record.get("max_batch_size") or f"tokens {record.get('max_token_budget')}"
    return row


@cli.command()
@click.option("--model", "models", multiple=True, default=["modernbert-base"], show_default=True,
              help="Repeatable. `mbbench list models` shows the names.")
@click.option("--suite", "suites", multiple=True, default=["short-variable"], show_default=True,
              help="Repeatable: a suite name from suites/ or a path to a .toml file.")
@click.option("--protocol", default="rigorous", show_default=True, type=click.Choice(["rigorous", "paper"]))
@click.option("--backend", default="auto", show_default=True, help="Attention backend (see `mbbench list backends`).")
@click.option("--dtype", default=None, help="Default: the protocol's (bf16 on GPU, fp32 on CPU; paper: fp32).")
@click.option("--batch-size", type=int, default=None, help="Documents per batch (default: 512 short, 32 long).")
@click.option("--token-budget", type=int, default=None, help="Unpadded models: tokens per batch instead.")
@click.option("--docs", type=int, default=None, help=f"Subsample the first N documents (recorded). "
              f"Default on CPU: {DEFAULT_CPU_DOCS}.")
@click.option("--runs", type=int, default=10, show_default=True, help="Timed passes over the suite.")
@click.option("--warmup", "warmup_batches", type=int, default=-1, help="Warmup batches (default: the protocol's).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--gpu", default="auto", show_default=True, help="The GPU the result is for (refused if not local).")
@click.option("--out", "out_dir", default="results", show_default=True, help="Records go to OUT/<gpu-id>/.")
@click.option("--force", is_flag=True, help="Re-run configurations whose record already exists.")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model (compile time recorded).")
@click.option("--time-transfer", is_flag=True, help="Include host-to-device copies in the timed passes.")
@click.option("--weights", default=None, help="A local checkpoint directory to load instead of random weights.")
@click.option("--tiny", is_flag=True, help="A tiny variant of each model's family (smoke tests).")
@click.option("--quiet", is_flag=True, help="No progress output; only the final table.")
@click.option("--max-batch", is_flag=True, help="Search the largest batch (or token budget) instead of timing.")
@click.option("--granularity", type=int, default=2, show_default=True, help="--max-batch: step of the result.")
@click.option("--safety-margin", type=float, default=0.0, show_default=True, help="--max-batch: fraction to drop.")
@click.option("--memory-limit", default=None, help="--max-batch: cap the allocator, e.g. 24GiB (emulation).")
@click.option("--predict", is_flag=True, help="Write a predicted record for --gpu from the performance model.")
def run(models, suites, protocol, backend, dtype, batch_size, token_budget, docs, runs, warmup_batches, device,
        gpu, out_dir, force, compile_model, time_transfer, weights, tiny, quiet, max_batch, granularity,
        safety_margin, memory_limit, predict) -> None:
    """Measure tokens/s of MODELs over SUITEs; one record per configuration under OUT/<gpu-id>/.

    With --max-batch, find the largest batch instead; with --predict, write predictions for --gpu.
    """
    if predict:
        return run_predictions(models, suites, protocol, dtype, batch_size, gpu, out_dir, force, quiet)
    from mbbench import results, runner
    from mbbench.hardware.gpus import check_requested_gpu, detect
    from mbbench.suites import load_suite

    local = detect(device)
    check_requested_gpu(gpu, local)
    if docs is None and local.kind == "cpu":
        docs = DEFAULT_CPU_DOCS
        if not quiet:
            click.echo(f"CPU run: subsampling {docs} documents per suite (--docs to change)", err=True)
    configs = [runner.RunConfig(model=m, suite=s, protocol=protocol, backend=backend, dtype=dtype,
                                batch_size=batch_size, token_budget=token_budget, docs=docs, runs=runs,
                                warmup_batches=warmup_batches, device=device, compile=compile_model,
                                time_transfer=time_transfer, weights=weights, tiny=tiny)
               for m in models for s in suites]
    for cfg in configs:  # validate everything before measuring anything
        cfg.validate()
        load_suite(cfg.suite)
    root = results.check_writable(out_dir)

    rows = []
    for cfg in configs:
        if max_batch:
            record = runner.max_batch(cfg, local, granularity, safety_margin, memory_limit)
            path = root / record["gpu_dir"] / f"{record['config_id']}.json"
            results.write_atomic(path, record)
            if not quiet:
                click.echo(f"[{cfg.model} / {cfg.suite}] {len(record.get('trials', []))} trials in "
                           f"{record.get('search_seconds', 0):.1f} s; wrote {path}", err=True)
        else:
            record = run_one(cfg, local, root, force, quiet)
        rows.append(summary_row(record))
    echo_table(rows)


def run_one(cfg, local, root, force: bool, quiet: bool) -> dict:
    """Run (or skip) one configuration and write its record atomically."""
    import json

    from mbbench import results, runner
    from mbbench.suites import load_suite

    suite = load_suite(cfg.suite)
    ident = runner.plan(cfg, suite, local.kind).config_id
    path = root / local.result_dir / f"{ident}.json"
    if path.exists() and not force:
        if not quiet:
            click.echo(f"skip {ident}: record exists ({path}); --force to re-run", err=True)
        return json.loads(path.read_text())
    say = None if quiet else (lambda message: click.echo(f"[{cfg.model} / {cfg.suite}] {message}", err=True))

    def on_run(index: int, seconds: float) -> None:
        if say:
            say(f"pass {index + 1}/{cfg.runs}: {seconds:.3f} s")

    record = runner.run(cfg, local, progress=say, on_run=on_run)
    results.write_atomic(path, record)
    if record.get("unstable") and not quiet:
        click.echo(f"warning: {ident}: IQR/median {record['tokens_per_second_stats']['iqr_over_median']:.1%} "
                   "exceeds 10%: the result is unstable", err=True)
    if say:
        say(f"wrote {path}")
    return record



def run_predictions(models, suites, protocol, dtype, batch_size, gpu, out_dir, force, quiet) -> None:
    """`run --predict`: predicted records for --gpu (any machine; nothing is measured)."""
    from mbbench import predict, results

    if gpu == "auto":
        raise UserError("--predict needs --gpu NAME (the basket GPU to predict for)")
    root = results.check_writable(out_dir)
    rows = []
    for model in models:
        for suite in suites:
            record = predict.predicted_record(model, suite, gpu, protocol, dtype, batch_size)
            path = root / record["gpu_dir"] / f"{record['config_id']}.json"
            if path.exists() and not force:
                if not quiet:
                    click.echo(f"skip {path.name}: record exists; --force to rewrite", err=True)
            else:
                results.write_atomic(path, record)
            mfu = record.get("mfu")
            rows.append(summary_row(record) | {"mfu": f"{mfu:.1%}" if mfu is not None else "",
                                               "max_batch": record.get("max_batch_size", "")})
    echo_table(rows)


# ----------------------------------------------------------------------------------------------------- matrix

@cli.command()
@click.option("--file", "matrix_file", default=None, help="A matrix TOML file (axes and [options]); "
              "the flags below override what it says.")
@click.option("--model", "models", multiple=True, help="Repeatable.")
@click.option("--suite", "suites", multiple=True, help="Repeatable: a suite name or a .toml path.")
@click.option("--protocol", "protocols", multiple=True, type=click.Choice(["rigorous", "paper"]), help="Repeatable.")
@click.option("--backend", "backends", multiple=True, help="Repeatable; combinations a model lacks are left out.")
@click.option("--dtype", "dtypes", multiple=True, help="Repeatable; default the protocol's.")
@click.option("--gpu", "gpus", multiple=True, help="Repeatable GPU types: basket names (t4, a100, h100) or Ray "
              "accelerator types. Locally only this machine's type runs; --ray places each on its type.")
@click.option("--docs", type=int, default=None, help=f"Subsample N documents (CPU default {DEFAULT_CPU_DOCS}).")
@click.option("--runs", type=int, default=None, help="Timed passes (default 10).")
@click.option("--batch-size", type=int, default=None)
@click.option("--token-budget", type=int, default=None)
@click.option("--warmup", "warmup_batches", type=int, default=None)
@click.option("--device", default=None, help="cpu or cuda (default: this machine's; with --ray, cuda).")
@click.option("--compile/--no-compile", "compile_model", default=None)
@click.option("--tiny/--no-tiny", default=None, help="Tiny variants of each model's family (smoke runs).")
@click.option("--weights", default=None, help="A checkpoint directory, present on every node.")
@click.option("--out", "out_dir", default="results", show_default=True, help="Records go to OUT/<gpu-id>/.")
@click.option("--force", is_flag=True, help="Re-run every configuration, even those with records.")
@click.option("--retry-failed", is_flag=True, help="Re-run configurations whose record says failed.")
@click.option("--dry-run", is_flag=True, help="Show what would run and what is already done; run nothing.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Run on a Ray cluster: Ray's default address, or ADDRESS (auto, ray://head:10001).")
@click.option("--cpus-per-task", type=float, default=1.0, show_default=True, help="--ray: CPUs each task asks for.")
@click.option("--quiet", is_flag=True)
def matrix(matrix_file, models, suites, protocols, backends, dtypes, gpus, docs, runs, batch_size, token_budget,
           warmup_batches, device, compile_model, tiny, weights, out_dir, force, retry_failed, dry_run, ray_address,
           cpus_per_task, quiet) -> None:
    """Run a matrix (models x suites x protocols x backends x dtypes x GPU types), locally or on Ray.

    Each configuration runs as `mbbench run` would and its record lands in OUT/<gpu-id>/. Configurations
    with a record are skipped, so re-running resumes; a failed one is recorded with its reason.
    """
    from dataclasses import replace

    from mbbench import matrix as mx
    from mbbench import results

    say = None if quiet else (lambda message: click.echo(message, err=True))
    use_ray = ray_address is not None
    if use_ray:
        from mbbench.cluster import RayExecutor, import_ray

        import_ray()  # fail now, with the install hint, not after planning
    file_data = mx.read_matrix_file(matrix_file) if matrix_file else {}
    options = {"docs": docs, "runs": runs, "batch_size": batch_size, "token_budget": token_budget,
               "warmup_batches": warmup_batches, "device": device, "compile": compile_model, "tiny": tiny,
               "weights": weights}
    spec = mx.build_spec(file_data, {"models": models, "suites": suites, "protocols": protocols,
                                     "backends": backends, "dtypes": dtypes, "gpus": gpus}, options)
    device_kind, spec, local_label = _matrix_device(spec, use_ray)
    if device_kind == "cpu" and spec.options.get("docs") is None:
        spec = replace(spec, options=spec.options | {"docs": DEFAULT_CPU_DOCS})
        if say:
            say(f"CPU matrix: subsampling {DEFAULT_CPU_DOCS} documents per suite (--docs to change)")
    command_line = " ".join(["mbbench", *sys.argv[1:]])
    tasks, notes = mx.expand(spec, device_kind, command_line)
    if not tasks:
        raise UserError("the matrix has no configuration a model can run: " + "; ".join(notes))
    for note in notes:
        if say:
            say(note)
    if not use_ray:
        tasks = _runnable_here(tasks, local_label, say)
    root = results.check_writable(out_dir)
    if dry_run:
        to_run, skipped = mx.partition(tasks, mx.existing_records(root), force, retry_failed)
        echo_table([_plan_row(t, "run") for t in to_run] + [_plan_row(o.task, f"done ({o.status})") for o in skipped])
        click.echo(f"{len(to_run)} to run, {len(skipped)} already recorded (dry run: nothing ran)")
        return
    executor = RayExecutor(ray_address or None, cpus_per_task, say) if use_ray else mx.LocalExecutor(say)

    def report(outcome, index: int, total: int) -> None:
        if say:
            record = outcome.record
            tps = record.get("tokens_per_second")
            result = f"{tps:,.0f} tokens/s" if tps else (record.get("reason") or record["status"])
            say(f"[{index}/{total}] {outcome.task.label}: {record['status']}: {result} -> {outcome.path}")

    try:
        outcomes = mx.run_matrix(tasks, root, executor, force, retry_failed, on_outcome=report)
    except KeyboardInterrupt:
        click.echo("interrupted: every record that finished is written; run the same command to resume", err=True)
        sys.exit(130)
    echo_table([summary_row(o.record) | {"gpu_type": o.task.accelerator or "", "state": o.state,
                                         "reason": (o.record.get("reason") or "")[:70]} for o in outcomes])
    ran = sum(o.state == "ran" for o in outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    click.echo(f"{ran} ran, {len(outcomes) - ran} already recorded, {len(failed)} failed; records under {root}")
    if failed:
        click.echo("failed configurations keep their records; --retry-failed runs them again", err=True)
        sys.exit(1)


def _matrix_device(spec, use_ray: bool):
    """(device kind, spec with each task's device, this machine's GPU type when local)."""
    from dataclasses import replace

    from mbbench.hardware.gpus import detect
    from mbbench.matrix import dir_label

    device = spec.options.get("device") or ("cuda" if use_ray else "auto")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise UserError(f"--device {device!r}: expected cpu or cuda")
    if use_ray:
        kind = "cpu" if device == "cpu" else "cuda"
        return kind, replace(spec, options=spec.options | {"device": kind}), None
    local = detect(device)
    label = dir_label(local.result_dir)
    if not spec.gpus and label:  # this machine's type, so records resume across local and Ray runs
        spec = replace(spec, gpus=(label,))
    return local.kind, replace(spec, options=spec.options | {"device": device}), label


def _runnable_here(tasks: list, local_label: str | None, say) -> list:
    """Without Ray, only this machine's GPU type runs; the rest wait for --ray (said, not failed)."""
    here = [t for t in tasks if t.accelerator == local_label]
    others = sorted({t.accelerator or "any" for t in tasks if t.accelerator != local_label})
    if not here:
        raise UserError(f"none of the matrix's GPU types ({', '.join(others)}) is this machine's "
                        f"({local_label or 'CPU only'}); use --ray to run them on a cluster")
    if others and say:
        say(f"{len(tasks) - len(here)} configurations need other GPU types ({', '.join(others)}): left for --ray")
    return here


def _plan_row(task, state: str) -> dict:
    return {"model": task.config.model, "suite": task.suite.name, "gpu_type": task.accelerator or "",
            "protocol": task.config.protocol, "backend": task.config.backend, "dtype": task.planned.dtype,
            "config_id": task.planned.config_id, "state": state}


# ------------------------------------------------------------------------------------------------------ sweep

@cli.command()
@click.option("--hidden", default="512:1536:64", show_default=True, help="START:STOP:STEP or a comma list.")
@click.option("--glu", default="1024:6144:64", show_default=True, help="Fused GLU width (2 x intermediate).")
@click.option("--layers", default="22", show_default=True)
@click.option("--head-dim", type=int, default=64, show_default=True)
@click.option("--params", default=None, help="Keep shapes of this size, e.g. 149M±5%.")
@click.option("--tokens", type=int, default=16384, show_default=True, help="Tokens per forward pass.")
@click.option("--gpus", default="basket", show_default=True,
              help="'basket' (paper's weights), 'all', or a list like T4,L4=2,H100.")
@click.option("--dtype", default="bfloat16", show_default=True)
@click.option("--out", "out_dir", default="results/sweeps", show_default=True)
@click.option("--top", type=int, default=15, show_default=True, help="Rows to print.")
def sweep(hidden, glu, layers, head_dim, params, tokens, gpus, dtype, out_dir, top) -> None:
    """Score candidate shapes for tensor-core tiling and SM waves over the GPU basket (predicted)."""
    import pandas as pd

    from mbbench import results
    from mbbench.report.figures import sweep_heatmap
    from mbbench.sweep import parse_basket, parse_params, parse_range, run_sweep

    weights = parse_basket(gpus)
    rows = run_sweep(parse_range(hidden, "hidden"), parse_range(glu, "glu"), parse_range(layers, "layers"),
                     head_dim, weights, tokens, parse_params(params), dtype)
    root = results.check_writable(out_dir)
    frame = pd.DataFrame(rows)
    csv_path = root / "sweep.csv"
    frame.to_csv(csv_path, index=False)
    sweep_heatmap(frame, root / "sweep_heatmap.png")
    echo_table([{k: r[k] for k in ("rank", "hidden", "glu", "layers", "parameters_m", "aligned_64", "basket_score",
                                   "paper_heuristic", "basket_tokens_per_second")} for r in rows[:top]])
    click.echo(f"{len(rows)} shapes scored over {', '.join(weights)} (predicted); wrote {csv_path}")


# --------------------------------------------------------------------------------------------- validate-model

@cli.command(name="validate-model")
@click.option("--results", "results_dirs", multiple=True, default=["results"], show_default=True)
def validate_model(results_dirs) -> None:
    """Performance model vs calibration.csv (leave-one-GPU-out) and vs measured GPU records."""
    import statistics
    from pathlib import Path

    from mbbench import predict, results
    from mbbench.hardware import perfmodel

    rows = perfmodel.leave_one_gpu_out(list(perfmodel.calibration_rows()))
    existing = [d for d in results_dirs if Path(d).is_dir()]
    rows += predict.validation_rows(results.read_records(existing)) if existing else []
    echo_table([{"gpu": r["gpu"], "source": r["source"][:60], "measured_tps": f"{r['measured']:,.0f}",
                 "predicted_tps": f"{r['predicted']:,.0f}", "error": f"{r['error']:+.1%}"} for r in rows])
    errors = [abs(r["error"]) for r in rows]
    click.echo(f"median |error| {statistics.median(errors):.1%} over {len(rows)} rows "
               f"(calibration rows are leave-one-GPU-out)")


# ----------------------------------------------------------------------------------------------------- report

@cli.command()
@click.option("--results", "results_dirs", multiple=True, default=["results"], show_default=True,
              help="Repeatable: record directories from any number of machines.")
@click.option("--out", "out_dir", default="reports/latest", show_default=True)
@click.option("--model", default="modernbert-base", show_default=True, help="Model of the GPU-basket figure.")
@click.option("--baseline", default="hf-modernbert-base", show_default=True, help="Model of the speedup table.")
def report(results_dirs, out_dir, model, baseline) -> None:
    """Render report.md, index.html and PNG figures from records (never reruns anything)."""
    from mbbench.report.render import build_report

    out = build_report(list(results_dirs), out_dir, model, baseline)
    click.echo(f"wrote {out / 'report.md'} and {out / 'index.html'}")

# ------------------------------------------------------------------------------------------------------- list

@cli.group(name="list")
def list_group() -> None:
    """List models, suites, GPUs or attention backends."""


@list_group.command(name="models")
def list_models() -> None:
    """Every model name, its parameters (counted on the meta device) and limits."""
    from mbbench.models import registry

    rows = []
    for spec in registry.MODELS.values():
        rows.append({"name": spec.name, "family": spec.family,
                     "parameters": f"{registry.count_parameters(spec) / 1e6:.1f}M",
                     "published": f"{spec.published_parameters:g}M", "max_length": spec.max_length,
                     "unpadded": "yes" if spec.unpadded else "no",
                     "backends": ",".join(registry.backend_choices(spec)), "source": spec.source})
    echo_table(rows)


@list_group.command(name="suites")
def list_suites() -> None:
    """Each suite's documents, total tokens and length statistics."""
    from mbbench.suites import load_suite, suite_names

    echo_table([{**load_suite(name).statistics(), "fingerprint": load_suite(name).fingerprint}
                for name in suite_names()])


@list_group.command(name="gpus")
def list_gpus() -> None:
    """The GPU basket: ids, aliases, SMs, dense tensor peaks (fp32 accumulate), memory, bandwidth."""
    from mbbench.hardware.gpus import basket

    echo_table([{"id": g.id, "aliases": ",".join(g.aliases), "cc": ".".join(map(str, g.compute_capability)),
                 "sms": g.sm_count, "bf16_tflops": g.bf16_tflops if g.bf16_tflops is not None else "– (fp16)",
                 "fp16_tflops": g.fp16_tflops, "memory_gb": g.memory_gb, "bandwidth_gbs": g.bandwidth_gbs,
                 "l2_mb": g.l2_mb, "basket_weight": g.basket_weight} for g in basket().values()])


@list_group.command(name="backends")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="float32", show_default=True)
def list_backends(device: str, dtype: str) -> None:
    """Which attention backends can run on a device and dtype, and why not."""
    from mbbench.models.attention import availability_table

    echo_table([{"backend": name, "available": "yes" if a.ok else "no", "reason": a.reason}
                for name, a in availability_table(device, parse_dtype(dtype))])


def main() -> None:
    cli(prog_name="mbbench")


if __name__ == "__main__":
    main()
