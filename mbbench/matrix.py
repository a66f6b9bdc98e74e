"""A benchmark matrix: models x suites x protocols x backends x dtypes x GPU types -> one task each.

The driver expands the matrix, skips configurations whose record already exists (resume), hands the
rest to an executor (local and sequential, or Ray: `mbbench.cluster`) and writes every record that
comes back exactly as `mbbench run` would: atomically, under results/<gpu-id>/. A task that fails
(out of memory, a lost node, a GPU type nobody has) comes back as a record with status "failed" and
its reason; the other tasks go on.

`execute` is the one function that measures: the local executor calls it in-process and a Ray task
calls it on the node it was placed on, so both paths produce the same record.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

from mbbench import results, runner
from mbbench.dtypes import parse_dtype
from mbbench.errors import UserError
from mbbench.hardware.gpus import LocalDevice, accelerator_type, basket, basket_ids_for, detect, match_device_name
from mbbench.models import registry
from mbbench.suites import Suite, load_suite

AXES = ("models", "suites", "protocols", "backends", "dtypes", "gpus")
# RunConfig fields a matrix may set once for every configuration (its [options] table), with their types.
OPTIONS = {"batch_size": int, "token_budget": int, "docs": int, "runs": int, "warmup_batches": int, "device": str,
           "compile": bool, "time_transfer": bool, "telemetry": bool, "seed": int, "weights": str, "tiny": bool}


@dataclass(frozen=True)
class MatrixSpec:
    models: tuple[str, ...]
    suites: tuple[str, ...]
    protocols: tuple[str, ...] = ("rigorous",)
    backends: tuple[str, ...] = ("auto",)
    dtypes: tuple[str | None, ...] = (None,)  # None: the protocol's dtype for the device
    gpus: tuple[str, ...] = ()  # Ray accelerator types or basket names; empty: any device
    options: dict = field(default_factory=dict)  # RunConfig fields shared by every task


def read_matrix_file(path: str | Path) -> dict:
    """A matrix TOML file: top-level axis lists and an optional [options] table (see docs/cluster.md)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise UserError(f"cannot read matrix file {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML ({error})") from None
    for key, value in data.items():
        if key == "options":
            if not isinstance(value, dict):
                raise UserError(f"{path}: 'options' must be a table")
            unknown = sorted(set(value) - set(OPTIONS))
            if unknown:
                raise UserError(f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
            for name, option in value.items():
                expected = OPTIONS[name]
                if not isinstance(option, expected) or (expected is int and isinstance(option, bool)):
                    raise UserError(f"{path}: option {name!r} must be {expected.__name__}, got {option!r}")
        elif key not in AXES:
            raise UserError(f"{path}: unknown key {key!r}; a matrix has {', '.join(AXES)} and [options]")
        elif not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{path}: {key!r} must be a list of strings")
    return data


def build_spec(file_data: dict, axes: dict[str, tuple[str, ...]], options: dict) -> MatrixSpec:
    """The file's matrix with command-line axes and options taking precedence where given."""
    merged = {axis: tuple(axes.get(axis) or file_data.get(axis) or ()) for axis in AXES}
    if not merged["models"] or not merged["suites"]:
        raise UserError("a matrix needs at least one model and one suite (--model/--suite or a --file)")
    chosen_options = dict(file_data.get("options", {})) | {k: v for k, v in options.items() if v is not None}
    return MatrixSpec(models=merged["models"], suites=merged["suites"],
                      protocols=merged["protocols"] or ("rigorous",), backends=merged["backends"] or ("auto",),
                      dtypes=merged["dtypes"] or (None,), gpus=merged["gpus"], options=chosen_options)


@dataclass(frozen=True)
class Task:
    """One configuration to measure, planned by the driver before it runs anywhere."""

    config: runner.RunConfig
    suite: Suite  # sent with the task, so a user's suite file need not exist on the node
    accelerator: str | None  # the Ray accelerator type it must run on; None: any device
    device_kind: str  # "cuda" or "cpu"
    planned: runner.Plan
    command_line: str | None = None

    @property
    def key(self) -> tuple[str | None, str]:
        return self.accelerator, self.planned.config_id

    @property
    def label(self) -> str:
        return f"{self.config.model}{'-tiny' if self.config.tiny else ''} / {self.suite.name}" + \
               (f" on {self.accelerator}" if self.accelerator else "")

    @property
    def planned_dir(self) -> str:
        """Where a record goes when the task never reached a device (the node decides otherwise)."""
        if self.device_kind == "cpu":
            return "cpu"
        ids = basket_ids_for(self.accelerator) if self.accelerator else []
        return ids[0] if len(ids) == 1 else (self.accelerator or "unplaced")


def expand(spec: MatrixSpec, device_kind: str, command_line: str | None = None) -> tuple[list[Task], list[str]]:
    """Every valid combination as a Task, and a note for each combination left out (and why).

    Validates everything first (names, suites, options), so a bad matrix fails before anything runs.
    """
    base = _base_config(spec.options)
    for dtype in spec.dtypes:
        if dtype is not None:
            parse_dtype(dtype)  # a typo is an input error now, not a failed record per task later
    suites = {name: load_suite(name) for name in spec.suites}
    labels = [accelerator_type(gpu) for gpu in spec.gpus] or [None]
    tasks: dict[tuple, Task] = {}
    notes = []
    for model in spec.models:
        choices = ["auto", *registry.backend_choices(registry.get_spec(model))]
        for name, suite in suites.items():
            for protocol in spec.protocols:
                for backend in spec.backends:
                    if backend not in choices:
                        notes.append(f"left out {model} x backend {backend}: {model} takes {', '.join(choices)}")
                        continue
                    for dtype in spec.dtypes:
                        for label in labels:
                            cfg = replace(base, model=model, suite=name, protocol=protocol, backend=backend,
                                          dtype=dtype, placement=label if device_kind == "cpu" else None)
                            cfg.validate()
                            task = Task(cfg, suite, label, device_kind, runner.plan(cfg, suite, device_kind),
                                        command_line)
                            if task.key in tasks:
                                notes.append(f"left out a duplicate of {task.label} ({task.planned.config_id})")
                                continue
                            tasks[task.key] = task
    return list(tasks.values()), sorted(set(notes), key=notes.index)


def _base_config(options: dict) -> runner.RunConfig:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"unknown matrix option(s): {', '.join(unknown)}")
    return runner.RunConfig(model="", suite="", **options)


# ------------------------------------------------------------------------------------------- what exists

def dir_label(gpu_dir: str) -> str | None:
    """The accelerator type of a results/<gpu-id>/ directory (None for cpu)."""
    if gpu_dir == "cpu":
        return None
    gpu = basket().get(gpu_dir)
    return gpu.ray_accelerator_type if gpu else gpu_dir


def record_key(record: dict) -> tuple[str | None, str]:
    """The (accelerator type asked for, config id) a record answers; records of `mbbench run` too."""
    execution = record.get("execution")
    label = execution.get("accelerator_type") if execution else dir_label(record.get("gpu_dir", "cpu"))
    return label, record["config_id"]


def existing_records(root: Path) -> dict[tuple, list[tuple[Path, dict]]]:
    """Every measured record under root, by key (a task may have left a failure in a different dir)."""
    found: dict[tuple, list[tuple[Path, dict]]] = {}
    if root.is_dir():
        for record in results.read_records([root]):
            if record.get("kind") == "measured" and record.get("config_id"):
                path = Path(record.pop("_path"))
                found.setdefault(record_key(record), []).append((path, record))
    return found


# ----------------------------------------------------------------------------------------------- measure

def execute(task: Task, via: str, progress: Callable[[str], None] | None = None,
            on_run: Callable[[int, float], None] | None = None) -> dict:
    """Measure one task on this machine; never raises for a failed configuration (returns its record)."""
    started = time.time()
    device = None
    try:
        device = detect(task.config.device)
        check_placement(task, device)
        record = runner.run(task.config, device, progress, on_run, suite=task.suite)
    except Exception as error:  # noqa: BLE001 - a failed configuration is a result, not a crash
        record = failed_record(task, describe(error), type(error).__name__, device)
    finally:
        release_memory()
    record["execution"] = execution_info(via, task, started)
    if task.command_line:
        record["environment"]["command_line"] = task.command_line  # a Ray worker's argv says nothing
    return record


def check_placement(task: Task, device: LocalDevice) -> None:
    """Refuse to file a measurement under a GPU type the node does not have."""
    if device.kind != task.device_kind:
        raise UserError(f"the task needs a {task.device_kind} device; this node runs on {device.kind} ({device.name})")
    gpu = match_device_name(device.name) if device.kind == "cuda" else None
    if task.accelerator and gpu and gpu.ray_accelerator_type != task.accelerator:
        raise UserError(f"placed on a node whose GPU is {device.name} ({gpu.ray_accelerator_type}), "
                        f"but the task asked for {task.accelerator}")


def describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    if type(error).__name__ == "OutOfMemoryError":
        return f"out of memory: {first}"
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def release_memory() -> None:
    """Free what a task left behind, so the next task in this process starts from an empty GPU."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def execution_info(via: str, task: Task, started: float) -> dict:
    info = {"via": via, "accelerator_type": task.accelerator, "host": socket.gethostname(),
            "seconds": round(time.time() - started, 3)}
    if via == "ray":
        with contextlib.suppress(Exception):
            import ray

            context = ray.get_runtime_context()
            info.update(node_id=context.get_node_id(), task_id=context.get_task_id(),
                        assigned_resources=context.get_assigned_resources())
    return info


def failed_record(task: Task, reason: str, error_type: str, device: LocalDevice | None = None) -> dict:
    """A record of a configuration that produced no measurement, with what stopped it.

    `device` is None when the task never reached one (no node of its type, node lost): the record is
    then filed under the type it asked for.
    """
    reached = device or LocalDevice(task.device_kind, "not reached", None)
    record = runner.base_record(task.config, task.suite, reached, task.planned.dtype, task.planned.batch_size)
    record.update(status="failed", reason=reason, error_type=error_type, backend=task.config.backend,
                  tokens_per_second=None, run_seconds=[])
    if device is None:
        record.update(gpu=None, gpu_dir=task.planned_dir)
    return record


# ------------------------------------------------------------------------------------------------- drive

class Executor(Protocol):
    via: str

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, dict]]:
        """Yield (task, record) as each task finishes, in any order."""


@dataclass
class LocalExecutor:
    """One task after another on this machine's device."""

    say: Callable[[str], None] | None = None
    via: str = "local"

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, dict]]:
        for task in tasks:
            say = (lambda message, t=task: self.say(f"[{t.label}] {message}")) if self.say else None
            on_run = (lambda i, s, t=task, say=say: say(f"pass {i + 1}/{t.config.runs}: {s:.3f} s")) if say else None
            yield task, execute(task, self.via, say, on_run)


@dataclass
class Outcome:
    task: Task
    state: str  # "ran" or "skipped" (a record exists)
    record: dict
    path: Path

    @property
    def status(self) -> str:
        return self.record["status"]


def partition(tasks: Iterable[Task], existing: dict, force: bool, retry_failed: bool) -> tuple[list, list]:
    """(tasks to run, outcomes of tasks skipped because their record exists)."""
    to_run, skipped = [], []
    for task in tasks:
        found = existing.get(task.key, [])
        done = [(p, r) for p, r in found if r.get("status") != "failed" or not retry_failed]
        done.sort(key=lambda pair: pair[1].get("status") == "failed")  # a measurement outranks a failure
        if done and not force:
            path, record = done[0]
            skipped.append(Outcome(task, "skipped", record, path))
        else:
            to_run.append(task)
    return to_run, skipped


def run_matrix(tasks: list[Task], root: str | Path, executor: Executor, force: bool = False,
               retry_failed: bool = False, on_outcome: Callable[[Outcome, int, int], None] | None = None) -> list[Outcome]:
    """Run what is missing; write each record as it arrives (a crash or Ctrl-C loses nothing written)."""
    root = results.check_writable(root)
    existing = existing_records(root)
    to_run, outcomes = partition(tasks, existing, force, retry_failed)
    with contextlib.closing(executor.run(to_run)) as finished:
        for index, (task, record) in enumerate(finished, start=1):
            # a task that never reached a node (no such GPU type, node lost) still says what it asked for
            record.setdefault("execution", {"via": executor.via, "accelerator_type": task.accelerator,
                                            "reached_device": False})
            path = results.write_atomic(results.record_path(root, record), record)
            _drop_superseded(existing.get(task.key, []), path)
            outcome = Outcome(task, "ran", record, path)
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome, index, len(to_run))
    return outcomes


def _drop_superseded(previous: list[tuple[Path, dict]], written: Path) -> None:
    """A retried task's new record replaces its old failure, which may sit in another gpu dir."""
    for path, record in previous:
        if path != written and record.get("status") == "failed":
            path.unlink(missing_ok=True)
