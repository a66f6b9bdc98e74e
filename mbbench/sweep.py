"""Shape sweeps: candidate (hidden, GLU, layers, head dim) scored for tiling and waves over the GPU basket.

For each candidate and basket GPU: per-GEMM tile and wave efficiency at the workload's token count,
predicted tokens/s and MFU (perfmodel), the paper's heuristic (128×256 blocks mod SMs), and the
weighted basket efficiency score: the weighted mean over GPUs of predicted achieved FLOP/s / peak.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mbbench.errors import UserError
from mbbench.hardware import perfmodel
from mbbench.hardware.gpus import GPU, basket, lookup


def parse_range(text: str, name: str) -> list[int]:
    """'512:1536:64' (inclusive), '768,1024' or '22'."""
    try:
        if ":" in text:
            start, stop, *step = (int(x) for x in text.split(":"))
            return list(range(start, stop + 1, step[0] if step else 1))
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--{name} {text!r}: expected START:STOP:STEP or a comma list of integers") from None


def parse_params(text: str | None) -> tuple[float, float] | None:
    """'149M±5%' or '149M+-5%' -> (target parameters, tolerance fraction)."""
    if not text:
        return None
    match = re.fullmatch(r"\s*([0-9.]+)\s*([MB])\s*(?:(?:±|\+-|\+/-)\s*([0-9.]+)\s*%)?\s*", text)
    if not match:
        raise UserError(f"--params {text!r}: expected e.g. 149M±5%")
    scale = 1e6 if match.group(2) == "M" else 1e9
    return float(match.group(1)) * scale, float(match.group(3) or 5) / 100


def parse_basket(text: str) -> dict[str, float]:
    """'basket' (the paper's basket and weights), or 'T4,L4,H100' (equal weights), or 'T4=2,L4=1'."""
    if text == "basket":
        return {g.id: g.basket_weight for g in basket().values() if g.basket_weight > 0}
    if text == "all":
        return {g.id: 1.0 for g in basket().values()}
    weights = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        weights[lookup(name).id] = float(weight) if weight else 1.0
    return weights


@dataclass
class Candidate:
    hidden: int
    glu: int  # fused Wi width (2 x intermediate)
    layers: int
    head_dim: int
    vocab: int = 50368

    @property
    def shape(self) -> perfmodel.Shape:
        return perfmodel.Shape(self.hidden, self.glu // 2, True, self.hidden // self.head_dim, self.layers,
                               self.vocab, window=64, global_every=3)


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


def score(candidate: Candidate, gpus: dict[str, float], tokens: int, dtype: str = "bfloat16",
          calibration: perfmodel.Calibration | None = None, doc_length: int = 512) -> dict:
    calibration = calibration or perfmodel.calibrate()
    shape = candidate.shape
    lengths = [doc_length] * max(tokens // doc_length, 1)
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


def run_sweep(hidden: list[int], glu: list[int], layers: list[int], head_dim: int, gpus: dict[str, float],
              tokens: int, params: tuple[float, float] | None = None, dtype: str = "bfloat16") -> list[dict]:
    cands = candidates(hidden, glu, layers, head_dim, params)
    if not cands:
        raise UserError("no candidate shape satisfies the ranges and constraints")
    calibration = perfmodel.calibrate()
    rows = [score(c, gpus, tokens, dtype, calibration) for c in cands]
    # rank by basket efficiency; with a parameter target, shapes of one size also rank by speed
    key = (lambda r: (r["basket_score"], r["basket_tokens_per_second"])) if params else (lambda r: r["basket_score"])
    rows.sort(key=key, reverse=True)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows
