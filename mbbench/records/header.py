"""The parts of a record's header besides its identity: the device it is for, the model and the suite it ran."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mbbench.records.identity import MAX_STEM_CHARS


@dataclass(frozen=True)
class DeviceInfo:
    """The device a record is for: measured on, or predicted for (`kind` "predicted")."""

    kind: str  # "cuda", "cpu" or "predicted"
    name: str  # as NVML reports it ("NVIDIA H100 80GB HBM3"), or the CPU model
    basket_id: str | None = None  # gpu_basket.csv id when the name matches one
    index: int | None = None  # torch's CUDA index (cuda:N); None on CPU and for predictions
    sm_count: int | None = None
    compute_capability: str | None = None  # "9.0"
    memory_bytes: int | None = None  # total device memory in bytes, as the device reports it
    driver: str | None = None  # NVIDIA driver version
    cuda: str | None = None  # torch's CUDA version
    uuid: str | None = None  # NVML UUID: how telemetry finds this GPU under CUDA_VISIBLE_DEVICES
    # a CPU's matrix and vector units from its flags, widest first ("amx-bf16 avx512-bf16 avx512 avx2"): what
    # decides its speed, since one model name ("Intel(R) Xeon(R) Processor") covers CPUs with and without AMX
    isa: str | None = None
    cpu_capability: str | None = None  # torch.backends.cpu.get_cpu_capability(): the kernels ATen dispatches to

    @property
    def directory(self) -> str:
        """results/<directory>/: the basket id, "cpu", else a file-name-safe form of the GPU's name."""
        if self.kind == "cpu":
            return "cpu"
        return self.basket_id or re.sub(r"[^A-Za-z0-9.-]+", "-", self.name).strip("-")[:MAX_STEM_CHARS]

    @property
    def identity_name(self) -> str:
        return self.name if self.kind == "cpu" else (self.basket_id or self.name)

    @property
    def label(self) -> str:
        """The device for people: a CPU's name with its units ("AMD EPYC [avx2]"), a GPU's identity name."""
        if self.kind == "cpu" and self.isa:
            return f"{self.name} [{self.isa}]"
        return self.identity_name


@dataclass(frozen=True)
class ConfigChange:
    """One config field in which the checkpoint that ran (`--weights`) differs from its catalogue row, e.g.
    layer_norm_eps 1e-12 -> 0.001. Values are as the model's config holds them (JSON types)."""

    field: str
    row: Any  # the catalogue row's value
    ran: Any  # the checkpoint's value: what the model ran with


@dataclass(frozen=True)
class ModelInfo:
    """The model a record ran: its catalogue family and group, size, maximum length and layout, and where a
    `--weights` checkpoint's config differed from its row."""

    family: str
    group: str  # "base" or "large": the paper's table groups
    parameters: int
    max_length: int
    layout: str  # "packed" or "padded"
    # the checkpoint's config fields that differ from the catalogue row (empty: the row's own config ran)
    config_changes: tuple[ConfigChange, ...] = ()


def portable_suite_path(path: str | None) -> str | None:
    """A suite file's path as a record keeps it: never an absolute path of the writer's machine. A relative
    path stays; an absolute one becomes "suites/<file>" when it is in a `suites` folder (the paper's, or
    the package's data/suites of older versions), else the bare file name."""
    if not path or not (path.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path) or path.startswith("\\\\")):
        return path
    parts = re.split(r"[\\/]+", path)
    return f"suites/{parts[-1]}" if len(parts) > 1 and parts[-2] == "suites" else parts[-1]


@dataclass(frozen=True)
class SuiteInfo:
    """The suite a record ran. `path` is where its file is for people, never an absolute path of the writer's
    machine: the shipped suites as "suites/<name>.toml", a user's file relative to the directory mbbench ran
    in (or its bare name when outside it). The fingerprint in the identity is what identifies it."""

    path: str | None
    documents: int  # documents in the whole suite
    max_length: int

