"""Issue 26, items 3-6 and 8: every file mbbench writes is bounded, strict, UTF-8, atomic and readable; every
value typed on a command line is parsed by one parser per kind; a capped search reads as a lower bound."""

import json
import math
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mbbench import files, results, units
from mbbench.cli import cli
from mbbench.commands.console import summary_row
from mbbench.errors import UserError
from mbbench.plan import max_batch_limits
from mbbench.records import Identity, Record
from mbbench.report.render import build_report

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def predicted(tmp_path: Path, suite: str = "short-fixed") -> Path:
    """One predicted record (analytic, fast) written by the CLI; its path."""
    out = tmp_path / "runs"
    result = invoke("predict", "--model", "modernbert-base", "--suite", suite, "--gpu", "t4", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    return max(out.rglob("*.json"), key=lambda p: p.stat().st_mtime_ns)


def strict_load(path: Path) -> dict:
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}: not strict JSON")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


# ------------------------------------------------------------------------------------------ 3. bounded names

def test_a_261_character_suite_name_is_measured_and_saved(tmp_path):
    name = "s" * 261
    suite = tmp_path / "long.toml"
    suite.write_text(f'name = "{name}"\ndocuments = 4\n[lengths]\ndistribution = "fixed"\nlength = 16\n',
                     encoding="utf-8")
    path = predicted(tmp_path, str(suite))
    assert len(path.name.encode()) <= files.MAX_NAME_BYTES and path.name.startswith("modernbert-base__sss")
    assert strict_load(path)["identity"]["suite"] == name  # the whole name is in the record, only the file is cut


def test_a_comparison_of_eight_models_has_a_bounded_unique_file_name():
    models = tuple(f"model-with-a-long-name-number-{i}" for i in range(8))
    one = Identity("comparison", models[0], "short-variable", "f" * 16, "rigorous", "auto", "float32", "cpu",
                   models=models)
    other = Identity("comparison", models[0], "short-variable", "f" * 16, "rigorous", "auto", "float32", "cpu",
                     models=models[:7] + ("model-with-a-long-name-number-X",))
    assert len(one.file_stem()) <= 160 and one.file_stem().endswith(one.key())
    assert one.file_stem() != other.file_stem()  # they differ only past the cut: the key tells them apart
    assert files.bounded_name("x" * 400, "abc", ".png").endswith("__abc.png")
    assert len(files.bounded_name("x" * 400, "abc", ".png")) <= files.MAX_NAME_BYTES


# --------------------------------------------------------------------------------------- 4. non-finite numbers

@pytest.mark.parametrize("args", [
    ["max-batch", "--max-seconds", "nan"], ["max-batch", "--max-seconds", "inf"], ["max-batch", "--max-seconds", "0"],
    ["max-batch", "--safety-margin", "nan"], ["max-batch", "--safety-margin", "inf"],
    ["matrix", "--model", "bert-base", "--suite", "short-fixed", "--cpus-per-task", "nan"],
    ["matrix", "--model", "bert-base", "--suite", "short-fixed", "--cpus-per-task", "inf"],
    ["sweep", "--gpus", "T4=nan"], ["sweep", "--gpus", "T4=inf"]])
def test_no_option_accepts_nan_or_inf(tmp_path, args):
    result = invoke(*args, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_suite_files_refuse_nan_and_inf(tmp_path):
    suite = tmp_path / "nan.toml"
    suite.write_text('name = "n"\ndocuments = 4\n[lengths]\ndistribution = "normal"\nmean = nan\nstd = 1.0\n'
                     'min = 1\nmax = 10\n', encoding="utf-8")
    result = invoke("predict", "--suite", suite, "--gpu", "t4", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "'mean' must be a finite number" in result.output


def test_records_are_strict_json_and_a_non_finite_value_is_null_with_a_reason(tmp_path):
    record = results.read_record(predicted(tmp_path))
    record.payload = type(record.payload)(**{**record.payload.__dict__, "tokens_per_second": math.nan,
                                             "mfu": math.inf})
    store = results.Store(tmp_path / "strict")
    data = strict_load(store.write(record))
    assert data["payload"]["tokens_per_second"] is None and data["payload"]["mfu"] is None
    assert data["non_finite"] == {"payload.mfu": "inf", "payload.tokens_per_second": "nan"}
    with pytest.raises(ValueError, match="tokens_per_second=nan"):
        files.to_json({"tokens_per_second": math.nan})


def test_the_report_shows_a_nan_or_inf_record_as_missing_and_says_why(tmp_path):
    path = predicted(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["payload"]["tokens_per_second"] = math.nan  # a file written before records were strict JSON
    path.write_text(json.dumps(data), encoding="utf-8")
    other = predicted(tmp_path, "short-variable")
    data = json.loads(other.read_text(encoding="utf-8"))
    data["payload"]["tokens_per_second"] = math.inf
    other.write_text(json.dumps(data), encoding="utf-8")
    result = invoke("report", "--results", tmp_path / "runs", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "n/a (tokens/s was nan)" in md and "n/a (tokens/s was inf)" in md
    assert "not finite, shown as missing: tokens/s was nan" in md


# ---------------------------------------------------------------------------------- 5. one parser per value

def test_sizes_parse_one_way():
    assert units.parse_size("24GiB") == 24 * 2**30 and units.parse_size(" 512 MiB ") == 512 * 2**20
    assert units.parse_size(".5GB") == 5 * 10**8 and units.parse_size("1e3MB") == 10**9
    for text in ("0GiB", "0.0MB", "1.2.3GiB", ".GiB", "GiB", "24", "nanGiB", "infGiB", "-1GiB", "1e400GiB", "24 parsecs"):
        with pytest.raises(UserError, match="--memory-limit"):
            units.parse_size(text)


def test_durations_and_numbers_parse_one_way():
    assert units.parse_seconds("90") == 90 and units.parse_seconds("1.5min") == 90 and units.parse_seconds("2h") == 7200
    for text in ("nan", "inf", "0", "-1", "1e400", "5 fortnights", ""):
        with pytest.raises(UserError, match="--max-seconds"):
            units.parse_seconds(text)
    assert units.parse_number("0.5", "--x", 0, 1, high_open=True) == 0.5
    for text in ("1", "nan", "-0.1", "x"):
        with pytest.raises(UserError):
            units.parse_number(text, "--x", 0, 1, high_open=True)


@pytest.mark.parametrize("value, message", [
    ("0GiB", "must be positive"), ("1.2.3GiB", "expected a size"), (".GiB", "expected a size"),
    ("1e400GiB", "more than 2^60 bytes")])
def test_max_batch_memory_limit_is_refused_in_one_line(tmp_path, value, message):
    result = invoke("max-batch", "--memory-limit", value, "--out", tmp_path / "out")
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    with pytest.raises(UserError, match=re.escape(message)):  # and through the library
        max_batch_limits(memory_limit=value)


def test_sweep_weights_that_overflow_their_sum_are_refused(tmp_path):
    result = invoke("sweep", "--gpus", "T4=1e308,L4=1e308", "--hidden", "768", "--glu", "2304", "--out", tmp_path)
    assert result.exit_code == 2 and "must be in [0, 1e+06]" in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------------------------ 6. encodings and files

def c_locale() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8", "PYTHONIOENCODING"))}
    return env | {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_report_and_cjk_suite_under_a_c_locale(tmp_path):
    suite = tmp_path / "cjk.toml"
    suite.write_text('name = "cjk"\ndescription = "日本語の文書"\ndocuments = 4\n[lengths]\ndistribution = "fixed"\n'
                     'length = 16\n', encoding="utf-8")
    env = c_locale()
    run = subprocess.run([sys.executable, "-m", "mbbench.cli", "predict", "--suite", str(suite), "--suite", "short-fixed",
                          "--gpu", "t4", "--out", str(tmp_path / "runs")], env=env, capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([sys.executable, "-m", "mbbench.cli", "report", "--results", str(tmp_path / "runs"), "--out",
                          str(tmp_path / "report")], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "±" in md and "## T4" in md


def test_every_written_file_has_an_ordinary_mode_and_no_temporary_is_left(tmp_path):
    mask = os.umask(0o022)
    try:
        path = predicted(tmp_path)
        report = build_report([tmp_path / "runs"], tmp_path / "report")
        written = [path, report / "report.md", report / "index.html"]
        written.append(files.write_bytes(tmp_path / "x.png", b"\x89PNG"))
    finally:
        os.umask(mask)
    for file in written:
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file  # what `open()` or `cp` would give; not mkstemp's 0600
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary left behind


def test_a_failed_write_keeps_the_old_report_whole(tmp_path):
    target = files.write_text(tmp_path / "report.md", "old ±\n")
    with pytest.raises(RuntimeError):
        with files.replace_atomically(target) as tmp:
            tmp.write_text("half", encoding="utf-8")
            raise RuntimeError("interrupted")
    assert target.read_text(encoding="utf-8") == "old ±\n" and len(list(tmp_path.iterdir())) == 1


# --------------------------------------------------------------------------------- 8. a capped search, a bound

@pytest.mark.slow
def test_a_capped_max_batch_search_reads_as_a_lower_bound_everywhere(tmp_path):
    result = invoke("max-batch", "--model", "modernbert-base", "--tiny", "--suite", "short-fixed", "--device", "cpu",
                    "--emulate-oom-above", 6 * 512 + 100, "--seed", 4, "--max-trials", 2, "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert ">= 4 (capped after 2 trials; fits 4, 8 ran out)" in result.output
    assert "ok (capped: a lower bound)" in result.output
    [path] = (tmp_path / "runs").rglob("*.json")
    record = results.read_record(path)
    assert summary_row(record)["status"] == "ok (capped: a lower bound)"
    md = (build_report([tmp_path / "runs"], tmp_path / "report", include_smoke=True) / "report.md").read_text(
        encoding="utf-8")
    assert "≥ 4 (capped after 2 trials; fits 4, 8 ran out)" in md and "4 (2 trials)" not in md.replace("≥ 4 (c", "")
