"""Published BERT measurements as typed rows, each with the use the project makes of it.

Three files under mbbench/data, every row with its source (repository, path and commit, or the results file):
- calibration.csv: NVIDIA's TensorRT demo/BERT tables (fixed sequence length, inputs on the GPU). Their fp16 rows
  at batch >= 32 fit η_hw per GPU (`calibration.fit_efficiencies`).
- mlperf_bert.csv: MLPerf Inference BERT-99/99.9 offline samples/s of NVIDIA's closed submissions (TensorRT
  harness, SQuAD v1.1, sequences up to 384 tokens, variable-length kernels), compared as ratios to the A100 of a
  reference round. `use`: `fit` (the Hopper and Turing architecture intercepts), `holdout` (read by no fit),
  `reference` (the A100 denominators), `excluded` (kept as data, not compared; the note says why).
- published_bert.csv: PyTorch BERT-large tables from NVIDIA's DeepLearningExamples (padded 384-token rows):
  `fit` (η_sw of PyTorch's tensor-core path) or `holdout`.

`fit` and `holdout` split by source: no fitted constant reads a `holdout` row (tests/test_validation.py perturbs them
and checks every constant). Numbers are transcribed from the sources named in each row, never computed here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mbbench.dtypes import canonical_dtype
from mbbench.errors import UserError
from mbbench.hardware.gpus import basket
from mbbench.hardware.shape import Shape
from mbbench.hardware.software import PYTORCH, PYTORCH_TF32, TENSORRT, AttentionImpl, Stack, stack_of_framework

USES = ("fit", "holdout", "reference", "excluded")
CALIBRATION_SHAPES = {
    "bert-base": Shape(768, 3072, False, 12, 12, 30522, unpadded=False),
    "bert-large": Shape(1024, 4096, False, 16, 24, 30522, unpadded=False),
}
CALIBRATION_GPU = {"A100-40GB": "A100-SXM4-40GB"}
# TensorRT's BERT plugins: fused fp16 attention over unpadded rows, costed as the memory-efficient class of kernel;
# TensorRT ships sm90 fMHA kernels for Hopper (MLPerf's FP8 fMHA), so it is Hopper-native there.
TENSORRT_ATTENTION = AttentionImpl("tensorrt", "mem_efficient", True, "float16", reason="TensorRT fused MHA plugin",
                                   sm90_native=True)
# An MLPerf offline sample is a SQuAD v1.1 feature of at most 384 tokens; ratios are predicted on 128 full rows
MLPERF_LENGTHS = (384,) * 128


def _text(name: str) -> list[dict]:
    return list(csv.DictReader(resources.files("mbbench").joinpath(f"data/{name}").read_text(encoding="utf-8")
                               .splitlines()))


def _gpu(gpu_id: str) -> str:
    gpu = CALIBRATION_GPU.get(gpu_id, gpu_id)
    if gpu not in basket():
        raise UserError(f"published row names GPU {gpu_id!r}, which is not in the basket")
    return gpu


# ------------------------------------------------------------------------------------ TensorRT demo tables

@dataclass(frozen=True)
class Observation:
    gpu: str
    shape: Shape
    lengths: tuple[int, ...]
    padded_to: int | None
    dtype: str
    tokens_per_second: float
    source: str
    stack: Stack = TENSORRT
    attention: AttentionImpl | None = None
    model: str = ""


@lru_cache(maxsize=1)
def calibration_rows() -> tuple[Observation, ...]:
    """fp16 rows of the TensorRT demo tables (calibration.csv), batch >= 32 (smaller batches are launch-bound)."""
    rows = []
    for row in _text("calibration.csv"):
        if row["precision"] not in ("fp16", "bf16") or row["model"] not in CALIBRATION_SHAPES:
            continue
        if not row["batch"].isdigit() or int(row["batch"]) < 32 or not row["tokens_per_s"]:
            continue
        seq, batch = int(row["seq_len"]), int(row["batch"])
        dtype = "float16" if row["precision"] == "fp16" else "bfloat16"
        impl = AttentionImpl("tensorrt", "mem_efficient", True, dtype, reason="TensorRT fused MHA plugin",
                             sm90_native=True)
        rows.append(Observation(_gpu(row["gpu_id"]), CALIBRATION_SHAPES[row["model"]], (seq,) * batch, None, dtype,
                                float(row["tokens_per_s"]), row["source"], stack_of_framework(row["stack"]), impl,
                                row["model"]))
    return tuple(rows)


# ------------------------------------------------------------------------------------------------- MLPerf

@dataclass(frozen=True)
class MlperfRow:
    """One MLPerf system's BERT offline result; `samples_per_s` is the system's, `per_gpu` one GPU's share."""

    round: str  # "v3.0"
    system: str
    stack: Stack  # TensorRT: NVIDIA's MLPerf harness
    gpu: str  # basket id
    gpus: int
    benchmark: str  # "bert-99" or "bert-99.9"
    precision: str  # "int8", "fp8", "fp16"
    samples_per_s: float
    use: str  # one of USES
    reference_round: str  # the round of the A100 row this row's ratio divides by ("" for references)
    source: str
    note: str = ""

    @property
    def per_gpu(self) -> float:
        return self.samples_per_s / self.gpus

    @property
    def label(self) -> str:
        return f"MLPerf {self.round} {self.benchmark} ({self.precision})"


@lru_cache(maxsize=1)
def mlperf_rows() -> tuple[MlperfRow, ...]:
    """Every row of mlperf_bert.csv; UserError for a use outside USES, or a model or length other than the one
    ratios are predicted on (BERT-large, sequences up to MLPERF_LENGTHS' 384 tokens)."""
    rows = []
    for r in _text("mlperf_bert.csv"):
        if r["use"] not in USES:
            raise UserError(f"mlperf_bert.csv: unknown use {r['use']!r}")
        if (r["model"], int(r["max_seq_len"])) != ("bert-large", MLPERF_LENGTHS[0]):
            raise UserError(f"mlperf_bert.csv: {r['model']} at {r['max_seq_len']} tokens is not costed")
        rows.append(MlperfRow(r["round"], r["system"], stack_of_framework(r["framework"]), _gpu(r["gpu_id"]),
                              int(r["gpus"]), r["benchmark"],
                              r["precision"], float(r["samples_per_s"]), r["use"], r["reference_round"], r["source"],
                              r["note"]))
    return tuple(rows)


def mlperf_reference(row: MlperfRow, rows: tuple[MlperfRow, ...] | None = None) -> MlperfRow:
    """The A100 row `row`'s ratio divides by: same benchmark, its reference round."""
    rows = mlperf_rows() if rows is None else rows
    found = [r for r in rows if r.use == "reference" and r.round == row.reference_round
             and r.benchmark == row.benchmark]
    if len(found) != 1:
        raise UserError(f"{row.label} on {row.gpu}: {len(found)} reference rows for round {row.reference_round}")
    return found[0]


# ------------------------------------------------------------------------------------------ PyTorch tables

@dataclass(frozen=True)
class PublishedRow:
    """A published throughput with its exact settings: BERT rows of `batch` sequences padded to `seq_len`."""

    source: str
    gpu: str
    stack: Stack
    framework: str
    model: str
    dtype: str  # the weights' dtype; a "tf32" row is float32 weights with TF32 matmuls (PYTORCH_TF32)
    seq_len: int
    batch: int
    sequences_per_s: float
    use: str
    note: str = ""

    @property
    def tokens_per_second(self) -> float:
        """Executed tokens per second (every row is padded to seq_len)."""
        return self.sequences_per_s * self.seq_len

    @property
    def lengths(self) -> list[int]:
        return [self.seq_len] * self.batch

    @property
    def shape(self) -> Shape:
        return CALIBRATION_SHAPES[self.model]

    @property
    def attention(self) -> AttentionImpl:
        """NVIDIA's PyTorch BERT (DeepLearningExamples modeling.py): matmul, scale, mask add and softmax on
        materialised scores, over rows padded to seq_len."""
        return AttentionImpl("eager", "eager", False, self.dtype, mask=True, reason="eager attention, padded rows")


@lru_cache(maxsize=1)
def published_rows() -> tuple[PublishedRow, ...]:
    """Every row of published_bert.csv (PyTorch stack); UserError for a use outside USES."""
    rows = []
    for r in _text("published_bert.csv"):
        if r["use"] not in USES:
            raise UserError(f"published_bert.csv: unknown use {r['use']!r}")
        tf32 = r["precision"] == "tf32"
        stack = PYTORCH_TF32 if tf32 else PYTORCH
        dtype = "float32" if tf32 else canonical_dtype(r["precision"])
        rows.append(PublishedRow(r["source"], _gpu(r["gpu_id"]), stack, r["framework"], r["model"], dtype,
                                 int(r["seq_len"]), int(r["batch"]), float(r["sequences_per_s"]), r["use"],
                                 r["note"]))
    return tuple(rows)
