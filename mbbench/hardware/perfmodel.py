"""Analytical performance model: GEMM tile + wave quantization, roofline, attention, element-wise work.

For one forward pass over a batch, every GEMM (QKV, attention output, FFN in, FFN out; M = tokens) is
costed over a menu of CTA tiles: tiles = ceil(M/Tm)·ceil(N/Tn), waves = ceil(tiles / (SMs·CTAs/SM)),
t = max(compute, memory) + launch, minimised over the menu. Attention is FLOPs at a lower efficiency
(global over each document, local over the ±window), element-wise work is bytes / bandwidth.
One efficiency factor per GPU (η) is fitted to published measurements (calibration.csv) and, when
they exist, to our own measured records; GPUs without data get η predicted from their specs.
Source of the rules: gpu-basket.md sections 2 and 6 (NVIDIA's GEMM guides, Anthony et al. 2024).
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from mbbench.hardware.gpus import GPU, basket, lookup

MODEL_VERSION = "perfmodel-1"
TILES = ((256, 128), (128, 256), (128, 128), (128, 64), (64, 128), (64, 64))
LAUNCH_SECONDS = 4e-6
MEMORY_EFFICIENCY = 0.85
ATTENTION_EFFICIENCY = 0.5  # fused attention runs at about half the GEMM rate (FA2 on A100/H100)


@dataclass(frozen=True)
class Shape:
    """What the model needs to know about an encoder (ModernBERT or a competitor)."""

    hidden: int
    ffn: int  # per branch; the FFN-in GEMM is 2·ffn wide when gated
    gated: bool
    heads: int
    layers: int
    vocab: int
    window: int | None = None  # local half-window (ModernBERT: 64), None: all layers global
    global_every: int = 1
    unpadded: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def gemms(self) -> dict[str, tuple[int, int]]:
        """(K, N) of each weight GEMM of one layer."""
        return {"qkv": (self.hidden, 3 * self.hidden), "attn_out": (self.hidden, self.hidden),
                "ffn_in": (self.hidden, self.ffn * (2 if self.gated else 1)), "ffn_out": (self.ffn, self.hidden)}

    @property
    def non_embedding_parameters(self) -> int:
        return self.layers * sum(k * n for k, n in self.gemms().values())

    @property
    def parameters(self) -> int:
        return self.non_embedding_parameters + self.vocab * self.hidden

    def is_global(self, layer: int) -> bool:
        return self.window is None or layer % self.global_every == 0


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


def gemm(m: int, n: int, k: int, gpu: GPU, dtype: str = "bfloat16") -> GemmEstimate:
    """The best tile's time for an (M×K)·(K×N) GEMM on `gpu` (before the per-GPU efficiency η)."""
    peak = gpu.peak_tflops(dtype) * 1e12
    per_sm = peak / gpu.sm_count
    bytes_per = 4 if dtype in ("float32", "fp32") else 2
    t_mem = bytes_per * (m * k + k * n + m * n) / (gpu.bandwidth_gbs * 1e9 * MEMORY_EFFICIENCY)
    aligned = alignment_factor(k) * alignment_factor(n)
    best = None
    for tile in TILES:
        cps = ctas_per_sm(gpu, tile)
        count = math.ceil(m / tile[0]) * math.ceil(n / tile[1])
        w = waves(count, gpu.sm_count, cps)
        t_comp = w * 2 * tile[0] * tile[1] * k / (per_sm * cps * tile_efficiency_factor(tile) * aligned)
        seconds = max(t_comp, t_mem) + LAUNCH_SECONDS
        if best is None or seconds < best.seconds:
            best = GemmEstimate(m, n, k, tile, count, w, m * n / (count * tile[0] * tile[1]),
                                count / (w * gpu.sm_count * cps), seconds, "compute" if t_comp >= t_mem else "memory")
    return best


@dataclass
class Prediction:
    gpu: str
    dtype: str
    tokens: int
    seconds: float  # per batch, after η
    raw_seconds: float  # before η
    efficiency: float  # η used
    flops: float  # model FLOPs (GEMMs + attention) of the batch
    gemms: dict = field(default_factory=dict)  # name -> GemmEstimate (one layer)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation against the GPU's dense peak for this dtype."""
        return self.flops / self.seconds / (basket()[self.gpu].peak_tflops(self.dtype) * 1e12)


def attention_flops(shape: Shape, lengths: list[int], padded_to: int | None, layer: int) -> float:
    """QKᵀ and AV: 4 · keys_per_query · head_dim · heads per query token."""
    per_key = 4 * shape.hidden
    if padded_to is not None:  # padded execution computes every padded query against every padded key
        return len(lengths) * padded_to * padded_to * per_key
    if shape.is_global(layer):
        return sum(n * n for n in lengths) * per_key
    width = 2 * shape.window + 1
    return sum(n * min(width, n) for n in lengths) * per_key


def raw_batch_time(shape: Shape, lengths: list[int], gpu: GPU, dtype: str = "bfloat16",
                   padded_to: int | None = None) -> tuple[float, float, dict]:
    """Seconds and model FLOPs of one forward over documents of `lengths`, before η."""
    dtype = gpu.effective_dtype(dtype)
    tokens = len(lengths) * padded_to if padded_to else sum(lengths)
    estimates = {name: gemm(tokens, n, k, gpu, dtype) for name, (k, n) in shape.gemms().items()}
    gemm_seconds = sum(e.seconds for e in estimates.values())
    gemm_flops = sum(e.flops for e in estimates.values())
    peak = gpu.peak_tflops(dtype) * 1e12
    bytes_per = 4 if dtype == "float32" else 2
    bandwidth = gpu.bandwidth_gbs * 1e9 * MEMORY_EFFICIENCY
    # element-wise: 2 norms, 2 residual adds, RoPE on q/k, activation (and gate) over the FFN width
    elementwise_bytes = bytes_per * tokens * (12 * shape.hidden + 3 * shape.ffn * (2 if shape.gated else 1))
    seconds, flops = 0.0, 0.0
    for layer in range(shape.layers):
        attn = attention_flops(shape, lengths, padded_to, layer)
        seconds += gemm_seconds + attn / (peak * ATTENTION_EFFICIENCY) + elementwise_bytes / bandwidth
        seconds += 6 * LAUNCH_SECONDS
        flops += gemm_flops + attn
    seconds += bytes_per * tokens * shape.hidden * 3 / bandwidth  # embedding gather + norm
    return seconds, flops, estimates


# --------------------------------------------------------------------------------------------- calibration

CALIBRATION_SHAPES = {
    "bert-base": Shape(768, 3072, False, 12, 12, 30522, unpadded=False),
    "bert-large": Shape(1024, 4096, False, 16, 24, 30522, unpadded=False),
}
CALIBRATION_GPU = {"A100-40GB": "A100-SXM4-40GB"}


@dataclass(frozen=True)
class Observation:
    gpu: str
    shape: Shape
    lengths: tuple[int, ...]
    padded_to: int | None
    dtype: str
    tokens_per_second: float
    source: str


@lru_cache(maxsize=1)
def calibration_rows() -> tuple[Observation, ...]:
    """fp16/bf16 rows of the published BERT measurements (calibration.csv), batch ≥ 32."""
    text = resources.files("mbbench").joinpath("data/calibration.csv").read_text()
    rows = []
    for row in csv.DictReader(text.splitlines()):
        if row["precision"] not in ("fp16", "bf16") or row["model"] not in CALIBRATION_SHAPES:
            continue
        if not row["batch"].isdigit() or int(row["batch"]) < 32 or not row["tokens_per_s"]:
            continue
        gpu = CALIBRATION_GPU.get(row["gpu_id"], row["gpu_id"])
        if gpu not in basket():
            continue
        seq, batch = int(row["seq_len"]), int(row["batch"])
        rows.append(Observation(gpu, CALIBRATION_SHAPES[row["model"]], (seq,) * batch, None, row["precision"],
                                float(row["tokens_per_s"]), row["source"]))
    return tuple(rows)


def observed_efficiency(obs: Observation) -> float:
    raw, _, _ = raw_batch_time(obs.shape, list(obs.lengths), basket()[obs.gpu], obs.dtype, obs.padded_to)
    return obs.tokens_per_second / (sum(obs.lengths) / raw)


def spec_features(gpu: GPU) -> tuple[float, float]:
    """log bytes-per-FLOP and log watts-per-TFLOP: what makes power-capped, low-bandwidth cards slower."""
    peak = gpu.peak_tflops("float16")
    return math.log(gpu.bandwidth_gbs / peak), math.log(max(gpu.tdp_w, 1.0) / peak)


def fit_efficiencies(observations: list[Observation]) -> dict[str, float]:
    """η per GPU: the median of observed / predicted-raw throughput over that GPU's observations."""
    per_gpu: dict[str, list[float]] = {}
    for obs in observations:
        per_gpu.setdefault(obs.gpu, []).append(observed_efficiency(obs))
    return {gpu: statistics.median(values) for gpu, values in per_gpu.items()}


def efficiency_from_specs(gpu: GPU, known: dict[str, float]) -> float:
    """η for a GPU without observations: least squares of log η on spec features over known GPUs."""
    import numpy as np

    names = [g for g in known if g in basket()]
    if len(names) < 4:
        return statistics.median(known.values()) if known else 0.5
    x = np.array([[1.0, *spec_features(basket()[g])] for g in names])
    y = np.log([known[g] for g in names])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    value = float(np.exp(np.array([1.0, *spec_features(gpu)]) @ coef))
    return min(max(value, 0.1), 0.95)


@dataclass
class Calibration:
    efficiencies: dict[str, float]  # fitted per GPU

    def efficiency(self, gpu: GPU) -> tuple[float, str]:
        if gpu.id in self.efficiencies:
            return self.efficiencies[gpu.id], "fitted"
        return efficiency_from_specs(gpu, self.efficiencies), "from-specs"


def calibrate(extra: list[Observation] | None = None) -> Calibration:
    return Calibration(fit_efficiencies([*calibration_rows(), *(extra or [])]))


def predict(shape: Shape, lengths: list[int], gpu: str | GPU, dtype: str = "bfloat16",
            padded_to: int | None = None, calibration: Calibration | None = None) -> Prediction:
    gpu = lookup(gpu) if isinstance(gpu, str) else gpu
    calibration = calibration or calibrate()
    eta, _ = calibration.efficiency(gpu)
    raw, flops, estimates = raw_batch_time(shape, lengths, gpu, dtype, padded_to)
    return Prediction(gpu.id, gpu.effective_dtype(dtype), sum(lengths), raw / eta, raw, eta, flops, estimates)


def leave_one_gpu_out(observations: list[Observation]) -> list[dict]:
    """Predict each GPU's rows with η derived only from the other GPUs (spec regression)."""
    fitted = fit_efficiencies(observations)
    out = []
    for obs in observations:
        others = {g: e for g, e in fitted.items() if g != obs.gpu}
        eta = efficiency_from_specs(basket()[obs.gpu], others)
        raw, _, _ = raw_batch_time(obs.shape, list(obs.lengths), basket()[obs.gpu], obs.dtype, obs.padded_to)
        predicted = sum(obs.lengths) / (raw / eta)
        out.append({"gpu": obs.gpu, "source": obs.source, "tokens": sum(obs.lengths), "measured": obs.tokens_per_second,
                    "predicted": predicted, "error": predicted / obs.tokens_per_second - 1.0})
    return out


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
