"""One configuration, one kernel (issue 34, item 2): the GEMM and element-wise kernels are measured once per CPU,
kept on disk with their numbers, ties within the noise go to the default, every record says where its choice came
from, and a user can pin either. Measurements are injected: no test depends on which kernel this CPU prefers."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mbbench.bench import elementwise as bench_elementwise
from mbbench.bench import kernel_choice, kernel_store
from mbbench.bench import matmul
from mbbench.bench.kernel_choice import decide
from mbbench.cli import cli
from mbbench.errors import UserError
from mbbench.models import elementwise as elementwise_kernels
from mbbench.models import gemm
from mbbench.plan import RunConfig, resolve
from mbbench.records import Identity

RUN = ["run", "--model", "modernbert-base", "--tiny", "--device", "cpu", "--docs", "2", "--runs", "1", "--quiet"]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty kernel cache, and no in-process memory of earlier measurements (a new process)."""
    monkeypatch.setenv(kernel_store.CACHE_ENV, str(tmp_path / "kernels"))
    monkeypatch.setattr(kernel_store, "_WRITTEN", set())
    matmul.cpu_gemm_rates.cache_clear()
    bench_elementwise.elementwise_times.cache_clear()
    yield tmp_path / "kernels"
    matmul.cpu_gemm_rates.cache_clear()
    bench_elementwise.elementwise_times.cache_clear()


def test_a_speedup_inside_the_noise_keeps_the_default_and_one_above_it_switches():
    # default 10 s per round; the rival's per-round speedups are 10/9.9 ... : the reported "139 vs 139" case
    tie = decide({"torch": [10.0] * 8, "onednn-packed": [9.9, 10.2, 9.8, 10.1, 10.0, 9.7, 10.3, 9.95]}, "torch")
    assert tie.kernel == "torch" and tie.tied and tie.rival == "onednn-packed"
    # interval of 8 rounds at 95%: [min, max] of the ratios (k = 1, coverage 1 - 2/256)
    assert (tie.interval.low, tie.interval.high) == (pytest.approx(10 / 10.3), pytest.approx(10 / 9.7))
    assert tie.interval.confidence == pytest.approx(1 - 2 / 2 ** 8)
    assert "within the noise: the default torch" in tie.describe()
    faster = decide({"torch": [10.0] * 8, "onednn-packed": [8.0, 8.2, 7.9, 8.1, 8.0, 8.3, 7.8, 8.05]}, "torch")
    assert faster.kernel == "onednn-packed" and not faster.tied
    assert faster.speedup == pytest.approx((10 / 8.0 + 10 / 8.05) / 2)  # the median of the eight ratios
    assert faster.describe().endswith(": onednn-packed")
    slower = decide({"eager": [1.0, 1.0], "inductor": [2.0, 2.0]}, "eager")
    assert slower.kernel == "eager" and slower.tied  # a slower rival never wins
    alone = decide({"torch": [1.0, 1.0]}, "torch")
    assert alone.kernel == "torch" and alone.rival is None and "only torch runs here" in alone.describe()
    one_round = decide({"torch": [2.0], "onednn-packed": [1.0]}, "torch")
    assert one_round.kernel == "torch" and one_round.interval is None  # no interval, no switch
    with pytest.raises(ValueError, match="default kernel"):
        decide({"onednn-packed": [1.0]}, "torch")


def test_gemm_timings_are_measured_once_per_cpu_and_kept_with_their_numbers(fresh_cache, monkeypatch):
    calls = []

    def fake_time_gemm(rows, k, n, dtype, kernels, rounds, warmup=matmul.WARMUP):
        calls.append((rows, k, n))
        return {kernel: [0.001 * (i + 1) * (1 + j) for j in range(rounds)] for i, kernel in enumerate(kernels)}

    monkeypatch.setattr(matmul, "time_gemm", fake_time_gemm)
    threads = torch.get_num_threads()
    first = matmul.gemm_timings(64, 192, torch.float32, threads, rows=32, rounds=3)
    assert first.source == kernel_store.MEASURED and calls == [(32, 64, 192)]
    stored = json.loads(Path(first.path).read_text())
    assert Path(first.path).parent.parent == fresh_cache
    assert stored["seconds"]["torch"] == [0.001, 0.002, 0.003] and stored["workload"]["threads"] == threads
    assert stored["cpu"]["isa"] == list(kernel_store.this_cpu().isa) and stored["cpu"]["torch"] == torch.__version__
    monkeypatch.setattr(kernel_store, "_WRITTEN", set())  # a later process
    again = matmul.gemm_timings(64, 192, torch.float32, threads, rows=32, rounds=3)
    assert again.source == kernel_store.CACHED and again.by_kernel() == first.by_kernel() and len(calls) == 1
    matmul.gemm_timings(64, 192, torch.bfloat16, threads, rows=32, rounds=3)  # another dtype: another entry
    matmul.gemm_timings(64, 192, torch.float32, threads + 1, rows=32, rounds=3)  # another thread count
    assert len(calls) == 3
    other_cpu = kernel_store.CpuIdentity("Another CPU", ("avx512f", "torch:AVX512"), torch.__version__)
    monkeypatch.setattr(kernel_store, "this_cpu", lambda: other_cpu)
    matmul.gemm_timings(64, 192, torch.float32, threads, rows=32, rounds=3)  # another CPU measures its own
    assert len(calls) == 4 and len(list(fresh_cache.iterdir())) == 2  # one folder per CPU


def noisy_gemm_measurement(monkeypatch) -> list[int]:
    """A live measurement that flips its winner from call to call, as a loaded machine did: a fresh measurement
    would pick torch in one run and oneDNN in the next (when oneDNN runs here)."""
    calls = []

    def fake_time_gemm(rows, k, n, dtype, kernels, rounds, warmup=matmul.WARMUP):
        calls.append(1)
        fast = kernels[len(calls) % len(kernels)]
        return {kernel: [0.5 if kernel == fast else 1.0] * rounds for kernel in kernels}

    monkeypatch.setattr(matmul, "time_gemm", fake_time_gemm)
    return calls


def test_two_runs_of_one_configuration_record_the_same_kernel_and_say_where_it_came_from(fresh_cache, monkeypatch,
                                                                                         tmp_path):
    calls = noisy_gemm_measurement(monkeypatch)
    first = CliRunner().invoke(cli, [*RUN, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    measured = len(calls)
    matmul.cpu_gemm_rates.cache_clear()  # a second process
    bench_elementwise.elementwise_times.cache_clear()
    monkeypatch.setattr(kernel_store, "_WRITTEN", set())
    second = CliRunner().invoke(cli, [*RUN, "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert len(calls) == measured  # nothing measured again
    [a], [b] = ([json.loads(p.read_text())["payload"]["build"] for p in (tmp_path / side).rglob("*.json")]
                for side in "ab")
    assert a["gemm"] == b["gemm"] and a["gemm_source"] == "measured now" and b["gemm_source"] == "cache"
    assert b["gemm_reason"].startswith("cache: ") and "GFLOP/s" in b["gemm_reason"]
    assert a["elementwise"] == b["elementwise"] and b["elementwise_source"] in ("cache", "measured now")


def test_a_pinned_kernel_is_what_runs_is_recorded_as_pinned_and_is_part_of_the_identity(fresh_cache, tmp_path):
    out = tmp_path / "out"
    pinned = CliRunner().invoke(cli, [*RUN, "--gemm", "torch", "--elementwise", "eager", "--out", str(out)])
    assert pinned.exit_code == 0, pinned.output
    [path] = out.rglob("*.json")
    record = json.loads(path.read_text())
    payload, identity = record["payload"]["build"], record["identity"]
    assert (payload["gemm"], payload["gemm_source"], payload["gemm_reason"]) == ("torch", "pinned", "pinned: --gemm torch")
    assert (payload["elementwise"], payload["elementwise_source"]) == ("eager", "pinned")
    assert (identity["gemm"], identity["elementwise"]) == ("torch", "eager")
    chosen = resolve(RunConfig(model="modernbert-base", suite="short-variable", device="cpu", tiny=True, docs=2,
                               passes=1))
    pinned_key = Identity.from_dict(identity).key()
    assert chosen.identity.gemm is None and pinned_key in path.name and chosen.identity.key() != pinned_key
    assert replace(chosen.identity, gemm="torch", elementwise="eager").key() == pinned_key  # the pins alone differ


def test_a_pin_that_cannot_run_here_is_refused_in_one_line(monkeypatch):
    config = RunConfig(model="modernbert-base", suite="short-variable", device="cpu", tiny=True, gemm="blas")
    with pytest.raises(UserError, match="--gemm 'blas': choose from torch, onednn-packed"):
        resolve(config)
    monkeypatch.setattr("mbbench.plan.inductor_refusal", lambda: "no C++ compiler (g++/c++) is on PATH")
    with pytest.raises(UserError, match="--elementwise inductor cannot run here: no C\\+\\+ compiler"):
        resolve(RunConfig(model="modernbert-base", suite="short-variable", device="cpu", tiny=True,
                          elementwise=elementwise_kernels.INDUCTOR))
    monkeypatch.setattr("mbbench.plan.onednn_available", lambda dtype: False)
    with pytest.raises(UserError, match="--gemm onednn-packed runs on CPUs with oneDNN"):
        resolve(RunConfig(model="modernbert-base", suite="short-variable", device="cpu", tiny=True,
                          gemm=gemm.ONEDNN_PACKED))
    result = CliRunner().invoke(cli, [*RUN, "--gemm", "blas"])
    assert result.exit_code == 2 and "'blas' is not one of 'torch', 'onednn-packed'" in result.output


def test_a_transformers_model_keeps_its_own_linears_under_a_pin():
    from mbbench import loading

    model = resolve(RunConfig(model="hf-modernbert-base", suite="short-variable", device="cpu", tiny=True,
                              gemm=gemm.TORCH)).model_plan
    choice = loading.gemm_choice(model, loading.gemm_rates(model))
    assert choice.kernel == gemm.TORCH and choice.source == kernel_choice.FIXED
    assert "--gemm applies to our own models" in choice.reason


def test_a_grid_of_gemm_shapes_is_timed_interleaved_and_kept_per_shape(fresh_cache, monkeypatch):
    order = []

    def call(name):
        return lambda: order.append(name) or 0.001

    seconds = matmul.time_interleaved({"a": {"torch": call("a/torch"), "onednn": call("a/onednn")},
                                       "b": {"torch": call("b/torch"), "onednn": call("b/onednn")}}, rounds=2,
                                      warmup=0)
    # round 0: a then b, kernels in order; round 1: b then a (rotated), kernels reversed
    assert order == ["a/torch", "a/onednn", "b/torch", "b/onednn", "b/onednn", "b/torch", "a/onednn", "a/torch"]
    assert seconds == {"a": {"torch": [0.001] * 2, "onednn": [0.001] * 2}, "b": {"torch": [0.001] * 2,
                                                                               "onednn": [0.001] * 2}}
    threads = torch.get_num_threads()
    shapes = [(16, 32), (32, 16), (16, 32)]
    assert matmul.prefetch_gemm_timings(shapes, torch.float32, threads, rows=8, rounds=2) == 2
    kept = [matmul.gemm_timings(k, n, torch.float32, threads, rows=8, rounds=2) for k, n in shapes]
    assert all(len(s) == 2 for t in kept for _, s in t.seconds)
    assert {t.source for t in kept} == {kernel_store.MEASURED}  # this process measured them: "measured now"
    monkeypatch.setattr(kernel_store, "_WRITTEN", set())  # another process reads them from the cache
    assert matmul.gemm_timings(16, 32, torch.float32, threads, rows=8, rounds=2).source == kernel_store.CACHED
    assert matmul.prefetch_gemm_timings(shapes, torch.float32, threads, rows=8, rounds=2) == 0


def test_a_comparison_records_each_sides_kernels_and_where_they_came_from(fresh_cache, tmp_path):
    result = CliRunner().invoke(cli, ["compare", "--model", "modernbert-base", "--model", "hf-modernbert-base",
                                      "--tiny", "--device", "cpu", "--docs", "2", "--runs", "2", "--gemm", "torch",
                                      "--elementwise", "eager", "--quiet", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    [path] = (tmp_path / "out").rglob("*.json")
    builds = json.loads(path.read_text())["payload"]["builds"]
    ours = builds["modernbert-base"]
    assert (ours["gemm"], ours["gemm_reason"], ours["gemm_source"]) == ("torch", "pinned: --gemm torch", "pinned")
    hf = builds["hf-modernbert-base"]
    assert hf["gemm_source"] == "fixed" and "--gemm applies to our own models" in hf["gemm_reason"]
    assert ours["elementwise_source"] == "pinned" and hf["elementwise_source"] == "fixed"
