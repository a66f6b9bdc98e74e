"""The host allocator setting every measuring process runs with, applied once at start and recorded.

torch allocates CPU tensors with the C library's malloc. glibc serves a block above M_MMAP_THRESHOLD with its own
mmap and returns it with munmap on free; the threshold adapts but never beyond 32 MiB on 64-bit machines
(DEFAULT_MMAP_THRESHOLD_MAX). So every activation over 32 MiB (a 16 x 512 batch's GeGLU input in fp32 is 72 MiB)
is page-faulted in again on every forward: 18,432 minor faults per call for one 8192 x 2304 fp32 GEMM output,
measured (scripts/compare_allocator.py). PyTorch's and Intel's CPU tuning guides recommend a caching allocator
(jemalloc, tcmalloc) for this reason. mbbench's default, `large-heap`, keeps glibc and raises both of its
thresholds with mallopt (M_MMAP_THRESHOLD 1 GiB, M_TRIM_THRESHOLD 2 GiB - 1), so freed blocks stay in the heap
and are reused, and keeps one arena (M_ARENA_MAX 1: a thread's own arena is a heap of at most 64 MiB that maps
larger blocks all the same). The heap grows for the first few calls (about ten for one GEMM; a warmup pass covers
it), then every call reuses a freed block: 0 faults per call. `system` leaves malloc as the process found it (choose it with
MBBENCH_ALLOCATOR=system). A preloaded jemalloc or tcmalloc (LD_PRELOAD) is left alone and recorded.

Sources: glibc malloc/malloc.c (DEFAULT_MMAP_THRESHOLD_MAX, do_set_mmap_threshold; mallopt takes an int, hence
2 GiB - 1), mallopt(3); PyTorch "CPU specific optimizations" tuning guide (jemalloc / tcmalloc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

LARGE_HEAP = "large-heap"
SYSTEM = "system"
SETTINGS = (LARGE_HEAP, SYSTEM)
ENVIRONMENT_VARIABLE = "MBBENCH_ALLOCATOR"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 1 << 30  # bytes: blocks below this come from the heap, so activations are reused
TRIM_THRESHOLD = (1 << 31) - 1  # bytes: the largest int mallopt takes; the heap's top is never given back
PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")


@dataclass(frozen=True)
class AllocatorSetting:
    """What malloc the process runs with, as a record's environment states it."""

    name: str  # LARGE_HEAP, SYSTEM, or the preloaded library ("jemalloc")
    detail: str  # what was set, or why nothing was

    def describe(self) -> str:
        return f"{self.name}: {self.detail}"


_applied: AllocatorSetting | None = None


def requested() -> str:
    """The setting asked for: MBBENCH_ALLOCATOR, else LARGE_HEAP. Raises ValueError for an unknown name."""
    name = os.environ.get(ENVIRONMENT_VARIABLE, LARGE_HEAP).strip().lower() or LARGE_HEAP
    if name not in SETTINGS:
        raise ValueError(f"{ENVIRONMENT_VARIABLE}={name!r}: choose from {', '.join(SETTINGS)}")
    return name


def preloaded() -> str | None:
    """The caching allocator preloaded into this process (LD_PRELOAD), if any."""
    preload = os.environ.get("LD_PRELOAD", "")
    return next((name for name in PRELOADED if name in preload), None)


def configure(name: str | None = None) -> AllocatorSetting:
    """Apply the allocator setting `name` (default: `requested()`) once per process; later calls return what was
    applied first (malloc's thresholds are process-wide). Returns the setting in force."""
    global _applied
    if _applied is not None:
        return _applied
    name = name or requested()
    library = preloaded()
    if library:
        _applied = AllocatorSetting(library, "preloaded with LD_PRELOAD; glibc's thresholds not touched")
    elif name == SYSTEM:
        _applied = AllocatorSetting(SYSTEM, "the C library's malloc as the process found it "
                                            f"({_glibc_environment() or 'no MALLOC_* variables'})")
    else:
        _applied = _large_heap()
    return _applied


def _large_heap() -> AllocatorSetting:
    libc_path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_path)
        accepted = all(libc.mallopt(parameter, value) == 1 for parameter, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1)))
    except (OSError, AttributeError):  # not glibc (musl, macOS): no mallopt
        accepted = False
    if not accepted:
        return AllocatorSetting(SYSTEM, f"mallopt unavailable or refused ({libc_path}): the C library's malloc")
    return AllocatorSetting(LARGE_HEAP, f"glibc mallopt M_MMAP_THRESHOLD={MMAP_THRESHOLD}, "
                                        f"M_TRIM_THRESHOLD={TRIM_THRESHOLD}, M_ARENA_MAX=1")


def _glibc_environment() -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(("MALLOC_", "GLIBC_TUNABLES")))


def current() -> AllocatorSetting | None:
    """The setting applied in this process (None before `configure`)."""
    return _applied
