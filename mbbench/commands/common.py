"""What every measuring command does alike: configurations from repeated options, progress lines, plan notes,
and the exit status."""

from __future__ import annotations

import os
import sys

import click

from mbbench.engines import DEFAULT_ENGINE
from mbbench.errors import UserError
from mbbench.plan import Plan, RunConfig
from mbbench.records import COMPILE_ENGINE

ENGINE_CACHE_ENV = "MBBENCH_ENGINE_CACHE"  # where engine exports are cached (docs/engines.md)


def configs(models, suites, **fields) -> list[RunConfig]:
    """One RunConfig per model x suite, the other fields shared."""
    return [RunConfig(model=m, suite=s, **fields) for m in models for s in suites]


def engine_cache() -> str | None:
    """Where engine exports are cached: $MBBENCH_ENGINE_CACHE, else None (engines.DEFAULT_CACHE_DIR,
    runs/.engine-cache). Never under --out: exports are large and `results/` is committed."""
    return os.environ.get(ENGINE_CACHE_ENV) or None


def engine_named(engine: str, compile_model: bool) -> str:
    """The engine a command line asks for: `--compile` is the deprecated spelling of `--engine torch-compile`
    (translated here, with a note saying so, and nowhere else). UserError when it is combined with another
    engine."""
    if not compile_model:
        return engine
    if engine not in (DEFAULT_ENGINE, COMPILE_ENGINE):
        raise UserError(f"--compile means --engine {COMPILE_ENGINE}; it cannot be combined with --engine {engine}")
    click.echo(f"note: --compile is deprecated; it means --engine {COMPILE_ENGINE}", err=True)
    return COMPILE_ENGINE


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
