"""`mbbench list models | suites | gpus | backends | engines`: what exists and what can run here."""

from __future__ import annotations

import click

from mbbench.commands.console import print_table
from mbbench.device import parse_device
from mbbench.dtypes import parse_dtype
from mbbench.engines import available_engines
from mbbench.hardware.gpus import basket
from mbbench.models import registry
from mbbench.models.attention import availability_table
from mbbench.suites import load_suite, suite_names


@click.group(name="list")
def list_group() -> None:
    """List models, suites, GPUs, attention backends or engines."""


@list_group.command(name="models")
def list_models() -> None:
    """Every model name, its parameters (counted on the meta device), limits, and whether it can run here."""
    rows = []
    for spec in registry.MODELS.values():
        missing = registry.available(spec)
        rows.append({"name": spec.name, "available": f"no: {missing}" if missing else "yes", "family": spec.family,
                     "parameters": "–" if missing else f"{registry.count_parameters(spec) / 1e6:.1f}M",
                     "published": f"{spec.published_parameters:g}M", "max_length": spec.max_length,
                     "unpadded": "yes" if spec.unpadded else "no",
                     "backends": ",".join(registry.backend_choices(spec)), "source": spec.source})
    print_table(rows)


@list_group.command(name="suites")
def list_suites() -> None:
    """Each suite's documents, total tokens and length statistics."""
    print_table([{**load_suite(name).statistics(), "fingerprint": load_suite(name).fingerprint}
                 for name in suite_names()])


@list_group.command(name="gpus")
def list_gpus() -> None:
    """The GPU basket: ids, aliases, SMs, dense tensor peaks (fp32 accumulate), memory, bandwidth."""
    print_table([{"id": g.id, "aliases": ",".join(g.aliases), "cc": ".".join(map(str, g.compute_capability)),
                  "sms": g.sm_count, "bf16_tflops": g.bf16_tflops if g.bf16_tflops is not None else "– (fp16)",
                  "fp16_tflops": g.fp16_tflops, "memory_gb": g.memory_gb, "bandwidth_gbs": g.bandwidth_gbs,
                  "l2_mb": g.l2_mb, "basket_weight": g.basket_weight} for g in basket().values()])


@list_group.command(name="backends")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="float32", show_default=True)
def list_backends(device: str, dtype: str) -> None:
    """Which attention backends can run on a device and dtype, and why not (UserError for a device this machine
    lacks, e.g. --device cuda without a CUDA GPU: nothing can be said to run there)."""
    parse_device(device)
    print_table([{"backend": name, "available": "yes" if a.ok else "no", "reason": a.reason}
                 for name, a in availability_table(device, parse_dtype(dtype))])


@list_group.command(name="engines")
def list_engines() -> None:
    """Each engine (`--engine`), whether its software is installed here, its version, and the extra that adds it."""
    print_table([{"engine": e.name, "installed": "yes" if e.installed else "no", "version": e.version or "",
                  "extra": f".[{e.extra}]" if e.extra else "(always)", "reason": e.reason}
                 for e in available_engines()])
