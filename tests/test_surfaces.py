"""Issue 27: the terminal, the record and the report tell one story.

Each test keeps a reported input: the headline cut at 80 columns, a GPU missing from the basket figure,
two answers for one CPU claim, an "ok" prediction that would not fit, predictions without their error,
two medians, silent long runs, and a report a person could not publish.
"""

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from mbbench import results
from mbbench.cli import cli
from mbbench.commands.console import print_table, summary_row
from mbbench.plan import RunConfig, resolve
from mbbench.records import Prediction, Record
from mbbench.report import page, render, selection, tables
from mbbench.report.basket import basket_bars
from mbbench.estimate import LONG_RUN_S, from_first_batch

ROOT = Path(__file__).parent.parent
TINY = ["--tiny", "--device", "cpu", "--docs", "4", "--runs", "2"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def at_80_columns(rows: list[dict]) -> str:
    console = Console(width=80, file=io.StringIO(), highlight=False, color_system=None)
    print_table(rows, console=console)
    return console.file.getvalue()


def produced(tmp_path, *args) -> list[Record]:
    result = invoke(*args, "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    return results.read_records([tmp_path])


def test_every_commands_headline_is_whole_at_80_columns(tmp_path):
    run = produced(tmp_path / "run", "run", *TINY, "--model", "modernbert-base", "--model", "hf-modernbert-base")
    compared = produced(tmp_path / "cmp", "compare", *TINY, "--model", "modernbert-base", "--model",
                        "hf-modernbert-base")
    predicted = produced(tmp_path / "pred", "predict", "--gpu", "h100", "--gpu", "t4", "--suite", "short-fixed")
    searched = produced(tmp_path / "mb", "max-batch", "--tiny", "--device", "cpu", "--suite", "short-fixed",
                        "--emulate-oom-above", "4096", "--max-trials", "3")
    for records in (run, compared, predicted, searched):
        rows = [summary_row(r, str(r.source_path)) for r in records]
        text = at_80_columns(rows)
        assert max(len(line) for line in text.splitlines()) <= 80
        for record, row in zip(records, rows):
            headline = row.get("tokens_per_second") or row.get("ratio") or str(row.get("max_batch"))
            assert headline and headline in text, (headline, text)  # whole, never cut with an ellipsis
            assert record.status in text and "…" not in text


def test_compare_prints_the_busy_warning_and_each_models_tokens_per_second(tmp_path):
    [committed] = sorted((ROOT / "results" / "cpu").glob("*__comparison__*.json"))
    data = json.loads(committed.read_text())
    data["payload"]["paired"]["load_warning"] = "machine was busy: the reported case"
    record = Record.from_json(data)
    from mbbench.commands.console import warnings_of, what_ran
    assert "machine was busy: the reported case" in warnings_of(record)
    [line] = what_ran(record)
    for side in data["payload"]["paired"]["models"].values():
        assert f"{side['tokens_per_second_stats']['median']:,.0f}" in line
    assert "real tokens only" in line and "2 threads" in line


def test_predict_over_its_max_batch_is_not_ok_and_every_prediction_has_an_error_band(tmp_path):
    [record] = produced(tmp_path, "predict", "--gpu", "h100", "--suite", "long-variable", "--batch-size", "100000")
    assert record.status == "would-not-fit" and "would run out of memory" in record.reason
    assert record.payload.tokens_per_second > 0  # kept, as predicted
    committed = [r for r in results.read_records([ROOT / "results"]) if isinstance(r.payload, Prediction)
                 and r.migrated_from != 1]
    assert committed and all(r.payload.error_band and r.payload.error_band.low < r.payload.error_band.high
                             for r in committed)


def test_the_paper_protocol_times_each_model_at_the_papers_batch(tmp_path):
    [record] = produced(tmp_path, "predict", "--model", "deberta-v3-base", "--protocol", "paper", "--gpu", "4090",
                        "--suite", "short-fixed")
    assert record.identity.batch_size == 224 and record.status == "ok"  # the paper's 224 fits (max 226)
    plan = resolve(RunConfig("roberta-large", "short-fixed", protocol="paper", device="cpu", docs=2))
    assert plan.batch_size == 396
    assert resolve(RunConfig("roberta-large", "short-fixed", device="cpu", docs=2)).batch_size == 512  # rigorous


def test_error_bands_come_from_validation_of_the_gpu_and_stack():
    from mbbench.bands import error_band
    paper = error_band("RTX4090", "float32")
    h100 = error_band("H100-SXM", "bfloat16")
    assert "paper-4090-lomo" in paper.basis and paper.low < 1 < paper.high
    assert "Hopper TensorRT rows" in h100.basis and h100.low < 1 < h100.high  # centred: Hopper corrected in the model
    assert "Ampere TensorRT rows" in error_band("RTX3090", "bfloat16").basis
    assert error_band("B200", "bfloat16").thin
    # the A100 80GB's own rows are three BERT-large rows at 384 tokens: one model, so its band is composed
    assert "Ampere TensorRT rows" in error_band("A100-SXM4-80GB", "bfloat16").basis


@pytest.mark.parametrize("gpu", ["t4", "a10", "l4", "3090", "4090", "a100", "a100-80gb", "a100-pcie", "a100-pcie-80gb",
                                 "h100", "h100-pcie", "h200", "l40s", "rtx6000ada", "b200", "a30"])
def test_every_printed_prediction_lies_inside_its_band(tmp_path, gpu):
    """predict on every basket GPU (its default dtype and fp32): the terminal's `likely` range, the record's band and
    the report cell all contain the point, or say the band is too thin."""
    from mbbench.report.basket import whisker
    from mbbench.report.selection import row_of
    from mbbench.report.tables import predicted_band

    for dtype in ("auto", "float32"):
        args = ["predict", "--model", "bert-base", "--suite", "short-fixed", "--docs", "512", "--gpu", gpu,
                "--out", tmp_path / dtype] + ([] if dtype == "auto" else ["--dtype", dtype])
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        [record] = results.read_records([tmp_path / dtype])
        payload, flat = record.payload, row_of(record)
        cell = predicted_band(flat, "tps")
        if payload.error_band.thin:
            assert "too thin" in result.output and "band too thin" in cell
            assert whisker(flat, payload.tokens_per_second) == (payload.tokens_per_second,) * 2
            continue
        low, high = payload.tokens_per_second_range
        assert low <= payload.tokens_per_second <= high
        shown = [float(x) for x in re.findall(r"[\d.]+", cell.replace(",", ""))]
        assert shown[0] <= payload.tokens_per_second / 1000 <= shown[1], cell
        w_low, w_high = whisker(flat, payload.tokens_per_second)
        assert w_low <= payload.tokens_per_second <= w_high


def test_the_4090_at_the_default_protocol_points_at_the_paper_protocol(tmp_path):
    result = invoke("predict", "--gpu", "4090", "--suite", "short-fixed", "--out", tmp_path)
    assert result.exit_code == 0 and "--protocol paper" in result.output


def test_one_median_headline_equals_the_median_of_per_pass_rates(tmp_path):
    [record] = produced(tmp_path, "run", *TINY)  # two passes: tokens / median time would differ
    payload = record.payload
    assert payload.tokens_per_second == payload.tokens_per_second_stats.median


def test_docs_beyond_the_suite_are_said_and_long_runs_are_estimated_first():
    plan = resolve(RunConfig("modernbert-base", "short-variable", device="cpu", docs=100000, tiny=True))
    assert any("has 8192 documents; using all of them" in n for n in plan.notes)
    passes, warmup = plan.config.passes, plan.warmup_batches
    assert from_first_batch(30.0, 16, passes, warmup).line().startswith("warning: estimated")  # 30 s x 16 x 11
    assert not from_first_batch(LONG_RUN_S / 1000, 1, passes, warmup).line().startswith("warning")


def test_plurals():
    from mbbench.formatting import plural
    assert [plural(1, "pass"), plural(2, "pass"), plural(1, "batch"), plural(3, "batch")] == \
        ["1 pass", "2 passes", "1 batch", "3 batches"]


# ------------------------------------------------------------------------------------------------ the report

@pytest.fixture(scope="module")
def committed_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    render.build_report([str(ROOT / "results")], out)
    return out


def test_the_basket_figure_has_a_bar_for_every_gpu_with_records():
    rows = selection.label_variants(selection.merge([selection.row_of(r)
                                                      for r in results.read_records([ROOT / "results"])])[0])
    gpus = {r.gpu for r in rows if r.gpu != "cpu" and r.registry_model == "modernbert-base" and r.headline}
    assert {"RTX4090", "H100-SXM", "T4"} <= gpus
    assert {gpu for gpu, _, _ in basket_bars(rows, "modernbert-base")} == gpus


def test_speedup_and_paired_tables_agree_and_no_cell_is_superseded(committed_report):
    md = (committed_report / "report.md").read_text()
    speedup = md.split("## Speedup against")[1].split("\n## ")[0]
    paired = md.split("## Paired comparisons")[1].split("\n## ")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in paired.splitlines() if line.startswith("| cpu")]
    direct = [cells for cells in rows if cells[2:4] == ["modernbert-base", "hf-modernbert-base"]]
    assert direct
    for cells in direct:
        ratio, (interval, label) = cells[4], cells[5].replace("–", ", ").split(" (", 1)
        assert f"{ratio} [{interval}] ({label}" in speedup  # the same interval, with the same confidence
    # a comparison against our model as baseline fills our row with its inverse (interval inverted)
    inverse = [cells for cells in rows if cells[2:4] == ["hf-modernbert-base", "modernbert-base"]
               and cells[1] in ("short-fixed", "short-variable", "long-fixed", "long-variable")]  # its columns
    shown = [float(cell.split("x")[0]) for line in speedup.splitlines() if line.startswith("| cpu")
             for cell in line.split("|")[3:] if "CI)" in cell]
    for cells in inverse:  # the table's values are rounded: the inverse of the rounded median, within 1%
        assert any(abs(value * float(cells[4].rstrip("x")) - 1) < 0.01 for value in shown), (cells, shown)


def test_a_superseded_measurement_leaves_the_tables_and_stays_in_provenance(tmp_path):
    [comparison] = sorted((ROOT / "results" / "cpu").glob("*__comparison__*.json"))
    data = json.loads(comparison.read_text())
    older = json.loads(comparison.read_text())
    older["created_at"] = "2026-01-01T00:00:00+00:00"
    older["identity"]["runs"] = 3  # measured before with fewer rounds: re-measured since
    for side in older["payload"]["paired"]["models"].values():
        side["tokens_per_second_stats"]["median"] = 474.0
    (tmp_path / "new.json").write_text(json.dumps(data))
    (tmp_path / "old.json").write_text(json.dumps(older))
    md = (render.build_report([str(tmp_path)], tmp_path / "rep") / "report.md").read_text()
    tables = md.split("## Provenance")[0]
    assert "0.474" not in tables and "superseded by the comparison of" in md


def test_bold_ranks_like_with_like_and_the_newest_repeat_wins():
    def rec(model, value, protocol, created, kind="measured"):  # a schema-1 file's dict, upgraded on read
        return selection.row_of(Record.from_json({
            "schema_version": 1, "model": model, "suite": "short-fixed", "kind": kind, "protocol": protocol,
            "dtype": "float32", "tokens_per_second": value, "created_at": created, "status": "ok", "gpu_dir": "cpu",
            "gpu": {"kind": "cpu", "name": "cpu"}}))
    header, rows = tables.paper_table([rec("a", 100.0, "paper", "1"), rec("b", 200.0, "rigorous", "1"),
                                       rec("c", 50.0, "paper", "1")])
    marked = {row[0]: getattr(row[2], "style", None) for row in rows}
    assert marked == {"a": "b", "b": None, "c": None}  # b is alone in its protocol: nothing to rank against
    text, _, _ = tables.cell([rec("a", 1000.0, "paper", "2026-01-01"), rec("a", 2000.0, "paper", "2026-02-01")],
                             "a", "tps", "short-fixed")
    assert text.startswith("2.00")


def test_markdown_and_html_escape_user_names():
    assert page.markdown_text("**star**|x") == r"\*\*star\*\*\|x"
    assert page.markdown_text(tables.Emphasis("1.0", "b")) == "**1.0**"
    assert "<b>" not in page.html_table(["suite"], [["**star**"]])


def test_report_says_when_and_with_what_it_was_made(committed_report):
    from mbbench import __version__
    from mbbench.hardware.perfmodel import MODEL_VERSION
    md = (committed_report / "report.md").read_text()
    assert f"by mbbench {__version__} (commit " in md and f"performance model {MODEL_VERSION}" in md
    assert "Generated 20" in md and "Records: predicted, paper protocol, float32" in md
    assert "k tok/s" in md.split("## Provenance")[1]  # units in the provenance too


def test_report_of_a_model_without_records_is_refused(tmp_path):
    result = invoke("report", "--model", "no-such-model", "--out", tmp_path / "rep")
    assert result.exit_code == 2 and "no records of model 'no-such-model'" in result.output
    assert not (tmp_path / "rep").exists()


def test_list_backends_refuses_cuda_without_a_cuda_gpu():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke("list", "backends", "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA GPU" in result.output


def test_matrix_dry_run_lists_every_gpu_type_and_t4_runs_fp16(tmp_path):
    result = invoke("matrix", "--file", ROOT / "docs" / "examples" / "basket-matrix.toml", "--dry-run",
                    "--out", tmp_path)
    assert result.exit_code == 0, result.output
    t4 = [line for line in result.output.splitlines() if " T4 " in line]
    assert t4 and all("float16" in line and "bfloat16" not in line for line in t4)


def test_sweep_ranks_throughput_at_equal_parameters_usual_shapes_first_and_keeps_old_csvs(tmp_path):
    args = ["sweep", "--hidden", "768:896:64", "--glu", "1280:2560:128", "--params", "149M±5%", "--out", tmp_path]
    first, second = invoke(*args), invoke(*args)
    assert first.exit_code == 0 and "ranked by basket tokens/s at equal parameters" in first.output
    assert (tmp_path / "sweep.csv").is_file() and (tmp_path / "sweep-2.csv").is_file()
    import pandas as pd
    frame = pd.read_csv(tmp_path / "sweep.csv").sort_values("rank")
    usual = frame["usual"].tolist()
    assert usual == sorted(usual, reverse=True)  # every unusual shape after every usual one
    top = frame.iloc[0]
    assert top["glu"] // 2 >= top["hidden"] and top["aligned_64"]
    ranked = frame[frame["usual"]]["scaled_tokens_per_second"].tolist()
    assert ranked == sorted(ranked, reverse=True)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (CI installs it)")
def test_the_example_report_has_its_screenshot_beside_it():
    example = ROOT / "reports" / "example"
    assert (example / "screenshot.png").stat().st_size > 20000 and (example / "index.html").is_file()
