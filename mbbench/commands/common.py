"""What every measuring command does alike: configurations from repeated options, progress lines, plan notes,
and the exit status."""

from __future__ import annotations

import sys

import click

from mbbench.plan import Plan, RunConfig


def configs(models, suites, **fields) -> list[RunConfig]:
    """One RunConfig per model x suite, the other fields shared."""
    return [RunConfig(model=m, suite=s, **fields) for m in models for s in suites]


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
