"""A configuration resolved once, before anything runs: `RunConfig` (what was asked) -> `Plan` (what will run),
and the record a plan makes.

The plan carries the model's catalogue row, shape and parameter count, the torch device with its index, the
dtype (name and torch dtype), the attention backend, the basket GPU, the batching, the documents used and the
record identity, so `run`, `max-batch`, `predict`, `compare` and matrix tasks all take the same resolved object
and no later step looks a name up again (or drops any of it). Every impossible or conflicting option is
refused here, with a `UserError`, before a model is built or a file written.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch

from mbbench import allocator, environment
from mbbench.calibration import paper_timing_batch
from mbbench.device import detect, torch_device
from mbbench.dtypes import dtype_name, parse_dtype
from mbbench.engines import (DEFAULT_CACHE_DIR, DEFAULT_ENGINE, Engine, ParityFailure, Threads, TorchCompileEngine,
                             get_engine, threads_from)
from mbbench.errors import UserError, is_oom
from mbbench.hardware.gpus import GPU, basket
from mbbench.hardware.shape import Shape
from mbbench.models import registry
from mbbench.models.attention import BackendChoice
from mbbench.models.elementwise import EAGER as DEFAULT_ELEMENTWISE
from mbbench.models.elementwise import KERNELS as ELEMENTWISE_KERNELS
from mbbench.models.elementwise import inductor_refusal
from mbbench.models.gemm import KERNELS as GEMM_KERNELS
from mbbench.models.gemm import TORCH as DEFAULT_GEMM
from mbbench.models.gemm import onednn_available
from mbbench.models.spec import ModelSpec
from mbbench.records import (MEASUREMENTS, ConfigChange, DeviceInfo, Failure, Identity, ModelInfo, Payload, Record,
                             SuiteInfo)
from mbbench.suites import Suite, check_vocabulary, load_suite, portable_path
from mbbench.units import parse_size

DEFAULT_CPU_DOCS = 16
MAX_COUNT = 2**31 - 1  # the largest count an option takes: an int32 tensor dimension  # the built-in default job on a GPU-less machine: about two minutes on 2 cores


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    headline: str  # "median" or "mean" of the pass times
    warmup_batches: int | None  # None: one full warmup pass
    gpu_dtype: str
    cpu_dtype: str
    pad_to_suite_max: bool  # padded models pad every row to the suite's maximum (as the paper)


PROTOCOLS = {
    "paper": Protocol("paper", "ModernBERT paper: fp32 weights, one warmup batch, mean of ten passes, "
                      "the paper's batch per model (512 short / 32 long, less where it ran out of memory), "
                      "rows padded to the suite maximum",
                      "mean", 1, "float32", "float32", True),
    "rigorous": Protocol("rigorous", "bf16 on GPU (fp32 on CPU), one full warmup pass, device-event timing, "
                         "median of the passes, rows padded to the longest in their batch",
                         "median", None, "bfloat16", "float32", False),
}


@dataclass(frozen=True)
class RunConfig:
    """One configuration as asked for (command line, matrix file or code); `resolve` turns it into a Plan."""

    model: str
    suite: str
    protocol: str = "rigorous"
    backend: str = "auto"
    dtype: str | None = None  # None: the protocol's dtype for the device
    batch_size: int | None = None  # None: the paper's timing batch (512 short, 32 long)
    token_budget: int | None = None  # packed models: tokens per batch instead of a document count
    docs: int | None = None  # None: every document (on CPU: DEFAULT_CPU_DOCS)
    passes: int = 10  # timed passes over the documents (`--runs`; a record's identity keeps `runs`)
    warmup_batches: int | None = None  # None: the protocol's (rigorous: one full pass; paper: one batch)
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    engine: str = DEFAULT_ENGINE  # torch, torch-compile, onnxruntime or openvino (`mbbench list engines`)
    threads: int | None = None  # intra-op threads; None: torch's current torch.get_num_threads()
    engine_cache: str | None = None  # where exports are cached (None: engines.DEFAULT_CACHE_DIR); not identity
    time_transfer: bool = False
    telemetry: bool = True
    seed: int = 0
    weights: str | None = None  # a local checkpoint directory
    tiny: bool = False  # tiny variant of the model's family (tests, smoke runs): resolved into `ModelSpec.tiny`
    placement: str | None = None  # the Ray node type a CPU matrix task asked for (part of its identity)
    gemm: str | None = None  # a pinned GEMM kernel (`--gemm`, `models.gemm.KERNELS`); None: chosen (kernel cache)
    elementwise: str | None = None  # a pinned element-wise kernel (`--elementwise`, `models.elementwise.KERNELS`)

    def validate(self) -> ModelSpec:
        """The model's catalogue row (its tiny variant with `tiny`); UserError for any value no device could run
        (the engine and the checks that need the device are `resolve`'s)."""
        for name, value, low in (("--runs", self.passes, 1), ("--docs", self.docs, 1),
                                 ("--batch-size", self.batch_size, 1), ("--token-budget", self.token_budget, 1),
                                 ("--threads", self.threads, 1)):
            if value is not None and value < low:
                raise UserError(f"{name} must be at least {low}, got {value}")
            if value is not None and value > MAX_COUNT:  # a tensor dimension and a record field must hold it
                raise UserError(f"{name} {value} is beyond any run mbbench can make (at most {MAX_COUNT:,})")
        if self.warmup_batches is not None and self.warmup_batches < 0:
            raise UserError(f"--warmup must be 0 or more, got {self.warmup_batches}")
        if self.batch_size is not None and self.token_budget is not None:
            raise UserError("--batch-size and --token-budget both given: a batch is either a document count "
                            "or a token budget; choose one")
        if self.protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {self.protocol!r}; choose from {', '.join(PROTOCOLS)}")
        spec = registry.get_spec(self.model, self.tiny)
        registry.require_available(spec)
        registry.check_backend(spec, self.backend)
        if self.dtype is not None:
            dtype_name(self.dtype)  # UserError for an unknown name
        if self.token_budget is not None and not spec.unpadded:
            raise UserError(f"--token-budget needs an unpadded model; {self.model} runs padded batches")
        check_kernel_names(self.gemm, self.elementwise)
        return spec


@dataclass(frozen=True)
class ModelPlan:
    """The model a plan runs and how: what `loading.load` builds (a `Plan`'s `model_plan`, or one shape of a measured
    sweep). Everything in it is resolved: the row (tiny variant included), the backend for this workload and why,
    the engine checked for this model and device, the threads."""

    spec: ModelSpec
    shape: Shape
    label: str  # the model's name for people (`Identity.display_model`)
    device: DeviceInfo
    torch_device: str  # "cpu" or "cuda:N"
    dtype: torch.dtype
    backend: str
    backend_reason: str
    engine: Engine
    threads: Threads
    seed: int = 0  # seeded random weights
    weights: str | None = None  # a local checkpoint directory (`--weights`)
    gemm: str | None = None  # a pinned GEMM kernel (`--gemm`); None: chosen (`bench.kernel_choice`)
    elementwise: str | None = None  # a pinned element-wise kernel (`--elementwise`)
    engine_cache: Path = DEFAULT_CACHE_DIR  # where an exporting engine's exports are cached (not identity)


@dataclass(frozen=True)
class Plan:
    """Everything a measurement, search or prediction needs, resolved; its identity names its record. Built by
    keyword, by `resolve` only."""

    config: RunConfig
    measurement: str  # "throughput", "max_batch", "prediction", "latency" or "serving"
    # the model
    spec: ModelSpec  # the catalogue row, its tiny variant when asked (`spec.tiny`)
    shape: Shape  # the performance model's view of the model
    parameters: int  # of the bare encoder, counted once
    config_changes: tuple[ConfigChange, ...]  # --weights: the checkpoint's config fields that differ from the row
    # the device
    device: DeviceInfo
    placed: bool  # resolved on the device it runs on (False: a matrix task planned before a node takes it)
    gpu: GPU | None  # the device's basket entry (datasheet), None on CPU or off the basket
    torch_device: str  # "cpu" or "cuda:N"
    # the precision
    dtype: str  # canonical name
    torch_dtype: torch.dtype
    # the attention
    backend: str  # the backend that will be built: `auto` resolved for this device and workload
    backend_reason: str  # why (a measured crossover, a kernel that cannot run here, "asked for")
    # the work
    suite: Suite
    batch_size: int | None
    token_budget: int | None
    documents: int  # documents used (the first N of the suite)
    warmup_batches: int | None  # None: one full pass
    # the engine and threads
    engine: Engine  # what runs the model, checked for this model, device and dtype
    threads: Threads  # applied once, by `loading.load`, before the model is built and timed
    identity: Identity
    notes: tuple[str, ...] = ()

    @property
    def engine_cache(self) -> Path:
        """Where the engine's exports are cached (not part of the identity: a cache hit computes the same)."""
        return Path(self.config.engine_cache) if self.config.engine_cache else DEFAULT_CACHE_DIR

    @property
    def model_plan(self) -> ModelPlan:
        """What `loading.load` builds for this plan."""
        return ModelPlan(spec=self.spec, shape=self.shape, label=self.identity.display_model, device=self.device,
                         torch_device=self.torch_device, dtype=self.torch_dtype, backend=self.backend,
                         backend_reason=self.backend_reason, engine=self.engine, threads=self.threads,
                         seed=self.config.seed, weights=self.config.weights, gemm=self.config.gemm,
                         elementwise=self.config.elementwise, engine_cache=self.engine_cache)

    @property
    def protocol(self) -> Protocol:
        return PROTOCOLS[self.config.protocol]

    @property
    def label(self) -> str:
        return f"{self.identity.display_model} / {self.suite.name}"

    @property
    def subsampled(self) -> bool:
        return self.documents < self.suite.definition.documents

    def model_info(self) -> ModelInfo:
        return ModelInfo(family=self.spec.family, group=self.spec.group, parameters=self.parameters,
                         max_length=self.spec.max_length, layout=self.spec.layout, config_changes=self.config_changes)

    def suite_info(self) -> SuiteInfo:
        return SuiteInfo(path=portable_path(self.suite), documents=self.suite.definition.documents,
                         max_length=self.suite.max_length)

    @property
    def runs_here(self) -> bool:
        """Whether the plan is resolved on a device that will run it (its kernels and engine checked there)."""
        return self.placed and self.device.kind in ("cpu", "cuda")

    def unsupported_reason(self) -> str | None:
        """Why the model cannot run this suite at all (the paper's "–"), or None."""
        if self.suite.max_length > self.spec.max_length:
            return (f"{self.spec.name} accepts at most {self.spec.max_length} tokens; suite {self.suite.name} has "
                    f"documents of up to {self.suite.max_length} (nothing is truncated)")
        return None


def default_batch_size(suite: Suite, model: str | None = None, protocol: str = "rigorous") -> int:
    """The batch a run uses unless told (`default_batch`)."""
    return default_batch(suite.name, suite.max_length, model, protocol)


def default_batch(suite_name: str, max_length: int, model: str | None = None, protocol: str = "rigorous") -> int:
    """The batch a run of `model` on a suite of `max_length` uses unless told: under the paper protocol the batch
    the paper timed it on this suite with (`calibration.paper_timing_batch`: DeBERTa-v3-base 224, ...); otherwise,
    and for models the paper did not time, its standard batch: 512 documents for short suites, 32 for long ones.
    The report applies it to records, which name their suite and its maximum length."""
    standard = 512 if max_length <= 512 else 32
    paper = paper_timing_batch(model, suite_name) if model and protocol == "paper" else None
    return paper or standard


def resolve_dtype(config: RunConfig, device_kind: str) -> str:
    """The dtype a run uses: the one asked for (one spelling each), else the protocol's for the device."""
    return resolve_dtype_name(config.dtype, device_kind, config.protocol)


def resolve_dtype_name(dtype: str | None, device_kind: str, protocol: str = "rigorous") -> str:
    """`dtype`'s canonical name, or for None the protocol's dtype on `device_kind` (rigorous: bf16 on a GPU, fp32
    on a CPU). UserError for an unknown name."""
    if dtype:
        return dtype_name(dtype)
    chosen = PROTOCOLS[protocol]
    return chosen.gpu_dtype if device_kind in ("cuda", "predicted") else chosen.cpu_dtype


@lru_cache(maxsize=16)
def _checkpoint_sha256(path: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for file in sorted(Path(path).iterdir()):
        if file.is_file() and file.suffix in (".json", ".safetensors", ".bin"):
            digest.update(file.name.encode())
            with open(file, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def checkpoint_sha256(path: str | None) -> str | None:
    """A hash of a checkpoint directory's config and weight files (None without --weights).

    Raises UserError when the directory does not exist.
    """
    if path is None:
        return None
    directory = Path(path)
    if not directory.is_dir():
        raise UserError(f"--weights {path}: not a directory")
    if not (directory / "config.json").is_file():
        raise UserError(f"--weights {path}: no config.json (expected a Hugging Face checkpoint directory)")
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(directory.iterdir()))
    return _checkpoint_sha256(str(directory.resolve()), stamp)


def resolve(config: RunConfig, measurement: str = "throughput", device: DeviceInfo | None = None,
            suite: Suite | None = None, limits: tuple = (), traffic: tuple = (), placed: bool = True) -> Plan:
    """Resolve a request on a device (detected from `config.device` when not given) into a Plan, in parts: the
    work, the precision, the attention, the engine and threads, the identity.

    `suite` may be passed already loaded (a matrix task carries its suite, so a user's file need not exist on the
    node). `limits`: a max-batch search's settings, part of its identity. `traffic`: a latency or serving
    measurement's settings as (name, value) pairs, part of its identity (requests carry their own batches, so such
    a plan has no batch size or token budget). `placed=False`: a task planned before it reaches its device (a
    matrix's driver); the checks that need the device wait for the node, which resolves it again. Raises UserError
    for every impossible or conflicting option, ValueError for a measurement outside `records.MEASUREMENTS`.
    """
    if measurement not in MEASUREMENTS:
        raise ValueError(f"measurement {measurement!r} not in {MEASUREMENTS}")
    spec = config.validate()
    engine = get_engine(config.engine)
    engine.version()  # UserError: its extra is not installed
    suite = suite or load_suite(config.suite)
    device = device or detect(config.device)
    check_vocabulary(suite, registry.model_config(spec).vocab_size, config.model)
    work = resolve_work(config, measurement, suite, device.kind)
    gpu = basket().get(device.basket_id or "")
    precision = resolve_precision(config, device.kind, gpu)
    device_string = torch_device(device) if device.kind in ("cpu", "cuda") else "cpu"
    runs_here = placed and device.kind in ("cpu", "cuda")
    attention = resolve_attention(config, spec, engine, suite, work.documents, device.kind, device_string,
                                  precision.torch_dtype) if runs_here else BackendChoice(config.backend, "")
    weights_sha256 = checkpoint_sha256(config.weights)  # first: a missing directory is named as such
    changes = registry.checkpoint_changes(spec, config.weights) if config.weights else ()
    threads = resolve_engine_and_threads(config, spec, engine, device.kind, device_string, precision.torch_dtype,
                                         runs_here)
    identity = plan_identity(config, measurement, suite, device, precision.dtype, work, threads, weights_sha256,
                             limits, traffic)
    notes = work.notes + precision.notes + ((describe_changes(config.weights, changes),) if changes else ())
    return Plan(config=config, measurement=measurement, spec=spec, shape=registry.shape_of(spec),
                parameters=registry.count_parameters(spec), config_changes=changes, device=device, placed=placed,
                gpu=gpu, torch_device=device_string, dtype=precision.dtype, torch_dtype=precision.torch_dtype,
                backend=attention.name, backend_reason=attention.reason, suite=suite, batch_size=work.batch_size,
                token_budget=work.token_budget, documents=work.documents or 0, warmup_batches=work.warmup_batches,
                engine=engine, threads=threads, identity=identity, notes=notes)


@dataclass(frozen=True)
class Work:
    """What a plan runs over: the documents used (None: a max-batch search, which makes its own), the batching
    (a document count or a token budget; neither for latency and serving, whose requests are their batches), the
    warmup, and the notes a person needs about them."""

    documents: int | None
    batch_size: int | None
    token_budget: int | None
    warmup_batches: int | None
    notes: tuple[str, ...]


def resolve_work(config: RunConfig, measurement: str, suite: Suite, device_kind: str) -> Work:
    """The plan's work. A CPU throughput run subsamples DEFAULT_CPU_DOCS documents unless told; the batch defaults
    to `default_batch_size`. UserError for a token budget below the longest document used (never split)."""
    notes, docs = [], config.docs
    if docs is None and device_kind == "cpu" and measurement == "throughput":
        docs = DEFAULT_CPU_DOCS
        notes.append(f"CPU run: subsampling {docs} documents per suite (--docs to change)")
    documents = min(docs, suite.definition.documents) if docs else suite.definition.documents
    if docs and docs > suite.definition.documents:
        notes.append(f"--docs {docs}: suite {suite.name} has {suite.definition.documents} documents; using all of them")
    warmup = PROTOCOLS[config.protocol].warmup_batches if config.warmup_batches is None else config.warmup_batches
    if measurement == "max_batch":
        return Work(None, None, None, warmup, tuple(notes))
    if measurement in ("latency", "serving"):  # each request is its own batch (latency) or the batcher's
        return Work(documents, None, None, warmup, tuple(notes))
    token_budget = config.token_budget
    batch_size = None if token_budget else (config.batch_size or default_batch_size(suite, config.model,
                                                                                   config.protocol))
    longest = max(suite.lengths[:documents])
    if token_budget is not None and token_budget < longest:
        raise UserError(f"--token-budget {token_budget} is smaller than the longest document used "
                        f"({longest} tokens); a document is never split, so use at least {longest}")
    return Work(documents, batch_size, token_budget, warmup, tuple(notes))


@dataclass(frozen=True)
class Precision:
    """The dtype a plan runs in (canonical name and torch dtype), and why, when it is not the protocol's."""

    dtype: str
    torch_dtype: torch.dtype
    notes: tuple[str, ...]


def resolve_precision(config: RunConfig, device_kind: str, gpu: GPU | None) -> Precision:
    """The dtype asked for, else the protocol's for the device; on a basket GPU without tensor cores for the
    protocol's dtype (T4: no bf16) the GPU's half precision, said in a note."""
    dtype = resolve_dtype(config, device_kind)
    default_dtype = resolve_dtype(replace(config, dtype=None), device_kind)
    notes = []
    if dtype != default_dtype:  # the record still names the protocol: say what was changed in it
        notes.append(f"dtype {dtype} overrides the {config.protocol} protocol's {default_dtype}")
    if config.dtype is None and gpu and gpu.effective_dtype(dtype) != dtype:
        notes.append(f"{gpu.name} has no {dtype} tensor cores: the {config.protocol} protocol runs it in "
                     f"{gpu.effective_dtype(dtype)}")
        dtype = gpu.effective_dtype(dtype)
    return Precision(dtype, parse_dtype(dtype), tuple(notes))


def resolve_attention(config: RunConfig, spec: ModelSpec, engine: Engine, suite: Suite, documents: int | None,
                      device_kind: str, device_string: str, dtype: torch.dtype) -> BackendChoice:
    """The attention backend that will be built on this device for this workload (`auto` chosen by
    `registry.choose_backend`), and why. UserError (BackendUnavailable) for a named backend that cannot run here,
    and for torch.compile with flex on a CPU."""
    registry.check_runs(spec, config.backend, device_string, dtype)
    choice = registry.choose_backend(spec, config.backend, device_string, dtype,
                                     suite.lengths[:documents] if documents else suite.lengths)
    if isinstance(engine, TorchCompileEngine) and choice.name == "flex" and device_kind == "cpu":
        raise UserError(f"--engine {engine.name} with the flex backend cannot run on CPU: torch.compile marks "
                        "shapes dynamic once a second one arrives and reaches Inductor's dynamic CPU flex "
                        "template, whose C++ does not compile (torch 2.13); run on the torch engine (flex is "
                        "compiled on its own, per length) or pick another backend")
    return choice


def resolve_engine_and_threads(config: RunConfig, spec: ModelSpec, engine: Engine, device_kind: str,
                               device_string: str, dtype: torch.dtype, runs_here: bool) -> Threads:
    """The threads every engine runs with (`--threads`, else torch's current count), after checking that `engine`
    and the pinned kernels can run the model here: UserError (EngineUnavailable) for a packed model an exporting
    engine refuses or a device the engine cannot use; a task not yet placed is checked for the model's layout
    only, and the node it lands on checks the rest when it resolves the task again."""
    engine.check_configuration(spec.layout, torch.device(device_string if runs_here else "cpu"),
                               dtype if runs_here else torch.float32)
    if device_kind in ("cpu", "cuda"):
        check_kernels(config.gemm, config.elementwise, device_kind, dtype)
    return threads_from(config.threads)


def plan_identity(config: RunConfig, measurement: str, suite: Suite, device: DeviceInfo, dtype: str, work: Work,
                  threads: Threads, weights_sha256: str | None, limits: tuple, traffic: tuple) -> Identity:
    """Everything that changes the plan's number (`records.Identity`): a CPU's threads and ISA, the timing
    settings of a throughput run, the search's limits or the traffic of a latency or serving measurement."""
    cpu, timing = device.kind == "cpu", measurement == "throughput"
    return Identity(
        measurement=measurement, model=config.model, tiny=config.tiny, suite=suite.name,
        suite_fingerprint=suite.fingerprint, protocol=config.protocol, backend=config.backend, dtype=dtype,
        device=device.identity_name, device_index=device.index if device.kind == "cuda" else None,
        weights_sha256=weights_sha256, batch_size=work.batch_size, token_budget=work.token_budget,
        documents=work.documents, runs=config.passes if timing else None,
        warmup_batches=work.warmup_batches if timing else None, time_transfer=config.time_transfer,
        placement=config.placement if cpu else None, limits=tuple(sorted(limits)),
        matmul_precision=matmul_precision(), traffic=tuple(sorted(traffic)), engine=config.engine,
        threads=threads.intra if cpu else None, interop_threads=threads.inter if cpu else None,
        cpu_isa=device.isa if cpu else None, gemm=config.gemm, elementwise=config.elementwise,
        allocator=allocator.configure().name if cpu else None)


def check_kernel_names(gemm: str | None, elementwise: str | None) -> None:
    """UserError for a pinned kernel name that is not one (`--gemm`, `--elementwise`)."""
    for option, value, known in (("--gemm", gemm, GEMM_KERNELS), ("--elementwise", elementwise, ELEMENTWISE_KERNELS)):
        if value is not None and value not in known:
            raise UserError(f"{option} {value!r}: choose from {', '.join(known)}")


def check_kernels(gemm: str | None, elementwise: str | None, device_kind: str, dtype: torch.dtype) -> None:
    """UserError for a pinned kernel that cannot run here: oneDNN's packed GEMM off a CPU or without oneDNN for
    `dtype`, Inductor's fused kernels off a CPU (not measured on GPUs) or without a C++ compiler. The defaults
    (torch, eager) run everywhere."""
    check_kernel_names(gemm, elementwise)
    if gemm not in (None, DEFAULT_GEMM) and (device_kind != "cpu" or not onednn_available(dtype)):
        where = "this torch and CPU have no oneDNN linear for " + str(dtype) if device_kind == "cpu" else \
            f"the device is {device_kind}"
        raise UserError(f"--gemm {gemm} runs on CPUs with oneDNN; {where}")
    if elementwise not in (None, DEFAULT_ELEMENTWISE):
        refusal = inductor_refusal() if device_kind == "cpu" else f"the device is {device_kind} (measured on CPUs only)"
        if refusal:
            raise UserError(f"--elementwise {elementwise} cannot run here: {refusal}")


def describe_changes(path: str, changes: tuple[ConfigChange, ...]) -> str:
    """One line: the checkpoint's config values that run instead of the row's."""
    return (f"--weights {path} runs its own config where it differs from the row: "
            + ", ".join(f"{c.field} {c.ran!r} (row {c.row!r})" for c in changes))


def matmul_precision() -> str:
    """The float32 matmul precision this process runs with ("highest", "high" or "medium"): torch's setting, or
    "highest" when NVIDIA_TF32_OVERRIDE=0 turns TF32 off in the CUDA libraries. Part of the identity."""
    if os.environ.get("NVIDIA_TF32_OVERRIDE") == "0":
        return "highest"
    return torch.get_float32_matmul_precision()


# ------------------------------------------------------------------------------------------ max-batch settings

def max_batch_limits(granularity: int = 2, margin: float = 0.0, memory_limit: str | int | None = None,
                     max_trials: int | None = None, max_seconds: float | None = None) -> tuple:
    """A search's settings as (name, value) pairs: part of its record's identity (a capped search may stop
    short of the answer, so its caps change the number).

    `memory_limit` is a size ("24GiB", `units.parse_size`) or bytes; None: no cap. Raises UserError for
    impossible values: a granularity or trial count below 1, a margin outside [0, 1), a memory limit or
    time cap that is not positive and finite (nan would never fire).
    """
    if granularity < 1:
        raise UserError(f"--granularity must be at least 1, got {granularity}")
    if not 0.0 <= margin < 1.0:  # also refuses nan
        raise UserError(f"--safety-margin must be in [0, 1), got {margin}")
    if max_trials is not None and max_trials < 1:
        raise UserError(f"--max-trials must be at least 1, got {max_trials}")
    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise UserError(f"--max-seconds must be a positive, finite number of seconds, got {max_seconds}")
    if isinstance(memory_limit, str):
        memory_limit = parse_size(memory_limit, "--memory-limit")
    elif memory_limit is not None and memory_limit <= 0:
        raise UserError(f"--memory-limit must be positive (leave it out for no cap), got {memory_limit} bytes")
    return (("granularity", granularity), ("max_seconds", max_seconds), ("max_trials", max_trials),
            ("memory_limit_bytes", memory_limit), ("safety_margin", margin))


def search_mode(plan: Plan) -> str:
    """"tokens" (a packed token budget) for unpadded models on variable suites, else "batch"."""
    variable = plan.suite.definition.distribution != "fixed"
    return "tokens" if variable and plan.spec.unpadded else "batch"


# ---------------------------------------------------------------------------------------- a plan's record

def record(plan: Plan, payload: Payload, status: str = "ok", reason: str | None = None,
           kind: str | None = None) -> Record:
    """The record of `plan` with `payload`: its identity, device, model, suite and this machine's software.
    `kind` defaults to "predicted" for a prediction, else "measured"."""
    kind = kind or ("predicted" if plan.measurement == "prediction" else "measured")
    return Record(kind=kind, status=status, identity=plan.identity, device=plan.device, model=plan.model_info(),
                  suite=plan.suite_info(), payload=payload,
                  environment=environment.capture(host_compute=kind != "predicted"), reason=reason)


def unsupported_record(plan: Plan, reason: str) -> Record:
    """A configuration the model cannot run at all (the paper's "–")."""
    return record(plan, Failure(backend=plan.config.backend), "unsupported", reason)


def failure_record(plan: Plan, error: BaseException) -> Record:
    """A configuration that raised: its record says what stopped it (out of memory, a crash, a lost node)."""
    parity = error.result.check() if isinstance(error, ParityFailure) else None
    return record(plan, Failure(error_type=type(error).__name__, backend=plan.config.backend, engine=plan.engine.name,
                                parity=parity), "failed", describe(error))


def describe(error: BaseException) -> str:
    """One line for a failure: "out of memory: ..." for every kind of allocator failure, else type: message."""
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    if is_oom(error):
        return f"out of memory: {first}"
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
