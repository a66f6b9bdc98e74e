import os
from dataclasses import asdict, replace

import pytest

from mbbench.environment import (GpuLoad, LoadSnapshot, busy_warning, count_other_processes, load_snapshot,
                                 machine_busy_cpu_seconds, others_cpu_cores)

TICK = os.sysconf("SC_CLK_TCK")


def _stat(tmp_path, busy_ticks, idle_ticks=1000, name="stat"):
    path = tmp_path / name
    # user nice system idle iowait irq softirq steal guest guest_nice
    user, system, steal = busy_ticks - 20, 10, 10
    path.write_text(f"cpu  {user} 0 {system} {idle_ticks} 5 0 0 {steal} 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n")
    return path


def test_snapshot_with_faked_sources(tmp_path):
    def gpu():
        return GpuLoad(37.0, (111, 222, 333), own_context=False)

    snap = load_snapshot(gpu, own_pid=222, getloadavg=lambda: (1.25, 0.5, 0.1), proc_stat=_stat(tmp_path, 5 * TICK))
    assert (snap.load_average_1m, snap.load_average_5m) == (1.25, 0.5)
    assert snap.gpu_utilization_percent == 37.0 and snap.other_gpu_processes == 2
    assert snap.machine_busy_cpu_seconds == pytest.approx(5.0)
    assert snap.cpu_count == os.cpu_count() and snap.process_cpu_seconds > 0
    assert set(asdict(snap)) >= {"load_average_1m", "load_average_5m", "cpu_count", "gpu_utilization_percent",
                                   "other_gpu_processes"}


def test_snapshot_survives_missing_sources(tmp_path):
    def broken_gpu():
        raise RuntimeError("NVML Shared Library Not Found")

    def no_loadavg():
        raise OSError

    snap = load_snapshot(broken_gpu, getloadavg=no_loadavg, proc_stat=tmp_path / "absent")
    assert snap.load_average_1m is None and snap.gpu_utilization_percent is None
    assert snap.other_gpu_processes is None and snap.machine_busy_cpu_seconds is None
    assert load_snapshot().other_gpu_processes is None  # no reader: no GPU fields
    assert machine_busy_cpu_seconds(tmp_path / "absent") is None


def test_count_other_processes_handles_pid_namespaces():
    assert count_other_processes((10, 20), own_pid=20, own_context=True) == 1
    assert count_other_processes((10, 20), own_pid=5, own_context=True) == 1  # container: our host PID differs
    assert count_other_processes((10, 20), own_pid=5, own_context=False) == 2
    assert count_other_processes((), own_pid=5, own_context=True) == 0


def _snap(time_s=0.0, load=0.0, cpus=8, util=None, others=None, busy=None, ours=0.0):
    return LoadSnapshot(time_s, load, load, cpus, util, others, busy, ours)


def test_interval_accounting_excludes_our_own_cpu_time():
    # 10 s: the machine was busy 70 CPU-seconds, 40 of them ours -> others used 3 cores
    start, end = _snap(0, busy=100.0, ours=1.0), _snap(10, busy=170.0, ours=41.0)
    assert others_cpu_cores(start, end) == pytest.approx(3.0)
    assert busy_warning(start, end, threads_used=4) is None  # 8 - 4 + 0.5 = 4.5 free
    warning = busy_warning(start, end, threads_used=6)  # only 2.5 free
    assert "3.0 CPU cores" in warning and warning.startswith("machine was busy")
    # the load average is ignored when the exact measure exists (our own threads raise it)
    assert busy_warning(replace(start, load_average_1m=9.0), replace(end, load_average_1m=9.0), 4) is None


def test_load_average_rule_without_proc_stat():
    quiet, busy = _snap(load=3.0), _snap(load=4.6)
    assert busy_warning(quiet, quiet, threads_used=4) is None
    assert "4.6 at start" in busy_warning(busy, quiet, threads_used=4)  # 4.6 > 8 - 4 + 0.5
    # at end our own 4 threads are in the load: 8.4 - 4 = 4.4 <= 4.5 is quiet, 8.6 is not
    assert busy_warning(quiet, _snap(load=8.4), threads_used=4) is None
    assert "8.6 at end" in busy_warning(quiet, _snap(load=8.6), threads_used=4)
    assert busy_warning(_snap(load=None), _snap(load=None), threads_used=4) is None


def test_gpu_rules():
    idle = _snap(util=0.0, others=0, busy=0.0)
    after = _snap(10, util=99.0, others=0, busy=10.0, ours=10.0)  # our own passes: 99% is us
    assert busy_warning(idle, after, threads_used=1) is None
    assert "1 other compute process on the GPU" in busy_warning(idle, replace(after, other_gpu_processes=1), 1)
    assert "2 other compute processes" in busy_warning(replace(idle, other_gpu_processes=2), after, 1)
    assert "GPU 45% busy before" in busy_warning(replace(idle, gpu_utilization_percent=45.0), after, 1)
