"""Shape sweeps: candidate (hidden, GLU, layers, head dim) scored for tiling and waves over the GPU basket.

For each candidate and basket GPU: per-GEMM tile and wave efficiency at the workload's token count,
predicted tokens/s and MFU (perfmodel), the paper's heuristic (128×256 blocks mod SMs), and the
weighted basket efficiency score: the weighted mean over GPUs of predicted achieved FLOP/s / peak.

Ranking (`RANKINGS`): by default what a designer asks, throughput at equal parameters: the basket tokens/s
scaled to one size (`scaled_tokens_per_second`, cost taken as proportional to parameters; with --params the
shapes are already of one size, within its tolerance); or the basket score (how well the shapes tile); or the
basket tokens/s as predicted. Shapes that are unusual (not 64-aligned, or an intermediate narrower than the hidden
size) rank after the others unless asked. Each row names the column it was ranked by (`ranked_by`), whether it
was ranked with the usual shapes (`ranked`) and the workload (`tokens_per_pass`, `dtype`), so the terminal, the
CSV and every heatmap (here and in the report) show one ranking and one winner.

`mbbench sweep --measure` measures the same candidates on the local device instead (`measured_sweep`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

from mbbench.calibration import default_calibration
from mbbench.dtypes import ALIASES
from mbbench.errors import UserError
from mbbench.hardware import perfmodel
from mbbench.hardware.gpus import GPU, basket, lookup
from mbbench.hardware.shape import Shape
from mbbench.units import MAX_WEIGHT, parse_weights

RANGE_FORMS = "START:STOP:STEP, START:STOP or a comma list of integers"


def _integer(text: str, option: str, whole: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise UserError(f"--{option} {whole!r}: {text.strip()!r} is not an integer; expected {RANGE_FORMS}") from None


def parse_range(text: str, name: str, minimum: int = 1) -> list[int]:
    """'512:1536:64' (inclusive), '512:1536' (step 1), '768,1024' or '22' -> the values, in order.

    Raises UserError (naming --`name`) for an empty or malformed text, STEP <= 0, STOP < START, or a value
    below `minimum` (every sweep dimension is a positive size).
    """
    whole = text
    text = text.strip()
    if not text:
        raise UserError(f"--{name} is empty; expected {RANGE_FORMS}")
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise UserError(f"--{name} {whole!r}: expected {RANGE_FORMS}")
        numbers = [_integer(part, name, whole) for part in parts]
        start, stop, step = numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else 1
        if step <= 0:
            raise UserError(f"--{name} {whole!r}: STEP must be positive, got {step}")
        if stop < start:
            raise UserError(f"--{name} {whole!r}: STOP {stop} is less than START {start} (an empty range)")
        count = (stop - start) // step + 1
        if count > MAX_CANDIDATES:  # refused before the list is built: 0:1000000000:1 would fill the memory
            raise UserError(f"--{name} {whole!r} names {count:,} values; a sweep scores at most "
                            f"{MAX_CANDIDATES:,} shapes (use a coarser STEP)")
        values = list(range(start, stop + 1, step))
    else:
        values = [_integer(part, name, whole) for part in text.split(",")]
    too_small = [v for v in values if v < minimum]
    if too_small:
        raise UserError(f"--{name} {whole!r}: values must be >= {minimum}, got {too_small[0]}")
    return list(dict.fromkeys(values))


def parse_params(text: str | None) -> tuple[float, float] | None:
    """'149M±5%', '149M+-5%', '0.4B' (±5%) -> (target parameters, tolerance fraction); None for no text.

    Raises UserError for a malformed text, a target <= 0, or a tolerance outside (0, 100) %.
    """
    if text is None or not text.strip():
        return None
    # under LC_ALL=C Python hands "±" over as two surrogate-escaped bytes: read them back as the UTF-8 they are
    text = os.fsencode(text).decode("utf-8", "replace")
    number = r"(\d+(?:\.\d*)?|\.\d+)"
    match = re.fullmatch(rf"\s*{number}\s*([MmBb])\s*(?:(?:±|\+-|\+/-)\s*{number}\s*%)?\s*", text)
    if not match:
        raise UserError(f"--params {text!r}: expected a size in M or B with an optional tolerance, e.g. 149M±5%")
    target = float(match.group(1)) * (1e6 if match.group(2) in "Mm" else 1e9)
    tolerance = float(match.group(3) or 5)
    if target <= 0:
        raise UserError(f"--params {text!r}: the parameter target must be positive")
    if not 0 < tolerance < 100:
        raise UserError(f"--params {text!r}: the tolerance must be between 0 and 100 %, got {tolerance:g}%")
    return target, tolerance / 100


def parse_basket(text: str) -> dict[str, float]:
    """'basket' (the paper's basket and weights), 'all', 'T4,L4,H100' (equal weights), or 'T4=2,L4=1'.

    Weights are parsed by `units.parse_weights`. Raises UserError for an empty or unknown GPU name, a GPU
    named twice (under any alias), a weight that is not a finite number in [0, 1e6], or weights all zero.
    """
    if text.strip() == "basket":
        return {g.id: g.basket_weight for g in basket().values() if g.basket_weight > 0}
    if text.strip() == "all":
        return {g.id: 1.0 for g in basket().values()}
    weights: dict[str, float] = {}
    for name, weight in parse_weights(text, "--gpus").items():
        gpu_id = lookup(name).id
        if gpu_id in weights:
            raise UserError(f"--gpus {text!r}: {name} names {gpu_id} a second time")
        weights[gpu_id] = weight
    return weights


def parse_dtype_name(dtype: str) -> str:
    """'bfloat16'/'bf16', 'float16'/'fp16', 'float32'/'fp32' -> the canonical torch name; UserError otherwise."""
    if dtype not in ALIASES:
        raise UserError(f"--dtype {dtype!r}: choose from {', '.join(ALIASES)}")
    return ALIASES[dtype]


MAX_CANDIDATES = 100_000  # shapes one sweep may score (each costs a prediction per basket GPU; ~1 ms)


def validate_sweep(hidden: list[int], glu: list[int], layers: list[int], head_dim: int, tokens: int) -> None:
    """Refuse sweep inputs that cannot describe a model or a workload (UserError naming the option).

    Every dimension must be a positive integer and head_dim even (RoPE rotates pairs); at least one hidden
    size must divide into heads of head_dim and at least one GLU width must be even (candidates skips the
    others, so a range may include them).
    """
    for option, values in (("hidden", hidden), ("glu", glu), ("layers", layers)):
        if not values:
            raise UserError(f"--{option}: no values")
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise UserError(f"--{option}: values must be positive integers, got {bad[0]!r}")
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 2 or head_dim % 2:
        raise UserError(f"--head-dim must be a positive even integer (RoPE rotates pairs), got {head_dim!r}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise UserError(f"--tokens must be a positive integer, got {tokens!r}")
    if len(hidden) * len(glu) * len(layers) > MAX_CANDIDATES:
        raise UserError(f"--hidden x --glu x --layers name {len(hidden) * len(glu) * len(layers):,} shapes; a sweep "
                        f"scores at most {MAX_CANDIDATES:,} (use coarser steps)")
    if all(h % head_dim for h in hidden):
        raise UserError(f"no --hidden value ({_shown(hidden)}) is divisible by --head-dim {head_dim}")
    if all(g % 2 for g in glu):
        raise UserError(f"no --glu value ({_shown(glu)}) is even (it is split into input and gate halves)")


def _shown(values: list[int]) -> str:
    return ", ".join(map(str, values[:6])) + (", ..." if len(values) > 6 else "")


@dataclass
class Candidate:
    hidden: int
    glu: int  # fused Wi width (2 x intermediate)
    layers: int
    head_dim: int
    vocab: int = 50368

    @property
    def shape(self) -> Shape:
        return Shape(self.hidden, self.glu // 2, True, self.hidden // self.head_dim, self.layers,
                     self.vocab, window=64, global_every=3, rotary=True)  # a ModernBERT: RoPE on q and k


def candidates(hidden: list[int], glu: list[int], layers: list[int], head_dim: int,
               params: tuple[float, float] | None) -> list[Candidate]:
    out = []
    for h in hidden:
        if h % head_dim:
            continue
        for g in glu:
            if g % 2:
                continue
            for n in layers:
                c = Candidate(h, g, n, head_dim)
                if params and abs(c.shape.parameters - params[0]) > params[1] * params[0]:
                    continue
                out.append(c)
    return out


def score(candidate: Candidate, gpus: dict[str, float], tokens: int, dtype: str,
          calibration: perfmodel.Calibration, doc_length: int = 512) -> dict:
    """One candidate's row: per basket GPU its predicted tokens/s, MFU, utilisation before η, each GEMM's tile and
    wave efficiency and the paper's heuristic; then the weighted basket score. `tokens` per forward pass, in
    documents of `doc_length`; `dtype` canonical (a GPU without it, the T4 for bf16, is scored in fp16)."""
    shape = candidate.shape
    # exactly `tokens` tokens: full documents of doc_length plus one shorter remainder
    lengths = [doc_length] * (tokens // doc_length) + ([tokens % doc_length] if tokens % doc_length else [])
    row = {"hidden": candidate.hidden, "glu": candidate.glu, "layers": candidate.layers,
           "heads": shape.heads, "parameters_m": round(shape.parameters / 1e6, 1),
           "aligned_64": all(d % 64 == 0 for d in (candidate.hidden, candidate.glu, candidate.glu // 2))}
    weighted = heuristic = total = 0.0
    for gpu_id, weight in gpus.items():
        gpu: GPU = basket()[gpu_id]
        # perfmodel refuses bf16 where the GPU lacks it (T4); a basket-wide ranking scores fp16 there and says so
        gpu_dtype = "float16" if dtype in ("bfloat16", "bf16") and gpu.bf16_tflops is None else dtype
        row[f"{gpu_id}_dtype"] = gpu_dtype
        p = perfmodel.predict(shape, lengths, gpu, gpu_dtype, None, calibration)
        # achieved FLOP/s over peak, before η: how well the shape tiles this GPU
        utilisation = p.flops / p.raw_seconds / perfmodel.peak_flops(gpu, p.gemm_dtype)
        row[f"{gpu_id}_tokens_per_second"] = round(p.tokens_per_second)
        row[f"{gpu_id}_mfu"] = round(p.mfu, 4)
        row[f"{gpu_id}_utilisation"] = round(utilisation, 4)
        for name, e in p.gemms.items():
            row[f"{gpu_id}_{name}_tile_eff"] = round(e.tile_efficiency, 3)
            row[f"{gpu_id}_{name}_wave_eff"] = round(e.wave_efficiency, 3)
        hscore = perfmodel.paper_heuristic(shape, gpu)
        row[f"{gpu_id}_paper_heuristic"] = round(hscore, 4)
        weighted += weight * utilisation
        heuristic += weight * hscore
        total += weight
    row["basket_score"] = round(weighted / total, 5)
    row["paper_heuristic"] = round(heuristic / total, 5)
    row["basket_tokens_per_second"] = round(sum(w * row[f"{g}_tokens_per_second"] for g, w in gpus.items()) / total)
    return row


RANKINGS = {"throughput": "basket tokens/s at equal parameters (scaled_tokens_per_second)",
            "utilisation": "basket score (fraction of dense peak the GEMMs reach, before per-GPU efficiency)",
            "tokens": "basket tokens/s as predicted (basket_tokens_per_second)"}
RANKING_COLUMNS = {"throughput": "scaled_tokens_per_second", "utilisation": "basket_score",
                   "tokens": "basket_tokens_per_second"}  # the CSV column each ranking sorts by


def usual(row: dict) -> bool:
    """A shape a designer would build: 64-aligned widths and an intermediate at least as wide as the hidden size."""
    return bool(row["aligned_64"]) and row["glu"] // 2 >= row["hidden"]


def run_sweep(hidden: list[int], glu: list[int], layers: list[int], head_dim: int, gpus: dict[str, float],
              tokens: int, params: tuple[float, float] | None = None, dtype: str = "bfloat16",
              on_candidate: Callable[[int], None] | None = None, rank_by: str = "throughput",
              include_unusual: bool = False) -> list[dict]:
    """Score and rank every candidate shape (hidden x glu x layers) on the weighted GPU basket.

    `rank_by`: a key of RANKINGS. Unusual shapes (`usual`) rank after the others unless `include_unusual`.

    Raises UserError for invalid inputs (see `validate_sweep`, `parse_dtype_name`) or when no candidate
    satisfies the ranges and the parameter target.
    """
    validate_sweep(hidden, glu, layers, head_dim, tokens)
    dtype = parse_dtype_name(dtype)
    if not gpus or not any(gpus.values()) or any(not 0 <= w <= MAX_WEIGHT for w in gpus.values()):  # nan too
        raise UserError(f"GPU weights must be numbers in [0, {MAX_WEIGHT:g}], not all zero, got {gpus}")
    cands = candidates(hidden, glu, layers, head_dim, params)
    if not cands:
        raise UserError("no candidate shape satisfies --hidden, --glu, --layers, --head-dim and --params together "
                        "(hidden sizes the head dimension does not divide are skipped)")
    calibration = default_calibration()
    if on_candidate:
        on_candidate(len(cands))  # the total first, then one call per scored shape
    rows = []
    for candidate in cands:
        rows.append(score(candidate, gpus, tokens, dtype, calibration))
        if on_candidate:
            on_candidate(0)
    if rank_by not in RANKINGS:
        raise UserError(f"--rank-by {rank_by!r}: choose from {', '.join(RANKINGS)}")
    # one size to scale to: the --params target, else the median candidate's size
    size = (params[0] / 1e6) if params else sorted(r["parameters_m"] for r in rows)[len(rows) // 2]
    for row in rows:
        row["usual"] = usual(row)
        row["scaled_tokens_per_second"] = round(row["basket_tokens_per_second"] * row["parameters_m"] / size)
    metric = RANKING_COLUMNS[rank_by]
    rows.sort(key=lambda r: (include_unusual or r["usual"], r[metric], r["basket_tokens_per_second"]), reverse=True)
    for rank, row in enumerate(rows, 1):
        # every surface (terminal, CSV, heatmaps here and in the report) ranks by the column the CSV names
        row.update(rank=rank, ranked_by=metric, ranked=include_unusual or row["usual"], tokens_per_pass=tokens,
                   dtype=dtype)
    return rows


def ranked_frame(frame: "pandas.DataFrame") -> tuple["pandas.DataFrame", str, tuple[int, int] | None]:  # noqa: F821
    """A predicted sweep's CSV rows as every heatmap draws them: (rows with the ranking metric blank where a shape
    was not ranked with the usual ones, the metric, the winner's (hidden, GLU)). The metric is the CSV's
    `ranked_by` column; CSVs written before it existed ranked by scaled tokens/s when they have it."""
    metric = frame["ranked_by"].iloc[0] if "ranked_by" in frame else (
        "scaled_tokens_per_second" if "scaled_tokens_per_second" in frame else "basket_score")
    shown = frame.copy()
    if "ranked" in shown:
        shown[metric] = shown[metric].where(shown["ranked"].astype(bool))
    winner = shown.sort_values("rank").iloc[0] if "rank" in shown else None
    return shown, metric, (int(winner["hidden"]), int(winner["glu"])) if winner is not None else None


def heatmap_title(frame: "pandas.DataFrame", metric: str, where: str) -> str:  # noqa: F821
    """'scaled tokens per second (the ranking), best over layers / predicted over T4, L4; 16,384 tokens per pass,
    bfloat16' (the workload where the CSV names it)."""
    workload = (f"\n{int(frame['tokens_per_pass'].iloc[0]):,} tokens per pass, {frame['dtype'].iloc[0]}"
                if {"tokens_per_pass", "dtype"} <= set(frame.columns) else "")  # its own line: never cut off
    return f"{metric.replace('_', ' ')} (the ranking), best over layers\npredicted{where}{workload}"
