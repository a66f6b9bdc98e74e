import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from mbbench import results
from mbbench.cli import cli
from mbbench.report.render import build_report


def record(gpu, model, suite, tps=None, kind="measured", status="ok", created="2026-11-01T00:00:00+00:00",
           max_batch=None, group="base"):
    rec = {"schema_version": 1, "kind": kind, "status": status, "model": model, "suite": suite, "group": group,
           "gpu_dir": gpu, "gpu": {"name": gpu, "basket_id": gpu}, "dtype": "bfloat16", "protocol": "rigorous",
           "backend": "varlen", "created_at": created, "tokens_per_second": tps,
           "tokens_per_second_stats": {"min": tps * 0.98, "max": tps * 1.02, "iqr_over_median": 0.01} if tps else None,
           "config_id": f"{model}__{suite}__{kind}__{max_batch is not None}"}
    if max_batch is not None:
        rec.update(measurement="max_batch", max_batch_size=max_batch, tokens_per_second=None)
    return rec


@pytest.fixture
def fixture_dir(tmp_path):
    root = tmp_path / "results"
    recs = [
        record("H100-SXM", "modernbert-base", "short-fixed", 300_000.0),
        record("H100-SXM", "modernbert-base", "short-variable", 250_000.0),
        record("H100-SXM", "bert-base", "short-fixed", 350_000.0),
        record("H100-SXM", "bert-base", "long-fixed", status="unsupported"),
        record("H100-SXM", "modernbert-base", "short-fixed", max_batch=1024),
        record("H100-SXM", "modernbert-large", "short-fixed", 120_000.0, group="large"),
        record("RTX4090", "modernbert-base", "short-fixed", 90_000.0, kind="predicted"),
        record("T4", "modernbert-base", "short-fixed", 20_000.0, kind="predicted"),
        # a duplicate: the newer one wins
        record("T4", "modernbert-base", "short-fixed", 21_000.0, kind="predicted", created="2026-11-02T00:00:00+00:00"),
    ]
    for i, r in enumerate(recs):
        results.write_atomic(root / r["gpu_dir"] / f"r{i}.json", r)
    return root


def rows_of(markdown, gpu):
    section = markdown.split(f"## {gpu}\n")[1].split("\n## ")[0]
    lines = [l for l in section.splitlines() if l.startswith("| ") and not l.startswith("| model")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in l.strip("|").split("|")] for l in lines)}


def test_table_values_equal_records_and_render_cells(fixture_dir, tmp_path):
    out = build_report([str(fixture_dir)], tmp_path / "rep")
    md = (out / "report.md").read_text()
    h100 = rows_of(md, "H100-SXM")
    # columns: short max, short fixed, short variable, long max, long fixed, long variable
    assert h100["modernbert-base"][:3] == ["1,024", "300", "250"]  # three significant figures
    assert h100["bert-base"][1] == "**350**"  # best measured of its column in bold
    assert h100["bert-base"][4] == "–"  # unsupported
    assert h100["bert-base"][2] == ""  # missing
    assert list(h100) == ["bert-base", "modernbert-base", "modernbert-large"]  # base group first, then large
    assert rows_of(md, "T4")["modernbert-base"][1] == "21.0 (p)"  # newest duplicate, marked predicted
    assert rows_of(md, "RTX4090")["modernbert-base"][1] == "90.0 (p)"  # predictions are never ranked with measurements
    assert "Merged duplicates" in md and "predicted" in md


def test_two_runs_are_identical(fixture_dir, tmp_path):
    a = build_report([str(fixture_dir)], tmp_path / "a")
    b = build_report([str(fixture_dir)], tmp_path / "b")
    for name in ("report.md", "index.html", "basket.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_empty_or_missing_results_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "missing"):
        result = CliRunner().invoke(cli, ["report", "--results", str(target), "--out", str(tmp_path / "o")])
        assert result.exit_code == 2 and "mbbench: error:" in result.output


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (CI installs it)")
def test_report_renders_in_headless_chromium(fixture_dir, tmp_path):
    out = build_report([str(fixture_dir)], tmp_path / "rep")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    url = (out / "index.html").as_uri()
    dom = subprocess.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert 'data-ready="1"' in dom
    assert dom.count("<table") >= 4 and dom.count("<img") >= 1
    assert 'data-loaded="false"' not in dom and dom.count('data-loaded="true"') == dom.count("<img")
    shot = tmp_path / "screenshot.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,1600", url],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 5000


def test_failures_are_listed_apart_and_backends_get_their_own_rows(tmp_path):
    root = tmp_path / "results"
    measured = record("H100-SXM", "modernbert-base", "short-fixed", 300_000.0)
    flex = record("H100-SXM", "modernbert-base", "short-fixed", 280_000.0) | {"config": {"backend": "flex"},
                                                                             "config_id": "flex"}
    oom = record("H100-SXM", "bert-base", "short-fixed", status="failed") | {"reason": "out of memory: 80 GiB"}
    # an old failure that a later measurement replaced is not reported as a failure
    old = record("H100-SXM", "bert-large", "short-fixed", status="failed") | {"reason": "NodeDiedError: x"}
    new = record("H100-SXM", "bert-large", "short-fixed", 90_000.0, created="2026-11-02T00:00:00+00:00")
    for i, r in enumerate([measured, flex, oom, old, new]):
        results.write_atomic(root / r["gpu_dir"] / f"r{i}.json", r)
    md = (build_report([str(root)], tmp_path / "rep") / "report.md").read_text()
    h100 = rows_of(md, "H100-SXM")
    assert h100["modernbert-base [backend=auto]"][1] == "**300**"
    assert h100["modernbert-base [backend=flex]"][1] == "280"
    assert h100["bert-large"][1] == "90.0" and "bert-base" not in h100
    failures = md.split("## Failed configurations\n")[1].split("\n## ")[0]
    assert "out of memory: 80 GiB" in failures and "NodeDiedError" not in failures


def test_predicted_records_fill_the_max_batch_columns_unless_measured(tmp_path):
    root = tmp_path / "results"
    recs = [record("T4", "modernbert-base", "short-fixed", 20_000.0, kind="predicted") | {"max_batch_size": 2048},
            record("T4", "bert-base", "short-fixed", 25_000.0, kind="predicted") | {"max_batch_size": 1536},
            record("T4", "bert-base", "short-fixed", max_batch=1024),  # a search beats the memory model
            record("T4", "bert-base", "long-fixed", kind="predicted", status="unsupported")]
    for i, r in enumerate(recs):
        results.write_atomic(root / r["gpu_dir"] / f"r{i}.json", r)
    t4 = rows_of((build_report([str(root)], tmp_path / "rep") / "report.md").read_text(), "T4")
    assert t4["modernbert-base"][0] == "2,048 (p)"  # the only prediction of its column: not ranked with the search
    assert t4["bert-base"][0] == "1,024" and t4["bert-base"][3] == "–"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (CI installs it)")
def test_a_paired_comparison_reaches_the_rendered_page(tmp_path):
    """A new user's path: compare two models, report, read the page in a headless browser."""
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["compare", "--model", "modernbert-base", "--model", "hf-modernbert-base",
                                      "--suite", "short-variable", "--device", "cpu", "--docs", "4", "--runs", "3",
                                      "--tiny", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "modernbert-base-tiny / hf-modernbert-base-tiny = " in result.output and "(75% CI, short of 95%: too few rounds)" in result.output
    page = build_report([str(out)], tmp_path / "rep", include_smoke=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", (page / "index.html").as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    assert "Paired comparisons (interleaved passes)" in dom and "hf-modernbert-base" in dom
    assert 'data-ready="1"' in dom and "Environment" in dom


def test_a_comparison_record_counts_in_the_environment_block(tmp_path):
    # the committed CPU comparison: its machine was missing from the Environment table (comparisons were left out)
    [committed] = sorted((Path(__file__).parent.parent / "results" / "cpu").glob("*__comparison__*.json"))
    shutil.copy(committed, tmp_path / committed.name)
    md = (build_report([str(tmp_path)], tmp_path / "rep") / "report.md").read_text()
    environment = md.split("## Environment\n")[1].split("\n## ")[0]
    [row] = [line for line in environment.splitlines() if "2.13.0+cpu" in line]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "Intel(R) Xeon(R) Processor" and cells[6] == "1" and cells[7].endswith(" / 2")  # its load


def test_environment_block_shows_every_records_load_and_any_busy_one(tmp_path):
    # the reported case: a busy comparison record sharing a machine with a quiet throughput record was hidden
    [committed] = sorted((Path(__file__).parent.parent / "results" / "cpu").glob("*__comparison__*.json"))
    data = json.loads(committed.read_text())
    data["payload"]["paired"]["load_warning"] = "the machine was busy"
    data["payload"]["paired"]["load"]["start"]["load_average_1m"] = 3.5
    (tmp_path / "busy.json").write_text(json.dumps(data))
    data["payload"]["paired"]["load_warning"] = None  # the same machine, quiet, another configuration
    data["payload"]["paired"]["load"]["start"]["load_average_1m"] = 0.5
    data["identity"]["runs"] = 5
    (tmp_path / "quiet.json").write_text(json.dumps(data))
    md = (build_report([str(tmp_path)], tmp_path / "rep") / "report.md").read_text()
    environment = md.split("## Environment\n")[1].split("\n## ")[0]
    [row] = [line for line in environment.splitlines() if data["device"]["name"] in line]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6:] == ["2", "0.50–3.50 / 2", "busy (1 of 2)"]
    paired = [line for line in md.split("## Paired comparisons")[1].split("\n## ")[0].splitlines()
              if "hf-modernbert-base" in line]
    assert sorted(line.rstrip(" |").endswith("busy") for line in paired) == [False, True]  # which one was busy


def test_paired_table_marks_both_sides_of_a_tiny_comparison(tmp_path):
    [committed] = sorted((Path(__file__).parent.parent / "results" / "cpu").glob("*__comparison__*.json"))
    data = json.loads(committed.read_text())
    data["identity"]["tiny"] = True
    (tmp_path / "tiny.json").write_text(json.dumps(data))
    md = (build_report([str(tmp_path)], tmp_path / "rep", include_smoke=True) / "report.md").read_text()
    [row] = [line for line in md.split("## Paired comparisons")[1].split("\n## ")[0].splitlines()
             if "hf-modernbert-base" in line]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:4] == ["modernbert-base (tiny)", "hf-modernbert-base (tiny)"]


def test_paired_table_states_the_intervals_own_confidence_and_warns_below_95(tmp_path):
    """Issue 26: three rounds cannot give a 95% interval of the median; the table said "95% interval" anyway."""
    [committed] = sorted((Path(__file__).parent.parent / "results" / "cpu").glob("*__comparison__*.json"))
    data = json.loads(committed.read_text())
    ratio = data["payload"]["paired"]["ratios"][0]
    ratio["interval"] = {"low": 1.6, "high": 1.8, "confidence": 0.75, "requested": 0.95,
                         "method": "order statistics (sign test)", "order": 1}
    data["payload"]["rounds"] = 3
    (tmp_path / "three.json").write_text(json.dumps(data))
    md = (build_report([str(tmp_path)], tmp_path / "rep") / "report.md").read_text()
    [row] = [line for line in md.split("## Paired comparisons")[1].split("\n## ")[0].splitlines()
             if "hf-modernbert-base" in line]
    assert "1.60–1.80 (75% CI, short of 95%: too few rounds)" in row and "too few rounds for 95%" in row
    assert "95% interval" not in md


COMMITTED_CPU = Path(__file__).parent.parent / "results" / "cpu"


def speedup_rows_of(markdown: str) -> dict[str, list[str]]:
    section = markdown.split("## Speedup against")[1].split("\n## ")[0]
    return {cells[1]: cells[2:] for cells in ([c.strip() for c in line.strip("|").split("|")]
                                              for line in section.splitlines() if line.startswith("| cpu"))}


def test_a_comparisons_ratio_is_the_speedup_only_of_rows_of_its_own_workload(tmp_path):
    """Issue 34 item 3: a bf16 comparison's "0.99x [0.88, 1.28]" filled two float32 rows it never compared (the
    pairing matched device, suite and threads only)."""
    [comparison] = COMMITTED_CPU.glob("hf-modernbert-base-vs-modernbert-base__*comparison*.json")
    runs = [json.loads(path.read_text()) for path in sorted(COMMITTED_CPU.glob("*modernbert-base__short-variable__"
                                                                                "rigorous__auto__float32__bs32*"))]
    assert [r["identity"]["model"] for r in runs] == ["hf-modernbert-base", "modernbert-base"]
    data = json.loads(comparison.read_text())
    data["identity"]["dtype"] = "bfloat16"
    data["identity"]["device"] = data["device"]["name"] = runs[0]["device"]["name"]  # the same machine
    data["payload"]["paired"]["ratios"][0].update(median=0.99, interval={"low": 0.88, "high": 1.28,
                                                                         "confidence": 0.95, "requested": 0.95})
    for i, record in enumerate([data, *runs]):
        (tmp_path / f"r{i}.json").write_text(json.dumps(record))
    rows = speedup_rows_of((build_report([str(tmp_path)], tmp_path / "rep") / "report.md").read_text())
    [fp32] = [cells for label, cells in rows.items() if label.startswith("modernbert-base [dtype=float32")]
    [bf16] = [cells for label, cells in rows.items() if label.startswith("modernbert-base [dtype=bfloat16")]
    tps = [r["payload"]["tokens_per_second_stats"]["median"] for r in runs]
    assert fp32 == ["", f"{tps[1] / tps[0]:.2f}x", "", ""]  # its own runs' ratio, and nothing of the bf16 pair
    assert bf16[1].startswith("0.99x [0.88, 1.28]")


def table_rows(markdown: str, title: str) -> list[list[str]]:
    section = markdown.split(f"## {title}\n")[1].split("\n## ")[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith(("| device |", "| gpu |", "| model |"))]


def test_the_reports_counts_agree_and_every_record_read_is_in_the_provenance_once(tmp_path):
    """Issue 34 item 4: "Read runs (7 records)", Environment 5, Provenance 8; a failure's reason missing; a
    comparison's provenance without its engines; an Intel row bolded against AMD rows in the one `cpu` table."""
    [comparison] = COMMITTED_CPU.glob("hf-modernbert-base-vs-modernbert-base__*comparison*.json")  # Intel Xeon
    [run] = COMMITTED_CPU.glob("modernbert-base__short-variable__rigorous__auto__float32__t2__*.json")  # AMD EPYC
    [other] = COMMITTED_CPU.glob("hf-modernbert-base__short-variable__*throughput*.json")  # AMD EPYC, host "vm" too
    recent = json.loads(run.read_text())
    older = recent | {"created_at": "2026-01-01T00:00:00+00:00"}  # a repeat of one identity: merged
    failed = json.loads(run.read_text())
    failed["identity"]["dtype"] = "bfloat16"
    failed.update(status="failed", reason="out of memory: 2 GiB", payload={"error_type": "OutOfMemoryError"},
                  payload_type="failure")
    predicted = record("T4", "modernbert-base", "short-fixed", 20_000.0, kind="predicted")
    for i, data in enumerate([json.loads(comparison.read_text()), recent, older, failed, predicted,
                              json.loads(other.read_text())]):
        (tmp_path / f"r{i}.json").write_text(json.dumps(data))
    md = (build_report([str(tmp_path)], tmp_path / "rep") / "report.md").read_text()
    assert f"Read {tmp_path} (6 records)." in md
    provenance = table_rows(md, "Provenance")
    assert len(provenance) == 6 and "(6 records: 1 failed, 4 measured, 1 predicted)" in md
    environment = table_rows(md, "Environment")
    assert sum(int(row[6]) for row in environment) == 5 and "The 5 measured records of the 6 read" in md
    [compared] = [row for row in provenance if row[3] == "comparison"]
    assert compared[1] == "hf-modernbert-base@torch vs modernbert-base@torch" and compared[6] == "torch, torch"
    assert compared[5].startswith("hf-modernbert-base@torch (baseline) 0.612k tok/s, modernbert-base@torch 1.04k")
    assert any(row[-1] == "failed: out of memory: 2 GiB" for row in provenance)
    assert sum("an older repeat" in row[-1] for row in provenance) == 1
    # each device's best on its own (the Intel rows are not ranked against the AMD ones), and an Intel comparison
    # does not supersede an AMD run that shares its host name
    cpu = {label.split(" [")[0] + (" Intel" if "Intel" in label else " AMD"): cells[2]
           for label, cells in rows_of(md, "cpu").items()}
    assert cpu == {"hf-modernbert-base Intel": "0.612 (±3.2%, 10 passes)",
                   "modernbert-base Intel": "**1.04 (±1.0%, 10 passes)**",
                   "hf-modernbert-base AMD": "0.268 (±1.1%, 3 passes)",
                   "modernbert-base AMD": "**0.640 (±1.5%, 5 passes)**"}


def test_paired_rows_say_their_dtype_and_failed_rows_their_engine(tmp_path):
    """The fresh-clone trial: three paired rows of one pair in bf16, fp16 and bf16 could not be told apart; a failed
    ONNX Runtime fp16 row did not say its engine; Environment said "17 measured of 17 read (3 failed, 14
    measured)"."""
    [comparison] = COMMITTED_CPU.glob("hf-modernbert-base-vs-modernbert-base__*comparison*.json")
    fp32 = json.loads(comparison.read_text())
    bf16 = json.loads(comparison.read_text())
    bf16["identity"]["dtype"] = "bfloat16"
    failed = {**json.loads(comparison.read_text()), "status": "failed", "reason": "EngineUnavailable: fp16",
              "payload_type": "failure", "payload": {"error_type": "EngineUnavailable", "backend": "auto",
                                                     "engine": "onnxruntime"}}
    failed["identity"] = {**fp32["identity"], "measurement": "throughput", "models": [], "model": "bert-base",
                          "engine": "onnxruntime", "dtype": "float16", "baseline": None}
    for i, record in enumerate([fp32, bf16, failed]):
        (tmp_path / f"r{i}.json").write_text(json.dumps(record))
    markdown = (build_report([str(tmp_path)], tmp_path / "rep") / "report.md").read_text()
    paired = table_rows(markdown, "Paired comparisons (interleaved passes)")
    assert sorted(row[8] for row in paired) == ["bfloat16", "float32"]
    [row] = table_rows(markdown, "Failed configurations")
    assert row[4] == "onnxruntime" and row[6] == "float16"
    assert "The 3 measured records of the 3 read (1 of them failed)" in markdown
