"""The GPU basket: a data file shipped with the package, looked up by id, alias, NVML name or Ray label.

Detecting the local device is `mbbench.device`'s job; this module knows only the datasheets."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mbbench.errors import UserError


@dataclass(frozen=True)
class GPU:
    id: str
    name: str
    aliases: tuple[str, ...]
    nvml_pattern: str
    architecture: str
    compute_capability: tuple[int, int]
    sm_count: int
    fp16_fp16acc_tflops: float
    fp16_tflops: float  # fp16 with fp32 accumulate: what PyTorch GEMMs use
    bf16_tflops: float | None  # None: no bf16 tensor cores (T4)
    tf32_tflops: float | None
    fp32_tflops: float
    memory_gb: float
    bandwidth_gbs: float
    l2_mb: float
    smem_per_sm_kb: float
    max_ctas_per_sm: int
    tdp_w: float
    in_modernbert_basket: bool
    basket_weight: float
    ray_accelerator_type: str  # the label Ray gives nodes with this GPU (`accelerator_type:<label>`)

    def peak_tflops(self, dtype: str) -> float:
        """Dense tensor peak for a torch dtype name, with fp32 accumulation (cuBLAS's mode).

        GeForce cards run fp16/bf16 with fp32 accumulate at half rate (already in these columns);
        the T4 has no bf16, so a bf16 request is answered with its fp16 rate (the model runs fp16 there).
        """
        if dtype in ("bfloat16", "bf16"):
            return self.bf16_tflops if self.bf16_tflops is not None else self.fp16_tflops
        if dtype in ("float16", "fp16"):
            return self.fp16_tflops
        if dtype in ("float32", "fp32"):
            return self.fp32_tflops
        raise UserError(f"no peak for dtype {dtype!r}")

    def effective_dtype(self, dtype: str) -> str:
        return "float16" if dtype in ("bfloat16", "bf16") and self.bf16_tflops is None else dtype


def _num(value: str) -> float | None:
    return None if value in ("", "NA") else float(value)


@lru_cache(maxsize=1)
def basket() -> dict[str, GPU]:
    text = resources.files("mbbench").joinpath("data/gpu_basket.csv").read_text(encoding="utf-8")
    gpus = {}
    for row in csv.DictReader(text.splitlines()):
        major, minor = row["compute_capability"].split(".")
        gpus[row["gpu_id"]] = GPU(
            id=row["gpu_id"], name=row["name"], aliases=tuple(a for a in row["aliases"].split(";") if a),
            nvml_pattern=row["nvml_pattern"], architecture=row["architecture"],
            compute_capability=(int(major), int(minor)), sm_count=int(row["sm_count"]),
            fp16_fp16acc_tflops=float(row["fp16_tc_fp16acc_dense_tflops"]),
            fp16_tflops=float(row["fp16_tc_fp32acc_dense_tflops"]), bf16_tflops=_num(row["bf16_tc_fp32acc_dense_tflops"]),
            tf32_tflops=_num(row["tf32_tc_dense_tflops"]), fp32_tflops=float(row["fp32_nontensor_tflops"]),
            memory_gb=float(row["mem_gb"]), bandwidth_gbs=float(row["mem_bw_gbs"]), l2_mb=float(row["l2_mb"]),
            smem_per_sm_kb=float(row["smem_per_sm_max_kb"]), max_ctas_per_sm=int(row["max_ctas_per_sm"]),
            tdp_w=_num(row["tdp_w"]) or 0.0, in_modernbert_basket=row["in_modernbert_basket"] == "yes",
            basket_weight=float(row["basket_weight"]), ray_accelerator_type=row["ray_accelerator_type"])
    return gpus


def _normalise(text: str) -> str:
    return re.sub(r"[\s_]+", " ", text.strip().lower())


def lookup(name: str) -> GPU:
    """A basket GPU by id or alias (`4090`, `rtx4090`, `RTX 4090`, `H100-SXM` ...)."""
    wanted = _normalise(name)
    for gpu in basket().values():
        if wanted in {_normalise(gpu.id), _normalise(gpu.name), *(_normalise(a) for a in gpu.aliases)}:
            return gpu
    raise UserError(f"unknown GPU {name!r}; `mbbench list gpus` shows the basket and its aliases")


def accelerator_type(name: str) -> str:
    """The Ray accelerator type a matrix entry asks for: a basket GPU's label, else the name as given.

    Ray labels nodes by GPU family (every A100 is `A100`, every H100 `H100`), so `a100-80gb` asks for an
    `A100` node; a name outside the basket (`A10G`, a custom label) is passed to Ray unchanged.
    """
    try:
        return lookup(name).ray_accelerator_type
    except UserError:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise UserError(f"GPU type {name!r} is neither a basket GPU nor a Ray accelerator label") from None
        return name


def basket_ids_for(label: str) -> list[str]:
    """Basket ids whose GPUs Ray labels `label` (where their records are filed)."""
    return [gpu.id for gpu in basket().values() if gpu.ray_accelerator_type == label]


def match_device_name(device_name: str) -> GPU | None:
    """The basket entry for a name as NVML/torch report it (e.g. 'NVIDIA H100 80GB HBM3'), if any."""
    for gpu in basket().values():
        if re.search(gpu.nvml_pattern, device_name, flags=re.IGNORECASE):
            return gpu
    return None
