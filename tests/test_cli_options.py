"""Help offers only what a command accepts (issue 34 item 6: `predict --help` listed --engine and --threads, then
refused both).

The walk: every visible option of every command, given alone at a value other than its default, is accepted, or
refused only for what this machine lacks (a GPU, Ray), with that reason. The measuring itself is replaced (nothing
is built or timed); everything before it (parsing, validation, plans) runs as it would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from mbbench.cli import cli
from mbbench.commands import explore, measure, serving

ROOT = Path(__file__).parent.parent
TINY = ["--tiny", "--device", "cpu", "--docs", "2", "--runs", "1"]

# What each command needs besides the option under test ({out} is a fresh directory).
BASE = {
    "run": [*TINY, "--out", "{out}"],
    "max-batch": ["--tiny", "--device", "cpu", "--emulate-oom-above", "4096", "--out", "{out}"],
    "predict": ["--gpu", "T4", "--out", "{out}"],
    "compare": [*TINY, "--model", "modernbert-base", "--model", "gte-en-mlm-base-unpadded", "--out", "{out}"],
    "latency": ["--tiny", "--device", "cpu", "--docs", "2", "--out", "{out}"],
    "serve": ["--tiny", "--device", "cpu", "--docs", "2", "--rate", "1", "--out", "{out}"],
    "matrix": ["--model", "modernbert-base", "--suite", "short-fixed", "--device", "cpu", "--dry-run",
               "--out", "{out}"],
    "verify": [],
    "sweep": ["--hidden", "512,768", "--glu", "1536,2304", "--layers", "4", "--out", "{out}"],
    "validate-model": ["--results", str(ROOT / "results" / "cpu")],
    "report": ["--results", str(ROOT / "results" / "cpu"), "--out", "{out}"],
    "list backends": [],
}

# Where the option under test needs another model than the command's usual line (a checkpoint is of one model),
# and the options of `sweep --measure` alone (a small measured grid; the measuring itself is replaced).
MEASURED_SWEEP = ["--measure", "--device", "cpu", "--hidden", "64,128", "--glu", "256", "--layers", "1", "--out",
                  "{out}"]
BASE_FOR = {("matrix", "--weights"): ["--model", "hf-modernbert-base", "--suite", "short-fixed", "--device", "cpu",
                                      "--tiny", "--dry-run", "--out", "{out}"],
            **{("sweep", "--" + name.replace("_", "-")): MEASURED_SWEEP for name in explore.MEASURE_ONLY},
            ("sweep", "--docs"): [*MEASURED_SWEEP, "--suite", "short-fixed"]}  # --docs counts a suite's documents

# A value other than the default, by option; (command, option) where a command needs its own.
VALUES = {
    "--model": ["hf-modernbert-base"], "--suite": ["short-fixed"], "--protocol": ["paper"], "--backend": ["sdpa"],
    "--dtype": ["float16"], "--batch-size": ["3"], "--token-budget": ["1024"], "--docs": ["3"], "--runs": ["2"],
    "--warmup": ["1"], "--device": ["cpu"], "--engine": ["torch-compile"], "--threads": ["1"], "--out": ["{out}/other"],
    "--force": [], "--compile": [], "--time-transfer": [], "--tiny": [], "--quiet": [],
    "--weights": ["{checkpoint}", "--model", "hf-modernbert-base"],  # a tiny checkpoint of that model
    "--granularity": ["4"], "--safety-margin": ["0.1"], "--memory-limit": ["2GiB"], "--max-trials": ["3"],
    "--max-seconds": ["60s"], "--seed": ["3"], "--baseline": ["modernbert-base"], "--requests": ["11"],
    "--min-seconds": ["0.5"], "--rate": ["2"], "--duration": ["3"], "--max-batch-tokens": ["4096"],
    "--max-batch-requests": ["4"], "--max-wait": ["5"], "--sort-by-length": [], "--slo": ["p99=2s", "--rate", "2"],
    "--search-steps": ["2"], "--clock": ["virtual"], "--drain-limit": ["5"], "--file": ["{matrix}"],
    "--retry-failed": [], "--dry-run": [], "--cpus-per-task": ["2"], "--config": ["tiny"],
    "--hidden": ["640,768"], "--glu": ["2304"], "--layers": ["6"], "--head-dim": ["128"], "--params": ["20M±90%"],
    "--tokens": ["4096"], "--gpus": ["T4,L4=2"], "--top": ["3"], "--rank-by": ["utilisation"],
    "--include-unusual": [], "--no-compile": [], "--no-tiny": [], "--results": [str(ROOT / "results" / "T4")],
    "--include-smoke": [], "--rows": [], "--ray": [],  # --ray in a dry run: planned as a cluster would, no connection
    "--no-rows": [], "--gemm": ["torch"], "--elementwise": ["eager"], "--measure": [], "--rounds": ["2"],
    "--block": ["2"],
}
PER_COMMAND = {
    ("predict", "--model"): ["bert-base"], ("predict", "--dtype"): ["float32"], ("predict", "--gpu"): ["L4"],
    ("latency", "--batch-size"): ["1", "--batch-size", "3"], ("serve", "--requests"): ["2"],
    ("compare", "--model"): ["bert-base"], ("matrix", "--model"): ["bert-base"],
    ("matrix", "--gpu"): ["T4"], ("matrix", "--dtype"): ["float32"], ("matrix", "--protocol"): ["paper"],
    ("matrix", "--compile"): [], ("matrix", "--tiny"): [], ("sweep", "--dtype"): ["float16"],
    ("verify", "--model"): ["modernbert-large"], ("verify", "--dtype"): ["bfloat16"],
    ("verify", "--device"): ["cpu"], ("report", "--model"): ["hf-modernbert-base"],
    ("report", "--baseline"): ["modernbert-base"], ("list backends", "--device"): ["cpu"],
}
# Refused here for what this machine lacks, not for the option: (command, option) -> the reason said.
THIS_MACHINE_LACKS = {
    ("run", "--gpu"): "this run's device is the CPU", ("max-batch", "--gpu"): "this run's device is the CPU",
    ("latency", "--gpu"): "this run's device is the CPU", ("serve", "--gpu"): "this run's device is the CPU",
}


def leaf_commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found |= leaf_commands(command, f"{prefix}{name} ")
        else:
            found[prefix + name] = command
    return found


def visible_options(command: click.Command) -> list[str]:
    """Each option a user sees in the command's --help (a --x/--no-x pair: both)."""
    return [flag for p in command.params if isinstance(p, click.Option) and not p.hidden
            for flag in [*p.opts, *p.secondary_opts] if flag != "--help"]


def cases() -> list[tuple[str, str]]:
    return [(name, flag) for name, command in sorted(leaf_commands(cli).items()) for flag in visible_options(command)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny hf-modernbert-base checkpoint, as transformers saves one."""
    import transformers

    from mbbench.models import registry

    directory = tmp_path_factory.mktemp("checkpoint")
    torch.manual_seed(0)
    spec = registry.get_spec("hf-modernbert-base")
    getattr(transformers, spec.hf_class)(registry.model_config(spec.tiny_variant())).save_pretrained(directory)
    return directory


@pytest.fixture
def nothing_measured(monkeypatch):
    """Every producing command stops where the measuring would start: its jobs are made, none runs."""
    made = []

    def produce(jobs, *args, **kwargs) -> int:
        made.extend(jobs)
        return 0

    for module in (measure, serving):
        monkeypatch.setattr(module, "produce_and_print", produce)
    monkeypatch.setattr(explore, "run_verify", lambda *args, **kwargs: [])
    monkeypatch.setattr(explore.measured_sweep, "measure", lambda *args, **kwargs: sys.exit(0))  # after resolving
    return made


def command_line(name: str, flag: str, tmp_path: Path, checkpoint: Path) -> list[str]:
    matrix = tmp_path / "matrix.toml"
    matrix.write_text('models = ["bert-base"]\nsuites = ["short-fixed"]\n')
    value = PER_COMMAND.get((name, flag), VALUES.get(flag, [""]))
    line = [*name.split(), *BASE_FOR.get((name, flag), BASE[name]), flag, *value]
    return [part.format(out=tmp_path / "out", checkpoint=checkpoint, matrix=matrix) for part in line]


def test_the_walk_covers_every_visible_option():
    """A new option needs a value here: the walk never skips one silently."""
    missing = [(name, flag) for name, flag in cases() if (name, flag) not in PER_COMMAND and flag not in VALUES
               and (name, flag) not in THIS_MACHINE_LACKS]
    assert not missing and set(BASE) == {name for name, _ in cases()}


@pytest.mark.parametrize("name, flag", cases())
def test_every_option_a_commands_help_offers_is_accepted(name, flag, tmp_path, checkpoint, nothing_measured):
    if (name, flag) in THIS_MACHINE_LACKS:  # the value names what is missing here
        if torch.cuda.is_available():
            pytest.skip("a GPU machine: --gpu takes its own GPU's name")
        line = [*name.split(), *BASE[name], flag, *(["T4"] if flag == "--gpu" else [])]
        result = CliRunner().invoke(cli, [p.format(out=tmp_path / "out") for p in line])
        assert result.exit_code == 2 and THIS_MACHINE_LACKS[(name, flag)] in result.output, result.output
        return
    result = CliRunner().invoke(cli, command_line(name, flag, tmp_path, checkpoint))
    assert result.exit_code == 0, (name, flag, result.output)
    assert "Traceback" not in result.output
