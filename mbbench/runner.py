"""One resolved plan -> one record: measure tokens/s, search the maximum batch, or record a failure.

The same functions serve `mbbench run`, `mbbench max-batch`, `mbbench matrix` (locally or in a Ray task)
and tests. They return records; writing them is the store's job (`results.Store`), so remote tasks can
send records home.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Callable

import torch

from mbbench import environment
from mbbench.bench.maxbatch import is_oom
from mbbench.bench.throughput import measure_passes
from mbbench.batching import PackedBatch
from mbbench.bench.timing import UNSTABLE_IQR, summarize
from mbbench.dtypes import parse_dtype
from mbbench.errors import UserError
from mbbench.models import registry
from mbbench.plan import PROTOCOLS, Plan, RunConfig, default_batch_size, resolve  # noqa: F401  (public API)
from mbbench.records import Failure, MaxBatchSearch, Record, Throughput
from mbbench.suites import make_batches, select_documents

Progress = Callable[[str], None]


def _record(plan: Plan, payload, status: str = "ok", reason: str | None = None, kind: str = "measured") -> Record:
    return Record(kind=kind, status=status, identity=plan.identity, device=plan.device, model=plan.model_info(),
                  suite=plan.suite_info(), payload=payload, environment=environment.capture(), reason=reason)


def unsupported_record(plan: Plan, reason: str, kind: str = "measured") -> Record:
    """A configuration the model cannot run at all (the paper's "–")."""
    return _record(plan, Failure(backend=plan.config.backend), "unsupported", reason, kind)


def failure_record(plan: Plan, error: BaseException) -> Record:
    """A configuration that raised: its record says what stopped it (out of memory, a crash, a lost node)."""
    return _record(plan, Failure(error_type=type(error).__name__, backend=plan.config.backend), "failed",
                   describe(error), "predicted" if plan.measurement == "prediction" else "measured")


def describe(error: BaseException) -> str:
    """One line for a failure: "out of memory: ..." for every kind of allocator failure, else type: message."""
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    if is_oom(error):
        return f"out of memory: {first}"
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def build(plan: Plan, progress: Progress | None = None):
    """The encoder of a plan, on the plan's device (index included) in its dtype."""
    if progress:
        progress(f"building {plan.identity.display_model} ({plan.dtype}, backend {plan.backend}: "
                 f"{plan.backend_reason or 'asked for'}) on {plan.device.name} ({plan.torch_device})")
    options = registry.BuildOptions(plan.torch_device, parse_dtype(plan.dtype), plan.backend, plan.config.seed,
                                    plan.config.weights)
    return registry.build_encoder(plan.config.model, options, tiny=plan.config.tiny)


def run(plan: Plan, progress: Progress | None = None, on_run: Callable[[int, float], None] | None = None) -> Record:
    """Measure one plan's tokens/s; returns its record (status ok or unsupported).

    Raises whatever building or running the model raises (the store turns it into a failure record).
    """
    reason = plan.unsupported_reason()
    if reason:
        return unsupported_record(plan, reason)
    encoder = build(plan, progress)
    forward = torch.compile(encoder.__call__, dynamic=True) if plan.config.compile else encoder.__call__
    indices = select_documents(plan.suite, plan.documents)
    protocol = plan.protocol
    batches = make_batches(plan.suite, indices, encoder.layout, plan.batch_size, plan.token_budget,
                           encoder.pad_token_id,
                           pad_to=plan.suite.definition.max_length if protocol.pad_to_suite_max else None)
    real = sum(b.real_tokens for b in batches)
    padded = sum(b.padded_tokens for b in batches)
    if progress:
        progress(f"{len(indices)} documents, {real} tokens in {len(batches)} batches; "
                 f"warmup, then {plan.config.runs} passes")
    device = torch.device(plan.torch_device)
    sampler = _telemetry_sampler(plan) if plan.config.telemetry else None
    gpu_load = _gpu_load_reader(plan)
    load_start = environment.load_snapshot(gpu_load)
    if device.type == "cuda":  # peak memory of the passes (weights included), not of building the model
        torch.cuda.reset_peak_memory_stats(device)
    times = measure_passes(forward, batches, device, plan.config.runs, plan.warmup_batches,
                           plan.config.time_transfer, on_run, around_timed=sampler)
    load_end = environment.load_snapshot(gpu_load)
    stats = summarize([real / s for s in times.run_seconds])
    pass_stats = summarize(times.run_seconds)
    headline_seconds = pass_stats.median if protocol.headline == "median" else pass_stats.mean
    flops = pass_flops(plan, batches)
    mfu, mfu_note = model_flops_utilisation(plan, flops / headline_seconds)
    payload = Throughput(
        backend=encoder.backend, backend_reason=plan.backend_reason, num_documents=len(indices), subsampled=plan.subsampled, real_tokens=real,
        padded_tokens=padded, num_batches=len(batches),
        warmup_batches=plan.warmup_batches if plan.warmup_batches is not None else len(batches),
        warmup_seconds=times.warmup_seconds, first_call_seconds=times.first_call_seconds,
        run_seconds=times.run_seconds, headline=protocol.headline, tokens_per_second=real / headline_seconds,
        tokens_per_second_stats=stats.to_dict(), timer="cuda-events" if device.type == "cuda" else "perf_counter",
        unstable=stats.relative_iqr > UNSTABLE_IQR,
        compile_seconds=times.first_call_seconds if plan.config.compile else None,
        telemetry=_telemetry_summary(sampler, real * plan.config.runs),
        peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        flops_per_pass=flops, mfu=mfu, mfu_note=mfu_note,
        load={"start": load_start.to_dict(), "end": load_end.to_dict()},
        load_warning=environment.busy_warning(load_start, load_end,
                                              torch.get_num_threads() if device.type == "cpu" else 1))
    return _record(plan, payload)


def pass_flops(plan: Plan, batches) -> float:
    """Model FLOPs of one pass over `batches`, by the performance model's counter (`perfmodel.forward_flops`),
    so measured and predicted MFU are computed alike. Padded batches count their padding (it is executed)."""
    from mbbench.hardware.perfmodel import forward_flops

    shape = registry.shape_of(plan.spec, plan.config.tiny)
    total = 0.0
    for batch in batches:
        if isinstance(batch, PackedBatch):
            total += forward_flops(shape, (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).tolist())
        else:
            total += forward_flops(shape, batch.attention_mask.sum(1).tolist(), batch.input_ids.shape[1])
    return total


def model_flops_utilisation(plan: Plan, flops_per_second: float) -> tuple[float | None, str]:
    """(MFU, how it was computed): achieved model FLOP/s over the basket GPU's dense peak for the dtype
    (vendor datasheet, gpu_basket.csv); None on CPUs and GPUs outside the basket, with the reason."""
    from mbbench.hardware import perfmodel
    from mbbench.hardware.gpus import basket

    if plan.device.kind == "cpu":
        return perfmodel.cpu_peak_flops(plan.device.name)
    gpu = basket().get(plan.device.basket_id or "")
    if gpu is None:
        return None, f"{plan.device.name} is not in the GPU basket: no datasheet peak"
    dtype = "tfloat32" if plan.dtype == "float32" and torch.backends.cuda.matmul.allow_tf32 else plan.dtype
    peak = perfmodel.peak_flops(gpu, dtype)
    return flops_per_second / peak, f"model FLOPs / pass time / {gpu.name} dense {dtype} peak ({peak / 1e12:.0f} TFLOP/s)"


def _gpu_load_reader(plan: Plan):
    """NVML utilisation and processes of the plan's GPU (None on CPU or without NVML)."""
    if plan.device.kind != "cuda":
        return None
    try:
        return environment.nvml_gpu_reader(plan.device.index or 0)
    except Exception:  # noqa: BLE001 - load is context, not a requirement
        return None


def _telemetry_sampler(plan: Plan):
    if plan.device.kind != "cuda":
        return None
    try:
        from mbbench.bench.telemetry import Sampler, nvml_reader

        return Sampler(nvml_reader(plan.device.index or 0))
    except Exception:  # noqa: BLE001 - telemetry is optional: no NVML, no samples
        return None


def _telemetry_summary(sampler, tokens: int) -> dict | None:
    if sampler is None:
        return None
    from mbbench.bench.telemetry import summarize as summarize_samples

    return summarize_samples(sampler.samples, tokens)


def parse_memory(text: str | None) -> int | None:
    """'24GiB', '24GB', '512MiB' -> bytes; UserError for anything else."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([0-9.]+)\s*(GiB|GB|MiB|MB)\s*", text)
    if not match:
        raise UserError(f"--memory-limit {text!r}: expected a size like 24GiB, 24GB or 512MiB")
    value, unit = float(match.group(1)), match.group(2)
    return int(value * {"GiB": 2**30, "GB": 10**9, "MiB": 2**20, "MB": 10**6}[unit])


def search_mode(plan: Plan) -> str:
    """"tokens" (a packed token budget) for unpadded models on variable suites, else "batch"."""
    variable = plan.suite.definition.distribution != "fixed"
    return "tokens" if variable and plan.spec.unpadded else "batch"


def max_batch_limits(granularity: int = 2, margin: float = 0.0, memory_limit: str | None = None,
                     max_trials: int | None = None, max_seconds: float | None = None) -> tuple:
    """A search's settings as (name, value) pairs: part of its record's identity (a capped search may stop
    short of the answer, so its caps change the number). Raises UserError for impossible values."""
    if granularity < 1:
        raise UserError(f"--granularity must be at least 1, got {granularity}")
    if not 0.0 <= margin < 1.0:
        raise UserError(f"--safety-margin must be in [0, 1), got {margin}")
    if max_trials is not None and max_trials < 1:
        raise UserError(f"--max-trials must be at least 1, got {max_trials}")
    if max_seconds is not None and max_seconds <= 0:
        raise UserError(f"--max-seconds must be positive, got {max_seconds}")
    return (("granularity", granularity), ("max_seconds", max_seconds), ("max_trials", max_trials),
            ("memory_limit_bytes", parse_memory(memory_limit)), ("safety_margin", margin))


def max_batch(plan: Plan, probe=None, fake_limit_tokens: int | None = None, fake_error: bool = False,
              progress: Progress | None = None, seed: int | str | None = "predicted",
              on_trial: Callable[[object], None] | None = None) -> Record:
    """Search the largest batch (padded models, or fixed suites) or token budget (unpadded, variable suites).

    The plan must come from `resolve(..., measurement="max_batch", limits=max_batch_limits(...))`.
    `seed`: a size to start from; "predicted": the memory model's answer for the device (or the memory
    cap), None: unseeded doubling. A search stopped by its trial or time cap is recorded as `capped`
    with the bracket it reached. On a CPU only the fake-OOM twin runs (`fake_limit_tokens`): nothing but
    a CUDA out-of-memory ends a real search, so a CPU search would grow until the host runs out of memory.
    """
    from mbbench.bench.maxbatch import TrialSpec, memory_model_seed, search, subprocess_probe

    limits = dict(plan.identity.limits)
    granularity, margin, limit_bytes = limits["granularity"], limits["safety_margin"], limits["memory_limit_bytes"]
    if plan.device.kind != "cuda" and probe is None and fake_limit_tokens is None:
        raise UserError("max-batch searches GPU memory; this device is the CPU, where no out-of-memory error "
                        "ends the search (use a GPU, or `mbbench predict` for the memory model's answer)")
    if limit_bytes and plan.device.kind != "cuda":
        raise UserError("--memory-limit caps a CUDA allocator; this run is on the CPU")
    reason = plan.unsupported_reason()
    if reason:
        return unsupported_record(plan, reason)
    mode = search_mode(plan)
    probe = probe or subprocess_probe(TrialSpec(plan.config.model, plan.suite.path, plan.dtype, plan.backend,
                                                plan.torch_device, mode, plan.config.tiny, limit_bytes,
                                                fake_limit_tokens, fake_error))
    if on_trial:
        probe = _observed(probe, on_trial)
    step = granularity if mode == "batch" else max(granularity, 256)
    seed_source = "given" if isinstance(seed, int) else None
    if seed == "predicted":
        capacity = limit_bytes or (plan.device.memory_bytes if plan.device.kind == "cuda" else None)
        seed = memory_model_seed(plan.config.model, plan.suite.definition.max_length, capacity, plan.dtype, mode,
                                 step, plan.config.tiny) if capacity else None
        seed_source = "memory-model" if seed else None
    if progress:
        progress(f"searching the largest {'batch' if mode == 'batch' else 'token budget'} in steps of {step}"
                 + (f", from the memory model's {seed}" if seed_source == "memory-model" else ""))
    found = search(probe, granularity=step, seed=seed, max_trials=limits.get("max_trials"),
                   max_seconds=limits.get("max_seconds"))
    payload = MaxBatchSearch(
        mode=mode, sequence_length=plan.suite.definition.max_length, granularity=step, safety_margin=margin,
        memory_limit_bytes=limit_bytes, largest_ok=found.largest_ok, result=found.with_margin(margin),
        trials=[asdict(t) for t in found.trials], search_seconds=found.seconds,
        device_memory_bytes=plan.device.memory_bytes, peak_bytes_at_result=found.peak_bytes,
        capped=found.capped, bracket=tuple(found.bracket), seed=found.seed,
        note=("fixed-length batches at the suite's maximum length (the paper's memory column)" if mode == "batch"
              else "largest packed token budget per forward pass")
        + (f"; stopped by {found.stopped_by}: a confirmed lower bound" if found.capped else "")
        + {"memory-model": "; started from the memory model's prediction", "given": "; started from --seed"}.get(
            seed_source or "", ""))
    return _record(plan, payload)


def _observed(probe, on_trial: Callable[[object], None]):
    def observed(size: int):
        trial = probe(size)
        on_trial(trial)
        return trial
    return observed
