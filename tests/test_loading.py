"""One seam for a plan's model (issue 33): `loading` builds it, applies its threads once, prepares its engine with the
cold start apart and runs the accuracy gate, for every producer. `latency` and `serve` run through the engine they
name (`--engine`, `--threads`), and their record says which engine ran, its gate and its cold start. Tiny models
on the CPU; nothing here judges a time."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mbbench import engines, loading, results
from mbbench import matrix as mx
from mbbench import measured_sweep as ms
from mbbench.cli import cli
from mbbench.commands.common import engine_named
from mbbench.engines import ParityFailure, PreparedEngine
from mbbench.errors import UserError
from mbbench.plan import RunConfig, resolve
from mbbench.records import DeviceInfo, Latency, Serving
from mbbench.runner import plan_batches

TINY = ["--tiny", "--device", "cpu", "--suite", "short-fixed"]
LATENCY = ["latency", *TINY, "--batch-size", "2", "--requests", "3", "--min-seconds", "0", "--warmup", "1"]
SERVE = ["serve", *TINY, "--rate", "5", "--duration", "0.2", "--requests", "3", "--warmup", "0", "--clock", "virtual",
         "--drain-limit", "1000"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def only_record(out: Path):
    [record] = results.read_records([str(out)])
    return record


@pytest.fixture
def engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MBBENCH_ENGINE_CACHE", str(tmp_path / "engine-cache"))
    return tmp_path / "engine-cache"


# ------------------------------------------------------------------------------- latency and serve on engines

def test_latency_on_openvino_runs_the_engine_with_its_gate_and_cold_start_in_the_record(tmp_path, engine_cache):
    pytest.importorskip("openvino")
    done = invoke(*LATENCY, "--engine", "openvino", "--model", "hf-modernbert-base", "--threads", "1",
                  "--out", tmp_path / "runs")
    assert done.exit_code == 0, done.output
    record = only_record(tmp_path / "runs")
    payload, setup = record.payload, record.payload.setup
    info = setup.engine
    assert isinstance(payload, Latency) and record.identity.engine == "openvino"
    assert info.name == "openvino" and info.provider == "OpenVINO CPU" and info.cache_hit is False
    assert Path(info.cache_path).parent == engine_cache  # the export went to the engine cache, not --out
    assert setup.parity.engine == "openvino" and setup.parity.passed
    assert setup.first_call_seconds == info.first_call_seconds > 0 and info.export_seconds > 0
    assert setup.cold_start_seconds == pytest.approx(
        info.export_seconds + info.compile_seconds + info.first_call_seconds)
    assert setup.layout == "padded" and [p.batch_size for p in payload.points] == [2]
    assert "cold start: load" in done.output and "export" in done.output


def test_serve_on_torch_compile_runs_inductor_with_its_gate_and_cold_start_in_the_record(tmp_path):
    done = invoke(*SERVE, "--engine", "torch-compile", "--model", "bert-base", "--threads", "1",
                  "--out", tmp_path)
    assert done.exit_code == 0, done.output
    record = only_record(tmp_path)
    payload, setup = record.payload, record.payload.setup
    info = setup.engine
    assert isinstance(payload, Serving) and record.identity.engine == "torch-compile" and record.identity.compile
    assert info.name == "torch-compile" and info.provider.startswith("inductor")
    assert setup.parity.engine == "torch-compile" and setup.parity.passed
    # inductor compiles inside the first call: the cold start is that call, recorded apart from every run
    assert info.export_seconds is None and info.compile_seconds is None
    assert setup.cold_start_seconds == setup.first_call_seconds == info.first_call_seconds > 0
    assert payload.runs and all(run.served == run.requests for run in payload.runs)


def test_latency_threads_one_records_one_thread(tmp_path):
    before = torch.get_num_threads()
    try:
        done = invoke(*LATENCY, "--model", "modernbert-base", "--threads", "1", "--gemm", "torch", "--elementwise",
                      "eager", "--out", tmp_path)
    finally:
        torch.set_num_threads(before)
    assert done.exit_code == 0, done.output
    record = only_record(tmp_path)
    assert record.identity.threads == 1 and record.identity.interop_threads == 1
    assert record.payload.setup.engine.threads_intra == 1 and record.identity.engine == "torch"
    assert record.payload.setup.parity is None  # the torch engine in fp32 on torch's kernels is the function itself


def test_compile_is_translated_at_the_command_line_only():
    assert engine_named("torch", False) == "torch" and engine_named("openvino", False) == "openvino"
    assert engine_named("torch", True) == "torch-compile" == engine_named("torch-compile", True)
    with pytest.raises(UserError, match="cannot be combined with --engine onnxruntime"):
        engine_named("onnxruntime", True)
    assert "compile" not in {f.name for f in fields(RunConfig)}


# -------------------------------------------------------------------------------------------------- the seam

def plan_of(model: str = "modernbert-base", **options):
    return resolve(RunConfig(model=model, suite="short-fixed", device="cpu", tiny=True, docs=2, **options))


def loading_batch(plan, encoder):
    return plan_batches(plan, encoder)[0]


def test_load_applies_the_plans_threads_once_and_reads_them_back():
    plan = plan_of(threads=1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        loaded = loading.load(plan.model_plan, lambda encoder: [loading_batch(plan, encoder)])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert loaded.built.threads.intra == 1 and loaded.engine.info.threads_intra == 1 and loaded.busy_threads == 1
    assert loaded.encoder.backend == plan.backend and loaded.built.load_seconds > 0
    assert loaded.built.gemm.kernel == loaded.encoder.gemm and loaded.built.gemm.source in ("measured now", "cache")
    # gated unless it is the fp32 function itself: the torch engine on torch's GEMM and eager element-wise kernels
    plain = (loaded.encoder.gemm, loaded.encoder.elementwise) == ("torch", "eager")
    assert (loaded.parity is None) == plain and loaded.cold_start_seconds == loaded.engine.info.first_call_seconds


def test_ready_gates_every_engine_before_anything_is_timed_and_a_trial_may_go_ungated(monkeypatch):
    plan = plan_of(gemm="torch", elementwise="eager", dtype="bfloat16")  # bf16: judged against the fp32 twin
    built = loading.build(plan.model_plan)
    batch = loading_batch(plan, built.encoder)
    gated = loading.ready(built, [batch])
    assert gated.parity is not None and gated.parity.passed and gated.parity.dtype == "bfloat16"
    assert loading.ready(built, [batch], gate=False).parity is None
    real = engines.prepare_engine
    monkeypatch.setattr(engines, "prepare_engine", lambda *args, **kwargs: (lambda prepared: PreparedEngine(
        lambda b: prepared(b) * float("nan"), prepared.info))(real(*args, **kwargs)))
    with pytest.raises(ParityFailure, match="NaN"):
        loading.ready(built, [batch])


def test_sides_of_one_model_share_one_build_and_are_readied_on_their_own_engines():
    from mbbench.compare import plan_comparison, shared_builds

    configs = [RunConfig(model="hf-modernbert-base", suite="short-fixed", device="cpu", tiny=True, docs=2, threads=1,
                         engine=engine) for engine in ("torch", "torch-compile")]
    comparison = plan_comparison(configs, "hf-modernbert-base")
    builds = shared_builds(comparison.plans)
    eager, compiled = builds["hf-modernbert-base"], builds["hf-modernbert-base@torch-compile"]
    assert eager.encoder is compiled.encoder  # one module and weights
    assert (eager.model.engine.name, compiled.model.engine.name) == ("torch", "torch-compile")


def test_a_measured_sweep_shape_loads_through_loading():
    plan = ms.resolve(ms.SweepSettings(hidden=(64,), glu=(128,), layers=(1,), head_dim=32, tokens=96, rounds=1,
                                       device="cpu", threads=1, gemm="torch", elementwise="eager"))
    built = ms.build_shape(plan, plan.anchor)
    assert isinstance(built.forward, PreparedEngine) and built.forward.info.name == "torch"
    assert (built.gemm.kernel, built.gemm.source) == ("torch", "pinned")
    assert built.forward(plan.workload.batches[0]).shape[-1] == 64


# ------------------------------------------------------------------------------------------ names resolved once

def test_a_plan_resolves_its_names_once():
    plan = plan_of("hf-modernbert-base", engine="onnxruntime")
    assert plan.engine is engines.get_engine("onnxruntime") and plan.model_plan.engine is plan.engine
    assert plan.spec.tiny and plan.model_plan.spec.tiny and plan.placed
    assert plan.parameters < 10**7  # the tiny variant's, counted from the spec alone


def test_an_unplaced_task_leaves_the_device_checks_to_its_node():
    """A matrix's driver plans a task on a placeholder device (`placed=False`), not on a name it must not read."""
    config = RunConfig(model="modernbert-base", suite="short-fixed", tiny=True, device="cuda", backend="varlen")
    unplaced = DeviceInfo("cuda", "any name at all", "A100-80GB")
    planned = resolve(config, device=unplaced, placed=False)
    assert not planned.placed and not planned.runs_here and planned.backend == "varlen"  # not checked here
    with pytest.raises(UserError):  # placed on this machine's CPU-only torch, the backend is checked and refused
        resolve(config, device=replace(unplaced, name="NVIDIA A100"))


def test_matrix_options_are_runconfigs_fields_and_compile_means_the_torch_compile_engine():
    axes_and_internal = set(mx.AXIS_FIELDS) | set(mx.SET_BY_MBBENCH)
    expected = {"runs" if f.name == "passes" else f.name for f in fields(RunConfig) if f.name not in axes_and_internal}
    assert set(mx.OPTIONS) == expected | {"compile"} and "gemm" in expected and "runs" in expected
    assert mx.OPTIONS["gemm"] is str and mx.OPTIONS["threads"] is int and mx.OPTIONS["tiny"] is bool
    spec = mx.build_spec({}, {"models": ("bert-base",), "suites": ("short-fixed",)}, {"compile": True})
    assert spec.engines == ("torch-compile",) and "compile" not in spec.options
    with pytest.raises(UserError, match="cannot be combined"):
        mx.build_spec({}, {"models": ("bert-base",), "suites": ("short-fixed",), "engines": ("onnxruntime",)},
                      {"compile": True})
