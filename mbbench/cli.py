"""Command line: the `mbbench` group; each command lives in `mbbench.commands` and is attached here.

`run | max-batch | predict | compare | latency | serve | matrix | verify | sweep | validate-model | report | list`.
A `UserError` anywhere becomes a one-line message and exit status 2; nothing is written before inputs are validated.
Ctrl-C exits 130 and names the records already written.
"""

from __future__ import annotations

import sys

import click

from mbbench.commands import explore, listing, measure, serving
from mbbench.commands import matrix as matrix_command
from mbbench import allocator
from mbbench.errors import UserError


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
    """Benchmark encoder transformers (ModernBERT and competitors) and explore hardware-aware shapes.

    Every command runs with mbbench's host allocator setting (glibc's mmap and trim thresholds raised, so large
    activations are reused instead of page-faulted in on every call; MBBENCH_ALLOCATOR=system turns it off).
    """
    try:
        allocator.configure()
    except ValueError as error:  # an unknown MBBENCH_ALLOCATOR
        raise UserError(str(error)) from None


for command in (measure.run, measure.max_batch_command, measure.predict_command, measure.compare,
                serving.latency, serving.serve, matrix_command.matrix, explore.verify, explore.sweep,
                explore.validate_model, explore.report, listing.list_group):
    cli.add_command(command)


def main() -> None:
    for stream in (sys.stdout, sys.stderr):  # a C locale's ASCII terminal: escape "–", never crash on it
        if (getattr(stream, "encoding", "") or "").lower().replace("-", "") != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    cli(prog_name="mbbench")



if __name__ == "__main__":  # `python -m mbbench.cli`
    main()
