"""Commands that check, explore and read: verify, sweep (predicted, or measured with --measure), validate-model
and report.

Like every command, they parse options and call the library; a `UserError` becomes one line and exit status 2.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import pandas as pd

from mbbench import measured_sweep, results, validation
from mbbench.commands.console import print_table
from mbbench.commands.options import OPTIONS
from mbbench.dtypes import parse_dtype
from mbbench.errors import UserError
from mbbench.files import write_text
from mbbench.formatting import significant
from mbbench.models import registry
from mbbench.models.config import preset
from mbbench.records import MeasuredSweep
from mbbench.progress import progress_bar
from mbbench.report.figures import sweep_heatmap
from mbbench.report.render import build_report
from mbbench.report.sweeps import SweepView, correlation_text
from mbbench.report.sweeps import figure as sweep_figure
from mbbench.report.sweeps import header_lines as sweep_header
from mbbench.report.sweeps import table as sweep_table
from mbbench.sweep import RANKINGS, heatmap_title, parse_basket, parse_params, parse_range, ranked_frame, run_sweep
from mbbench.verify import verify as run_verify


@click.command()
@click.option("--model", default="modernbert-base", show_default=True, help="A ModernBERT-architecture model name.")
@click.option("--config", "config_name", default=None, help="Use a preset shape instead (tiny, base, large).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", "dtypes", multiple=True, help="Repeatable; default float32 (and bfloat16 on CUDA).")
@click.option("--backend", "backends", multiple=True, help="Repeatable; default every backend available here.")
def verify(model: str, config_name: str | None, device: str, dtypes: tuple[str, ...], backends: tuple[str, ...]) -> None:
    """Check every attention backend and layout, on every GEMM and element-wise kernel a run may choose here,
    against eager fp32 and transformers' ModernBertModel."""
    if config_name:
        cfg = preset(config_name)
    else:
        spec = registry.get_spec(model)
        if not spec.is_reference_modernbert:
            raise UserError(f"verify checks ModernBERT-architecture models; {model} is {spec.family}")
        cfg = registry.model_config(spec)
    chosen = [parse_dtype(d) for d in dtypes] or ([parse_dtype("float32")] +
                                                 ([parse_dtype("bfloat16")] if device.startswith("cuda") else []))
    checks = run_verify(cfg, device=device, dtypes=tuple(chosen), backends=list(backends) or None)
    print_table([{"backend": c.backend, "gemm": c.gemm, "elementwise": c.elementwise, "dtype": c.dtype, "layout": c.layout, "against": c.against,
                  "max_abs_error": f"{c.max_abs_error:.2e}", "max_rel_error": f"{c.max_rel_error:.2e}",
                  "tolerance": f"{c.tolerance:.3g} ({c.judged_on})",
                  "result": "bar" if c.is_bar else ("pass" if c.passed else "FAIL"),
                  "reason": getattr(c, "reason", None) or ""} for c in checks])
    checks = [c for c in checks if not c.is_bar]  # the bar rows set half-precision tolerances; they are not checks
    failed = [c for c in checks if not c.passed]
    if failed:
        click.echo(f"{len(failed)} of {len(checks)} checks failed", err=True)
        sys.exit(1)
    click.echo(f"all {len(checks)} checks passed")


MEASURE_ONLY = ("device", "threads", "rounds", "block", "suite", "docs", "seed", "gemm", "elementwise", "force",
                "quiet")  # options of `sweep --measure` alone
PREDICT_ONLY = ("gpus", "include_unusual")  # options of the predicted sweep alone


@click.command()
@click.option("--hidden", default="512:1536:64", show_default=True, help="START:STOP:STEP or a comma list.")
@click.option("--glu", default="1024:6144:64", show_default=True, help="Fused GLU width (2 x intermediate).")
@click.option("--layers", default="22", show_default=True)
@click.option("--head-dim", type=int, default=64, show_default=True)
@click.option("--params", default=None, help="Keep shapes of this size, e.g. 149M±5%.")
@click.option("--tokens", type=int, default=16384, show_default=True,
              help="Tokens per forward pass (with --suite: the token budget of each packed batch).")
@click.option("--gpus", default="basket", show_default=True,
              help="'basket' (paper's weights), 'all', or a list like T4,L4=2,H100 (predicted sweep).")
@click.option("--dtype", default=None, help="Default: bfloat16 predicted; measured, the device's (fp32 on a CPU).")
@click.option("--out", "out_dir", default="runs/sweeps", show_default=True)
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True, help="Rows to print.")
@click.option("--rank-by", type=click.Choice([*RANKINGS]), default="throughput", show_default=True,
              help="throughput: tokens/s at equal parameters; tokens: tokens/s; utilisation (predicted): how well "
                   "the GEMMs tile.")
@click.option("--include-unusual", is_flag=True,
              help="Rank shapes that are not 64-aligned or whose intermediate is narrower than hidden with the rest.")
@click.option("--measure", is_flag=True, help="Measure each shape on this device, beside its prediction for it.")
@click.option("--device", default="auto", show_default=True, help="--measure: auto, cpu, cuda or cuda:N.")
@OPTIONS["threads"]
@click.option("--rounds", type=click.IntRange(min=1), default=6, show_default=True,
              help="--measure: interleaved rounds (6 is the fewest with a 95% interval of the median).")
@click.option("--block", type=click.IntRange(min=1), default=measured_sweep.DEFAULT_BLOCK, show_default=True,
              help="--measure: shapes built and interleaved together (with the anchor); a record after each block.")
@click.option("--suite", default=None, help="--measure: a suite's documents instead of synthetic ones of 512.")
@click.option("--docs", type=click.IntRange(min=1), default=None, help="--measure: the suite's first N documents.")
@click.option("--seed", type=int, default=0, show_default=True, help="--measure: weights and synthetic token ids.")
@OPTIONS["gemm"]
@OPTIONS["elementwise"]
@click.option("--force", is_flag=True, help="--measure: measure every shape again.")
@click.option("--quiet", is_flag=True, help="--measure: no progress output.")
@click.pass_context
def sweep(ctx, hidden, glu, layers, head_dim, params, tokens, gpus, dtype, out_dir, top, rank_by, include_unusual,
          measure, **measuring) -> None:
    """Rank candidate shapes: predicted for tensor-core tiling and SM waves over the GPU basket, or with --measure
    measured on this device (interleaved rounds, resumable) beside its prediction, with the rank correlation."""
    given = {name for name in ctx.params if ctx.get_parameter_source(name).name != "DEFAULT"}
    refused = sorted(given & set(PREDICT_ONLY if measure else MEASURE_ONLY))
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise UserError(f"{flags}: {'the predicted sweep only' if measure else 'needs --measure'}")
    grid = (parse_range(hidden, "hidden"), parse_range(glu, "glu"), parse_range(layers, "layers"))
    if measure:
        return sweep_measured(grid, head_dim, parse_params(params), tokens, dtype, out_dir, top, rank_by, **measuring)
    return sweep_predicted(grid, head_dim, parse_params(params), tokens, gpus, dtype or "bfloat16", out_dir, top,
                           rank_by, include_unusual)


def sweep_predicted(grid, head_dim, params, tokens, gpus, dtype, out_dir, top, rank_by, include_unusual) -> None:
    """The predicted sweep: rank over the basket, write the CSV and the heatmap of the ranking's own metric."""
    weights = parse_basket(gpus)
    bars = []

    def on_candidate(total: int) -> None:  # the total first, then 0 per scored shape
        if not bars:
            bars.append(progress_bar(total, "sweep", unit="shape"))
        else:
            bars[0].advance()

    rows = run_sweep(*grid, head_dim, weights, tokens, params, dtype, on_candidate, rank_by, include_unusual)
    for bar in bars:
        bar.close()
    root = results.check_writable(out_dir)
    frame = pd.DataFrame(rows)
    csv_path = next_free(root / "sweep.csv")  # never over the previous sweep's
    heatmap_path = csv_path.with_name(csv_path.stem.replace("sweep", "sweep_heatmap") + ".png")
    write_text(csv_path, frame.to_csv(index=False))
    shown, metric, winner = ranked_frame(frame)
    sweep_heatmap(shown, heatmap_path, metric, winner, heatmap_title(frame, metric, f" over {', '.join(weights)}"))
    workload = f"{tokens:,} tokens per pass, {rows[0]['dtype']}"
    click.echo(f"ranked by {RANKINGS[rank_by]}, predicted for {', '.join(weights)} (measured here: --measure); "
               f"workload: {workload}" + ("" if include_unusual else
               "; shapes not 64-aligned or with intermediate < hidden after the others (--include-unusual)"))
    columns = ("rank", "hidden", "glu", "layers", "parameters_m", metric, "scaled_tokens_per_second",
               "basket_tokens_per_second", "basket_score", "paper_heuristic", "usual")
    print_table([{k: r[k] for k in dict.fromkeys(columns)} for r in rows[:top]])
    substituted = sorted({g for g in weights if rows and rows[0].get(f"{g}_dtype") not in (None, dtype)})
    if substituted:
        click.echo(f"note: {', '.join(substituted)} has no {rows[0]['dtype']}; scored in "
                   f"{rows[0][substituted[0] + '_dtype']} there (the CSV's <gpu>_dtype columns)")
    click.echo(f"{len(rows)} shapes scored over {', '.join(weights)} (predicted); wrote {csv_path} and "
               f"{heatmap_path}")


def sweep_measured(grid, head_dim, params, tokens, dtype, out_dir, top, rank_by, device, threads, rounds, block,
                   suite, docs, seed, gemm, elementwise, force, quiet) -> None:
    """The measured sweep: resolve, measure (resuming), write the record, CSV and figure, print the ranking."""
    if rank_by not in measured_sweep.RANKINGS:
        raise UserError(f"--rank-by {rank_by}: a measured sweep ranks by {' or '.join(measured_sweep.RANKINGS)} "
                        "(utilisation is the predicted GPU score)")
    settings = measured_sweep.SweepSettings(
        tuple(grid[0]), tuple(grid[1]), tuple(grid[2]), head_dim, params, tokens, suite, docs, rounds, block, dtype,
        threads, device, seed, rank_by, gemm, elementwise)
    plan = measured_sweep.resolve(settings)
    store = results.Store(out_dir)
    say = None if quiet else (lambda message: click.echo(f"[sweep] {message}", err=True))
    began = time.monotonic()
    try:
        outcome = measured_sweep.measure(plan, store, progress=say, force=force)
    except KeyboardInterrupt:
        found = store.find(plan.identity.key())
        kept = f"{len(found.payload.candidates)} of {len(plan.shapes)} shapes kept in {found.source_path}" \
            if found else "no block had finished; nothing written"
        click.echo(f"interrupted: {kept}; run the same command again to measure the rest", err=True)
        sys.exit(130)
    csv_path, figure_path = write_measured_outputs(outcome)
    print_measured(outcome, top, time.monotonic() - began)
    load = outcome.record.payload.load
    if load and load.warning:
        click.echo(f"warning: {load.warning}", err=True)
    above = mfu_above_peak(outcome.record.payload)
    if above:
        click.echo(f"warning: MFU above 100% ({above}): these shapes ran faster than the peak they are measured "
                   f"against ({outcome.record.payload.peak_note}), which was timed on a busier machine or on another "
                   "kernel; read their MFU as relative only", err=True)
    click.echo(f"wrote {outcome.path}, {csv_path}" + (f" and {figure_path}" if figure_path else ""))


def mfu_above_peak(payload: MeasuredSweep) -> str:
    """'96/128/1 2.74, ...': the shapes whose MFU exceeds 1 (a peak measured too low), or '' when none does."""
    return ", ".join(f"{measured_sweep.label(c)} {c.mfu:.2f}" for c in payload.candidates if c.mfu and c.mfu > 1)


def write_measured_outputs(outcome: measured_sweep.SweepOutcome) -> tuple[Path, Path | None]:
    """The CSV (`measured_sweep.table_rows`) and the figure beside the record, named after it."""
    view = SweepView.of_record(outcome.record)
    csv_path = outcome.path.with_suffix(".csv")
    write_text(csv_path, pd.DataFrame(view.rows()).to_csv(index=False))
    return csv_path, sweep_figure(view, outcome.path.with_suffix(".png"))


def print_measured(outcome: measured_sweep.SweepOutcome, top: int, seconds: float) -> None:
    """The terminal's account of a measured sweep: what it rests on, the ranking table, the rank agreement."""
    view = SweepView.of_record(outcome.record)
    for line in sweep_header(view):
        click.echo(line)
    print_table(sweep_table(view, top))
    click.echo(correlation_text(view.payload))
    click.echo(f"{outcome.measured} shapes measured now" + (f", {outcome.kept} kept from the earlier run"
                                                            if outcome.kept else "") + f" in {seconds:.0f} s")


def next_free(path: Path) -> Path:
    """`path`, or `stem-2.suffix`, `stem-3.suffix`, ... : the first name not taken."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def _value(number: float) -> str:
    """A validation cell: whole counts as they are (max batch 664), other values to 4 significant figures."""
    return f"{int(number):,}" if float(number).is_integer() else significant(number, 4)


@click.command(name="validate-model")
@click.option("--results", "results_dirs", multiple=True, default=["results"], show_default=True)
@click.option("--rows/--no-rows", "show_rows", default=True, show_default=True,
              help="Print every row before the summaries (--no-rows: the summaries only).")
def validate_model(results_dirs, show_rows: bool) -> None:
    """Performance and memory models vs published numbers and measured records: every row, the median error per
    source, the error per architecture and stack, and the tracked hold-out (rows no fitted constant reads).

    Paper rows are in-fit and leave-one-model-out; TensorRT demo rows leave-one-GPU-out and leave-one-model-out;
    MLPerf ratios and PyTorch rows are fit or hold-out rows by source; measured GPU records come from --results.
    """
    existing = [d for d in results_dirs if Path(d).is_dir()]
    records = [r.flatten() for r in results.read_records(existing)] if existing else []
    rows = validation.validation_tables(records)
    if show_rows:
        print_table([{"source": r.source, "model": r.model, "suite": r.suite, "gpu": r.gpu, "metric": r.metric,
                      "backend": r.backend, "measured": _value(r.measured), "predicted": _value(r.predicted),
                      "error": f"{r.error:+.1%}", "in_fit": "yes" if r.in_fit else "no", "note": r.note}
                     for r in rows])
    print_table([{"source": source, "metric": metric, "rows": sum(r.source == source and r.metric == metric
                                                                  for r in rows), "median |error|": f"{error:.1%}"}
                 for (source, metric), error in validation.median_errors(rows).items()])
    click.echo("\nPer architecture and stack (rows not in the fit of their own prediction):")
    print_table([{"architecture": arch, "stack": stack, "rows": summary.rows, "median |error|": f"{summary.median:.1%}",
                  "worst |error|": f"{summary.worst:.1%}"}
                 for (arch, stack), summary in validation.architecture_errors(rows).items()])
    held_out = validation.held_out(rows)
    summary = validation.summarise(held_out)
    click.echo(f"\nHeld out (read by no fitted constant): {summary.rows} rows "
               f"({', '.join(sorted({r.source for r in held_out}))}), median |error| {summary.median:.1%}, "
               f"worst {summary.worst:.1%} ({_worst(held_out)}); goals: median <= 15% "
               f"({'met' if summary.median <= 0.15 else 'MISSED'}), none > 30% "
               f"({'met' if summary.worst <= 0.30 else 'MISSED'})")
    transfer = [r for r in held_out if not validation.repeats_a_fit_row(r)]
    if transfer and len(transfer) < len(held_out):
        rest = validation.summarise(transfer)
        click.echo(f"Of them, {len(held_out) - len(transfer)} repeat a fitted GPU's MLPerf system in another round; "
                   f"the other {rest.rows} (GPUs or stacks no fit row measured the same way): median |error| "
                   f"{rest.median:.1%}, worst {rest.worst:.1%} ({_worst(transfer)})")


def _worst(rows: list) -> str:
    """The row with the largest |error|, in words."""
    row = max(rows, key=lambda r: abs(r.error))
    return f"{row.gpu} {row.source} {row.suite} {row.error:+.1%}"


@click.command()
@click.option("--results", "results_dirs", multiple=True, default=["results"], show_default=True,
              help="Repeatable: record directories from any number of machines.")
@click.option("--out", "out_dir", default="reports/latest", show_default=True)
@click.option("--model", default=None, help="Model of the GPU-basket figure (default: modernbert-base).")
@click.option("--baseline", default="hf-modernbert-base", show_default=True, help="Model of the speedup table.")
@click.option("--include-smoke", is_flag=True, help="Also show --tiny smoke records (left out by default).")
def report(results_dirs, out_dir, model, baseline, include_smoke) -> None:
    """Render report.md, index.html and PNG figures from records (never reruns anything)."""
    out = build_report(list(results_dirs), out_dir, model, baseline, include_smoke)
    click.echo(f"wrote {out / 'report.md'} and {out / 'index.html'}")
