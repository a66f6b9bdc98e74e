"""Analytical performance model: GEMM tile + wave quantization, roofline, attention by kernel, element-wise work.

For one forward pass over a batch, every weight GEMM (QKV, attention output, FFN in, FFN out; M = tokens
executed, padded or packed) is costed over a menu of CTA tiles: tiles = ceil(M/Tm)·ceil(N/Tn),
waves = ceil(tiles / (SMs·CTAs/SM)), t = max(compute, memory) + launch (compute counts K + K_OVERHEAD per tile),
minimised over the menu, at the peak
of the GEMM's compute dtype (fp32 SIMT, TF32, or fp16/bf16 tensor cores). Attention is costed by the kernel
that runs (software.AttentionImpl): fused kernels (flash, memory-efficient, flex) as FLOPs at a documented
fraction of their dtype's peak, lower for sm80 kernels on Hopper (`kernel_efficiency`); eager/math as two batched
GEMMs plus element-wise passes over materialised scores (memory-bound). DeBERTa's disentangled attention adds the
c2p/p2c GEMMs and their gathers. Element-wise work (norms, residuals, activations, RoPE) is bytes / bandwidth.

Efficiency η = η_hw(GPU) × η_sw(stack, GEMM path, architecture). η_hw is fitted per GPU on TensorRT fp16 rows
(calibration.csv, η_sw(tensorrt) ≡ 1) and MLPerf fit rows, pooled; a GPU without them gets the spec model
(`SpecModel`): within an architecture η_hw grows with board power per SM (a card with less power per SM holds its
tensor clock further below the clock its peak assumes), and an intercept per architecture carries what differs between
SM designs (Turing's 12 nm SM, Hopper's warpgroup MMA and 1830 MHz peak clock). Three buckets of time: compute-bound
GEMMs (and fp32 SIMT attention kernels) ÷ η_hw·η_sw; fused tensor-core attention kernels (the same binary in any
framework) ÷ η_hw; memory-bound work (element-wise passes, eager score passes, memory-bound GEMMs) at
MEMORY_EFFICIENCY of the datasheet bandwidth, no η. The fits live in `mbbench.calibration` (which rows, how many);
this module only applies a `Calibration`.
Source of the rules: gpu-basket.md sections 2 and 6 (NVIDIA's GEMM guides, Anthony et al. 2024),
backends-and-competitors.md A (attention kernels), modernbert.md §2 (the paper's environment).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from mbbench.dtypes import bytes_per_element
from mbbench.errors import UserError
from mbbench.hardware.gpus import GPU
from mbbench.hardware.shape import Shape
from mbbench.hardware.software import PYTORCH, AttentionImpl, Stack, auto_backend, resolve_attention

# perfmodel-5: a GPU's η_hw pools its TensorRT demo rows and its MLPerf fit rows (one vote per source; the L4's MLPerf
# v3.0 fp16 row added), the spec model's intercepts read those pooled values, its slope the demo rows alone; a GEMM
# tile's fixed cost (K_OVERHEAD); eager attention's score GEMMs in TF32 where the stack enables it (were SIMT fp32).
# perfmodel-4: η_hw of GPUs without TensorRT rows from power per SM with an intercept per architecture (Hopper and
# Turing corrected), η_sw(pytorch, tensor) fitted per architecture on published PyTorch rows, sm80 attention kernels
# slower on Hopper. perfmodel-3: RoPE is costed by the code that runs it (FlexBERT's fused kernel only in the paper's environment;
# transformers' and mbbench's torch ops, in fp32, with their casts under half precision); perfmodel-2: attention implementation, stack and per-operation dtypes as inputs.
MODEL_VERSION = "perfmodel-5"
TILES = ((256, 128), (128, 256), (128, 128), (128, 64), (64, 128), (64, 64))
LAUNCH_SECONDS = 4e-6
# A GEMM tile's fixed cost in units of its reduction depth K: the pipeline's prologue (three 32-wide k-blocks loaded
# before the first MMA, the multistage mainloop of CUTLASS's sm80 kernels) and the epilogue (the tile's output
# converted and stored) take about as long as a fourth: K = 128 elements of work that do no FLOPs. It makes K = 768
# GEMMs (BERT-base) 3 % slower per FLOP than K = 1024 ones (BERT-large), as TensorRT's demo rows say: leave-one-model-
# out error 4.1 % -> 2.2 % median, the paper's 4090 table 2.2 % -> 1.2 % (64: 3.0 % / 1.9 %; 256: 1.5 % / 3.6 %).
K_OVERHEAD = 128
MEMORY_EFFICIENCY = 0.85
# Fused attention kernels' forward throughput as a fraction of their dtype's dense peak (before η_hw):
# flash: FlashAttention 2 forward reaches 50–73 % of A100 peak (Dao 2023, arXiv 2307.08691, Fig. 5) -> 0.6;
# mem_efficient (cutlass fMHA in SDPA/xformers): FA2 is 1.3–2× faster than it (same paper) -> 0.6 / 1.5 = 0.4,
# assumed the same fraction of the fp32 SIMT peak when it runs in fp32;
# flex: FlexAttention forward about 85–90 % of FA2 (PyTorch FlexAttention blog, Aug 2024) -> 0.5.
KERNEL_EFFICIENCY = {"flash": 0.6, "mem_efficient": 0.4, "flex": 0.5}
# FlashAttention 2 and cutlass fMHA are sm80 code (mma.sync); Hopper's dense peak needs warpgroup MMA (wgmma) and
# TMA. FA2 reaches 35 % of the H100's peak (Shah et al. 2024, FlashAttention-3, arXiv 2407.08608, abstract) against
# the 0.6 above on the A100: such kernels run at 0.35 / 0.6 of their Ampere fraction on sm90.
SM80_KERNEL_ON_HOPPER = 0.35 / 0.6
# Element-wise passes (one read or one write of B·H·S² elements) of eager/math attention beyond the QKᵀ write
# and PV read counted in their GEMMs. transformers eager (BERT/RoBERTa): scale 2, mask add 2, softmax 2 -> 6;
# SDPA math: mask add 2, softmax 2 -> 4 (q is scaled before QKᵀ). DeBERTa (DebertaV2 disentangled_attention_bias):
# c2p and p2c each gather 2, divide by the scale 2, accumulate 3 -> 14; adding rel_att 3; XSoftmax masked_fill 2,
# softmax 2, masked_fill 2 -> 23.
EAGER_PASSES = {("eager", "standard"): 6, ("math", "standard"): 4, ("eager", "disentangled"): 23,
                ("math", "disentangled"): 23}


# ------------------------------------------------------------------------------------------------ peaks, GEMMs

def peak_flops(gpu: GPU, dtype: str) -> float:
    """Dense peak FLOP/s for a compute dtype ('float32' SIMT, 'tfloat32', 'float16'/'bfloat16' fp32-accumulate).

    Source: gpu-basket.csv (vendor datasheets). UserError where the GPU has no TF32; a bf16 request on a GPU without
    bf16 (T4) gets the fp16 rate (`GPU.peak_tflops`): the plan refuses or restates such a dtype before any cost.
    """
    if dtype == "tfloat32":
        if gpu.tf32_tflops is None:
            raise UserError(f"{gpu.name} has no TF32 tensor cores")
        return gpu.tf32_tflops * 1e12
    return gpu.peak_tflops(dtype) * 1e12


def gemm_dtype(dtype: str, stack: Stack) -> str:
    """The dtype a weight GEMM computes in: fp32 weights run SIMT fp32, or TF32 when the stack enables it."""
    return "tfloat32" if dtype == "float32" and stack.tf32 else dtype


def gemm_path(dtype: str) -> str:
    """'simt' (fp32 without tensor cores), 'tf32' or 'tensor' (fp16/bf16): the key of η_sw."""
    return {"float32": "simt", "tfloat32": "tf32"}.get(dtype, "tensor")


def ctas_per_sm(gpu: GPU, tile: tuple[int, int]) -> int:
    """Resident CTAs per SM: big tiles fill 100 KB-smem parts alone; 8.0/9.0 fit two ≤128×128 tiles."""
    if tile[0] * tile[1] >= 128 * 256:
        return 1
    return 2 if gpu.smem_per_sm_kb >= 160 else 1


def tile_efficiency_factor(tile: tuple[int, int]) -> float:
    """Per-tile efficiency: smaller tiles reuse less data per load (NVIDIA GEMM guide)."""
    area = tile[0] * tile[1]
    return {256 * 128: 1.0, 128 * 128: 0.92, 128 * 64: 0.82, 64 * 64: 0.7}[area]


def alignment_factor(dim: int) -> float:
    """Tensor cores are fully fed at multiples of 128 bytes (64 fp16/bf16 elements), usable at 16 bytes
    (8 elements), and fall back to slow paths otherwise (NVIDIA's "Tensor Core Requirements")."""
    if dim % 64 == 0:
        return 1.0
    return 0.92 if dim % 8 == 0 else 0.5


@dataclass(frozen=True)
class GemmEstimate:
    m: int
    n: int
    k: int
    tile: tuple[int, int]
    tiles: int
    waves: int
    tile_efficiency: float  # useful / computed output area
    wave_efficiency: float  # CTAs / (waves · slots)
    seconds: float
    bound: str  # "compute" or "memory"

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k


def waves(tiles: int, sms: int, per_sm: int = 1) -> int:
    return math.ceil(tiles / (sms * per_sm))


def gemm(m: int, n: int, k: int, gpu: GPU, dtype: str = "bfloat16", batch: int = 1) -> GemmEstimate:
    """The best tile's time for `batch` (M×K)·(K×N) GEMMs on `gpu` in `dtype` (before η).

    dtype: 'float32' (SIMT), 'tfloat32', 'float16', 'bfloat16'. Seconds; FLOPs of the returned estimate are one
    GEMM's (multiply by `batch`).
    """
    peak = peak_flops(gpu, dtype)
    per_sm = peak / gpu.sm_count
    t_mem = batch * bytes_per_element(dtype) * (m * k + k * n + m * n) / (gpu.bandwidth_gbs * 1e9 * MEMORY_EFFICIENCY)
    aligned = alignment_factor(k) * alignment_factor(n)
    best = None
    for tile in TILES:
        cps = ctas_per_sm(gpu, tile)
        count = batch * math.ceil(m / tile[0]) * math.ceil(n / tile[1])
        w = waves(count, gpu.sm_count, cps)
        # a wave puts `cps` co-resident tiles on each SM, sharing its peak
        t_comp = w * cps * 2 * tile[0] * tile[1] * (k + K_OVERHEAD) / (per_sm * tile_efficiency_factor(tile) * aligned)
        seconds = max(t_comp, t_mem) + LAUNCH_SECONDS
        if best is None or seconds < best.seconds:
            best = GemmEstimate(m, n, k, tile, count, w, batch * m * n / (count * tile[0] * tile[1]),
                                count / (w * gpu.sm_count * cps), seconds, "compute" if t_comp >= t_mem else "memory")
    return best


# -------------------------------------------------------------------------------------------------- FLOPs

def _keys(shape: Shape, lengths: list[int] | tuple[int, ...], padded_to: int | None, layer: int,
          windowed: bool) -> int:
    """Σ over executed queries of the keys each attends: padded rows attend the whole row; packed documents
    their document, or the ±window on a local layer when `windowed`."""
    if padded_to is not None:
        return len(lengths) * padded_to * padded_to
    if shape.is_global(layer) or not windowed:
        return sum(n * n for n in lengths)
    width = 2 * shape.window + 1
    return sum(n * min(width, n) for n in lengths)


def attention_flops(shape: Shape, lengths: list[int], padded_to: int | None, layer: int) -> float:
    """QKᵀ and AV of one layer: 4 · keys_per_query · head_dim · heads per query token (model FLOPs: local layers
    count their window; padded rows count every padded pair)."""
    return 4.0 * shape.hidden * _keys(shape, lengths, padded_to, layer, windowed=True)


def relative_flops(shape: Shape, tokens: int) -> float:
    """DeBERTa's disentangled extras of one layer: c2p and p2c score GEMMs (2 · 2·tokens·span·hidden) and the
    projections of the 2k relative embeddings by W_q and W_k (2 · 2·span·hidden², once per batch)."""
    span = shape.relative_span
    return 4.0 * tokens * span * shape.hidden + 4.0 * span * shape.hidden * shape.hidden if span else 0.0


def forward_flops(shape: Shape, lengths: list[int] | tuple[int, ...], padded_to: int | None = None) -> float:
    """Model FLOPs of one forward over documents of `lengths` (tokens), for MFU.

    Counts 2·M·N·K of every weight GEMM over the executed tokens (M = Σ lengths, or len·padded_to when padded),
    QKᵀ and PV (local layers: their ±window; padded rows: every padded pair) and DeBERTa's c2p/p2c GEMMs and
    relative projections. Excludes the embedding gather, norms, softmax, activations, RoPE and any head (the
    convention of the paper's derived TFLOPS, calibration.csv notes: 24·h²·s·L + 4·s²·h·L per sequence).
    """
    lengths = list(lengths)
    tokens = len(lengths) * padded_to if padded_to else sum(lengths)
    per_layer = 2.0 * tokens * sum(k * n for k, n in shape.gemms().values()) + relative_flops(shape, tokens)
    return sum(per_layer + attention_flops(shape, lengths, padded_to, layer) for layer in range(shape.layers))


# ------------------------------------------------------------------------------------------------ batch time

@dataclass(frozen=True)
class BatchCost:
    """Seconds of one forward before efficiency, split by what η applies to."""

    gemm_seconds: float  # compute-bound GEMMs (weights, eager QKᵀ/PV, DeBERTa c2p/p2c, fp32 fused attention):
    #                      ÷ η_hw·η_sw
    memory_seconds: float  # memory-bound work (element-wise passes, eager score passes): already at
    #                        MEMORY_EFFICIENCY of the datasheet bandwidth, no η
    kernel_seconds: float  # fused attention kernels: ÷ η_hw
    flops: float  # model FLOPs (forward_flops)
    gemm_dtype: str
    attention_dtype: str
    estimates: dict = field(default_factory=dict)  # name -> GemmEstimate (one layer)
    peak_seconds: float = 0.0  # the FLOPs at the dense peak of the dtype each part runs in (`peak_seconds`)


def _split(estimate: GemmEstimate, count: float = 1.0) -> tuple[float, float]:
    """(compute-bound, memory-bound) seconds of `count` runs of a GEMM estimate."""
    seconds = count * estimate.seconds
    return (seconds, 0.0) if estimate.bound == "compute" else (0.0, seconds)


def default_attention(shape: Shape, gpu: GPU, dtype: str) -> AttentionImpl:
    """The attention assumed when none is given: what `auto` runs on `gpu` (`software.auto_backend`) for unpadded
    shapes (mbbench's own models and their RoPE), padded SDPA (transformers) otherwise."""
    backend = auto_backend(gpu, shape.unpadded)
    return resolve_attention(backend, dtype, gpu, packed_model=shape.unpadded, head_dim=shape.head_dim,
                             rotary="mbbench" if shape.unpadded else "transformers")


def attention_seconds(shape: Shape, lengths: list[int], padded_to: int | None, gpu: GPU, dtype: str,
                      impl: AttentionImpl, stack: Stack = PYTORCH) -> tuple[float, float, float]:
    """(compute-bound GEMM, memory-bound, fused-kernel) seconds of attention over all layers, before η.

    Fused kernels: executed FLOPs / (peak(compute dtype) × KERNEL_EFFICIENCY); on tensor cores they are the
    third bucket (÷ η_hw), in fp32 they join the compute-bound bucket (SIMT, ÷ η_hw·η_sw like fp32 GEMMs).
    Eager/math: QKᵀ and PV as batched GEMMs in the stack's GEMM dtype (TF32 under fp32 weights where the stack
    enables it: torch's allow_tf32 covers bmm as it covers the weight GEMMs), plus EAGER_PASSES element-wise passes
    over B·H·S² scores in the model dtype; disentangled attention adds the c2p/p2c GEMMs. Padded execution (impl
    not packed) attends every padded pair.
    """
    if not impl.packed and padded_to is None:
        padded_to = max(lengths)
    rows = [padded_to] * len(lengths) if padded_to else list(lengths)
    tokens = sum(rows)
    bandwidth = gpu.bandwidth_gbs * 1e9 * MEMORY_EFFICIENCY
    compute = memory_bound = kernel = 0.0
    score_dtype = gemm_dtype(impl.compute_dtype, stack)
    for layer in range(shape.layers):
        if impl.materialises_scores:
            d, heads = shape.head_dim, shape.heads
            for s, count in _length_counts(rows).items():
                parts = [gemm(s, s, d, gpu, score_dtype, batch=count * heads),
                         gemm(s, d, s, gpu, score_dtype, batch=count * heads)]
                if shape.relative_span:
                    parts += [gemm(s, shape.relative_span, d, gpu, score_dtype, batch=count * heads)] * 2
                for e in parts:
                    c, m = _split(e)
                    compute, memory_bound = compute + c, memory_bound + m
            passes = EAGER_PASSES[(impl.kernel, shape.attention_kind)]
            pairs = heads * sum(s * s for s in rows)
            memory_bound += passes * pairs * bytes_per_element(dtype) / bandwidth + passes * LAUNCH_SECONDS
        else:
            executed = _keys(shape, lengths, None if impl.packed else padded_to, layer, impl.block_sparse)
            flops = 4.0 * shape.hidden * executed
            seconds = flops / (peak_flops(gpu, impl.compute_dtype) * kernel_efficiency(impl, gpu)) + LAUNCH_SECONDS
            if impl.tensor_cores:
                kernel += seconds
            else:  # an fp32 kernel runs on the SIMT pipes: limited like SIMT GEMMs (÷ η_hw·η_sw(simt))
                compute += seconds
            if shape.relative_span:  # no fused disentangled kernel exists; counted at the GEMM rate
                compute += relative_flops(shape, tokens) / peak_flops(gpu, dtype)
    return compute, memory_bound, kernel


def kernel_efficiency(impl: AttentionImpl, gpu: GPU) -> float:
    """The fraction of its compute dtype's dense peak a fused attention kernel reaches on `gpu` (before η_hw):
    KERNEL_EFFICIENCY, times SM80_KERNEL_ON_HOPPER for sm80 flash/memory-efficient code on an sm90 or newer GPU
    (Blackwell's peak needs its tcgen05 MMA as Hopper's needs wgmma; no published FA2 fraction on a B200 exists, so
    it is assumed to lose as much as on Hopper)."""
    value = KERNEL_EFFICIENCY[impl.kernel]
    if gpu.compute_capability[0] >= 9 and impl.kernel in ("flash", "mem_efficient") and not impl.sm90_native:
        return value * SM80_KERNEL_ON_HOPPER
    return value


def _length_counts(rows: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for n in rows:
        counts[n] = counts.get(n, 0) + 1
    return counts


def raw_batch_time(shape: Shape, lengths: list[int], gpu: GPU, dtype: str = "bfloat16", padded_to: int | None = None,
                   attention: AttentionImpl | None = None, stack: Stack = PYTORCH) -> BatchCost:
    """Cost of one forward over documents of `lengths` (tokens) in model dtype `dtype`, before η.

    padded_to: rows are padded to this length (None: packed, or padded to the batch maximum when `attention` is a
    padded implementation). Raises UserError for a dtype the GPU lacks.
    """
    impl = attention or default_attention(shape, gpu, dtype)
    if impl.packed:
        padded_to = None
    elif padded_to is None:
        padded_to = max(lengths)
    gdtype = gemm_dtype(dtype, stack)
    tokens = len(lengths) * padded_to if padded_to else sum(lengths)
    estimates = {name: gemm(tokens, n, k, gpu, gdtype) for name, (k, n) in shape.gemms().items()}
    compute = memory_bound = 0.0
    for e in estimates.values():
        c, m = _split(e, shape.layers)
        compute, memory_bound = compute + c, memory_bound + m
    bandwidth = gpu.bandwidth_gbs * 1e9 * MEMORY_EFFICIENCY
    bytes_per = bytes_per_element(dtype)
    elementwise = tokens * elementwise_bytes(shape, impl, stack, dtype)
    memory_bound += shape.layers * (elementwise / bandwidth + 6 * LAUNCH_SECONDS)
    memory_bound += bytes_per * tokens * shape.hidden * 3 / bandwidth  # embedding gather + norm
    attn_compute, attn_memory, attn_kernel = attention_seconds(shape, lengths, padded_to, gpu, dtype, impl, stack)
    flops = forward_flops(shape, lengths, padded_to)
    score_dtype = gemm_dtype(impl.compute_dtype, stack) if impl.materialises_scores else impl.compute_dtype
    return BatchCost(compute + attn_compute, memory_bound + attn_memory, attn_kernel, flops, gdtype,
                     impl.compute_dtype, estimates, peak_seconds(shape, lengths, padded_to, gpu, flops, gdtype,
                                                                 score_dtype))


def elementwise_bytes(shape: Shape, impl: AttentionImpl, stack: Stack, dtype: str) -> float:
    """Bytes read + written per token and layer by element-wise ops (PyTorch: one kernel per op), `dtype`
    activations.

    Two norms (read, write: 4·hidden) and two residual adds (read 2, write 1: 6·hidden); the activation and gate
    over the FFN-in width (3·F_in); RoPE on q and k (`rotary_bytes`). TensorRT's plugins fuse bias+activation
    into GEMM epilogues and residual+LayerNorm into one skip-layernorm pass (read 2, write 1) twice per layer:
    6·hidden.
    """
    width = bytes_per_element(dtype)
    if stack.fused_elementwise:
        return 6 * shape.hidden * width
    rope = rotary_bytes(shape.hidden, impl.rotary, dtype) if shape.rotary else 0.0
    return (10 * shape.hidden + 3 * shape.ffn * (2 if shape.gated else 1)) * width + rope


def rotary_bytes(hidden: int, code: str, dtype: str) -> float:
    """Bytes read + written per token to rotate q and k (hidden elements each) with `dtype` activations, computed
    in fp32 as every implementation here does (software.ROTARY_CODES; counts from the code, h = hidden):

    - fused: read q, k and write them back: 4h·w.
    - transformers, per tensor: `x.float()` twice (each reads h·w, writes h·4; no-ops in fp32), rotate_half
      (neg: h/2 in and out; cat: h in and out), ×cos, ×sin (h in and out each), the sum (2h in, h out), all
      at 4 bytes, and the downcast (h·4 in, h·w out; a no-op in fp32): 10h·4 + 3h·(w + 4) under half precision.
    - mbbench (`elementwise.apply_rotary`): four products over half-width views, each reading h elements in
      their dtype and writing h fp32 values, and two sums reading 2h fp32 and writing h in the activation
      dtype: 4h·(w + 4) + 2·(2h·4 + h·w) for q and k together.
    """
    w, f = bytes_per_element(dtype), bytes_per_element("float32")
    if code == "fused":
        return 4 * hidden * w
    if code == "transformers":
        casts = 0 if w == f else 3 * hidden * (w + f)
        return 2 * (10 * hidden * f + casts)
    return 4 * hidden * (w + f) + 2 * (2 * hidden * f + hidden * w)


@dataclass
class Prediction:
    gpu: str
    dtype: str  # model (weights) dtype
    tokens: int  # real tokens of the batch
    seconds: float  # per batch, after η
    raw_seconds: float  # before η
    efficiency: float  # η_hw·η_sw used for framework work
    flops: float  # model FLOPs of the batch (forward_flops)
    gemms: dict = field(default_factory=dict)  # name -> GemmEstimate (one layer)
    gemm_dtype: str = ""
    attention_dtype: str = ""
    framework_raw: float = 0.0  # seconds before η of compute-bound GEMMs (÷ η_hw·η_sw)
    kernel_raw: float = 0.0  # seconds before η of fused attention kernels (÷ η_hw)
    memory_raw: float = 0.0  # seconds of memory-bound work (no η)
    peak_seconds: float = 0.0  # the batch's FLOPs at the dense peak of the dtype each runs in (`peak_seconds`)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation: the time the FLOPs would take at their dtypes' dense peaks over the predicted
        time. Attention in bf16 under fp32 weights counts at the bf16 peak, so MFU never exceeds 1 for it."""
        return self.peak_seconds / self.seconds


# --------------------------------------------------------------------------------------------- calibration

ETA_RANGE = (0.1, 0.95)  # η_hw from specs is clamped here: no GPU runs at 0 or at its full datasheet peak


def watts_per_sm(gpu: GPU) -> float:
    """Board power per SM (W): the spec model's feature. The T4 and L4 (70–72 W) have the least, the H100 SXM
    (700 W over 132 SMs) the most. Chosen over bytes per FLOP and watts per TFLOP by leave-one-GPU-out error on
    calibration.csv (median 15 % vs 25–33 %), and kept with architecture intercepts: watts per dense TFLOP puts the
    H100 MLPerf ratios as close but misses the A10's by 26 % and saturates GeForce cards (whose fp32-accumulate
    peak is half their fp16 one)."""
    return max(gpu.tdp_w, 1.0) / gpu.sm_count


@dataclass(frozen=True)
class SpecModel:
    """η_hw of a GPU without fit rows of its own: exp(intercept[architecture] + slope · ln(W per SM)), clamped to
    ETA_RANGE and to `ceiling`.

    slope: shared by every architecture, fitted within architectures (fixed effects); intercepts: ln η at 1 W per
    SM, per architecture, each from its own fit rows (`sources` says which); an architecture with none takes the
    mean of the known intercepts, and says so. ceiling: the highest η of a fitted GPU: an extrapolation in power per
    SM (the B200's 6.8 W against the H100 SXM's 5.3) never promises a fraction of peak no GPU was seen to reach.
    """

    slope: float
    intercepts: dict[str, float]
    sources: dict[str, str] = field(default_factory=dict)
    ceiling: float = ETA_RANGE[1]

    def efficiency(self, gpu: GPU) -> tuple[float, str]:
        """η_hw and where it came from ('from-specs (Hopper)', or 'from-specs (no Blackwell data: ...)')."""
        known = gpu.architecture in self.intercepts
        intercept = self.intercepts[gpu.architecture] if known else statistics.mean(self.intercepts.values())
        value = math.exp(intercept + self.slope * math.log(watts_per_sm(gpu)))
        value = min(max(value, ETA_RANGE[0]), ETA_RANGE[1], self.ceiling)
        where = gpu.architecture if known else f"no {gpu.architecture} data: the mean of {len(self.intercepts)} " \
                                               f"architectures' intercepts"
        return value, f"from-specs ({where})"


# η_sw per (stack, GEMM path) before any fit: TensorRT is the reference (≡ 1). ("pytorch", "simt") is fitted on the
# paper's fp32 4090 table and ("pytorch", "tensor") on published PyTorch fp16 rows (per architecture where they
# exist, their median elsewhere); ("pytorch", "tf32") takes the tensor path's fitted values (calibration.
# fit_pytorch_tensor: the same cuBLAS tensor-core kernels; validation's held-out TF32 rows check it).
DEFAULT_SOFTWARE: dict[tuple[str, str], float] = {("tensorrt", "tensor"): 1.0, ("pytorch", "tensor"): 1.0,
                                                  ("pytorch", "tf32"): 1.0, ("pytorch", "simt"): 1.0}


@dataclass
class Calibration:
    """The efficiencies a prediction divides by. `efficiencies`: η_hw fitted per GPU id; `spec`: η_hw of the
    others (None: the median of the fitted ones); `software`: η_sw per (stack, path); `architecture_software`:
    η_sw per (stack, path, architecture) where an architecture has rows of its own."""

    efficiencies: dict[str, float]
    software: dict[tuple[str, str], float] = field(default_factory=lambda: dict(DEFAULT_SOFTWARE))
    software_sources: dict[tuple[str, str], str] = field(default_factory=dict)
    spec: SpecModel | None = None
    architecture_software: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def hardware(self, gpu: GPU) -> tuple[float, str]:
        """η_hw and where it came from ('fitted' on this GPU's rows, or 'from-specs (...)')."""
        if gpu.id in self.efficiencies:
            return self.efficiencies[gpu.id], "fitted"
        if self.spec is not None:
            return self.spec.efficiency(gpu)
        return (statistics.median(self.efficiencies.values()) if self.efficiencies else 0.5), "median of fitted GPUs"

    def software_factor(self, stack: Stack, path: str, architecture: str = "") -> float:
        """η_sw of `stack` on GEMM path `path` ('simt', 'tf32', 'tensor') on a GPU of `architecture`."""
        own = self.architecture_software.get((stack.name, path, architecture))
        return own if own is not None else self.software.get((stack.name, path), 1.0)

    def efficiency(self, gpu: GPU, stack: Stack = PYTORCH, dtype: str = "bfloat16") -> tuple[float, str]:
        """η = η_hw(gpu) × η_sw(stack, GEMM path of dtype, architecture), and the source of η_hw."""
        eta_hw, source = self.hardware(gpu)
        return eta_hw * self.software_factor(stack, gemm_path(gemm_dtype(dtype, stack)), gpu.architecture), source


def peak_seconds(shape: Shape, lengths: list[int], padded_to: int | None, gpu: GPU, flops: float, gemm_dtype_: str,
                 attention_dtype: str) -> float:
    """Seconds of one forward's model FLOPs (`flops`, its `forward_flops`) at the dense peak of the dtype each part
    runs in: the weight GEMMs (and DeBERTa's relative projections) at `gemm_dtype_`'s, QKᵀ and PV at
    `attention_dtype`'s. MFU divides it by the time: one peak for a forward whose attention runs in bf16 under fp32
    weights would let MFU pass 1."""
    attention = sum(attention_flops(shape, lengths, padded_to, layer) for layer in range(shape.layers))
    return (flops - attention) / peak_flops(gpu, gemm_dtype_) + attention / peak_flops(gpu, attention_dtype)


def predict(shape: Shape, lengths: list[int], gpu: GPU, dtype: str, padded_to: int | None,
            calibration: Calibration, attention: AttentionImpl | None = None, stack: Stack = PYTORCH) -> Prediction:
    """Predicted time of one forward over documents of `lengths` (tokens) on `gpu` with model dtype `dtype`
    (canonical, one the GPU has: `software.check_dtype`), after the efficiencies of `calibration`."""
    cost = raw_batch_time(shape, lengths, gpu, dtype, padded_to, attention, stack)
    eta_hw, _ = calibration.hardware(gpu)
    eta_sw = calibration.software_factor(stack, gemm_path(cost.gemm_dtype), gpu.architecture)
    seconds = cost.gemm_seconds / (eta_hw * eta_sw) + cost.kernel_seconds / eta_hw + cost.memory_seconds
    raw = cost.gemm_seconds + cost.kernel_seconds + cost.memory_seconds
    return Prediction(gpu.id, dtype, sum(lengths), seconds, raw, eta_hw * eta_sw, cost.flops,
                      cost.estimates, cost.gemm_dtype, cost.attention_dtype, cost.gemm_seconds,
                      cost.kernel_seconds, cost.memory_seconds, cost.peak_seconds)


def paper_heuristic(shape: Shape, gpu: GPU) -> float:
    """The ModernBERT paper's score: (128×256 weight blocks mod SMs) / SMs, 1.0 when they divide evenly,
    averaged over both orientations and the layer's weight matrices (model_shapes.py, `shapes` branch)."""
    scores = []
    for k, n in shape.gemms().values():
        for x, y in ((k, n), (n, k)):
            blocks = math.ceil(x / 128) * math.ceil(y / 256)
            remainder = blocks % gpu.sm_count
            scores.append(1.0 if remainder == 0 else remainder / gpu.sm_count)
    return sum(scores) / len(scores)
