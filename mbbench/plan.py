"""A configuration resolved once, before anything runs: `RunConfig` (what was asked) -> `Plan` (what will run).

The plan carries the torch device with its index, the dtype, the batching, the documents used and the
record identity, so `run`, `max-batch`, `predict` and matrix tasks all take the same resolved object
and no later step re-derives (or drops) any of it. Every impossible or conflicting option is refused
here, with a `UserError`, before a model is built or a file written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from mbbench.dtypes import dtype_name, parse_dtype
from mbbench.errors import UserError
from mbbench.hardware.gpus import detect, torch_device
from mbbench.models import registry
from mbbench.models.registry import ModelSpec
from mbbench.records import DeviceInfo, Identity, ModelInfo, SuiteInfo
from mbbench.suites import Suite, check_vocabulary, load_suite

DEFAULT_CPU_DOCS = 16  # the built-in default job on a GPU-less machine: about two minutes on 2 cores


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
                      "batch 512 (short) / 32 (long), rows padded to the suite maximum",
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
    runs: int = 10
    warmup_batches: int | None = None  # None: the protocol's (rigorous: one full pass; paper: one batch)
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    compile: bool = False
    time_transfer: bool = False
    telemetry: bool = True
    seed: int = 0
    weights: str | None = None  # a local checkpoint directory
    tiny: bool = False  # tiny variant of the model's family (tests, smoke runs)
    placement: str | None = None  # the Ray node type a CPU matrix task asked for (part of its identity)

    def validate(self) -> None:
        """UserError for any value no device could run (checks that need the device are in `resolve`)."""
        for name, value, low in (("--runs", self.runs, 1), ("--docs", self.docs, 1),
                                 ("--batch-size", self.batch_size, 1), ("--token-budget", self.token_budget, 1)):
            if value is not None and value < low:
                raise UserError(f"{name} must be at least {low}, got {value}")
        if self.warmup_batches is not None and self.warmup_batches < 0:
            raise UserError(f"--warmup must be 0 or more, got {self.warmup_batches}")
        if self.batch_size is not None and self.token_budget is not None:
            raise UserError("--batch-size and --token-budget both given: a batch is either a document count "
                            "or a token budget; choose one")
        if self.protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {self.protocol!r}; choose from {', '.join(PROTOCOLS)}")
        spec = registry.get_spec(self.model)
        registry.require_available(spec)
        spec.builder.check_backend(spec, self.backend)
        if self.dtype is not None:
            dtype_name(self.dtype)  # UserError for an unknown name
        if self.token_budget is not None and not spec.unpadded:
            raise UserError(f"--token-budget needs an unpadded model; {self.model} runs padded batches")


@dataclass(frozen=True)
class Plan:
    """Everything a measurement, search or prediction needs, resolved; its identity names its record."""

    config: RunConfig
    measurement: str  # "throughput", "max_batch" or "prediction"
    spec: ModelSpec
    suite: Suite
    device: DeviceInfo
    torch_device: str  # "cpu" or "cuda:N"
    dtype: str
    batch_size: int | None
    token_budget: int | None
    documents: int  # documents used (the first N of the suite)
    warmup_batches: int | None  # None: one full pass
    identity: Identity
    notes: tuple[str, ...] = field(default=())
    backend: str = "auto"  # the backend that will be built: `auto` resolved for this device and workload
    backend_reason: str = ""  # why (a measured crossover, a kernel that cannot run here, "asked for")

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
        return ModelInfo(family=self.spec.family, group=self.spec.group,
                         parameters=registry.count_parameters(self.spec, self.config.tiny),
                         max_length=self.spec.max_length, layout=self.spec.layout)

    def suite_info(self) -> SuiteInfo:
        return SuiteInfo(path=self.suite.path, documents=self.suite.definition.documents,
                         max_length=self.suite.max_length)

    def unsupported_reason(self) -> str | None:
        """Why the model cannot run this suite at all (the paper's "–"), or None."""
        if self.suite.max_length > self.spec.max_length:
            return (f"{self.spec.name} accepts at most {self.spec.max_length} tokens; suite {self.suite.name} has "
                    f"documents of up to {self.suite.max_length} (nothing is truncated)")
        return None


def default_batch_size(suite: Suite) -> int:
    """The paper's standard timing batch: 512 documents for short suites, 32 for long ones."""
    return 512 if suite.max_length <= 512 else 32


def resolve_dtype(config: RunConfig, device_kind: str) -> str:
    """The dtype a run uses: the one asked for (one spelling each), else the protocol's for the device."""
    if config.dtype:
        return dtype_name(config.dtype)
    protocol = PROTOCOLS[config.protocol]
    return protocol.gpu_dtype if device_kind in ("cuda", "predicted") else protocol.cpu_dtype


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


def _check_vocabulary(config: RunConfig, spec: ModelSpec, suite: Suite) -> None:
    check_vocabulary(suite, registry.model_config(spec, config.tiny).vocab_size, config.model)


def resolve(config: RunConfig, measurement: str = "throughput", device: DeviceInfo | None = None,
            suite: Suite | None = None, limits: tuple = ()) -> Plan:
    """Resolve a request on a device (detected from `config.device` when not given) into a Plan.

    `suite` may be passed already loaded (a matrix task carries its suite, so a user's file need not
    exist on the node). `limits`: a max-batch search's settings, part of its identity. Raises UserError
    for every impossible or conflicting option.
    """
    config.validate()
    spec = registry.get_spec(config.model)
    suite = suite or load_suite(config.suite)
    device = device or detect(config.device)
    _check_vocabulary(config, spec, suite)
    notes = []
    docs = config.docs
    if docs is None and device.kind == "cpu" and measurement == "throughput":
        docs = DEFAULT_CPU_DOCS
        notes.append(f"CPU run: subsampling {docs} documents per suite (--docs to change)")
    documents = min(docs, suite.definition.documents) if docs else suite.definition.documents
    if docs and docs > suite.definition.documents:
        notes.append(f"--docs {docs}: suite {suite.name} has {suite.definition.documents} documents; using all of them")
    if measurement == "max_batch":
        batch_size, token_budget, documents = None, None, None
    else:
        token_budget = config.token_budget
        batch_size = None if token_budget else (config.batch_size or default_batch_size(suite))
        longest = max(suite.lengths[:documents])
        if token_budget is not None and token_budget < longest:
            raise UserError(f"--token-budget {token_budget} is smaller than the longest document used "
                            f"({longest} tokens); a document is never split, so use at least {longest}")
    dtype = resolve_dtype(config, device.kind)
    default_dtype = resolve_dtype(replace(config, dtype=None), device.kind)
    if dtype != default_dtype:  # the record still names the protocol: say what was changed in it
        notes.append(f"dtype {dtype} overrides the {config.protocol} protocol's {default_dtype}")
    device_string = torch_device(device) if device.kind in ("cpu", "cuda") else "cpu"
    backend, backend_reason = config.backend, ""
    if device.kind in ("cpu", "cuda") and not device.name.startswith("not reached"):  # a placed device
        spec.builder.check_runs(spec, config.backend, device_string, parse_dtype(dtype))
        choice = spec.builder.choose(spec, config.backend, device_string, parse_dtype(dtype),
                                     suite.lengths[:documents] if documents else suite.lengths)
        backend, backend_reason = choice.name, choice.reason
        if config.compile and backend == "flex" and device.kind == "cpu":
            raise UserError("--compile with the flex backend cannot run on CPU: torch.compile(dynamic=True) reaches "
                            "Inductor's dynamic CPU flex template, whose C++ does not compile (torch 2.13); run "
                            "without --compile (flex is compiled on its own, per length) or pick another backend")
    protocol = PROTOCOLS[config.protocol]
    warmup = protocol.warmup_batches if config.warmup_batches is None else config.warmup_batches
    timing = measurement == "throughput"
    identity = Identity(
        measurement=measurement, model=config.model, tiny=config.tiny, suite=suite.name,
        suite_fingerprint=suite.fingerprint, protocol=config.protocol, backend=config.backend, dtype=dtype,
        device=device.identity_name, device_index=device.index if device.kind == "cuda" else None,
        weights_sha256=checkpoint_sha256(config.weights), batch_size=batch_size, token_budget=token_budget,
        documents=documents, runs=config.runs if timing else None, warmup_batches=warmup if timing else None,
        compile=config.compile, time_transfer=config.time_transfer,
        placement=config.placement if device.kind == "cpu" else None, limits=tuple(sorted(limits)))
    return Plan(config, measurement, spec, suite, device, device_string, dtype, batch_size, token_budget,
                documents or 0, warmup, identity, tuple(notes), backend, backend_reason)
