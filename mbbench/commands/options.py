"""Command-line options shared by mbbench's commands: each defined once, attached by name with `options`."""

from __future__ import annotations

import click

from mbbench.models.elementwise import KERNELS as ELEMENTWISE_KERNELS
from mbbench.models.gemm import KERNELS as GEMM_KERNELS
from mbbench.plan import DEFAULT_CPU_DOCS
from mbbench.units import SIZE, number

# Options shared by the commands that take a configuration: defined once, attached by name.
OPTIONS = {
    "models": click.option("--model", "models", multiple=True, default=["modernbert-base"], show_default=True,
                           help="Repeatable. `mbbench list models` shows the names."),
    "suites": click.option("--suite", "suites", multiple=True, default=["short-variable"], show_default=True,
                           help="Repeatable: a suite name or a path to a .toml file (docs/suites.md)."),
    "protocol": click.option("--protocol", default="rigorous", show_default=True,
                             type=click.Choice(["rigorous", "paper"])),
    "backend": click.option("--backend", default="auto", show_default=True,
                            help="Attention backend (`mbbench list backends`)."),
    "dtype": click.option("--dtype", default=None, help="Default: the protocol's (bf16 on GPU, fp32 on CPU)."),
    "batch_size": click.option("--batch-size", type=int, default=None,
                               help="Documents per batch (default: 512 short, 32 long)."),
    "token_budget": click.option("--token-budget", type=int, default=None,
                                 help="Unpadded models: tokens per batch instead of --batch-size."),
    "docs": click.option("--docs", type=int, default=None,
                         help=f"Use the first N documents (recorded). Default for a CPU run: {DEFAULT_CPU_DOCS}."),
    # latency and serve draw their requests from the suite: every document by default, on any device
    "request_docs": click.option("--docs", type=int, default=None,
                                 help="Draw requests from the first N documents (recorded). Default: all."),
    "runs": click.option("--runs", "passes", type=int, default=10, show_default=True,
                         help="Timed passes over the suite."),
    "warmup": click.option("--warmup", "warmup_batches", type=int, default=None,
                           help="Warmup batches (default: the protocol's)."),
    "device": click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    "gpu": click.option("--gpu", default="auto", show_default=True,
                        help="The GPU the result is for (refused if it is not the local one)."),
    "out": click.option("--out", "out_dir", default="runs", show_default=True,
                        help="Records go to OUT/<device>/ (the project's reference records live in results/)."),
    "force": click.option("--force", is_flag=True, help="Re-run configurations whose record already exists."),
    "engine": click.option("--engine", default="torch", show_default=True,
                           help="What runs the model: torch, torch-compile, onnxruntime or openvino "
                                "(`mbbench list engines`). Checked for parity with torch before it is timed."),
    "threads": click.option("--threads", type=int, default=None,
                            help="Intra-op threads for every engine (default: torch's current count); inter-op "
                                 "threads 1. Part of a CPU record's identity."),
    "gemm": click.option("--gemm", type=click.Choice(GEMM_KERNELS), default=None,
                         help="Pin our own models' GEMM kernel (default: chosen once per CPU from measured timings "
                              "kept in the kernel cache, ties to torch). Part of the record's identity."),
    "elementwise": click.option("--elementwise", type=click.Choice(ELEMENTWISE_KERNELS), default=None,
                                help="Pin our own models' RoPE + gated-activation kernel (default: chosen once per "
                                     "CPU like --gemm, ties to eager). Part of the record's identity."),
    "compile": click.option("--compile", "compile_model", is_flag=True,
                            help="Deprecated: means --engine torch-compile."),
    "time_transfer": click.option("--time-transfer", is_flag=True, help="Time host-to-device copies too."),
    "weights": click.option("--weights", default=None, help="A local checkpoint directory instead of random weights."),
    "tiny": click.option("--tiny", is_flag=True, help="A tiny variant of each model's family (smoke tests)."),
    "quiet": click.option("--quiet", is_flag=True, help="No progress output; only the final table."),
    "granularity": click.option("--granularity", type=int, default=2, show_default=True, help="Step of the result."),
    "safety_margin": click.option("--safety-margin", type=number(0.0, 1.0, high_open=True), default=0.0, show_default=True,
                                  help="Fraction of the result to drop."),
    "memory_limit": click.option("--memory-limit", type=SIZE, default=None, help="Cap the allocator, e.g. 24GiB (emulation)."),
}


def options(*names: str):
    """Attach the shared options `names` to a command."""
    def attach(command):
        for name in reversed(names):
            command = OPTIONS[name](command)
        return command
    return attach
