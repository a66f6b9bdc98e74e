"""One configuration (model x suite x protocol x backend x dtype x device) -> one record.

The same function serves `mbbench run`, `mbbench matrix` (locally or in a Ray task) and tests:
it validates, builds the model, makes batches, times passes and returns the record. Writing the
record is the caller's job (`results.write_atomic`), so remote tasks can send records home.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from mbbench import environment, results
from mbbench.bench.throughput import measure_passes
from mbbench.bench.timing import UNSTABLE_IQR, summarize
from mbbench.dtypes import dtype_name, parse_dtype
from mbbench.errors import UserError
from mbbench.hardware.gpus import LocalDevice, detect
from mbbench.models import registry
from mbbench.suites import Suite, load_suite, make_batches, select_documents


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
    model: str
    suite: str
    protocol: str = "rigorous"
    backend: str = "auto"
    dtype: str | None = None  # None: the protocol's dtype for the device
    batch_size: int | None = None  # None: the paper's timing batch (512 short, 32 long)
    token_budget: int | None = None  # packed models: tokens per batch instead of a document count
    docs: int | None = None
    runs: int = 10
    warmup_batches: int | None = -1  # -1: the protocol's default
    device: str = "auto"
    compile: bool = False
    time_transfer: bool = False
    telemetry: bool = True
    seed: int = 0
    weights: str | None = None
    tiny: bool = False  # tiny variant of the model's family (tests, smoke runs)
    # The Ray accelerator type a matrix task was placed on. Part of a CPU run's identity only: CPU records
    # all live under results/cpu/, so CPU runs on different node types need different names.
    placement: str | None = None

    def validate(self) -> None:
        if self.runs < 1:
            raise UserError(f"--runs must be at least 1, got {self.runs}")
        if self.docs is not None and self.docs < 1:
            raise UserError(f"--docs must be positive, got {self.docs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch-size must be positive, got {self.batch_size}")
        if self.token_budget is not None and self.token_budget < 1:
            raise UserError(f"--token-budget must be positive, got {self.token_budget}")
        if self.protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {self.protocol!r}; choose from {', '.join(PROTOCOLS)}")
        registry.get_spec(self.model)


def default_batch_size(suite: Suite) -> int:
    """The paper's standard timing batch: 512 documents for short suites, 32 for long ones."""
    return 512 if suite.max_length <= 512 else 32


def resolve_dtype(cfg: RunConfig, device_kind: str) -> str:
    protocol = PROTOCOLS[cfg.protocol]
    if cfg.dtype:  # one spelling per dtype ("bf16" -> "bfloat16"), so one configuration has one record id
        return dtype_name(cfg.dtype)
    return protocol.gpu_dtype if device_kind == "cuda" else protocol.cpu_dtype


def identity(cfg: RunConfig, suite: Suite, dtype: str, batch_size: int | None, device_kind: str) -> dict:
    """The fields that define a configuration (and its file name)."""
    return {"model": cfg.model + ("-tiny" if cfg.tiny else ""), "suite": suite.name, "protocol": cfg.protocol,
            "backend": cfg.backend, "dtype": dtype,
            "batch": f"tb{cfg.token_budget}" if cfg.token_budget else f"bs{batch_size}",
            "docs": f"docs{cfg.docs}" if cfg.docs else None, "compile": "compiled" if cfg.compile else None,
            "transfer": "with-transfer" if cfg.time_transfer else None,
            "node": f"on-{cfg.placement}" if cfg.placement and device_kind == "cpu" else None}


@dataclass(frozen=True)
class Plan:
    """What a configuration resolves to on a kind of device, before anything runs.

    The matrix driver plans tasks for remote machines with it, and `run` builds its record from it, so
    the id a driver expects is the id the record gets.
    """

    dtype: str
    batch_size: int | None
    config_id: str


def plan(cfg: RunConfig, suite: Suite, device_kind: str) -> Plan:
    dtype = resolve_dtype(cfg, device_kind)
    batch_size = None if cfg.token_budget else (cfg.batch_size or default_batch_size(suite))
    return Plan(dtype, batch_size, results.config_id(identity(cfg, suite, dtype, batch_size, device_kind)))


def device_fields(device: LocalDevice) -> dict:
    return {"device": device.kind, "gpu_dir": device.result_dir, "gpu": asdict(device)}


def base_record(cfg: RunConfig, suite: Suite, device: LocalDevice, dtype: str, batch_size: int | None,
                kind: str = "measured") -> dict:
    spec = registry.get_spec(cfg.model)
    ident = identity(cfg, suite, dtype, batch_size, device.kind)
    return {
        "schema_version": results.SCHEMA_VERSION, "kind": kind, "status": "ok", "reason": None,
        "config_id": results.config_id(ident), "config": asdict(cfg),
        "model": ident["model"], "family": spec.family, "group": spec.group,
        "parameters": registry.count_parameters(spec, cfg.tiny), "model_max_length": spec.max_length,
        "suite": suite.name, "suite_fingerprint": suite.fingerprint, "suite_path": suite.path,
        "suite_documents": suite.definition.documents, "dtype": dtype, "protocol": cfg.protocol,
        "protocol_description": PROTOCOLS[cfg.protocol].description, "batch_size": batch_size,
        "token_budget": cfg.token_budget, "layout": spec.layout,
        **device_fields(device), "environment": environment.capture(), "created_at": results.now(),
    }


def run(cfg: RunConfig, device: LocalDevice | None = None, progress: Callable[[str], None] | None = None,
        on_run: Callable[[int, float], None] | None = None, suite: Suite | None = None) -> dict:
    """Measure one configuration; returns its record (status ok or unsupported).

    `suite` may be passed already loaded: a remote matrix task receives the driver's suite definition,
    so a user's suite file need not exist on the node that measures it.
    """
    cfg.validate()
    suite = suite or load_suite(cfg.suite)
    device = device or detect(cfg.device)
    planned = plan(cfg, suite, device.kind)
    dtype, batch_size = planned.dtype, planned.batch_size
    spec = registry.get_spec(cfg.model)
    if cfg.token_budget and spec.layout != "packed":
        raise UserError(f"--token-budget needs an unpadded model; {cfg.model} runs padded batches")
    record = base_record(cfg, suite, device, dtype, batch_size)

    if suite.max_length > spec.max_length:
        record.update(status="unsupported", backend=cfg.backend, tokens_per_second=None, run_seconds=[],
                      reason=f"{cfg.model} accepts at most {spec.max_length} tokens; suite {suite.name} has "
                             f"documents of up to {suite.max_length} (nothing is truncated)")
        return record

    torch_device = torch.device("cuda" if device.kind == "cuda" else "cpu")
    options = registry.BuildOptions(str(torch_device), parse_dtype(dtype), cfg.backend, cfg.seed, cfg.weights)
    if progress:
        progress(f"building {cfg.model} ({dtype}, backend {cfg.backend}) on {device.name}")
    encoder = registry.build_encoder(cfg.model, options, tiny=cfg.tiny)
    forward = torch.compile(encoder.__call__, dynamic=True) if cfg.compile else encoder.__call__

    indices = select_documents(suite, cfg.docs)
    protocol = PROTOCOLS[cfg.protocol]
    pad_token = getattr(encoder.module.config, "pad_token_id", 0) or 0
    if cfg.tiny:
        pad_token = 0
    batches = make_batches(suite, indices, encoder.layout, batch_size, cfg.token_budget, pad_token,
                           pad_to=suite.definition.max_length if protocol.pad_to_suite_max else None)
    if cfg.tiny:  # tiny vocabularies are smaller than the suite's token range
        vocab = encoder.module.config.vocab_size
        for batch in batches:
            batch.input_ids.remainder_(vocab)

    real = sum(b.real_tokens for b in batches)
    padded = sum(b.padded_tokens for b in batches)
    warmup = protocol.warmup_batches if cfg.warmup_batches == -1 else cfg.warmup_batches
    if progress:
        progress(f"{len(indices)} documents, {real} tokens in {len(batches)} batches; warmup, then {cfg.runs} passes")

    sampler = _telemetry_sampler(device) if cfg.telemetry else None
    times = measure_passes(forward, batches, torch_device, cfg.runs, warmup, cfg.time_transfer, on_run,
                           around_timed=sampler)

    per_run = [real / s for s in times.run_seconds]
    stats = summarize(per_run)
    headline_seconds = summarize(times.run_seconds).median if protocol.headline == "median" else \
        summarize(times.run_seconds).mean
    record.update(
        backend=encoder.backend, num_documents=len(indices), subsampled=len(indices) < suite.definition.documents,
        real_tokens=real, padded_tokens=padded, padding_efficiency=real / padded, num_batches=len(batches),
        warmup_batches=warmup if warmup is not None else len(batches), warmup_seconds=times.warmup_seconds,
        first_call_seconds=times.first_call_seconds, compile=cfg.compile,
        compile_seconds=times.first_call_seconds if cfg.compile else None,
        transfer_timed=cfg.time_transfer, runs=cfg.runs, run_seconds=times.run_seconds,
        headline=protocol.headline, tokens_per_second=real / headline_seconds,
        tokens_per_second_stats=stats.to_dict(), samples_per_second=len(indices) / headline_seconds,
        padded_tokens_per_second=padded / headline_seconds, unstable=stats.relative_iqr > UNSTABLE_IQR,
        timer="cuda-events" if torch_device.type == "cuda" else "perf_counter",
        telemetry=_telemetry_summary(sampler, real * cfg.runs),
    )
    return record


def _telemetry_sampler(device: LocalDevice):
    if device.kind != "cuda":
        return None
    try:
        from mbbench.bench.telemetry import Sampler, nvml_reader

        return Sampler(nvml_reader(0))
    except Exception:
        return None


def _telemetry_summary(sampler, tokens: int) -> dict | None:
    if sampler is None:
        return None
    from mbbench.bench.telemetry import summarize as summarize_samples

    return summarize_samples(sampler.samples, tokens)


def parse_memory(text: str | None) -> int | None:
    """'24GiB', '24GB', '512MiB' -> bytes."""
    if text is None:
        return None
    import re

    match = re.fullmatch(r"\s*([0-9.]+)\s*(GiB|GB|MiB|MB)\s*", text)
    if not match:
        raise UserError(f"--memory-limit {text!r}: expected a size like 24GiB, 24GB or 512MiB")
    value, unit = float(match.group(1)), match.group(2)
    return int(value * {"GiB": 2**30, "GB": 10**9, "MiB": 2**20, "MB": 10**6}[unit])


def max_batch(cfg: RunConfig, device: LocalDevice | None = None, granularity: int = 2, margin: float = 0.0,
              memory_limit: str | None = None, probe=None, fake_limit_tokens: int | None = None,
              fake_error: bool = False, seed: int | str | None = "predicted", max_trials: int | None = None,
              max_seconds: float | None = None) -> dict:
    """Search the largest batch (padded models, or fixed suites) or token budget (unpadded, variable suites).

    seed: a size to start from; "predicted": the memory model's, on CUDA (None on CPU); None: unseeded.
    max_trials / max_seconds: caps; a capped search's record says `capped` and gives its `bracket`.
    """
    from mbbench.bench.maxbatch import TrialSpec, memory_model_seed, search, subprocess_probe

    cfg.validate()
    suite = load_suite(cfg.suite)
    device = device or detect(cfg.device)
    dtype = resolve_dtype(cfg, device.kind)
    spec = registry.get_spec(cfg.model)
    limit_bytes = parse_memory(memory_limit)
    if limit_bytes and device.kind != "cuda":
        raise UserError("--memory-limit caps a CUDA allocator; this run is on the CPU")
    variable = suite.definition.distribution != "fixed"
    mode = "tokens" if variable and spec.layout == "packed" else "batch"
    ident = identity(cfg, suite, dtype, None, device.kind) | {"batch": "maxbatch", "docs": None,
                                                  "limit": f"limit{memory_limit}" if memory_limit else None}
    record = base_record(cfg, suite, device, dtype, None)
    record.update(config_id=results.config_id(ident), measurement="max_batch", search_mode=mode,
                  sequence_length=suite.definition.max_length, granularity=granularity, safety_margin=margin,
                  memory_limit_gb=limit_bytes / 1e9 if limit_bytes else None, emulated=bool(limit_bytes),
                  backend=cfg.backend)
    if suite.max_length > spec.max_length:
        record.update(status="unsupported", reason=f"{cfg.model} accepts at most {spec.max_length} tokens")
        return record
    torch_device = "cuda" if device.kind == "cuda" else "cpu"
    probe = probe or subprocess_probe(TrialSpec(cfg.model, cfg.suite, dtype, cfg.backend, torch_device, mode,
                                                cfg.tiny, limit_bytes, fake_limit_tokens, fake_error))
    step = granularity if mode == "batch" else max(granularity, 256)
    # --- gpurun (issue 15): seeded, capped search; port these lines onto the rewritten runner -------------
    seed_source = "given" if isinstance(seed, int) else None
    if seed == "predicted":
        capacity = limit_bytes or (device.memory_gb * 1e9 if device.kind == "cuda" and device.memory_gb else None)
        seed = memory_model_seed(cfg.model, suite.definition.max_length, capacity, dtype, mode, step,
                                 cfg.tiny) if capacity else None
        seed_source = "memory-model" if seed else None
    found = search(probe, granularity=step, seed=seed, max_trials=max_trials, max_seconds=max_seconds)
    record.update(search_seed=found.seed, seed_source=seed_source, capped=found.capped,
                  stopped_by=found.stopped_by, bracket=list(found.bracket), max_trials=max_trials,
                  max_seconds=max_seconds)
    # --- end gpurun ------------------------------------------------------------------------------------------
    result = found.with_margin(margin)
    record.update(
        max_batch_size=result if mode == "batch" else None, max_token_budget=result if mode == "tokens" else None,
        largest_ok=found.largest_ok, granularity=step, peak_bytes_at_result=found.peak_bytes,
        device_memory_gb=device.memory_gb, trials=[asdict(t) for t in found.trials], search_seconds=found.seconds,
        note=("fixed-length batches at the suite's maximum length (the paper's memory column)" if mode == "batch"
              else "largest packed token budget per forward pass"),
    )
    return record
