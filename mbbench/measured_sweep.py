"""`mbbench sweep --measure`: candidate shapes measured on the device at hand, beside their prediction for it.

What a measured sweep times (docs/benchmarking.md says it for people):

- Each candidate of the grid (`sweep.candidates`: hidden x GLU x layers, head dim, `--params`) is our reference
  ModernBERT at that shape with seeded random weights, built on the GEMM and element-wise kernels a `run` would
  choose here (`bench.kernel_choice`: the kernel cache, or `--gemm`/`--elementwise`), recorded per shape.
- One workload for every shape: `tokens` tokens per forward pass, as synthetic documents of 512 tokens (the
  predicted sweep's), or the first `docs` documents of a suite packed into batches of at most `tokens` tokens.
- Blocks: the anchor (the median-size shape) and up to `block` other shapes are built together, each warmed up
  (a full pass), then run `rounds` rounds of one pass per shape in rotating order (`bench.paired.run_paired`),
  so that the machine's noise falls on every shape of a block alike. The record is written after every block:
  an interrupted sweep keeps the shapes it finished, and a rerun measures only the rest.
- Per shape: tokens/s (the median over rounds) with the order-statistic interval of that median, MFU against
  this device's measured GEMM peak (a CPU: the best rate the kernel cache holds at the grid's shapes; a GPU:
  its datasheet), and per round its tokens/s over the anchor's in the same round.
- Ranking (`RANKINGS`, the one metric every surface names): tokens/s at equal parameters (the predicted sweep's
  scaling: x parameters / the median shape's) or tokens/s, both anchored: a shape's median ratio to the anchor
  times the anchor's median tokens/s, so that shapes of different blocks compare through the anchor.
- Ties: a shape whose per-round ratio to the best shape (paired through the anchor) has an interval reaching 1
  is tied with the best: shown as "1=", not ranked below it.
- Prediction: on a CPU the CPU cost model (`bench.cpu_cost`: the shape's GEMMs at their own shapes from the
  kernel cache, attention and element-wise parts timed once per width); on a GPU the performance model for the
  detected basket GPU. Spearman's rank correlation of predicted against measured (on the ranking metric and on
  tokens/s), whether the predicted best is the measured best or tied with it, and each shape's predicted /
  measured tokens/s are recorded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from mbbench import environment, loading
from mbbench.batching import PackedBatch, pack_documents
from mbbench.bench import cpu_cost
from mbbench.bench.kernel_choice import KernelChoice
from mbbench.bench.matmul import cpu_gemm_rates, prefetch_gemm_timings
from mbbench.bench.paired import OnPass, Timer, median_interval, run_paired
from mbbench.bench.timing import timed
from mbbench.calibration import default_calibration
from mbbench.device import detect, isa_flags, torch_device
from mbbench.dtypes import parse_dtype
from mbbench.engines import DEFAULT_ENGINE, Threads, get_engine, threads_from
from mbbench.errors import UserError
from mbbench.formatting import plural
from mbbench.hardware import perfmodel
from mbbench.hardware.gpus import GPU, basket
from mbbench.models import registry
from mbbench.models.attention import BackendChoice
from mbbench.models.config import from_glu
from mbbench.models.spec import ModelSpec
from mbbench.plan import ModelPlan, check_kernels, matmul_precision, resolve_dtype_name
from mbbench.records import (DeviceInfo, Identity, MeasuredSweep, RankCorrelation, Record, SuiteInfo, SweepCandidate,
                             SweepGrid, SweepWorkload, now)
from mbbench.results import Store
from mbbench.suites import load_suite, make_batches, portable_path, select_documents
from mbbench.sweep import Candidate, candidates, validate_sweep

RANKINGS = {"throughput": "tokens/s at equal parameters (anchored tokens/s x parameters / the median shape's)",
            "tokens": "tokens/s (anchored: median ratio to the anchor shape x the anchor's median)"}
MODEL = "modernbert-shapes"  # the identity's model: our reference ModernBERT at each shape of the grid
DOC_LENGTH = 512  # synthetic documents, as the predicted sweep scores (`sweep.score`)
DEFAULT_BLOCK = 4  # shapes per block besides the anchor: the models held in memory at once, less one
VOCAB_IDS = (100, 16000)  # synthetic token ids, as the paper's suites draw them


@dataclass(frozen=True)
class SweepSettings:
    """A measured sweep as asked for (`mbbench sweep --measure`); `resolve` turns it into a `SweepPlan`."""

    hidden: tuple[int, ...]
    glu: tuple[int, ...]  # fused Wi widths (2 x intermediate)
    layers: tuple[int, ...]
    head_dim: int = 64
    params: tuple[float, float] | None = None  # (target parameters, tolerance fraction)
    tokens: int = 4096  # per forward pass: the synthetic batch, or a suite's token budget
    suite: str | None = None  # None: synthetic documents of DOC_LENGTH
    docs: int | None = None  # a suite's first N documents (None: all)
    rounds: int = 5
    block: int = DEFAULT_BLOCK
    dtype: str | None = None  # None: float32 on a CPU, bfloat16 on a GPU (the rigorous protocol's)
    threads: int | None = None  # intra-op threads (None: torch's current count)
    device: str = "auto"
    seed: int = 0  # weights and synthetic token ids
    ranking: str = "throughput"  # a key of RANKINGS
    gemm: str | None = None  # a pinned GEMM kernel (None: as `run` chooses)
    elementwise: str | None = None  # a pinned element-wise kernel


@dataclass(frozen=True)
class Workload:
    """The packed batches every shape runs, and what names them in the record."""

    name: str
    fingerprint: str
    batches: list[PackedBatch]
    documents: int
    source: str  # "synthetic" or the suite's file (as a record keeps it)
    suite: SuiteInfo | None = None

    @property
    def lengths(self) -> list[list[int]]:
        """Document lengths of each batch (tokens)."""
        return [(b.cu_seqlens[1:] - b.cu_seqlens[:-1]).tolist() for b in self.batches]

    @property
    def real_tokens(self) -> int:
        return sum(b.real_tokens for b in self.batches)


@dataclass(frozen=True)
class SweepPlan:
    """A measured sweep resolved once: the shapes, the device, dtype and threads, the workload, the backend."""

    settings: SweepSettings
    shapes: list[Candidate]
    anchor: Candidate
    device: DeviceInfo
    torch_device: str
    dtype: str
    torch_dtype: torch.dtype
    threads: Threads
    workload: Workload
    backend: BackendChoice
    gpu: GPU | None
    identity: Identity
    scale_parameters: float  # the equal-parameter metric's size: the --params target, else the median shape's


@dataclass(frozen=True)
class Built:
    """One shape ready to time: its forward (one packed batch) and the kernels it runs on."""

    forward: Callable[[PackedBatch], object]
    gemm: KernelChoice
    elementwise: KernelChoice


@dataclass(frozen=True)
class Predicted:
    """A shape's predicted tokens/s on this device (None: no model for it) and the seconds per pass by part."""

    tokens_per_second: float | None
    parts: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Hooks:
    """What a sweep builds, predicts and times with: the real model, cost model and clock, or a test's fakes."""

    build: Callable[[SweepPlan, Candidate], Built]
    predict: Callable[[SweepPlan, Candidate, Built], Predicted]
    peak: Callable[[SweepPlan], tuple[float | None, str]]  # (FLOP/s, how it was obtained)
    timer: Timer = timed


# ----------------------------------------------------------------------------------------------- resolving

def resolve(settings: SweepSettings) -> SweepPlan:
    """Resolve a measured sweep on its device: shapes, dtype, threads, workload, backend and identity.

    Raises UserError for invalid grids (`sweep.validate_sweep`), no shape in the grid, rounds or block below 1,
    an unknown ranking, --docs without --suite, a pinned kernel that cannot run here, or a suite document longer
    than `tokens`.
    """
    validate_sweep(list(settings.hidden), list(settings.glu), list(settings.layers), settings.head_dim,
                   settings.tokens)
    for option, value in (("--rounds", settings.rounds), ("--block", settings.block)):
        if value < 1:
            raise UserError(f"{option} must be at least 1, got {value}")
    if settings.ranking not in RANKINGS:
        raise UserError(f"--rank-by {settings.ranking!r}: a measured sweep ranks by {' or '.join(RANKINGS)}")
    if settings.docs is not None and settings.suite is None:
        raise UserError(f"--docs {settings.docs} counts a suite's documents: give --suite too (without it every "
                        f"shape runs --tokens {settings.tokens} tokens of synthetic documents)")
    shapes = candidates(list(settings.hidden), list(settings.glu), list(settings.layers), settings.head_dim,
                        settings.params)
    if not shapes:
        raise UserError("no candidate shape satisfies --hidden, --glu, --layers, --head-dim and --params together")
    device = detect(settings.device)
    gpu = basket().get(device.basket_id or "") if device.kind == "cuda" else None
    dtype = resolve_dtype_name(settings.dtype, device.kind)
    if gpu and settings.dtype is None:  # the protocol's bf16 on a GPU without it (T4): fp16, as `run` does
        dtype = gpu.effective_dtype(dtype)
    torch_dtype = parse_dtype(dtype)
    check_kernels(settings.gemm, settings.elementwise, device.kind, torch_dtype)
    threads = threads_from(settings.threads)
    workload = make_workload(settings)
    lengths = [n for batch in workload.lengths for n in batch]
    backend = registry.choose_backend(candidate_spec(shapes[0], settings.head_dim), "auto", torch_device(device),
                                      torch_dtype, lengths)
    by_size = sorted(shapes, key=lambda c: (c.shape.parameters, c.hidden, c.glu, c.layers))
    anchor = by_size[(len(by_size) - 1) // 2]
    scale = settings.params[0] if settings.params else float(anchor.shape.parameters)
    identity = sweep_identity(settings, device, dtype, threads, workload)
    return SweepPlan(settings, shapes, anchor, device, torch_device(device), dtype, torch_dtype, threads, workload,
                     backend, gpu, identity, scale)


def make_workload(settings: SweepSettings) -> Workload:
    """The batches every shape runs: `tokens` synthetic tokens (documents of DOC_LENGTH, seeded ids) in one batch,
    or the suite's first `docs` documents packed into batches of at most `tokens` tokens."""
    if settings.suite is None:
        lengths = [DOC_LENGTH] * (settings.tokens // DOC_LENGTH) + (
            [settings.tokens % DOC_LENGTH] if settings.tokens % DOC_LENGTH else [])
        generator = torch.Generator().manual_seed(settings.seed)
        docs = [torch.randint(*VOCAB_IDS, (n,), generator=generator) for n in lengths]
        digest = hashlib.sha256(json.dumps(["synthetic", lengths, settings.seed]).encode()).hexdigest()[:16]
        return Workload(f"synthetic-{settings.tokens}", digest, [pack_documents(docs)], len(lengths), "synthetic")
    suite = load_suite(settings.suite)
    indices = select_documents(suite, settings.docs)
    batches = make_batches(suite, indices, "packed", None, settings.tokens)
    info = SuiteInfo(portable_path(suite), suite.definition.documents, suite.max_length)
    return Workload(suite.name, suite.fingerprint, batches, len(indices), info.path or suite.name, info)


def sweep_identity(settings: SweepSettings, device: DeviceInfo, dtype: str, threads: Threads,
                   workload: Workload) -> Identity:
    """Everything that changes a measured sweep's numbers: the grid, the workload, the device (with a CPU's ISA),
    dtype, threads, rounds, pins and seed. The block size and the ranking are not in it: they change how the
    shapes are grouped and ordered, not what each measures (a rerun with another block resumes)."""
    cpu = device.kind == "cpu"
    grid = {"hidden": tuple(settings.hidden), "glu": tuple(settings.glu), "layers": tuple(settings.layers),
            "head_dim": settings.head_dim, "params": tuple(settings.params) if settings.params else None,
            "seed": settings.seed, "isa": ",".join(isa_flags()) if cpu else None}
    return Identity(measurement="measured_sweep", model=MODEL, suite=workload.name,
                    suite_fingerprint=workload.fingerprint, protocol="rigorous", backend="auto", dtype=dtype,
                    device=device.identity_name, device_index=device.index if device.kind == "cuda" else None,
                    token_budget=settings.tokens, documents=workload.documents, runs=settings.rounds,
                    matmul_precision=matmul_precision(), threads=threads.intra if cpu else None,
                    interop_threads=threads.inter if cpu else None, gemm=settings.gemm,
                    elementwise=settings.elementwise, sweep=tuple(sorted(grid.items())))


def candidate_spec(candidate: Candidate, head_dim: int | None = None) -> ModelSpec:
    """A catalogue row for one shape of the grid: our reference ModernBERT at that hidden, GLU and depth."""
    head_dim = head_dim or candidate.head_dim
    return ModelSpec(f"{MODEL}-{candidate.hidden}-{candidate.glu}-{candidate.layers}", "ModernBERT", "reference",
                     candidate.shape.parameters / 1e6, 8192, "mbbench sweep candidate (reference ModernBERT)",
                     lambda: from_glu(candidate.hidden, candidate.glu, candidate.layers, head_dim), window=64)


# -------------------------------------------------------------------------------- building and predicting

def build_shape(plan: SweepPlan, candidate: Candidate) -> Built:
    """The shape's model loaded through `loading` on the plan's device and dtype: its kernels as `run` chooses them
    (the kernel cache's timings at its own shapes, or the pins; cuBLAS and eager on a GPU), the torch engine
    prepared on the workload's first batch and past the accuracy gate."""
    loaded = loading.load(shape_model(plan, candidate), lambda encoder: plan.workload.batches)
    return Built(loaded.engine, loaded.built.gemm, loaded.built.elementwise)


def shape_model(plan: SweepPlan, candidate: Candidate) -> ModelPlan:
    """What `loading` builds for one shape: our reference ModernBERT at it, seeded, on the torch engine, with the
    sweep's device, dtype, backend, threads and pins."""
    settings = plan.settings
    return ModelPlan(spec=candidate_spec(candidate), shape=candidate.shape, label=f"{MODEL} {label(candidate)}",
                     device=plan.device, torch_device=plan.torch_device, dtype=plan.torch_dtype,
                     backend=plan.backend.name, backend_reason=plan.backend.reason, engine=get_engine(DEFAULT_ENGINE),
                     threads=plan.threads, seed=settings.seed, gemm=settings.gemm, elementwise=settings.elementwise)


def predict_shape(plan: SweepPlan, candidate: Candidate, built: Built) -> Predicted:
    """The shape's predicted tokens/s here: the CPU cost model on a CPU (on the kernels the shape runs), the
    performance model for a basket GPU (in fp16 where it lacks bf16), nothing for a GPU off the basket."""
    shape = candidate.shape
    if plan.device.kind == "cpu":
        cost = cpu_cost.predict_pass(shape, plan.workload.lengths, plan.torch_dtype, plan.threads.intra,
                                     built.gemm.kernel, built.elementwise.kernel, plan.backend.name)
        return Predicted(cost.tokens_per_second, {"gemm": cost.gemm_seconds, "attention": cost.attention_seconds,
                                                  "elementwise": cost.elementwise_seconds})
    if plan.gpu is None:
        return Predicted(None)
    dtype = plan.gpu.effective_dtype(plan.dtype)
    calibration = default_calibration()
    batches = [perfmodel.predict(shape, lengths, plan.gpu, dtype, None, calibration)
               for lengths in plan.workload.lengths]
    seconds = sum(p.seconds for p in batches)
    return Predicted(plan.workload.real_tokens / seconds, {"seconds": seconds, "dtype": dtype})


def device_peak(plan: SweepPlan) -> tuple[float | None, str]:
    """The MFU denominator: on a CPU the best GEMM rate of the kernel cache at any shape of the grid (the shapes it
    lacks measured first, interleaved); on a basket GPU
    its datasheet's dense peak for the dtype; None off the basket."""
    if plan.device.kind == "cpu":
        prefetch_gemm_timings([gemm for c in plan.shapes for gemm in c.shape.gemms().values()], plan.torch_dtype,
                              plan.threads.intra)  # the grid's GEMMs timed together: one machine state for all
        rates = [cpu_gemm_rates(tuple(c.shape.gemms().values()), plan.torch_dtype, plan.threads.intra)
                 for c in plan.shapes]
        best = max(rates, key=lambda r: r.peak_flops)
        return best.peak_flops, (f"the best {plan.dtype} GEMM rate measured on {plan.device.name} at the grid's "
                                 f"shapes: {best.rates[0][1]:.0f} GFLOP/s ({best.best}, {best.tokens}-token products, "
                                 f"{best.source})")
    if plan.gpu is None:
        return None, f"{plan.device.name} is not in the GPU basket: no datasheet peak"
    dtype = plan.gpu.effective_dtype(plan.dtype)
    peak = perfmodel.peak_flops(plan.gpu, dtype)
    return peak, f"{plan.gpu.name} dense {dtype} peak ({peak / 1e12:.0f} TFLOP/s, datasheet)"


DEFAULT_HOOKS = Hooks(build_shape, predict_shape, device_peak)


# ------------------------------------------------------------------------------------------------- measuring

@dataclass(frozen=True)
class SweepOutcome:
    """What `measure` did: the record written (after its last block), where, how many shapes it measured now and
    how many an earlier, interrupted run had measured."""

    record: Record
    path: Path
    measured: int
    kept: int


def shape_key(shape: Candidate | SweepCandidate) -> tuple[int, int, int]:
    return shape.hidden, shape.glu, shape.layers


def label(shape: Candidate | SweepCandidate) -> str:
    """'768/2304/22': hidden / GLU width / layers."""
    return "/".join(map(str, shape_key(shape)))


def previous(plan: SweepPlan, store: Store, force: bool) -> tuple[list[SweepCandidate], list[list[float]]]:
    """The shapes (and anchor rounds) an earlier run of this sweep recorded, unless `force`."""
    found = None if force else store.find(plan.identity.key())
    if found is None or not isinstance(found.payload, MeasuredSweep):
        return [], []
    wanted = {shape_key(c) for c in plan.shapes}
    return [c for c in found.payload.candidates if shape_key(c) in wanted], list(found.payload.anchor_rounds)


def blocks_to_measure(plan: SweepPlan, done: set[tuple[int, int, int]]) -> list[list[Candidate]]:
    """The shapes still to measure, `block` at a time (each block also runs the anchor); one block of the anchor
    alone when only it remains."""
    rest = [c for c in plan.shapes if shape_key(c) not in done and c is not plan.anchor]
    size = plan.settings.block
    blocks = [rest[i:i + size] for i in range(0, len(rest), size)]
    return blocks or ([[]] if shape_key(plan.anchor) not in done else [])


def measure(plan: SweepPlan, store: Store, hooks: Hooks = DEFAULT_HOOKS, progress: Callable[[str], None] | None = None,
            on_pass: OnPass | None = None, force: bool = False) -> SweepOutcome:
    """Measure every shape of the plan not yet recorded, block by block, writing the record after each block.

    Resumes from the store's record of the same identity (unless `force`): its shapes are kept and only the rest
    are measured. KeyboardInterrupt propagates after the blocks already finished are written. Raises whatever
    building or running a shape raises.
    """
    # before the peak's GEMMs are timed (each shape's build applies them too): the counts read back are what the
    # shapes run with and what the busy warning judges against
    plan = replace(plan, threads=loading.apply_threads(plan.threads))
    kept, anchor_rounds = previous(plan, store, force)
    shapes = list(kept)
    blocks = blocks_to_measure(plan, {shape_key(c) for c in kept})
    start = environment.load_snapshot()
    if progress:
        progress(f"{len(plan.shapes)} shapes, {len(kept)} already recorded; {len(blocks)} block(s) of "
                 f"{plural(plan.settings.rounds, 'interleaved round')}, each with the anchor {label(plan.anchor)}")
    if not blocks:  # measured before: written again, ranked by the metric asked for now, with the load, machine,
        # code and time its shapes were measured under (this run measured nothing)
        earlier = store.find(plan.identity.key())
        payload = replace(earlier.payload, candidates=sorted(shapes, key=shape_key), anchor_rounds=anchor_rounds,
                          ranking=plan.settings.ranking, scale_parameters=plan.scale_parameters)
        correlation, tied = summarize(payload)
        record = replace(earlier, payload=replace(payload, rank_correlation=correlation, predicted_best_tied=tied))
        return SweepOutcome(record, store.write(record), 0, len(kept))
    peak = hooks.peak(plan)
    for members in blocks:
        anchor_new = shape_key(plan.anchor) not in {shape_key(c) for c in shapes}
        new, anchor_tps = measure_block(plan, hooks, members, len(anchor_rounds), peak, anchor_new, on_pass, progress)
        shapes, anchor_rounds = shapes + new, anchor_rounds + [anchor_tps]
        record = sweep_record(plan, shapes, anchor_rounds, peak, start, environment.load_snapshot())
        path = store.write(record)  # after every block: an interruption keeps what was measured
    return SweepOutcome(record, path, len(shapes) - len(kept), len(kept))


def measure_block(plan: SweepPlan, hooks: Hooks, members: list[Candidate], index: int,
                  peak: tuple[float | None, str], anchor_new: bool, on_pass: OnPass | None,
                  progress: Callable[[str], None] | None) -> tuple[list[SweepCandidate], list[float]]:
    """Build the anchor and `members`, predict each, run the interleaved rounds; the new shapes' results (the
    anchor's too when `anchor_new`) and the anchor's tokens/s per round."""
    shapes = {label(c): c for c in [plan.anchor, *members]}
    if progress:
        progress(f"block {index + 1}: building and predicting {', '.join(shapes)}")
    built = {name: hooks.build(plan, shape) for name, shape in shapes.items()}
    predicted = {name: hooks.predict(plan, shapes[name], built[name]) for name in shapes}
    device = torch.device(plan.torch_device)
    result = run_paired({name: b.forward for name, b in built.items()}, plan.workload.batches, device,
                        plan.settings.rounds, baseline=label(plan.anchor), on_pass=on_pass, timer=hooks.timer)
    anchor_tps = result.models[label(plan.anchor)].tokens_per_second
    finished = now()
    new = [shape_result(plan, shapes[name], built[name], predicted[name], result.models[name], anchor_tps, index,
                        peak[0], finished)
           for name in shapes if name != label(plan.anchor) or anchor_new]
    return new, anchor_tps


def shape_result(plan: SweepPlan, shape: Candidate, built: Built, predicted: Predicted, passes, anchor_tps: list[float],
                 block: int, peak: float | None, finished: str) -> SweepCandidate:
    """One shape's record entry from its timed passes (`bench.paired.ModelPasses`) and prediction."""
    rounds = passes.tokens_per_second
    median = float(np.median(rounds))
    interval = median_interval(rounds) if len(rounds) >= 2 else None
    flops = sum(perfmodel.forward_flops(shape.shape, lengths) for lengths in plan.workload.lengths)
    mfu = flops * median / plan.workload.real_tokens / peak if peak else None
    return SweepCandidate(
        hidden=shape.hidden, glu=shape.glu, layers=shape.layers, heads=shape.shape.heads,
        parameters=shape.shape.parameters, block=block, round_tokens_per_second=list(rounds),
        anchor_ratios=[t / a for t, a in zip(rounds, anchor_tps)], tokens_per_second=median,
        interval=interval,
        predicted_tokens_per_second=predicted.tokens_per_second, prediction_parts=dict(predicted.parts),
        flops_per_pass=flops, mfu=mfu, gemm=built.gemm.kernel, gemm_source=built.gemm.source,
        gemm_reason=built.gemm.reason, elementwise=built.elementwise.kernel,
        elementwise_source=built.elementwise.source, elementwise_reason=built.elementwise.reason,
        warmup_seconds=passes.warmup_seconds, measured_at=finished)


def sweep_record(plan: SweepPlan, shapes: list[SweepCandidate], anchor_rounds: list[list[float]],
                 peak: tuple[float | None, str], start, end) -> Record:
    """The record of what is measured so far, its ranking statistics computed (`summarize`)."""
    settings = plan.settings
    grid = SweepGrid(list(settings.hidden), list(settings.glu), list(settings.layers), settings.head_dim,
                     list(settings.params) if settings.params else None)
    workload = SweepWorkload(settings.tokens, len(plan.workload.batches), plan.workload.documents,
                             plan.workload.real_tokens, plan.workload.source)
    source = "CPU cost model, bench/cpu_cost.py" if plan.device.kind == "cpu" else (
        f"performance model {perfmodel.MODEL_VERSION} for {plan.gpu.name}" if plan.gpu else "none")
    payload = MeasuredSweep(
        grid=grid, workload=workload, backend=plan.backend.name, backend_reason=plan.backend.reason,
        rounds=settings.rounds, block=settings.block, anchor=list(shape_key(plan.anchor)),
        anchor_rounds=anchor_rounds, candidates=sorted(shapes, key=shape_key), planned=len(plan.shapes),
        ranking=settings.ranking, scale_parameters=plan.scale_parameters, prediction_source=source,
        peak_flops=peak[0], peak_note=peak[1], rank_correlation=RankCorrelation(None, None, 0),
        predicted_best_tied=None,
        load=environment.machine_load(start, end, plan.threads.intra if plan.device.kind == "cpu" else 1))
    correlation, tied = summarize(payload)
    return Record(kind="measured", status="ok", identity=plan.identity, device=plan.device, model=None,
                  suite=plan.workload.suite, payload=replace(payload, rank_correlation=correlation,
                                                             predicted_best_tied=tied),
                  environment=environment.capture())


# ---------------------------------------------------------------------------------------- ranking and statistics

@dataclass(frozen=True)
class RankedShape:
    """One shape in ranking order: the ranking metric as measured (anchored) and as predicted, its rank, and
    whether it is tied with the best (its paired ratio to the best has an interval reaching 1)."""

    shape: SweepCandidate
    value: float
    predicted: float | None
    rank: int
    tied: bool
    versus_best: object | None  # `bench.paired.Interval` of the per-round ratio to the best (None for the best)
    anchored: float = 0.0  # tokens/s anchored: the median ratio to the anchor x the anchor's median tokens/s
    anchored_interval: tuple[float, float] | None = None  # that median ratio's interval, x the same scale

    @property
    def rank_text(self) -> str:
        """'1', '1=' (tied with the best: not ranked below it), '3'."""
        return "1=" if self.tied else str(self.rank)

    @property
    def predicted_over_anchored(self) -> float | None:
        """Predicted over measured tokens/s, measured anchored: a shape's own-block median would carry its block's
        speed (blocks of one sweep measured 20% apart on a shared CPU), which the anchor ratio cancels."""
        predicted = self.shape.predicted_tokens_per_second
        return predicted / self.anchored if predicted and self.anchored else None


def scale(payload: MeasuredSweep, shape: SweepCandidate) -> float:
    """The ranking metric's factor on tokens/s: parameters over the sweep's common size at equal parameters."""
    return shape.parameters / payload.scale_parameters if payload.ranking == "throughput" else 1.0


def anchor_reference(payload: MeasuredSweep) -> float:
    """The anchor's median tokens/s over every round of every block: the scale of the anchored metric."""
    return float(np.median([t for block in payload.anchor_rounds for t in block]))


def ranked(payload: MeasuredSweep) -> list[RankedShape]:
    """The measured shapes best first by the payload's ranking metric, ties with the best marked."""
    if not payload.candidates:
        return []
    reference = anchor_reference(payload)
    value = {label(c): float(np.median(c.anchor_ratios)) * reference * scale(payload, c) for c in payload.candidates}
    order = sorted(payload.candidates, key=lambda c: (-value[label(c)], shape_key(c)))
    best = order[0]
    rows = []
    for rank, shape in enumerate(order, 1):
        interval = None
        if shape is not best and len(shape.anchor_ratios) >= 2:
            ratios = [(a * scale(payload, shape)) / (b * scale(payload, best))
                      for a, b in zip(shape.anchor_ratios, best.anchor_ratios)]
            interval = median_interval(ratios)
        predicted = shape.predicted_tokens_per_second
        around = median_interval(shape.anchor_ratios) if len(shape.anchor_ratios) >= 2 else None
        rows.append(RankedShape(shape, value[label(shape)], predicted * scale(payload, shape) if predicted else None,
                                rank, interval is not None and interval.high >= 1.0, interval,
                                value[label(shape)] / scale(payload, shape),
                                (around.low * reference, around.high * reference) if around else None))
    return rows


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of `values` (1 = smallest), tied values sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (Spearman 1904; ties as in
    scipy.stats.spearmanr). None with fewer than two pairs or when either side is constant (undefined)."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs pairs: {len(x)} and {len(y)} values")
    if len(x) < 2:
        return None
    rx, ry = np.asarray(average_ranks(x)), np.asarray(average_ranks(y))
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = float(np.sqrt((dx ** 2).sum() * (dy ** 2).sum()))
    return float((dx * dy).sum() / denominator) if denominator else None


def summarize(payload: MeasuredSweep) -> tuple[RankCorrelation, bool | None]:
    """(Spearman's rho on the ranking metric and on anchored tokens/s over the shapes with a prediction, whether the
    predicted best is the measured best or tied with it); rho and the flag None without predictions."""
    rows = [r for r in ranked(payload) if r.predicted is not None]
    if not rows:
        return RankCorrelation(None, None, 0), None
    # tokens/s anchored (the ranking's value without the parameter scaling): blocks compare through the anchor
    correlation = RankCorrelation(spearman([r.predicted for r in rows], [r.value for r in rows]),
                                  spearman([r.shape.predicted_tokens_per_second for r in rows],
                                           [r.value / scale(payload, r.shape) for r in rows]), len(rows))
    predicted_best = max(rows, key=lambda r: r.predicted)
    return correlation, predicted_best.rank == 1 or predicted_best.tied


def table_rows(payload: MeasuredSweep, dtype: str, device: str) -> list[dict]:
    """One row per measured shape in ranking order, as the CSV holds it: rank ("1=" tied with the best), the
    shape, measured tokens/s with its interval, the ranking metric measured and predicted, predicted / measured
    tokens/s, MFU, the kernels and where they came from, and the metric's, workload's, dtype's and device's names."""
    metric = "scaled_tokens_per_second" if payload.ranking == "throughput" else "anchored_tokens_per_second"
    rows = []
    for row in ranked(payload):
        shape, interval = row.shape, row.shape.interval
        rows.append({
            "rank": row.rank_text, "tied_with_best": row.tied, "hidden": shape.hidden, "glu": shape.glu,
            "layers": shape.layers, "heads": shape.heads, "parameters_m": round(shape.parameters / 1e6, 2),
            "tokens_per_second": round(shape.tokens_per_second, 1),
            "tokens_per_second_low": round(interval.low, 1) if interval else None,
            "tokens_per_second_high": round(interval.high, 1) if interval else None,
            "interval_confidence": round(interval.confidence, 4) if interval else None,
            "anchored_tokens_per_second": round(row.anchored, 1),
            "anchored_low": round(row.anchored_interval[0], 1) if row.anchored_interval else None,
            "anchored_high": round(row.anchored_interval[1], 1) if row.anchored_interval else None,
            metric: round(row.value, 1), f"predicted_{metric}": round(row.predicted, 1) if row.predicted else None,
            "predicted_tokens_per_second": round(shape.predicted_tokens_per_second, 1)
            if shape.predicted_tokens_per_second else None,
            "predicted_over_anchored": round(row.predicted_over_anchored, 3) if row.predicted_over_anchored else None,
            "mfu": round(shape.mfu, 4) if shape.mfu is not None else None, "gemm": shape.gemm,
            "gemm_source": shape.gemm_source, "elementwise": shape.elementwise,
            "elementwise_source": shape.elementwise_source, "block": shape.block, "ranked_by": metric,
            "tokens_per_pass": payload.workload.tokens_per_pass, "workload": payload.workload.source,
            "dtype": dtype, "device": device})
    return rows
