"""One resolved plan -> one record: measure tokens/s, search the maximum batch, or record a failure.

The same functions serve `mbbench run`, `mbbench max-batch`, `mbbench matrix` (locally or in a Ray task)
and tests. They return records; writing them is the store's job (`results.Store`), so remote tasks can
send records home.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from mbbench import allocator, engines, environment, estimate
from mbbench.batching import Batch, PackedBatch
from mbbench.bench import telemetry, trial
from mbbench.bench import kernel_choice
from mbbench.bench.elementwise import ElementwiseTimes, elementwise_times
from mbbench.bench.kernel_choice import FIXED, KernelChoice
from mbbench.bench.matmul import GemmRates, cpu_gemm_rates
from mbbench.bench.maxbatch import search
from mbbench.bench.throughput import measure_passes
from mbbench.bench.timing import summarize
from mbbench.engines import DEFAULT_ENGINE, ModelIdentity, ParityResult, PreparedEngine, References, host_memory
from mbbench.errors import UserError
from mbbench.formatting import plural
from mbbench.hardware import memory, perfmodel
from mbbench.models import registry
from mbbench.models.encoders import Encoder, float32_twin
from mbbench.models.fused import EAGER as DEFAULT_ELEMENTWISE
from mbbench.models.gemm import TORCH as DEFAULT_GEMM
from mbbench.plan import Plan, record, search_mode, unsupported_record
from mbbench.progress import heartbeat
from mbbench.records import MaxBatchSearch, Record, Throughput
from mbbench.suites import make_batches, select_documents

Progress = Callable[[str], None]


def cpu_gemm_peak(plan: Plan) -> GemmRates | None:
    """Each GEMM kernel's rate at the plan's model shapes on this CPU (from the kernel cache, or measured once and
    kept); None off CPU."""
    if plan.device.kind != "cpu":
        return None
    return cpu_gemm_rates(tuple(plan.shape.gemms().values()), plan.torch_dtype, plan.threads.intra)


def gemm_choice(plan: Plan, rates: GemmRates | None) -> KernelChoice:
    """The kernel of the plan's linears and where the choice came from: on a GPU cuBLAS; transformers models keep
    transformers' code (they measure what transformers does); our own models on a CPU take `--gemm`, else the
    kernel `kernel_choice.decide` picks from the measured (or cached) rounds, ties going to torch's."""
    if not registry.owns_gemms(plan.spec):
        shipped = "torch's default (cuBLAS on CUDA)" if rates is None else \
            "transformers' own linears, as shipped (torch's MKL path on CPU)"
        return KernelChoice(DEFAULT_GEMM, FIXED, shipped + ("; --gemm applies to our own models" if plan.config.gemm
                                                            else ""))
    return kernel_choice.gemm_for(rates, plan.config.gemm, DEFAULT_GEMM)


def cpu_elementwise_times(plan: Plan) -> ElementwiseTimes | None:
    """Eager vs Inductor RoPE + gated activation at the plan's model shapes on this CPU (from the kernel cache, or
    measured once and kept, compiling Inductor's kernels); None where `elementwise_choice` needs no measurement
    (pinned with --elementwise, transformers models, another engine, GPUs)."""
    activation = registry.gated_activation(plan.spec)
    if plan.device.kind != "cpu" or not activation or plan.engine != DEFAULT_ENGINE or plan.config.elementwise:
        return None
    shape = plan.shape
    return elementwise_times(shape.heads, shape.head_dim, shape.ffn, activation, plan.torch_dtype, plan.threads.intra)


def elementwise_choice(plan: Plan, times: ElementwiseTimes | None) -> KernelChoice:
    """The kernel of our own models' RoPE and gated activation and where the choice came from: `--elementwise`, else
    on a CPU the one `kernel_choice.decide` picks (ties to eager); eager for transformers models (their own code),
    under an engine other than torch (it runs its own graph), and on GPUs (Inductor's fused kernels are not
    measured there yet)."""
    if not registry.gated_activation(plan.spec):
        return KernelChoice(DEFAULT_ELEMENTWISE, FIXED, "transformers' own code, as shipped")
    if plan.engine != DEFAULT_ENGINE:
        return KernelChoice(DEFAULT_ELEMENTWISE, FIXED,
                            f"eager in the module; the {plan.engine} engine runs its own graph")
    return kernel_choice.elementwise_for(times, plan.config.elementwise, DEFAULT_ELEMENTWISE)


def build(plan: Plan, progress: Progress | None = None) -> Encoder:
    """The encoder of a plan, on the plan's device (index included) in its dtype, with its resolved backend, its
    linears on the kernel `gemm_choice` picks and its RoPE and gated activation on the kernel `elementwise_choice`
    picks (`encoder.gemm`, `encoder.elementwise`; where each choice came from in `*_source`, and why in
    `*_reason`): every command that measures a plan builds it here, so `run`, `compare`, `latency` and `serve`
    run the same model."""
    allocator.configure()  # once per process, before the first large allocation (every command builds here)
    gemm = gemm_choice(plan, cpu_gemm_peak(plan))  # from the kernel cache, or measured once, before any timing
    elementwise = elementwise_choice(plan, cpu_elementwise_times(plan))  # likewise
    if progress:
        progress(f"building {plan.identity.display_model} ({plan.dtype}, backend {plan.backend}: "
                 f"{plan.backend_reason or 'asked for'}, GEMM {gemm.kernel} ({gemm.source}), element-wise "
                 f"{elementwise.kernel} ({elementwise.source})) on {plan.device.name} ({plan.torch_device})")
    options = registry.BuildOptions(plan.torch_device, plan.torch_dtype, plan.backend, plan.config.seed,
                                    plan.config.weights, gemm.kernel, elementwise.kernel)
    encoder = registry.encoder(plan.spec, options, tiny=plan.config.tiny)
    encoder.gemm_reason, encoder.elementwise_reason = gemm.text, elementwise.text
    encoder.gemm_source, encoder.elementwise_source = gemm.source, elementwise.source
    return encoder


def prepare(plan: Plan, encoder: Encoder, first_batch: Batch, progress: Progress | None = None,
            shared: dict[int, References] | None = None) -> tuple[PreparedEngine, ParityResult | None]:
    """The plan's engine prepared from `encoder` (the module and weights torch runs), and its accuracy gate.

    `first_batch` is moved to the plan's device; the engine's first call on it is timed as its cold start. Then
    the engine's output on it is judged against the same weights in fp32 run by torch eager (`engines.parity`:
    fp32 1e-4; reduced precision against torch eager's own error in that dtype) before anything is timed. The
    parity is None only for the torch engine in fp32 on torch's kernels: it is that function. `shared` keeps the
    reference outputs per encoder, so sides of one model compute them once. Raises ParityFailure (carrying the
    result) on a miss or a NaN, EngineUnavailable (a UserError) when the engine cannot run the model here.
    """
    identity = model_identity(plan, encoder)
    first_batch = first_batch.to(torch.device(plan.torch_device))
    if progress and plan.engine != DEFAULT_ENGINE:
        progress(f"preparing engine {plan.engine} ({plan.threads.intra} threads; export, compile and the first "
                 f"call timed apart; a large model's can take minutes)")
    started = time.perf_counter()
    with heartbeat(progress if plan.engine != DEFAULT_ENGINE else None, f"still preparing engine {plan.engine}"):
        prepared = engines.prepare_engine(plan.engine, encoder, identity, first_batch, plan.threads,
                                          plan.engine_cache)
    if progress and plan.engine != DEFAULT_ENGINE:
        progress(f"engine {plan.engine} ready in {time.perf_counter() - started:.1f} s "
                 f"({engine_steps(prepared.info)})")
    engines.check_precision(prepared.info, encoder.dtype)  # read back: a bf16 record never times f32
    twin = float32_twin(encoder)
    if plan.engine == DEFAULT_ENGINE and twin is encoder:
        return prepared, None
    refs = (shared or {}).get(id(encoder))
    if refs is None:
        torch_engine = prepared if plan.engine == DEFAULT_ENGINE else engines.prepare_engine(
            DEFAULT_ENGINE, encoder, identity, first_batch, plan.threads)
        refs = engines.references(torch_engine, first_batch, encoder.dtype,
                                  None if twin is encoder else _inference(twin))
        if shared is not None:
            shared[id(encoder)] = refs
    parity = engines.check_parity(prepared, refs, first_batch, is_torch_engine=plan.engine == DEFAULT_ENGINE)
    if progress:
        progress(parity.message)
    return prepared, parity.require()


def _inference(encoder: Encoder) -> Callable[[Batch], torch.Tensor]:
    def run(batch: Batch) -> torch.Tensor:
        with torch.inference_mode():
            return encoder(batch)

    return run


def engine_steps(info: engines.EngineInfo) -> str:
    """'export 40.1 s (cached: no), compile 30.2 s, first call 23.0 s': where an engine's preparation went."""
    steps = [(name, getattr(info, f"{name.replace(' ', '_')}_seconds", None))
             for name in ("export", "compile", "first call")]
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in steps if seconds is not None)


def check_engine_memory(plan: Plan, encoder: Encoder, batches: list[Batch]) -> None:
    """Raise EngineUnavailable when the plan's engine would run out of host memory on `batches` (an exporting
    engine on a CPU: transformers' exported attention grows with seq², `engines.host_memory`); before anything
    is exported, so a comparison leaves the side out with the reason instead of being killed."""
    if plan.device.kind != "cpu" or not engines.get_engine(plan.engine).exports:
        return
    heads = encoder.module.config.num_attention_heads
    weight_bytes = sum(p.numel() * p.element_size() for p in encoder.module.parameters())
    host_memory.check_fits(plan.engine, batches, heads, plan.torch_dtype.itemsize, weight_bytes,
                           host_memory.available_bytes())


def model_identity(plan: Plan, encoder: Encoder) -> ModelIdentity:
    """The export cache's identity of `encoder`. Its weights are hashed only for an engine that exports (a pass
    over the weights): the torch engines never read it."""
    if engines.get_engine(plan.engine).exports:
        return engines.model_identity(plan.config.model, encoder, plan.config.tiny)
    return ModelIdentity(plan.config.model, plan.config.tiny, weights="not hashed: nothing is exported")


def run(plan: Plan, progress: Progress | None = None, on_pass: Callable[[int, float], None] | None = None) -> Record:
    """Measure one plan's tokens/s; returns its record (status ok or unsupported).

    Threads are set before the model is built. The plan's engine is prepared from the built encoder on the
    first batch (export, compile and first call: the cold start, recorded apart) and, unless it is torch,
    checked for parity first. Raises whatever building or running the model raises, ParityFailure included
    (the store turns it into a failure record).
    """
    reason = plan.unsupported_reason()
    if reason:
        return unsupported_record(plan, reason)
    started = time.perf_counter()
    engines.apply_threads(plan.threads)  # before the GEMM rates are measured and the model is built
    rates = cpu_gemm_peak(plan)
    encoder = build(plan, progress)
    indices = select_documents(plan.suite, plan.documents)
    protocol = plan.protocol
    batches = make_batches(plan.suite, indices, encoder.layout, plan.batch_size, plan.token_budget,
                           encoder.pad_token_id,
                           pad_to=plan.suite.definition.max_length if protocol.pad_to_suite_max else None)
    real = sum(b.real_tokens for b in batches)
    padded = sum(b.padded_tokens for b in batches)
    flops = pass_flops(plan, batches)
    device = torch.device(plan.torch_device)
    say_estimate(progress, estimate_before(plan, flops, len(batches), rates), started)  # before engine and batches
    check_engine_memory(plan, encoder, batches)
    prepared, parity = prepare(plan, encoder, batches[0], progress)
    if progress:
        progress(f"{plural(len(indices), 'document')}, {real:,} real tokens in {plural(len(batches), 'batch')}; "
                 f"warmup, then {plural(plan.config.passes, 'pass')}")
    sampler = _telemetry_sampler(plan) if plan.config.telemetry else None
    gpu_load = gpu_load_reader(plan)
    load_start = environment.load_snapshot(gpu_load)
    if device.type == "cuda":  # peak memory of the passes (weights included), not of building the model
        torch.cuda.reset_peak_memory_stats(device)
    after_first = (lambda seconds: say_estimate(progress, estimate.from_first_batch(
        seconds, len(batches), plan.config.passes, plan.warmup_batches), started)) if progress else None
    times = measure_passes(prepared, batches, device, plan.config.passes, plan.warmup_batches,
                           plan.config.time_transfer, on_pass, around_timed=sampler, on_first_batch=after_first)
    load_end = environment.load_snapshot(gpu_load)
    stats = summarize([real / s for s in times.pass_seconds])
    # "The median" is the median of per-pass tokens/s, the statistic whose IQR is the spread (with an even
    # number of passes, real tokens over the median pass time would differ from it). The paper's mean is
    # real tokens over the mean pass time, as the paper computes it.
    tokens_per_second = stats.median if protocol.headline == "median" else real / summarize(times.pass_seconds).mean
    mfu, mfu_note = model_flops_utilisation(plan, flops * tokens_per_second / real, rates)
    info = prepared.info
    payload = Throughput(
        build=encoder.build_info(plan.backend_reason), num_documents=len(indices), subsampled=plan.subsampled,
        real_tokens=real, padded_tokens=padded, num_batches=len(batches), warmup_batches=times.warmup_batches,
        shape_warmup_batches=times.shape_warmup_batches, warmup_seconds=times.warmup_seconds,
        first_call_seconds=info.first_call_seconds, run_seconds=times.pass_seconds, headline=protocol.headline,
        tokens_per_second=tokens_per_second, tokens_per_second_stats=stats,
        timer="cuda-events" if device.type == "cuda" else "perf_counter", unstable=stats.unstable,
        compile_seconds=info.first_call_seconds if plan.config.compile else info.compile_seconds,
        telemetry=_telemetry_summary(sampler, real * plan.config.passes), flops_per_pass=flops, mfu=mfu,
        mfu_note=mfu_note,
        peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        load=environment.machine_load(load_start, load_end, info.threads_intra if device.type == "cpu" else 1),
        engine_info=info, parity=parity.check() if parity else None, cold_start_seconds=info.cold_start_seconds)
    return record(plan, payload)


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
    peak = peak_rate(base, cpu_gemm_peak(base))
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
                                                            plan.backend, plan.torch_device, mode, plan.config.tiny,
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
