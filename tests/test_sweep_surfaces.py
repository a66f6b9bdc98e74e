"""Every surface of a sweep names one metric and one winner (issue 34 item 5), and `mbbench sweep --measure` works
end to end on tiny shapes: record, CSV, figure, terminal, report (issue 32)."""

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from mbbench import measured_sweep as ms
from mbbench.cli import cli
from mbbench.commands.explore import mfu_above_peak
from mbbench.records import Record
from mbbench.report.render import build_report
from mbbench.report.sweeps import SweepView, header_lines, table
from mbbench.sweep import ranked_frame
from mbbench.results import Store

from test_measured_sweep import TINY, FakeMachine

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("rank_by, column", [("throughput", "scaled_tokens_per_second"),
                                             ("utilisation", "basket_score"), ("tokens", "basket_tokens_per_second")])
def test_the_predicted_sweep_has_one_winner_and_names_its_metric_and_workload(tmp_path, rank_by, column):
    """The reported case: the terminal ranked 768/2048 first, its heatmap drew another metric (832/2560 best) and
    the report's heatmap a third (704/2048). Now the terminal, the CSV and both heatmaps use the CSV's `ranked_by`."""
    out = tmp_path / "sweeps"
    result = invoke("sweep", "--hidden", "704:832:64", "--glu", "2048:2560:128", "--layers", "22", "--rank-by",
                    rank_by, "--out", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "sweep.csv")
    assert set(frame["ranked_by"]) == {column} and set(frame["tokens_per_pass"]) == {16384}
    assert set(frame["dtype"]) == {"bfloat16"}
    winner = frame.sort_values("rank").iloc[0]
    ranked = frame[frame["ranked"]]
    assert winner[column] == ranked[column].max()  # the CSV's rank 1 is the best of the metric it names
    table_rows = [line.split() for line in result.output.splitlines() if line.split()[:1] == ["1"]]
    assert table_rows and table_rows[0][1:3] == [str(winner["hidden"]), str(winner["glu"])]  # the terminal's rank 1
    assert "workload: 16,384 tokens per pass, bfloat16" in result.output
    shown, metric, best = ranked_frame(frame)
    assert metric == column and best == (winner["hidden"], winner["glu"])
    table = shown.pivot_table(index="glu", columns="hidden", values=metric, aggfunc="max")
    assert table.max().max() == table.loc[best[1], best[0]]  # the heatmap's brightest cell is the winner


def test_the_report_draws_the_predicted_sweep_by_its_own_ranking(tmp_path):
    invoke("sweep", "--hidden", "704:832:64", "--glu", "2048:2560:128", "--layers", "22", "--rank-by", "tokens",
           "--out", tmp_path / "sweeps")
    ms.measure(ms.resolve(TINY), Store(tmp_path), FakeMachine().hooks())
    md = (build_report([tmp_path], tmp_path / "report") / "report.md").read_text()
    winner = pd.read_csv(tmp_path / "sweeps" / "sweep.csv").sort_values("rank").iloc[0]
    assert "## Sweep (predicted): ranked by basket tokens per second" in md
    assert f"rank 1: hidden {winner['hidden']}, GLU {winner['glu']}" in md
    assert (tmp_path / "report" / "sweep_basket_tokens_per_second.png").stat().st_size > 1000
    assert not (tmp_path / "report" / "sweep_basket_score.png").exists()  # one heatmap: the ranking's metric


def test_the_report_shows_a_measured_sweep_with_its_ranking_ties_and_rank_correlation(tmp_path):
    record = ms.measure(ms.resolve(TINY), Store(tmp_path), FakeMachine().hooks()).record
    md = (build_report([tmp_path], tmp_path / "report") / "report.md").read_text()
    assert "## Measured sweep on " in md and "tokens/s at equal parameters (the ranking)" in md
    rows = [line for line in md.splitlines() if line.startswith("| 1 | ") or line.startswith("| 2 | ")]
    best = ms.ranked(record.payload)[0].shape
    assert rows[0].startswith(f"| 1 | {best.hidden} | {best.glu} | {best.layers} |")
    assert "Spearman rank correlation, predicted (CPU cost model, bench/cpu_cost.py) vs measured: 0.60 on the " \
        "ranking metric, 0.80 on tokens/s, over 4 shapes" in md  # the fake prediction swaps two shapes
    assert (tmp_path / "report" / "measured_sweep_1.png").stat().st_size > 1000
    assert "| cpu | modernbert-shapes |" in md  # in provenance, out of the throughput tables
    assert "## cpu" not in md


def test_sweep_measure_end_to_end_on_tiny_shapes(tmp_path):
    """Real models, kernels and cost model on tiny widths: a record, a CSV with every shape's measured tokens/s,
    interval, prediction and MFU, a figure, and the rank correlation printed (its value depends on the machine)."""
    out = tmp_path / "out"
    args = ["sweep", "--measure", "--device", "cpu", "--hidden", "64,128", "--glu", "128,256", "--layers", "1",
            "--head-dim", "32", "--tokens", "128", "--rounds", "2", "--block", "2", "--threads", "1",
            "--elementwise", "eager", "--out", out]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    [path] = out.rglob("*.json")
    record = Record.from_json(json.loads(path.read_text()))
    assert record.payload.complete and len(record.payload.candidates) == 4 and record.identity.elementwise == "eager"
    frame = pd.read_csv(path.with_suffix(".csv"))
    assert len(frame) == 4 and set(frame["ranked_by"]) == {"scaled_tokens_per_second"}
    for column in ("tokens_per_second", "tokens_per_second_low", "tokens_per_second_high",
                   "predicted_tokens_per_second", "mfu"):
        assert frame[column].notna().all() and (frame[column] > 0).all(), column
    assert set(frame["elementwise_source"]) == {"pinned"} and set(frame["gemm_source"]) <= {"measured now", "cache"}
    assert path.with_suffix(".png").stat().st_size > 1000
    assert "Spearman rank correlation, predicted (CPU cost model, bench/cpu_cost.py)" in result.output
    assert "ranked by tokens/s at equal parameters" in result.output and "128 tokens per pass" in result.output
    again = invoke(*args)
    assert again.exit_code == 0 and "0 shapes measured now, 4 kept from the earlier run" in again.output


@pytest.mark.parametrize("args, message", [
    (["--rounds", "3"], "--rounds: needs --measure"), (["--device", "cpu", "--seed", "1"], "--device, --seed: needs"),
    (["--measure", "--gpus", "T4"], "--gpus: the predicted sweep only"),
    (["--measure", "--rank-by", "utilisation"], "a measured sweep ranks by throughput or tokens"),
    (["--measure", "--block", "0"], "--block"), (["--measure", "--gemm", "blas"], "--gemm"),
    (["--measure", "--docs", "3"], "--docs 3 counts a suite's documents: give --suite too")])
def test_sweep_options_that_do_not_apply_are_refused(tmp_path, args, message):
    result = invoke("sweep", "--hidden", "64", "--glu", "128", "--layers", "1", "--head-dim", "32", *args,
                    "--out", tmp_path)
    assert result.exit_code == 2 and message in result.output, result.output


def test_the_terminal_says_how_loose_its_ties_are_which_speed_it_compares_and_when_mfu_passes_the_peak():
    """The fresh-user trial: ties shown '1=' after ranks 3 and 5 with nothing saying 3 rounds cover 75%; a
    predicted / measured that did not divide the measured number printed beside it; an MFU of 274% unremarked."""
    record = Record.from_json(json.loads((Path(__file__).parent / "fixtures" / "measured_sweep" / "record.json")
                                         .read_text()))
    assert record.payload.rounds == 3
    lines = header_lines(SweepView.of_record(record))
    assert "the 75.0% interval of its paired ratio" in lines[2] and "--rounds 6 for 95%" in lines[2]
    six = replace(record, payload=replace(record.payload, rounds=6))
    assert "96.9% interval" in header_lines(SweepView.of_record(six))[2] and "loose" not in \
        header_lines(SweepView.of_record(six))[2]
    for row, shown in zip(ms.ranked(record.payload), table(SweepView.of_record(record))):
        assert shown["predicted / anchored"] == f"{row.shape.predicted_tokens_per_second / row.anchored:.2f}"
        assert float(shown["tokens/s anchored"].replace(",", "")) == pytest.approx(row.anchored, rel=0.01)
    assert mfu_above_peak(record.payload) == ""
    first, *rest = record.payload.candidates
    hot = replace(record.payload, candidates=[replace(first, mfu=2.741), *rest])
    assert mfu_above_peak(hot) == f"{ms.label(first)} 2.74"
