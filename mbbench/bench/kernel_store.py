"""Kernel timings kept on disk, once per CPU, so that one configuration always runs on one kernel.

A kernel chosen by a live micro-benchmark in every run differs between runs of one configuration on a loaded
machine (two runs took `onednn-packed` and `torch` at "139 vs 139 GFLOP/s"). So each measurement of the GEMM and
element-wise kernels is kept, with its numbers, under a key of everything that changes the answer: the CPU
(model name, the ISA flags, torch's dispatch level: `CpuIdentity`), the torch version (its kernels), and the
workload (dtype, threads, rows, shapes, rounds). A later process with the same key reads the file instead of
measuring, and so makes the same choice (`bench.kernel_choice`); the sweep's CPU cost model reads the same
per-shape GEMM timings (`bench.cpu_cost`).

Where: $MBBENCH_KERNEL_CACHE, else $XDG_CACHE_HOME/mbbench/kernels, else ~/.cache/mbbench/kernels; one folder
per CPU (`CpuIdentity.folder`), one JSON file per measurement. Delete a file (or the folder) to measure again.
A cache that cannot be written (a read-only home) is not an error: the measurement is used, and not kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

from mbbench.device import cpu_name, isa_flags
from mbbench.files import bounded_name, read_text, safe_name, write_json
from mbbench.records import now

CACHE_ENV = "MBBENCH_KERNEL_CACHE"
MEASURED = "measured now"  # the timings were taken in this process
CACHED = "cache"  # read from a file an earlier process wrote on this CPU
_WRITTEN: set[str] = set()  # files this process wrote: read back, they are still "measured now"
FORMAT = 1  # the files' layout; a file of another version is measured again


@dataclass(frozen=True)
class CpuIdentity:
    """What makes two machines' kernel timings interchangeable: the CPU, its instruction sets, torch's kernels."""

    name: str  # /proc/cpuinfo "model name"
    isa: tuple[str, ...]  # `device.isa_flags()`: AVX2, AVX-512 subsets, AMX, ..., and torch's dispatch level
    torch: str  # torch's version (its MKL, oneDNN and Inductor)

    def to_json(self) -> dict:
        return {"name": self.name, "isa": list(self.isa), "torch": self.torch}

    def key(self) -> str:
        text = json.dumps([self.name, list(self.isa), self.torch])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def folder(self) -> str:
        """The cache folder of this CPU: a readable prefix and the key."""
        return bounded_name(self.name, self.key(), limit=80)


@lru_cache(maxsize=1)
def this_cpu() -> CpuIdentity:
    return CpuIdentity(cpu_name(), isa_flags(), torch.__version__)


Workload = tuple[tuple[str, Any], ...]  # sorted (name, value) pairs: dtype, threads, rows, shapes, rounds


@dataclass(frozen=True)
class KernelTimings:
    """Seconds of each kernel on one workload, per round; within a round the kernels ran back to back
    (interleaved), so round r of one kernel is paired with round r of every other."""

    what: str  # "gemm" or "elementwise"
    workload: Workload
    seconds: tuple[tuple[str, tuple[float, ...]], ...]  # (kernel, seconds per round), in the order measured
    measured_at: str  # UTC, ISO 8601
    extra: tuple[tuple[str, Any], ...] = ()  # what else the measurement says (Inductor's compile seconds)
    source: str = MEASURED  # MEASURED or CACHED: how this process got them (not stored)
    path: str | None = None  # the cache file (None: not kept)

    def by_kernel(self) -> dict[str, tuple[float, ...]]:
        return dict(self.seconds)

    def fastest(self, kernel: str) -> float:
        """The kernel's fastest round (s): other processes only ever add time."""
        return min(self.by_kernel()[kernel])

    def to_json(self, cpu: CpuIdentity) -> dict:
        return {"format": FORMAT, "what": self.what, "cpu": cpu.to_json(), "workload": dict(self.workload),
                "measured_at": self.measured_at, "seconds": {kernel: list(values) for kernel, values in self.seconds},
                "extra": dict(self.extra)}


def cache_root() -> Path:
    """$MBBENCH_KERNEL_CACHE, else $XDG_CACHE_HOME/mbbench/kernels, else ~/.cache/mbbench/kernels."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mbbench" / "kernels"


def path_for(what: str, workload: Workload, cpu: CpuIdentity | None = None) -> Path:
    """The file of one measurement: readable workload values, then a hash of the whole workload."""
    cpu = cpu or this_cpu()
    digest = hashlib.sha256(json.dumps([what, list(workload)], default=str).encode()).hexdigest()[:12]
    readable = "-".join([what, *(safe_name(str(value)) for _, value in workload)])
    return cache_root() / cpu.folder / bounded_name(readable, digest, ".json")


def load(what: str, workload: Workload) -> KernelTimings | None:
    """The stored timings of `workload` on this CPU, or None (no file, another format, or another CPU's); their
    source is CACHED, or MEASURED when this process wrote the file."""
    path = path_for(what, workload)
    try:
        data = json.loads(read_text(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    cpu = this_cpu()
    same_workload = data.get("workload") == json.loads(json.dumps(dict(workload)))  # as JSON keeps it
    if (data.get("format"), data.get("what"), data.get("cpu")) != (FORMAT, what, cpu.to_json()) or not same_workload:
        return None
    seconds = tuple((kernel, tuple(float(s) for s in values)) for kernel, values in data["seconds"].items())
    return KernelTimings(what, workload, seconds, data.get("measured_at", ""),
                         tuple(sorted((data.get("extra") or {}).items())),
                         MEASURED if str(path) in _WRITTEN else CACHED, str(path))


def save(timings: KernelTimings) -> KernelTimings:
    """Keep `timings` in the cache; returns them with their file (no file when the cache cannot be written)."""
    path = path_for(timings.what, timings.workload)
    try:
        write_json(path, timings.to_json(this_cpu()))
    except OSError as error:
        warnings.warn(f"kernel timings not cached ({path}: {error.strerror or error}); the next run measures again",
                      stacklevel=2)
        return timings
    _WRITTEN.add(str(path))
    return KernelTimings(timings.what, timings.workload, timings.seconds, timings.measured_at, timings.extra,
                         timings.source, str(path))


def cached(what: str, workload: Workload,
           measure: Callable[[], tuple[dict[str, list[float]], dict[str, Any]]]) -> KernelTimings:
    """The stored timings of `workload`, or `measure()` ((kernel -> seconds per round, extra)) kept and returned."""
    found = load(what, workload)
    if found is not None:
        return found
    seconds, extra = measure()
    timings = KernelTimings(what, workload, tuple((k, tuple(v)) for k, v in seconds.items()), now(),
                            tuple(sorted(extra.items())))
    return save(timings)
