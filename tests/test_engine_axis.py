"""The engine axis on the measuring commands (issue 24) and threads in a CPU identity (issue 26 item 1).

Tiny models, real exports (ONNX Runtime, OpenVINO) into the test's own folders; no test asserts a timing.
"""

import builtins
import json
import os
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mbbench import engines, loading, records, runner
from mbbench import matrix as mx
from mbbench.cli import cli
from mbbench.engines import PreparedEngine
from mbbench.records.identity import _digest
from mbbench.plan import RunConfig, resolve
from mbbench.records import Identity, Record
from mbbench.report.render import build_report

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--tiny", "--device", "cpu"]
# the check: `mbbench run --engine X --model hf-modernbert-base --suite short-variable --device cpu --docs 8
# --runs 2` writes one record naming the engine, with version, threads, parity error, cold start and pass times
ENGINE_RUN = [*TINY, "--model", "hf-modernbert-base", "--suite", "short-variable", "--docs", "8", "--runs", "2",
              "--threads", "1"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def read_all(directory: Path) -> list[Record]:
    return [Record.from_json(json.loads(p.read_text()), str(p)) for p in sorted(directory.rglob("*.json"))]


@pytest.fixture(scope="module", autouse=True)
def engine_cache(tmp_path_factory):
    """Every export of this module goes to one temporary cache (the commands' $MBBENCH_ENGINE_CACHE)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MBBENCH_ENGINE_CACHE", str(tmp_path_factory.mktemp("engine-cache")))
        yield


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory):
    """One tiny run per engine that exports (and torch), into one folder: {engine: (result, record)}."""
    out = tmp_path_factory.mktemp("engine-runs")
    runs = {}
    for engine in ("torch", "onnxruntime", "openvino"):
        result = invoke("run", *ENGINE_RUN, "--engine", engine, "--out", out, "--quiet")
        found = [r for r in read_all(out) if r.identity.engine == engine]
        runs[engine] = (result, found)
    return out, runs


# ------------------------------------------------------------------------------------------------- identity

def test_engine_is_in_the_identity_and_the_file_name():
    torch_plan = resolve(RunConfig("hf-modernbert-base", "short-fixed", tiny=True, device="cpu", docs=2, threads=1))
    ort_plan = resolve(RunConfig("hf-modernbert-base", "short-fixed", tiny=True, device="cpu", docs=2, threads=1,
                                 engine="onnxruntime"))
    assert (torch_plan.engine.name, ort_plan.engine.name) == ("torch", "onnxruntime")
    assert torch_plan.engine is engines.get_engine("torch")  # resolved once: the Engine object, not its name
    assert ort_plan.identity.engine == "onnxruntime" and ort_plan.identity.key() != torch_plan.identity.key()
    assert "__onnxruntime__" in ort_plan.identity.file_stem() and "torch" not in torch_plan.identity.file_stem()
    assert records.LATER_FIELDS["engine"] == "torch"
    # the default engine hashes as records before the axis did: the key leaves it out
    assert "engine" not in torch_plan.identity._hashed() and ort_plan.identity._hashed()["engine"] == "onnxruntime"


def test_a_comparison_of_five_sides_gets_a_file_name_the_file_system_takes(tmp_path):
    """scripts/engine_records.sh's compare (five sides) measured fully, then failed at the temporary file:
    "File name too long" (issue 26 item 3's kind, with MODEL@ENGINE sides). The stem is cut to fit; the key keeps
    it unique."""
    sides = ("hf-modernbert-base", "modernbert-base", "hf-modernbert-base@torch-compile",
             "hf-modernbert-base@onnxruntime", "hf-modernbert-base@openvino")
    identity = Identity("comparison", "hf-modernbert-base", "short-variable", "abc", "rigorous", "auto," * 4 + "auto",
                        "float32", "AMD EPYC", tiny=True, batch_size=32, documents=2, runs=1, models=sides, threads=2)
    stem = identity.file_stem()
    assert stem.startswith("hf-modernbert-base-vs-modernbert-base-vs-") and stem.endswith("__" + identity.key())
    assert len(stem) <= records.MAX_STEM_CHARS
    (tmp_path / f".{stem}.abcdefgh.tmp").write_text("{}")  # what the atomic writer creates first
    (tmp_path / f"{stem}.json").write_text("{}")


def test_old_records_with_compile_true_load_as_torch_compile_and_keep_their_keys():
    new = Identity("throughput", "modernbert-base", "short-fixed", "abc", "rigorous", "auto", "float32", "cpu",
                   compile=True)
    assert new.engine == "torch-compile"
    written_before_the_axis = {k: v for k, v in asdict(new).items() if k not in records.LATER_FIELDS}
    old = Identity.from_dict(json.loads(json.dumps(written_before_the_axis)))
    assert old.engine == "torch-compile" and old.compile
    assert old.key() == _digest(written_before_the_axis) == new.key()
    plain = {**written_before_the_axis, "compile": False}
    assert Identity.from_dict(plain).key() == _digest(plain)
    assert Identity(**{**written_before_the_axis, "compile": False}, engine="torch-compile").compile


def test_compile_flag_is_a_deprecated_alias_of_the_torch_compile_engine(tmp_path, monkeypatch):
    """`--compile` is translated at the command line (RunConfig has no `compile`); the identity keeps its field."""
    assert "compile" not in {f.name for f in fields(RunConfig)}
    assert resolve(RunConfig("bert-base", "short-fixed", engine="torch-compile", device="cpu", tiny=True)
                   ).identity.compile
    planned = []

    def fail(plan, *args, **kwargs):  # stop before inductor compiles anything: the plan is what is checked
        planned.append(plan)
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(runner, "run", fail)
    result = invoke("run", *TINY, "--docs", "2", "--runs", "1", "--model", "bert-base", "--compile", "--out", tmp_path)
    assert "--compile is deprecated; it means --engine torch-compile" in result.output
    assert planned[0].engine.name == "torch-compile" and planned[0].identity.engine == "torch-compile"
    (failure,) = read_all(tmp_path)
    assert failure.identity.compile and failure.payload.engine == "torch-compile"


# ------------------------------------------------------------------------------------------------- a run

@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_a_run_on_an_exporting_engine_records_what_ran(engine_runs, engine):
    _, runs = engine_runs
    result, found = runs[engine]
    assert result.exit_code == 0, result.output
    (record,) = found
    payload = record.payload
    assert record.status == "ok" and record.identity.engine == engine
    assert (record.identity.threads, record.identity.interop_threads) == (1, 1)
    info = payload.engine_info
    assert info.name == engine and info.version == engines.get_engine(engine).version()
    assert (info.threads_intra, info.threads_inter) == (1, 1)  # read back from the engine
    assert info.export_seconds > 0 and info.compile_seconds > 0 and info.first_call_seconds > 0
    assert payload.cold_start_seconds == pytest.approx(info.export_seconds + info.compile_seconds
                                                       + info.first_call_seconds)
    assert payload.parity.passed and payload.parity.error < 1e-4 and payload.parity.tolerance == 1e-4
    assert payload.parity.real_tokens == payload.real_tokens  # 8 documents, one batch: all compared
    assert len(payload.run_seconds) == 2 and payload.tokens_per_second > 0
    assert engine in Path(record.source_path).name


def test_the_report_labels_engines_and_has_an_engines_table(engine_runs, tmp_path):
    out, runs = engine_runs
    assert runs["torch"][0].exit_code == 0 and runs["torch"][1][0].payload.parity is None
    report = (build_report([str(out)], tmp_path / "report", baseline="hf-modernbert-base-tiny",
                           include_smoke=True) / "report.md").read_text()
    speedups = report.split("## Speedup against hf-modernbert-base-tiny")[1].split("##")[0]
    assert "[engine=onnxruntime]" in speedups and "[engine=openvino]" in speedups  # each engine over torch
    assert "[engine=torch]" not in speedups
    for engine in ("torch", "onnxruntime", "openvino"):
        assert f"hf-modernbert-base-tiny [engine={engine}]" in report
    engines_table = report.split("## Engines")[1].split("##")[0]
    rows = [line for line in engines_table.splitlines() if line.startswith("| cpu")]
    assert len(rows) == 3 and all(" | 1 | " in row for row in rows)  # threads
    assert "| reference |" in engines_table  # torch is what parity compares against


def broken_engines(monkeypatch, model: str, engine: str, breakage):
    """Make `engine`'s prepared output for `model` wrong (`breakage(output)`); every other engine is untouched."""
    real = engines.prepare_engine

    def prepare(chosen, encoder, identity, first_batch, *args, **kwargs):
        prepared = real(chosen, encoder, identity, first_batch, *args, **kwargs)
        if getattr(chosen, "name", chosen) != engine or identity.name != model:  # an Engine (loading) or a name
            return prepared
        return PreparedEngine(lambda batch: breakage(prepared(batch)), prepared.info)

    monkeypatch.setattr(engines, "prepare_engine", prepare)


@pytest.mark.parametrize("breakage, error", [(lambda out: out + 1e-2, pytest.approx(1e-2, rel=1e-3)),
                                             (lambda out: out * float("nan"), None)], ids=["off-by-1e-2", "nan"])
def test_an_engine_that_fails_parity_gives_a_failure_record_and_the_next_configuration_runs(
        tmp_path, monkeypatch, breakage, error):
    broken_engines(monkeypatch, "hf-modernbert-base", "onnxruntime", breakage)
    result = invoke("run", *TINY, "--docs", "4", "--runs", "1", "--threads", "1", "--engine", "onnxruntime",
                    "--model", "hf-modernbert-base", "--model", "bert-base", "--out", tmp_path)
    assert result.exit_code == 1, result.output
    by_model = {r.identity.model: r for r in read_all(tmp_path)}
    failed, ok = by_model["hf-modernbert-base"], by_model["bert-base"]
    assert ok.status == "ok" and ok.payload.parity.passed
    assert failed.status == "failed" and failed.payload.error_type == "ParityFailure"
    assert failed.identity.engine == failed.payload.engine == "onnxruntime"
    assert "onnxruntime (float32) against the fp32 function" in failed.reason and "bar 0.0001" in failed.reason
    parity = failed.payload.parity
    assert not parity.passed and parity.tolerance == 1e-4 and parity.error == error
    if error is None:  # NaN: strict JSON keeps None and says how many values were not finite
        assert parity.vs_float32.non_finite > 0 and "NaN/inf" in failed.reason
    assert not hasattr(failed.payload, "tokens_per_second")


def test_openvino_without_its_extra_exits_2_naming_it(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def without_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_openvino)
    result = invoke("run", *ENGINE_RUN, "--engine", "openvino", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "mbbench[openvino]" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------- compare

def test_compare_sides_name_their_engines_and_a_side_failing_parity_is_left_out(tmp_path, monkeypatch):
    broken_engines(monkeypatch, "hf-modernbert-base", "openvino", lambda out: out * float("nan"))
    result = invoke("compare", *TINY, "--docs", "4", "--runs", "2", "--threads", "1", "--model", "hf-modernbert-base",
                    "--model", "hf-modernbert-base@onnxruntime", "--model", "hf-modernbert-base@openvino",
                    "--baseline", "hf-modernbert-base", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    (record,) = read_all(tmp_path)
    payload = record.payload
    assert record.identity.models == ("hf-modernbert-base", "hf-modernbert-base@onnxruntime",
                                      "hf-modernbert-base@openvino")
    assert record.identity.engine == "torch,onnxruntime,openvino"
    assert [r.model for r in payload.paired.ratios] == ["hf-modernbert-base@onnxruntime"]
    assert set(payload.excluded) == {"hf-modernbert-base@openvino"}
    assert "failed the accuracy gate" in payload.excluded["hf-modernbert-base@openvino"]
    assert payload.parity["hf-modernbert-base@onnxruntime"].passed
    assert payload.parity["hf-modernbert-base@openvino"].vs_float32.non_finite > 0
    assert {side: info.name for side, info in payload.engines.items()} == {
        "hf-modernbert-base": "torch", "hf-modernbert-base@onnxruntime": "onnxruntime"}
    # a side on another engine ran that engine's kernels, not the build's; a left-out side ran none
    assert payload.builds["hf-modernbert-base@onnxruntime"].gemm == "onnxruntime"
    assert "hf-modernbert-base@openvino" not in payload.builds
    assert "hf-modernbert-base@openvino-tiny: left out, failed the accuracy gate" in result.output
    assert Path(payload.engines["hf-modernbert-base@onnxruntime"].cache_path).parent == \
        Path(os.environ["MBBENCH_ENGINE_CACHE"])  # never under --out, where records are committed


def test_compare_fails_when_parity_leaves_fewer_than_two_sides(tmp_path, monkeypatch):
    broken_engines(monkeypatch, "hf-modernbert-base", "onnxruntime", lambda out: out + 1e-2)
    result = invoke("compare", *TINY, "--docs", "2", "--runs", "1", "--threads", "1", "--model", "hf-modernbert-base",
                    "--model", "hf-modernbert-base@onnxruntime", "--out", tmp_path)
    assert result.exit_code == 1
    (record,) = read_all(tmp_path)
    assert record.status == "failed" and record.payload.error_type == "TooFewSides"
    assert "fewer than two sides" in record.reason and "failed the accuracy gate" in record.reason


# ------------------------------------------------------------------------------------------------- threads

def test_threads_runs_give_two_records_and_two_report_rows(tmp_path):
    """Issue 26 item 1: `OMP_NUM_THREADS=1 mbbench run --tiny --device cpu --docs 16 --runs 4` and the same with 2
    threads got one identity key (the second was skipped as a repeat). Now: two records, two labelled rows."""
    out = tmp_path / "runs"
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-m", "mbbench.cli", "run", "--tiny", "--device", "cpu", "--docs", "16",
                               "--runs", "4", "--out", str(out), "--quiet"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert "skip" not in done.stderr
    found = read_all(out)
    assert sorted(r.identity.threads for r in found) == [1, 2] and len({r.key for r in found}) == 2
    assert all(r.identity.interop_threads == 1 and r.payload.engine_info.threads_intra == r.identity.threads
               for r in found)
    report = (build_report([str(out)], tmp_path / "report", include_smoke=True) / "report.md").read_text()
    assert "modernbert-base-tiny [threads=1]" in report and "modernbert-base-tiny [threads=2]" in report


def test_threads_are_applied_before_building_and_left_out_of_gpu_identities(monkeypatch):
    plan = resolve(RunConfig("modernbert-base", "short-fixed", tiny=True, device="cpu", docs=2, threads=1))
    assert plan.threads == engines.Threads(1, 1) and plan.identity.threads == 1
    gpu = records.DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", "H100-SXM", index=0)
    gpu_plan = resolve(RunConfig("modernbert-base", "short-fixed", tiny=True, docs=2, threads=1), device=gpu)
    assert gpu_plan.threads.intra == 1 and gpu_plan.identity.threads is None
    assert gpu_plan.identity.interop_threads is None
    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr(loading.registry, "encoder", lambda spec, options: seen.append(torch.get_num_threads()) or 1 / 0)
    try:
        with pytest.raises(ZeroDivisionError):
            runner.run(plan)
    finally:
        torch.set_num_threads(before)
    assert seen == [1]


# ------------------------------------------------------------------------------------------------- matrix, list

def test_matrix_engine_axis_leaves_out_what_a_layout_refuses():
    spec = mx.MatrixSpec(models=("modernbert-base", "hf-modernbert-base"), suites=("short-fixed",),
                         engines=("torch", "onnxruntime"), options={"tiny": True, "docs": 2, "threads": 1})
    tasks, notes = mx.expand(spec, "cpu")
    assert sorted((t.config.model, t.planned.engine.name) for t in tasks) == [
        ("hf-modernbert-base", "onnxruntime"), ("hf-modernbert-base", "torch"), ("modernbert-base", "torch")]
    assert any("left out modernbert-base x engine onnxruntime" in note and "packed" in note for note in notes)
    assert all(t.planned.identity.threads == 1 for t in tasks)


def test_list_engines_says_what_runs_here():
    result = invoke("list", "engines")
    assert result.exit_code == 0
    for status in engines.available_engines():
        line = next(line for line in result.output.splitlines() if line.startswith(status.name + " "))
        assert ("yes" if status.installed else "no") in line and (status.version or "") in line
    assert ".[onnx]" in result.output and ".[openvino]" in result.output
