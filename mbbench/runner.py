"""One resolved plan -> one record: measure tokens/s, search the maximum batch, or record a failure.

The same functions serve `mbbench run`, `mbbench max-batch`, `mbbench matrix` (locally or in a Ray task)
and tests. They return records; writing them is the store's job (`results.Store`), so remote tasks can
send records home.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from mbbench import environment, estimate, loading
from mbbench.batching import Batch, PackedBatch
from mbbench.bench import telemetry, trial
from mbbench.bench.matmul import GemmRates
from mbbench.bench.maxbatch import search
from mbbench.bench.throughput import PassTimes, measure_passes
from mbbench.bench.timing import summarize
from mbbench.errors import UserError
from mbbench.formatting import plural
from mbbench.hardware import memory, perfmodel
from mbbench.loading import LoadedModel
from mbbench.models.encoders import Encoder
from mbbench.plan import Plan, record, search_mode, unsupported_record
from mbbench.records import COMPILE_ENGINE, MachineLoad, MaxBatchSearch, Record, Throughput
from mbbench.suites import make_batches, select_documents

Progress = Callable[[str], None]


def run(plan: Plan, progress: Progress | None = None, on_pass: Callable[[int, float], None] | None = None) -> Record:
    """Measure one plan's tokens/s; returns its record (status ok or unsupported).

    The model is built and its engine prepared through `loading` (threads applied once, kernels chosen, the cold
    start on the first batch recorded apart, the accuracy gate before timing); between the two the run says how
    long it will take at least. Raises whatever building or running the model raises, ParityFailure included (the
    store turns it into a failure record).
    """
    reason = plan.unsupported_reason()
    if reason:
        return unsupported_record(plan, reason)
    started = time.perf_counter()
    built = loading.build(plan.model_plan, progress)
    batches = plan_batches(plan, built.encoder)
    flops = pass_flops(plan, batches)
    say_estimate(progress, estimate_before(plan, flops, len(batches), built.rates), started)  # before the engine
    loaded = loading.ready(built, batches, progress)
    if progress:
        progress(f"{plural(plan.documents, 'document')}, {sum(b.real_tokens for b in batches):,} real tokens in "
                 f"{plural(len(batches), 'batch')}; warmup, then {plural(plan.config.passes, 'pass')}")
    timed = time_passes(plan, loaded, batches, on_pass, progress, started)
    return record(plan, throughput_payload(plan, loaded, batches, flops, timed))


def plan_batches(plan: Plan, encoder: Encoder) -> list[Batch]:
    """The plan's documents in batches of the encoder's layout: by count or token budget, padded to the suite's
    maximum under the paper protocol."""
    indices = select_documents(plan.suite, plan.documents)
    pad_to = plan.suite.definition.max_length if plan.protocol.pad_to_suite_max else None
    return make_batches(plan.suite, indices, encoder.layout, plan.batch_size, plan.token_budget,
                        encoder.pad_token_id, pad_to=pad_to)


@dataclass(frozen=True)
class TimedPasses:
    """A run's timed passes and what was watched around them: the machine's load, NVML telemetry, peak memory."""

    times: PassTimes
    load: MachineLoad
    telemetry: dict | None  # `telemetry.summarize` of the samples (None off a GPU or without NVML)
    peak_memory_bytes: int | None  # the passes' peak on a GPU, weights included


def time_passes(plan: Plan, loaded: LoadedModel, batches: list[Batch], on_pass: Callable[[int, float], None] | None,
                progress: Progress | None, started: float) -> TimedPasses:
    """Warmup and the plan's timed passes of the loaded engine over `batches` (`bench.throughput.measure_passes`),
    the machine's load watched around them, NVML sampled during them on a GPU."""
    device = loaded.device
    sampler = _telemetry_sampler(plan) if plan.config.telemetry else None
    machine = watch_load(plan, loaded.busy_threads)
    if device.type == "cuda":  # peak memory of the passes (weights included), not of building the model
        torch.cuda.reset_peak_memory_stats(device)
    after_first = (lambda seconds: say_estimate(progress, estimate.from_first_batch(
        seconds, len(batches), plan.config.passes, plan.warmup_batches), started)) if progress else None
    times = measure_passes(loaded.engine, batches, device, plan.config.passes, plan.warmup_batches,
                           plan.config.time_transfer, on_pass, around_timed=sampler, on_first_batch=after_first)
    load = machine()
    real = sum(b.real_tokens for b in batches)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return TimedPasses(times, load, _telemetry_summary(sampler, real * plan.config.passes), peak)


def watch_load(plan: Plan, threads: int) -> Callable[[], MachineLoad]:
    """Snapshot the load now (the device's too on a GPU); the returned function snapshots it again and judges both
    (`environment.machine_load`) against `threads`, the cores the measurement keeps busy
    (`LoadedModel.busy_threads`)."""
    reader = gpu_load_reader(plan)
    start = environment.load_snapshot(reader)
    return lambda: environment.machine_load(start, environment.load_snapshot(reader), threads)


def throughput_payload(plan: Plan, loaded: LoadedModel, batches: list[Batch], flops: float,
                       timed: TimedPasses) -> Throughput:
    """The record's numbers: tokens/s by the protocol's headline, its spread, MFU, the build and the engine."""
    real = sum(b.real_tokens for b in batches)
    times, built, info = timed.times, loaded.built, loaded.engine.info
    stats = summarize([real / s for s in times.pass_seconds])
    # "The median" is the median of per-pass tokens/s, the statistic whose IQR is the spread (with an even
    # number of passes, real tokens over the median pass time would differ from it). The paper's mean is
    # real tokens over the mean pass time, as the paper computes it.
    headline = plan.protocol.headline
    tokens_per_second = stats.median if headline == "median" else real / summarize(times.pass_seconds).mean
    mfu, mfu_note = model_flops_utilisation(plan, flops * tokens_per_second / real, built.rates)
    return Throughput(
        build=built.info(), num_documents=plan.documents, subsampled=plan.subsampled, real_tokens=real,
        padded_tokens=sum(b.padded_tokens for b in batches), num_batches=len(batches),
        warmup_batches=times.warmup_batches, shape_warmup_batches=times.shape_warmup_batches,
        warmup_seconds=times.warmup_seconds, first_call_seconds=info.first_call_seconds,
        run_seconds=times.pass_seconds, headline=headline, tokens_per_second=tokens_per_second,
        tokens_per_second_stats=stats, timer=loaded.timer, unstable=stats.unstable,
        compile_seconds=info.first_call_seconds if plan.engine.name == COMPILE_ENGINE else info.compile_seconds,
        telemetry=timed.telemetry, peak_memory_bytes=timed.peak_memory_bytes, flops_per_pass=flops, mfu=mfu,
        mfu_note=mfu_note, load=timed.load, engine_info=info, parity=loaded.parity.check() if loaded.parity else None,
        cold_start_seconds=info.cold_start_seconds)


def say_estimate(progress: Progress | None, found: estimate.Estimate | None, started: float) -> None:
    """Tell `progress` an estimate with the time spent since `started` (`time.perf_counter()`), or why there is
    none; nothing without `progress`."""
    if progress:
        progress(found.line(time.perf_counter() - started) if found else "no estimate: no peak rate known here")


def estimate_before(plan: Plan, flops_per_pass: float, batches: int, rates: GemmRates | None
                    ) -> estimate.Estimate | None:
    """How long warmup and the timed passes take at least, before any of it runs (`estimate.at_peak`); None
    where no peak rate is known (a GPU off the basket)."""
    peak = peak_rate(plan, rates)
    if peak is None:
        return None
    passes = estimate.timed_passes(batches, plan.config.passes, plan.warmup_batches)
    return estimate.at_peak(flops_per_pass, passes, *peak)


def rounds_estimate_line(plans: dict[str, Plan], batches: dict[str, list[Batch]]) -> str:
    """A comparison's estimate before its sides are prepared, as a line for people: every side's warmup and
    rounds (they run one after another) at the peak rate of the device they share (`estimate.at_peak`)."""
    base = next(iter(plans.values()))
    peak = peak_rate(base, loading.gemm_rates(base.model_plan))
    if peak is None:
        return "no estimate: no peak rate known here"
    flops = sum(pass_flops(plan, batches[side]) * estimate.timed_passes(len(batches[side]), plan.config.passes,
                                                                         plan.warmup_batches)
                for side, plan in plans.items())
    return estimate.at_peak(flops, 1.0, *peak).line()


def peak_rate(plan: Plan, rates: GemmRates | None) -> tuple[float, str] | None:
    """(FLOP/s, what it is) of the fastest rate the plan's model could run at here: on a CPU the best GEMM
    measured at its shapes (`bench.matmul.cpu_gemm_rates`), on a basket GPU its dense datasheet peak; else None."""
    if plan.device.kind == "cpu":
        return None if rates is None else (rates.peak_flops, f"the {rates.peak_flops / 1e9:,.0f} GFLOP/s GEMM rate "
                                                              f"measured here ({rates.best})")
    if plan.gpu is None:
        return None
    dtype = "tfloat32" if plan.dtype == "float32" and torch.backends.cuda.matmul.allow_tf32 else plan.dtype
    try:
        return perfmodel.peak_flops(plan.gpu, dtype), f"{plan.gpu.name}'s dense {dtype} datasheet peak"
    except UserError:  # a dtype the basket GPU has no peak for: no estimate, never a failed run
        return None


def pass_flops(plan: Plan, batches) -> float:
    """Model FLOPs of one pass over `batches`, by the performance model's counter (`perfmodel.forward_flops`),
    so measured and predicted MFU are computed alike. Padded batches count their padding (it is executed)."""
    total = 0.0
    for batch in batches:
        if isinstance(batch, PackedBatch):
            total += perfmodel.forward_flops(plan.shape, (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).tolist())
        else:
            total += perfmodel.forward_flops(plan.shape, batch.attention_mask.sum(1).tolist(), batch.input_ids.shape[1])
    return total


def model_flops_utilisation(plan: Plan, flops_per_second: float,
                            rates: GemmRates | None = None) -> tuple[float | None, str]:
    """(MFU, how it was computed): achieved model FLOP/s over the peak: on a GPU the basket entry's dense peak
    for the dtype (vendor datasheet, gpu_basket.csv; None off the basket, with the reason); on a CPU the best
    GEMM measured on this machine at the model's own shapes (`bench.matmul.cpu_gemm_rates`)."""
    if plan.device.kind == "cpu":
        if rates is None:
            return None, "no GEMM peak measured on this CPU"
        return flops_per_second / rates.peak_flops, (
            f"model FLOPs / pass time / the best {plan.dtype} GEMM measured on {plan.device.name} "
            f"({rates.rates[0][1]:.0f} GFLOP/s, {rates.best}; {rates.describe()})")
    gpu = plan.gpu
    if gpu is None:
        return None, f"{plan.device.name} is not in the GPU basket: no datasheet peak"
    dtype = "tfloat32" if plan.dtype == "float32" and torch.backends.cuda.matmul.allow_tf32 else plan.dtype
    peak = perfmodel.peak_flops(gpu, dtype)
    return flops_per_second / peak, f"model FLOPs / pass time / {gpu.name} dense {dtype} peak ({peak / 1e12:.0f} TFLOP/s)"


def gpu_load_reader(plan: Plan):
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
        return telemetry.Sampler(telemetry.nvml_reader(plan.device.index or 0))
    except Exception:  # noqa: BLE001 - telemetry is optional: no NVML, no samples
        return None


def _telemetry_summary(sampler, tokens: int) -> dict | None:
    if sampler is None:
        return None
    return telemetry.summarize(sampler.samples, tokens)


def max_batch(plan: Plan, probe=None, fake_limit_tokens: int | None = None, fake_error: bool = False,
              progress: Progress | None = None, seed: int | str | None = "predicted",
              on_trial: Callable[[object], None] | None = None) -> Record:
    """Search the largest batch (padded models, or fixed suites) or token budget (unpadded, variable suites).

    The plan must come from `plan.resolve(..., measurement="max_batch", limits=plan.max_batch_limits(...))`.
    `seed`: a size to start from; "predicted": the memory model's answer for the device (or the memory
    cap), None: unseeded doubling. A search stopped by its trial or time cap is recorded as `capped`
    with the bracket it reached. On a CPU only the fake-OOM twin runs (`fake_limit_tokens`): nothing but
    a CUDA out-of-memory ends a real search, so a CPU search would grow until the host runs out of memory.
    """
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
    probe = probe or trial.subprocess_probe(trial.TrialSpec(plan.config.model, plan.suite.path, plan.dtype,
                                                            plan.backend, plan.torch_device, mode, plan.spec.tiny,
                                                            limit_bytes, fake_limit_tokens, fake_error))
    if on_trial:
        probe = _observed(probe, on_trial)
    step = granularity if mode == "batch" else max(granularity, 256)
    seed_source = "given" if isinstance(seed, int) else None
    if seed == "predicted":
        capacity = limit_bytes or (plan.device.memory_bytes if plan.device.kind == "cuda" else None)
        seed = memory.seed_size(plan.shape, plan.suite.definition.max_length, capacity, plan.dtype, plan.backend,
                                mode, step) if capacity else None
        seed_source = "memory-model" if seed else None
    if progress:
        progress(f"searching the largest {'batch' if mode == 'batch' else 'token budget'} in steps of {step}"
                 + (f", from the memory model's {seed}" if seed_source == "memory-model" else ""))
    found = search(probe, granularity=step, seed=seed, max_trials=limits.get("max_trials"),
                   max_seconds=limits.get("max_seconds"))
    payload = MaxBatchSearch(
        mode=mode, sequence_length=plan.suite.definition.max_length, granularity=step, safety_margin=margin,
        memory_limit_bytes=limit_bytes, largest_ok=found.largest_ok, result=found.with_margin(margin),
        trials=list(found.trials), search_seconds=found.seconds,
        device_memory_bytes=plan.device.memory_bytes, peak_bytes_at_result=found.peak_bytes,
        capped=found.capped, bracket=tuple(found.bracket), seed=found.seed,
        note=("fixed-length batches at the suite's maximum length (the paper's memory column)" if mode == "batch"
              else "largest packed token budget per forward pass")
        + (f"; stopped by {found.stopped_by}: a confirmed lower bound" if found.capped else "")
        + {"memory-model": "; started from the memory model's prediction", "given": "; started from --seed"}.get(
            seed_source or "", ""))
    return record(plan, payload)


def _observed(probe, on_trial: Callable[[object], None]):
    def observed(size: int):
        trial = probe(size)
        on_trial(trial)
        return trial
    return observed
