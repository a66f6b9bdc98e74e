"""A benchmark matrix: models x suites x protocols x backends x dtypes x engines x GPU types -> one task each.

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
import itertools
import os
import socket
import tempfile
import time
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, get_args, get_type_hints

import torch

from mbbench import results, runner
from mbbench.device import detect
from mbbench.dtypes import parse_dtype
from mbbench.engines import DEFAULT_ENGINE, get_engine, threads_from
from mbbench.errors import UserError
from mbbench.hardware.gpus import accelerator_type, basket, basket_ids_for, match_device_name
from mbbench.models import registry
from mbbench.plan import DEFAULT_CPU_DOCS, Plan, RunConfig, failure_record, resolve
from mbbench.records import COMPILE_ENGINE, DeviceInfo, Record
from mbbench.suites import Suite, load_suite

AXES = ("models", "suites", "protocols", "backends", "dtypes", "engines", "gpus")
AXIS_FIELDS = ("model", "suite", "protocol", "backend", "dtype", "engine")  # RunConfig fields the axes set
SET_BY_MBBENCH = ("engine_cache", "placement")  # RunConfig fields no matrix sets (the environment, the GPU axis)
CONFIG_FIELDS = {"runs": "passes"}  # option name -> RunConfig field, where they differ (as on the command line)
DEPRECATED_OPTIONS = {"compile": bool}  # `compile = true`: the older spelling of engines = ["torch-compile"]


def option_types() -> dict[str, type]:
    """The options a matrix may set once for every configuration (its [options] table, and the command line's):
    every RunConfig field but the axes' and those mbbench sets, named as on the command line, with its type."""
    hints = get_type_hints(RunConfig)
    named = {field: option for option, field in CONFIG_FIELDS.items()}
    options = {}
    for field in fields(RunConfig):
        if field.name in AXIS_FIELDS or field.name in SET_BY_MBBENCH:
            continue
        kinds = [kind for kind in get_args(hints[field.name]) if kind is not type(None)] or [hints[field.name]]
        options[named.get(field.name, field.name)] = kinds[0]
    return options | DEPRECATED_OPTIONS


OPTIONS = option_types()


@dataclass(frozen=True)
class MatrixSpec:
    models: tuple[str, ...]
    suites: tuple[str, ...]
    protocols: tuple[str, ...] = ("rigorous",)
    backends: tuple[str, ...] = ("auto",)
    dtypes: tuple[str | None, ...] = (None,)  # None: the protocol's dtype for the device
    engines: tuple[str, ...] = (DEFAULT_ENGINE,)
    gpus: tuple[str, ...] = ()  # Ray accelerator types or basket names; empty: any device
    options: dict = field(default_factory=dict)  # RunConfig fields shared by every task


def read_matrix_file(path: str | Path) -> dict:
    """A matrix TOML file: top-level axis lists and an optional [options] table (see docs/cluster.md)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
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
    engines = merged["engines"] or (DEFAULT_ENGINE,)
    if chosen_options.pop("compile", False):
        engines = compiled_engines(engines)
    return MatrixSpec(models=merged["models"], suites=merged["suites"],
                      protocols=merged["protocols"] or ("rigorous",), backends=merged["backends"] or ("auto",),
                      dtypes=merged["dtypes"] or (None,), engines=engines, gpus=merged["gpus"],
                      options=chosen_options)


def compiled_engines(engines: tuple[str, ...]) -> tuple[str, ...]:
    """The engines axis under `compile` (the older spelling of torch-compile): torch becomes torch-compile; UserError
    for any other engine, which `compile` cannot mean."""
    others = sorted(set(engines) - {DEFAULT_ENGINE, COMPILE_ENGINE})
    if others:
        raise UserError(f"--compile means --engine {COMPILE_ENGINE}; it cannot be combined with --engine "
                        f"{', '.join(others)}")
    return (COMPILE_ENGINE,)


@dataclass(frozen=True)
class Task:
    """One configuration to measure, planned by the driver before it runs anywhere."""

    config: RunConfig
    suite: Suite  # sent with the task, so a user's suite file need not exist on the node
    accelerator: str | None  # the Ray accelerator type it must run on; None: any device
    device_kind: str  # "cuda" or "cpu"
    planned: Plan  # resolved on a placeholder device: everything but the device is final
    command_line: str | None = None

    @property
    def key(self) -> tuple[str | None, str]:
        return self.accelerator, self.planned.identity.configuration_key()

    @property
    def label(self) -> str:
        return f"{self.config.model}{'-tiny' if self.config.tiny else ''} / {self.suite.name}" + \
               (f" on {self.accelerator}" if self.accelerator else "")


def expand(spec: MatrixSpec, device_kind: str, command_line: str | None = None) -> tuple[list[Task], list[str]]:
    """Every valid combination as a Task, and a note for each combination left out (and why).

    Validates everything first (names, suites, options), so a bad matrix fails before anything runs.
    """
    base = _base_config(spec.options)
    if device_kind == "cpu" and base.threads is None:  # part of a CPU identity: fixed by the driver, so a node
        base = replace(base, threads=threads_from(None).intra)  # (Ray: 1 thread by default) runs what was planned
    for dtype in spec.dtypes:
        if dtype is not None:
            parse_dtype(dtype)  # a typo is an input error now, not a failed record per task later
    engines = {name: get_engine(name) for name in spec.engines}
    for engine in engines.values():
        engine.version()  # an engine whose extra is missing is an input error now, not a failure per task
    suites = {name: load_suite(name) for name in spec.suites}
    labels = [accelerator_type(gpu) for gpu in spec.gpus] or [None]
    tasks: dict[tuple, Task] = {}
    notes = []
    for model in spec.models:
        model_spec = registry.get_spec(model)
        choices = ["auto", *registry.backend_choices(model_spec)]
        for name, suite in suites.items():
            for protocol, backend, dtype, (engine_name, engine), label in itertools.product(
                    spec.protocols, spec.backends, spec.dtypes, engines.items(), labels):
                if backend not in choices:
                    notes.append(f"left out {model} x backend {backend}: {model} takes {', '.join(choices)}")
                    continue
                refusal = engine.refusal(model_spec.layout, torch.device(device_kind), torch.float32)
                if refusal:  # a packed model an exporting engine cannot take, OpenVINO on a GPU, ...
                    notes.append(f"left out {model} x engine {engine_name}: {refusal}")
                    continue
                cfg = replace(base, model=model, suite=name, protocol=protocol, backend=backend, dtype=dtype,
                              engine=engine_name, placement=label if device_kind == "cpu" else None)
                task = Task(cfg, suite, label, device_kind, plan_unplaced(cfg, suite, device_kind, label),
                            command_line)
                if task.key in tasks:
                    notes.append(f"left out a duplicate of {task.label} ({task.key[1]})")
                    continue
                tasks[task.key] = task
    return list(tasks.values()), sorted(set(notes), key=notes.index)


def _base_config(options: dict) -> RunConfig:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"unknown matrix option(s): {', '.join(unknown)}")
    return RunConfig(model="", suite="", **{CONFIG_FIELDS.get(k, k): v for k, v in options.items()})


def plan_unplaced(config: RunConfig, suite: Suite, device_kind: str, label: str | None) -> Plan:
    """A task's plan before a node takes it: resolved on `unplaced`'s device, the checks that need the device left
    to the node (`plan.resolve(..., placed=False)`)."""
    return resolve(config, device=unplaced(device_kind, label), suite=suite, placed=False)


def unplaced(device_kind: str, label: str | None) -> DeviceInfo:
    """The device of a task not yet placed: its kind and the GPU type it asked for (filed there if never run)."""
    if device_kind == "cpu":
        return DeviceInfo("cpu", "not reached")
    ids = basket_ids_for(label) if label else []
    return DeviceInfo("cuda", f"not reached ({label or 'any GPU'})", ids[0] if len(ids) == 1 else (label or "unplaced"))


# ------------------------------------------------------------------------------------------- what exists

def dir_label(gpu_dir: str) -> str | None:
    """The accelerator type of a results/<gpu-id>/ directory (None for cpu)."""
    if gpu_dir == "cpu":
        return None
    gpu = basket().get(gpu_dir)
    return gpu.ray_accelerator_type if gpu else gpu_dir


def record_key(record: Record) -> tuple[str | None, str]:
    """The (accelerator type asked for, configuration key) a record answers; records of `mbbench run` too."""
    execution = record.execution
    label = execution.get("accelerator_type") if execution else dir_label(record.device.directory)
    return label, record.identity.configuration_key()


def matrix_key(record: Record) -> tuple[str | None, str] | None:
    """The resume key of a matrix: (GPU type, configuration key) of a measured throughput record, else None."""
    if record.kind != "measured" or record.identity.measurement != "throughput":
        return None
    return record_key(record)


def open_store(root: str | Path) -> results.Store:
    """The records under `root`, indexed by the task each answers (`Task.key`)."""
    return results.Store(root, resume_key=matrix_key)


# ----------------------------------------------------------------------------------------------- measure

def execute(task: Task, via: str, progress: Callable[[str], None] | None = None,
            on_pass: Callable[[int, float], None] | None = None) -> Record:
    """Measure one task on this machine; never raises for a failed configuration (returns its record). The
    record's `execution.overlapping` names every other matrix task measured on this host meanwhile."""
    started = time.time()
    plan = task.planned
    log_measurement("start", task.label)
    try:
        device = detect(task.config.device)
        check_placement(task, device)
        plan = resolve(task.config, device=device, suite=task.suite)
        record = runner.run(plan, progress, on_pass)
    except Exception as error:  # noqa: BLE001 - a failed configuration is a result, not a crash
        record = failure_record(plan, error)
    finally:
        log_measurement("end", task.label)
        release_memory()
    record.execution = execution_info(via, task, started) | {"overlapping": overlapping(started, time.time())}
    if task.command_line:
        record.environment["command_line"] = task.command_line  # a Ray worker's argv says nothing
    return record


def measurement_log() -> Path:
    """The host's log of every matrix task's span: $MBBENCH_MEASUREMENT_LOG, else mbbench-measurements.log in the
    temporary folder (one per host, so that tasks of different matrices see each other; the tests set their own)."""
    return Path(os.environ.get("MBBENCH_MEASUREMENT_LOG") or Path(tempfile.gettempdir()) / "mbbench-measurements.log")


def log_measurement(event: str, label: str, log: Path | None = None) -> None:
    """Append 'start' or 'end' of this process's task to the host's log (one short line: an atomic append)."""
    with contextlib.suppress(OSError), open(log or measurement_log(), "a", encoding="utf-8") as file:
        file.write(f"{event}\t{os.getpid()}\t{time.time():.3f}\t{label}\n")


def overlapping(started: float, ended: float, log: Path | None = None) -> list[str]:
    """The other tasks measured on this host while this one ran (`started` to `ended`, epoch seconds): what any
    overlap of CPU measurements leaves in a record. A task still running counts up to now while its process
    lives; one whose process died without an end is left out."""
    spans: dict[tuple[str, str], list[float]] = {}
    with contextlib.suppress(OSError):
        for line in (log or measurement_log()).read_text(encoding="utf-8").splitlines():
            event, pid, at, label = (line.split("\t", 3) + ["", "", "", ""])[:4]
            if pid != str(os.getpid()) and event in ("start", "end"):
                spans.setdefault((pid, label), []).append(float(at) if event == "start" else -float(at))
    others = []
    for (pid, label), marks in spans.items():
        starts, ends = [m for m in marks if m > 0], [-m for m in marks if m < 0]
        for begin in starts:
            end = min((e for e in ends if e >= begin), default=time.time() if alive(int(pid)) else None)
            if end is not None and begin < ended and end > started:
                others.append(f"{label} (process {pid})")
    return sorted(set(others))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it exists
        return True
    return True


def check_placement(task: Task, device: DeviceInfo) -> None:
    """Refuse to file a measurement under a GPU type the node does not have."""
    if device.kind != task.device_kind:
        raise UserError(f"the task needs a {task.device_kind} device; this node runs on {device.kind} ({device.name})")
    gpu = match_device_name(device.name) if device.kind == "cuda" else None
    if task.accelerator and gpu and gpu.ray_accelerator_type != task.accelerator:
        raise UserError(f"placed on a node whose GPU is {device.name} ({gpu.ray_accelerator_type}), "
                        f"but the task asked for {task.accelerator}")


def release_memory() -> None:
    """Free what a task left behind, so the next task in this process starts from an empty GPU."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def execution_info(via: str, task: Task, started: float) -> dict:
    info = {"via": via, "accelerator_type": task.accelerator, "host": socket.gethostname(),
            "started_at": round(started, 3), "seconds": round(time.time() - started, 3)}
    if via == "ray":
        with contextlib.suppress(Exception):
            import ray

            context = ray.get_runtime_context()
            info.update(node_id=context.get_node_id(), task_id=context.get_task_id(),
                        assigned_resources=context.get_assigned_resources())
    return info


def failed_record(task: Task, error: BaseException) -> Record:
    """The record of a task that never reached a device (no node of its type, node lost): filed under the
    GPU type it asked for, with what stopped it."""
    record = failure_record(task.planned, error)
    record.execution = {"via": "ray", "accelerator_type": task.accelerator, "reached_device": False}
    return record


# ------------------------------------------------------------------------------------------------- drive

class Executor(Protocol):
    via: str

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Record]]:
        """Yield (task, record) as each task finishes, in any order."""


@dataclass
class LocalExecutor:
    """One task after another on this machine's device."""

    say: Callable[[str], None] | None = None
    via: str = "local"

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Record]]:
        for task in tasks:
            say = (lambda message, t=task: self.say(f"[{t.label}] {message}")) if self.say else None
            on_pass = (lambda i, s, t=task, say=say: say(f"pass {i + 1}/{t.config.passes}: {s:.3f} s")) if say else None
            yield task, execute(task, self.via, say, on_pass)


@dataclass
class Outcome:
    task: Task
    state: str  # "ran" or "skipped" (a record exists)
    record: Record
    path: Path

    @property
    def status(self) -> str:
        return self.record.status


def partition(tasks: Iterable[Task], store: results.Store, force: bool, retry_failed: bool) -> tuple[list, list]:
    """(tasks to run, outcomes of tasks skipped because a record answers them: `Store.find`, as every command)."""
    to_run, skipped = [], []
    for task in tasks:
        found = store.find(task.key, include_failed=not retry_failed)
        if found is not None and not force:
            skipped.append(Outcome(task, "skipped", found, Path(found.source_path or store.path_for(found))))
        else:
            to_run.append(task)
    return to_run, skipped


def run_matrix(tasks: list[Task], root: str | Path, executor: Executor, force: bool = False,
               retry_failed: bool = False, on_outcome: Callable[[Outcome, int, int], None] | None = None) -> list[Outcome]:
    """Run what is missing; write each record as it arrives (a crash or Ctrl-C loses nothing written)."""
    store = open_store(root)
    to_run, outcomes = partition(tasks, store, force, retry_failed)
    with contextlib.closing(executor.run(to_run)) as finished:
        for index, (task, record) in enumerate(finished, start=1):
            outcome = Outcome(task, "ran", record, store.write(record))
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome, index, len(to_run))
    return outcomes


# ------------------------------------------------------------------------------------------- planning

def plan_matrix(spec: MatrixSpec, use_ray: bool, command_line: str | None,
                say: Callable[[str], None] | None) -> list[Task]:
    """The tasks of a matrix, every input validated first: on Ray every GPU type the matrix names; locally only
    this machine's (the rest are said to wait for --ray). A CPU matrix subsamples DEFAULT_CPU_DOCS documents
    unless --docs says otherwise."""
    device_kind, spec, local_label = _matrix_device(spec, use_ray)
    if device_kind == "cpu" and spec.options.get("docs") is None:
        spec = replace(spec, options=spec.options | {"docs": DEFAULT_CPU_DOCS})
        if say:
            say(f"CPU matrix: subsampling {DEFAULT_CPU_DOCS} documents per suite (--docs to change)")
    if device_kind == "cpu" and spec.options.get("threads") is None and say:
        say(f"CPU matrix: {threads_from(None).intra} threads per task, this process's torch default "
            "(--threads to change)")
    tasks, notes = expand(spec, device_kind, command_line)
    if not tasks:
        raise UserError("the matrix has no configuration a model can run: " + "; ".join(notes))
    for note in notes:
        if say:
            say(note)
    return tasks if use_ray else _runnable_here(tasks, local_label, say)


def _matrix_device(spec: MatrixSpec, use_ray: bool) -> tuple[str, MatrixSpec, str | None]:
    """(device kind, spec with each task's device, this machine's GPU type when local)."""
    device = spec.options.get("device") or ("cuda" if use_ray else "auto")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise UserError(f"--device {device!r}: expected cpu or cuda")
    if use_ray:
        kind = "cpu" if device == "cpu" else "cuda"
        return kind, replace(spec, options=spec.options | {"device": kind}), None
    local = detect(device)
    label = dir_label(local.directory)
    if not spec.gpus and label:  # this machine's type, so records resume across local and Ray runs
        spec = replace(spec, gpus=(label,))
    return local.kind, replace(spec, options=spec.options | {"device": device}), label


def _runnable_here(tasks: list[Task], local_label: str | None, say: Callable[[str], None] | None) -> list[Task]:
    """Without Ray, only this machine's GPU type runs; the rest wait for --ray (said, not failed)."""
    here = [t for t in tasks if t.accelerator == local_label]
    others = sorted({t.accelerator or "any" for t in tasks if t.accelerator != local_label})
    if not here:
        raise UserError(f"none of the matrix's GPU types ({', '.join(others)}) is this machine's "
                        f"({local_label or 'CPU only'}); use --ray to run them on a cluster")
    if others and say:
        say(f"{len(tasks) - len(here)} configurations need other GPU types ({', '.join(others)}): left for --ray")
    return here


def plan_row(task: Task, state: str) -> dict:
    """One row of `matrix --dry-run`."""
    return {"model": task.planned.identity.display_model, "suite": task.suite.name, "gpu_type": task.accelerator or "",
            "protocol": task.config.protocol, "engine": task.planned.engine.name, "backend": task.config.backend,
            "dtype": task.planned.dtype, "threads": task.planned.identity.threads,
            "configuration": task.key[1], "state": state}
