"""What software and machine produced a result: captured once per run, stored in every record.

Also how busy the machine was around a measurement (`load_snapshot` before and after the timed
passes, `busy_warning` comparing the two), since a ratio measured on a shared machine can be off
by a third (1.18x sequential vs 1.50x interleaved in the paper reproduction).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mbbench
from mbbench import allocator
from mbbench.device import cpu_flags, cpu_isa, nvml_handle
from mbbench.records import LoadSnapshot, MachineLoad

# Bump when what is timed, or how, changes: records with different method versions do not compare.
METHOD_VERSION = 1
RELEVANT_ENV = ("CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF", "CUDA_DEVICE_ORDER", "OMP_NUM_THREADS",
                "PYTORCH_TUNABLEOP_ENABLED", "LD_PRELOAD", "MBBENCH_ALLOCATOR", "MALLOC_MMAP_THRESHOLD_",
                "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                "TORCHINDUCTOR_FREEZING")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(mbbench.__file__).parent, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=Path(mbbench.__file__).parent, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


HOST_COMPUTE_FIELDS = ("cpu_threads", "cpu_capability", "cpu_isa", "allocator")


def capture(program: str = "mbbench", host_compute: bool = True) -> dict:
    """This process's software and host. `host_compute` False leaves out what describes the host as a machine that
    computes (HOST_COMPUTE_FIELDS: threads, ATen's kernels, the CPU's units, malloc): a prediction for a GPU is made
    here, but none of its numbers depends on them."""
    import torch

    try:
        import transformers

        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = None
    captured = {
        "mbbench": mbbench.__version__,
        "method_version": METHOD_VERSION,
        "torch": torch.__version__,
        "transformers": transformers_version,
        "python": platform.python_version(),
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels ATen dispatches to
        "cpu_isa": cpu_isa(cpu_flags()),  # the CPU's matrix and vector units (device.MATRIX_UNITS)
        "allocator": allocator_setting(),  # the host malloc setting the process ran with
        "command_line": " ".join([program, *sys.argv[1:]]) if sys.argv else None,  # `program`: what ran
        "env": {k: os.environ[k] for k in RELEVANT_ENV if k in os.environ},
    }
    return captured if host_compute else {k: v for k, v in captured.items() if k not in HOST_COMPUTE_FIELDS}


def allocator_setting() -> str:
    """The host allocator setting of this process (`allocator.configure`, applied before any model is built)."""
    applied = allocator.current()
    return applied.describe() if applied else "not set by mbbench: the C library's malloc as the process found it"


# --- machine load ------------------------------------------------------------------------------

CPU_MARGIN = 0.5  # cores of other work tolerated beyond the cores we leave free
GPU_UTILIZATION_BUSY = 10.0  # percent, before our passes: someone else is using the GPU
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class GpuLoad:
    """What NVML reports for one device (`nvmlDeviceGetUtilizationRates`, `...GetComputeRunningProcesses`)."""

    utilization_percent: float | None  # percent of the last sample period (1/6 s to 1 s) a kernel ran
    pids: tuple[int, ...]  # compute processes on the device, as NVML numbers them (host PIDs)
    own_context: bool = False  # this process holds a CUDA context on the device


GpuReader = Callable[[], GpuLoad]


def count_other_processes(pids: tuple[int, ...], own_pid: int, own_context: bool) -> int:
    """Compute processes on the GPU that are not this one.

    NVML reports host PIDs; inside a container (a PID namespace) our own PID differs from the one
    NVML lists, so when our PID is absent but we hold a context, one listed process is taken as us.
    """
    if own_pid in pids or (own_context and pids):
        return len(pids) - 1
    return len(pids)


def nvml_gpu_reader(torch_index: int = 0) -> GpuReader:
    """A reader of torch's `cuda:<torch_index>` (matched by UUID). Raises if NVML is unavailable."""
    import pynvml
    import torch

    handle = nvml_handle(torch_index)

    def read() -> GpuLoad:
        utilization = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        return GpuLoad(utilization, tuple(int(p.pid) for p in processes), torch.cuda.is_initialized())
    return read


def machine_busy_cpu_seconds(path: Path = PROC_STAT) -> float | None:
    """Non-idle CPU seconds of all CPUs since boot from the `cpu` line of /proc/stat (None off Linux).

    Busy = user + nice + system + irq + softirq + steal (guest time is already inside user).
    """
    try:
        fields = path.read_text(encoding="utf-8").split("\n", 1)[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    except (OSError, ValueError, IndexError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def load_snapshot(gpu: GpuReader | None = None, own_pid: int | None = None,
                  getloadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
                  proc_stat: Path = PROC_STAT) -> LoadSnapshot:
    """The machine's load now; `gpu` (e.g. `nvml_gpu_reader(0)`) adds the device's. Never raises."""
    try:
        one, five, _ = getloadavg()
    except OSError:
        one = five = None
    utilization = others = None
    if gpu is not None:
        try:
            reading = gpu()
            utilization = reading.utilization_percent
            others = count_other_processes(reading.pids, os.getpid() if own_pid is None else own_pid,
                                           reading.own_context)
        except Exception:  # NVML errors must never break a measurement
            pass
    times = os.times()
    return LoadSnapshot(time.monotonic(), one, five, os.cpu_count() or 1, utilization, others,
                        machine_busy_cpu_seconds(proc_stat),
                        times.user + times.system + times.children_user + times.children_system)


def others_cpu_cores(start: LoadSnapshot, end: LoadSnapshot) -> float | None:
    """Average CPU cores used by other processes between two snapshots (None without /proc/stat)."""
    elapsed = end.time_seconds - start.time_seconds
    if start.machine_busy_cpu_seconds is None or end.machine_busy_cpu_seconds is None or elapsed <= 0:
        return None
    machine = end.machine_busy_cpu_seconds - start.machine_busy_cpu_seconds
    ours = end.process_cpu_seconds - start.process_cpu_seconds
    return max(machine - ours, 0.0) / elapsed


def machine_load(start: LoadSnapshot, end: LoadSnapshot, threads_used: int) -> MachineLoad:
    """The load at start and end of a measurement with `busy_warning`'s verdict on it, as a record keeps it."""
    return MachineLoad(start, end, busy_warning(start, end, threads_used))


def busy_warning(start: LoadSnapshot, end: LoadSnapshot, threads_used: int) -> str | None:
    """A one-line warning when other work competed with the measurement between `start` and `end`.

    `threads_used`: CPU threads the measurement keeps busy (torch's intra-op threads on CPU runs,
    1 on GPU runs, the thread that launches kernels). The rule, and why:

    - CPU: the measurement needs `threads_used` cores, so others may use the remaining
      `cpu_count - threads_used` (+0.5 for daemons and noise) before they take time from us.
      Measured exactly as the CPU time of all other processes over the interval (/proc/stat minus
      our own CPU time, steal included); where /proc/stat is missing, the 1-minute load average
      instead: at start it is compared with that bound, at end `threads_used` is first subtracted
      as our own share (the load average cannot tell whose tasks ran).
    - GPU: any other compute process on the device at start or end shares its SMs and memory
      bandwidth; and utilisation above 10% at start (before our passes, so not ours) means work
      from outside the process list (another container, or MIG peers) is running.
    """
    reasons = []
    free = start.cpu_count - threads_used + CPU_MARGIN
    others = others_cpu_cores(start, end)
    if others is not None:
        if others > free:
            reasons.append(f"other processes used {others:.1f} CPU cores on average during the run "
                           f"({start.cpu_count} cores, {threads_used} used by the benchmark)")
    else:
        if start.load_average_1m is not None and start.load_average_1m > free:
            reasons.append(f"1-minute load average {start.load_average_1m:.1f} at start "
                           f"({start.cpu_count} cores, {threads_used} needed by the benchmark)")
        if end.load_average_1m is not None and end.load_average_1m - threads_used > free:
            reasons.append(f"1-minute load average {end.load_average_1m:.1f} at end "
                           f"({start.cpu_count} cores, {threads_used} used by the benchmark)")
    gpu_others = max(start.other_gpu_processes or 0, end.other_gpu_processes or 0)
    if gpu_others:
        reasons.append(f"{gpu_others} other compute process{'es' if gpu_others > 1 else ''} on the GPU")
    if start.gpu_utilization_percent is not None and start.gpu_utilization_percent > GPU_UTILIZATION_BUSY:
        reasons.append(f"GPU {start.gpu_utilization_percent:.0f}% busy before the run started")
    if not reasons:
        return None
    return "machine was busy: " + "; ".join(reasons) + " - throughput may be low, ratios may be off"
