"""Command line: `mbbench run | sweep | report | list | verify | maxbatch | validate-model | matrix | env`.

Every command reads options, calls the library, and prints. A `UserError` anywhere becomes a one-line
message and exit status 2; nothing is written before inputs are validated.
"""

from __future__ import annotations

import sys

import click

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


def parse_dtype(name: str):
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise UserError(f"unknown dtype {name!r}; choose from float32, bfloat16, float16")
    return table[name]


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
