"""What every measuring command does alike: configurations from repeated options, progress lines, plan notes,
and the exit status."""

from __future__ import annotations

import os
import sys

import click

from mbbench.plan import Plan, RunConfig

ENGINE_CACHE_ENV = "MBBENCH_ENGINE_CACHE"  # where engine exports are cached (docs/engines.md)


def configs(models, suites, **fields) -> list[RunConfig]:
    """One RunConfig per model x suite, the other fields shared."""
    return [RunConfig(model=m, suite=s, **fields) for m in models for s in suites]


def engine_cache() -> str | None:
    """Where engine exports are cached: $MBBENCH_ENGINE_CACHE, else None (engines.DEFAULT_CACHE_DIR,
    runs/.engine-cache). Never under --out: exports are large and `results/` is committed."""
    return os.environ.get(ENGINE_CACHE_ENV) or None


def note_compile(compile_model: bool) -> None:
    """`--compile` is deprecated: say what it means (RunConfig turns it into the engine)."""
    if compile_model:
        click.echo("note: --compile is deprecated; it means --engine torch-compile", err=True)


def finish(code: int) -> None:
    """Exit with `code` unless it is 0 (then the command returns normally)."""
    if code:
        sys.exit(code)


def progress_for(plan: Plan, quiet: bool):
    """A progress callback printing `[model / suite] message` on stderr; None when quiet."""
    return None if quiet else (lambda message: click.echo(f"[{plan.label}] {message}", err=True))


def echo_notes(plans: list[Plan], quiet: bool) -> None:
    """Each distinct note of the resolved plans (subsampling, a dtype overriding the protocol, ...), on stderr."""
    if not quiet:
        for note in sorted({n for p in plans for n in p.notes}):
            click.echo(note, err=True)
