"""`mbbench latency` and `mbbench serve` (issue 28) end to end on tiny models: records, identity, resume, input
errors, and the report's sections. Nothing here judges a time: only orderings, counts and what is recorded."""

import json
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mbbench import results
from mbbench.cli import cli
from mbbench.plan import RunConfig, resolve
from mbbench.commands.console import load_warning, summary_row
from mbbench.records import LATER_FIELDS, Identity, KeptPoints, KeptRates, Latency, MachineLoad, Serving
from mbbench.report.render import build_report
from mbbench.report.selection import merge, row_of
from mbbench.report.serving import figure_labels, latency_rows, serving_rows, slo_items
from mbbench.serve import ServeSettings

TINY = ["--tiny", "--device", "cpu"]
LATENCY = ["latency", *TINY, "--batch-size", "1", "--batch-size", "3", "--requests", "4", "--min-seconds", "0",
           "--warmup", "2"]
# a virtual clock replays arrivals without waiting for them (forward times are still measured)
SERVE = ["serve", *TINY, "--rate", "5", "--rate", "40", "--duration", "0.2", "--requests", "4", "--warmup", "2",
         "--clock", "virtual", "--drain-limit", "1000"]  # every request served, however busy the machine


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def records_in(out: Path) -> list:
    return results.read_records([str(out)])


def test_latency_writes_one_record_with_ordered_percentiles_and_the_cold_start_apart(tmp_path):
    done = invoke(*LATENCY, "--out", tmp_path)
    assert done.exit_code == 0, done.output
    [record] = records_in(tmp_path)
    payload = record.payload
    assert isinstance(payload, Latency) and record.identity.measurement == "latency"
    setup = payload.setup
    assert payload.batch_sizes == [1, 3] and setup.layout == "packed" and setup.clock == "real"
    assert setup.load_seconds > 0 and setup.first_call_seconds > 0 and payload.warmup_requests == 2
    for point in payload.points:
        stats = point.latency_seconds
        assert stats.count == point.requests >= 4 and point.cold_seconds > 0
        assert 0 < stats.p50 <= stats.p90 <= stats.p95 <= stats.p99 <= stats.max
        assert point.tokens_per_second > 0 and point.requests_per_second > 0
    assert dict(record.identity.traffic)["batch_sizes"] == (1, 3) and record.identity.batch_size is None
    # the table under the summary has each batch size's numbers whole
    assert "p99 ms" in done.output and "cold start: load" in done.output


def test_latency_resumes_by_identity_and_its_settings_are_part_of_it(tmp_path):
    assert invoke(*LATENCY, "--out", tmp_path, "--quiet").exit_code == 0
    again = invoke(*LATENCY, "--out", tmp_path)
    assert again.exit_code == 0 and "skip" in again.output and len(records_in(tmp_path)) == 1
    other = invoke(*LATENCY, "--requests", "5", "--out", tmp_path, "--quiet")
    assert other.exit_code == 0 and len(records_in(tmp_path)) == 2  # another setting, another record
    forced = invoke(*LATENCY, "--out", tmp_path, "--force", "--quiet")
    assert forced.exit_code == 0 and "skip" not in forced.output


def test_serve_writes_a_curve_and_the_highest_rate_meeting_the_slo(tmp_path):
    done = invoke(*SERVE, "--slo", "p99=1000s", "--search-steps", "1", "--out", tmp_path)
    assert done.exit_code == 0, done.output
    [record] = records_in(tmp_path)
    payload = record.payload
    assert isinstance(payload, Serving) and payload.setup.layout == "packed" and payload.setup.clock == "virtual"
    assert payload.max_batch_tokens == 16384 and payload.max_wait_seconds == 0.0 and not payload.sort_by_length
    assert sorted(payload.rates) == [5.0, 40.0]  # both ends met: the search's runs are the curve's
    for run in payload.runs:
        total = run.total_seconds
        assert run.served == run.requests >= 4 and run.unserved == 0
        assert total.p50 <= total.p90 <= total.p99 and run.achieved_rate > 0
        assert run.batch_tokens.max <= 16384
    assert payload.slo.best_rate == 40.0 and payload.slo.best_achieved_rate > 0
    assert payload.slo.best_tokens_per_second > 0 and "highest rate meeting it 40" in done.output
    traffic = dict(record.identity.traffic)
    assert traffic["slo"] == "p99=1000s" and traffic["rates"] == (5.0, 40.0) and traffic["clock"] == "virtual"


def test_serve_with_a_target_nothing_meets_says_so_and_bisects_nothing(tmp_path):
    done = invoke(*SERVE, "--slo", "p99=1us", "--out", tmp_path)
    assert done.exit_code == 0, done.output
    [record] = records_in(tmp_path)
    assert record.payload.slo.best_rate is None and len(record.payload.slo.steps) == 1
    assert "no rate tried meets it" in done.output


def test_serve_pads_a_padded_model_sorted_when_asked_and_runs_on_the_real_clock(tmp_path):
    done = invoke("serve", *TINY, "--model", "bert-base", "--rate", "20", "--duration", "0.2", "--requests", "3",
                  "--warmup", "1", "--sort-by-length", "--max-batch-tokens", "2048", "--drain-limit", "1000",
                  "--out", tmp_path)
    assert done.exit_code == 0, done.output
    [record] = records_in(tmp_path)
    payload = record.payload
    assert payload.setup.layout == "padded" and payload.sort_by_length and payload.setup.clock == "real"
    assert payload.runs[0].batch_tokens.max <= 2048 and payload.runs[0].padding_efficiency <= 1.0
    assert "sorted by length" in done.output


@pytest.mark.parametrize("args, message", [
    (["serve", *TINY, "--rate", "2", "--slo", "p99"], "--slo"),
    (["serve", *TINY, "--rate", "2", "--slo", "p100=1s"], "--slo"),
    (["serve", *TINY, "--rate", "0"], "--rate"),
    (["serve", *TINY, "--rate", "-1"], "--rate"),
    (["serve", *TINY, "--rate", "nan"], "--rate"),
    (["serve", *TINY, "--rate", "inf"], "--rate"),
    (["serve", *TINY, "--rate", "2", "--rate", "2"], "--rate given twice"),
    (["serve", *TINY, "--rate", "2", "--slo", "p99=2s"], "at least two rates"),
    (["serve", *TINY, "--rate", "2", "--duration", "0"], "--duration"),
    (["serve", *TINY, "--rate", "2", "--duration", "nan"], "--duration"),
    (["serve", *TINY, "--rate", "2", "--requests", "0"], "--requests"),
    (["serve", *TINY, "--rate", "2", "--max-wait", "-1"], "--max-wait"),
    (["serve", *TINY, "--rate", "2", "--max-batch-requests", "0"], "--max-batch-requests"),
    (["serve", *TINY, "--rate", "2", "--max-batch-tokens", "0"], "--max-batch-tokens"),
    (["serve", *TINY, "--rate", "2", "--max-batch-tokens", "64"], "exceeds the batch token budget"),
    (["serve", *TINY, "--rate", "2", "--model", "bert-base", "--max-batch-tokens", "64"], "exceeds the batch token"),
    (["serve", *TINY, "--rate", "2", "--warmup", "-1"], "--warmup"),
    (["serve", *TINY, "--rate", "2", "--search-steps", "-1"], "--search-steps"),
    (["serve", *TINY, "--rate", "2", "--drain-limit", "-1"], "--drain-limit"),
    (["latency", *TINY, "--batch-size", "0"], "--batch-size"),
    (["latency", *TINY, "--batch-size", "2", "--batch-size", "2"], "--batch-size given twice"),
    (["latency", *TINY, "--requests", "0"], "--requests"),
    (["latency", *TINY, "--min-seconds", "nan"], "--min-seconds"),
    (["latency", *TINY, "--min-seconds", "-1"], "--min-seconds"),
    (["latency", *TINY, "--warmup", "-1"], "--warmup"),
    (["latency", *TINY, "--model", "nope"], "unknown model"),
])
def test_bad_inputs_are_one_line_exit_2_and_write_nothing(tmp_path, args, message):
    done = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out")])
    assert done.exit_code == 2, done.output
    lines = [line for line in done.output.splitlines() if line.startswith("mbbench: error:")]
    assert len(lines) == 1 and message in lines[0], done.output
    assert not (tmp_path / "out").exists()


def test_traffic_changes_the_key_and_older_records_keep_theirs():
    config = RunConfig("modernbert-base", "short-variable", device="cpu", tiny=True)
    keys = {resolve(config, "serving", traffic=ServeSettings((2.0, 4.0), **change).traffic()).identity.key()
            for change in ({}, {"duration_s": 20.0}, {"max_wait_s": 0.005}, {"sort_by_length": True}, {"seed": 1},
                           {"max_batch_tokens": 4096}, {"clock": "virtual"})}
    assert len(keys) == 7
    assert LATER_FIELDS["traffic"] == ()
    identity = resolve(config, "throughput").identity
    older = {k: v for k, v in asdict(identity).items() if k != "traffic"}  # a record written before the field
    assert Identity.from_dict(json.loads(json.dumps(older))).key() == identity.key()
    served = resolve(config, "serving", traffic=ServeSettings((2.0, 4.0)).traffic()).identity
    assert Identity.from_dict(json.loads(json.dumps(asdict(served)))) == served  # lists come back as tuples


def test_a_plan_refuses_an_unknown_measurement():
    with pytest.raises(ValueError, match="measurement"):
        resolve(RunConfig("modernbert-base", "short-variable", device="cpu", tiny=True), "latencies")


def test_report_has_latency_and_serving_sections_with_their_figures(tmp_path):
    out = tmp_path / "runs"
    assert invoke(*LATENCY, "--out", out, "--quiet").exit_code == 0
    assert invoke(*SERVE, "--slo", "p99=1000s", "--search-steps", "0", "--out", out, "--quiet").exit_code == 0
    report = build_report([str(out)], tmp_path / "report", include_smoke=True)
    text = (report / "report.md").read_text()
    assert "## Latency per request" in text and "## Serving: latency against offered load" in text
    assert "modernbert-base-tiny" in text and "p99 ms" in text and "SLO" in text
    assert (report / "latency.png").is_file() and (report / "serving.png").is_file()
    assert "latency.png" in text and "serving.png" in text
    assert "## cpu" not in text  # latency and serving records are not throughput: no paper-table row


def test_a_configuration_that_raises_is_a_failure_record_and_ctrl_c_exits_130(tmp_path, monkeypatch):
    import mbbench.latency

    def broken(plan, settings, progress=None, earlier=None):
        raise RuntimeError("the model fell over")

    monkeypatch.setattr(mbbench.latency, "measure", broken)
    failed = invoke(*LATENCY, "--out", tmp_path / "failed", "--quiet")
    [record] = records_in(tmp_path / "failed")
    assert failed.exit_code == 1 and record.status == "failed" and "fell over" in record.reason

    def interrupted(plan, settings, progress=None, earlier=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(mbbench.latency, "measure", interrupted)
    stopped = invoke(*LATENCY, "--out", tmp_path / "stopped", "--quiet")
    assert stopped.exit_code == 130 and "interrupted: 0 record(s) written" in stopped.output
    assert records_in(tmp_path / "stopped") == []


def test_ctrl_c_keeps_the_batch_sizes_that_finished_and_a_rerun_measures_only_the_rest(tmp_path, monkeypatch):
    """The fresh-user trial: Ctrl-C in batch size 2 of `latency` after batch size 1 had finished (728 requests)
    wrote nothing. Now the finished batch sizes are a partial record, and the same command measures the rest."""
    import mbbench.latency

    measured, real = [], mbbench.latency.measure_batch_size

    def stop_at_the_second(plan, model, settings, batch_size, on_request=None):
        if measured:
            raise KeyboardInterrupt
        measured.append(batch_size)
        return real(plan, model, settings, batch_size, on_request)

    monkeypatch.setattr(mbbench.latency, "measure_batch_size", stop_at_the_second)
    stopped = invoke(*LATENCY, "--out", tmp_path, "--quiet")
    assert stopped.exit_code == 130 and "interrupted: 1 record(s) written" in stopped.output
    assert "(partial: the same command measures the rest)" in stopped.output
    [partial] = records_in(tmp_path)
    assert partial.payload.batch_sizes == [1] and partial.payload.planned_batch_sizes == [1, 3]
    assert not partial.payload.complete and partial.status == "ok"
    kept = partial.payload.point(1)

    def count(plan, model, settings, batch_size, on_request=None):
        measured.append(batch_size)
        return real(plan, model, settings, batch_size, on_request)

    monkeypatch.setattr(mbbench.latency, "measure_batch_size", count)
    again = invoke(*LATENCY, "--out", tmp_path)
    assert again.exit_code == 0, again.output
    assert measured == [1, 3] and "kept from the interrupted run: batch size 1" in again.output
    [whole] = records_in(tmp_path)
    assert whole.payload.complete and whole.payload.batch_sizes == [1, 3] and whole.payload.point(1) == kept
    # the second trial: the whole record's setup is the resuming run's; the kept point says which run measured it
    assert whole.payload.kept == [KeptPoints([1], partial.created_at, partial.payload.setup.load)]
    assert "skip" in invoke(*LATENCY, "--out", tmp_path).output  # now whole: skipped like any record

    busy = MachineLoad(None, None, "machine was busy: 2 other processes")
    record = replace(partial, payload=replace(partial.payload, setup=replace(partial.payload.setup, load=busy)))
    assert "partial: 1 of 2 batch sizes" in latency_rows([row_of(record)])[0][1]
    kept_busy = replace(whole, payload=replace(whole.payload, kept=[KeptPoints([1], "2026-01-02T03:04:05+00:00",
                                                                               busy)]))
    assert load_warning(kept_busy).endswith("batch size 1 (kept from the run of 2026-01-02T03:04:05+00:00): "
                                            "machine was busy: 2 other processes")
    first, second = latency_rows([row_of(kept_busy)])
    assert (first[-2:], first[-3]) == (["2026-01-02", "busy"], "an earlier run's")
    assert second[-2] == whole.created_at[:10]


def serve_runs(monkeypatch, stop_at: int | None, overloaded: float | None = None) -> list[float]:
    """Count the rates `serve` runs (the list returned); Ctrl-C in the run numbered `stop_at` (0 first, None: never);
    the run at `overloaded` requests/s left with a request unserved, so it misses any SLO whatever the machine."""
    import mbbench.serve
    from mbbench.bench.serving import run_load as real

    measured = []

    def counted(rate, *args, **kwargs):
        if len(measured) == stop_at:
            raise KeyboardInterrupt
        measured.append(rate)
        run = real(rate, *args, **kwargs)
        return replace(run, unserved=1) if rate == overloaded else run

    monkeypatch.setattr(mbbench.serve, "run_load", counted)
    return measured


def test_ctrl_c_in_serve_keeps_the_rates_that_finished_and_a_rerun_runs_only_the_rest(tmp_path, monkeypatch):
    """Ctrl-C in `serve` lost every rate already run. Now they are a partial record (which rates were planned,
    which ran) and the same command runs only the rest, keeping the earlier run as it was measured."""
    measured = serve_runs(monkeypatch, stop_at=1)
    stopped = invoke(*SERVE, "--out", tmp_path, "--quiet")
    assert stopped.exit_code == 130 and "interrupted: 1 record(s) written" in stopped.output
    assert "(partial: the same command measures the rest)" in stopped.output and "Traceback" not in stopped.output
    [partial] = records_in(tmp_path)
    assert partial.payload.rates == [5.0] and partial.payload.planned_rates == [5.0, 40.0]
    assert not partial.payload.complete and partial.status == "ok" and "(partial)" in summary_row(partial)["status"]
    kept = partial.payload.run(5.0)

    measured = serve_runs(monkeypatch, stop_at=None)
    again = invoke(*SERVE, "--out", tmp_path)
    assert again.exit_code == 0, again.output
    assert measured == [40.0] and "kept from the interrupted run: rate 5/s" in again.output
    [whole] = records_in(tmp_path)
    assert whole.payload.complete and whole.payload.rates == [5.0, 40.0] and whole.payload.run(5.0) == kept
    assert whole.payload.kept == [KeptRates([5.0], partial.created_at, partial.payload.setup.load)]
    assert "skip" in invoke(*SERVE, "--out", tmp_path).output and measured == [40.0]  # whole: skipped

    busy = MachineLoad(None, None, "machine was busy: 2 other processes")
    assert "(partial: 1 of 2 rates)" in serving_rows([row_of(partial)])[0][1]
    kept_busy = replace(whole, payload=replace(whole.payload, kept=[KeptRates([5.0], "2026-01-02T03:04:05+00:00",
                                                                              busy)]))
    assert load_warning(kept_busy).endswith("rate 5/s (kept from the run of 2026-01-02T03:04:05+00:00): "
                                            "machine was busy: 2 other processes")
    first, second = serving_rows([row_of(kept_busy)])  # ascending rate: 5/s was kept, 40/s is this run's
    assert first[-2:] == ["2026-01-02", "busy"] and second[-2] == whole.created_at[:10]


def test_a_forced_rerun_stopped_by_ctrl_c_keeps_the_complete_record_and_a_report_prefers_it(tmp_path, monkeypatch):
    """--force then Ctrl-C replaced a complete record by the partial one (and told the user the same command, still
    forced, would measure the rest). Now the complete record stays, the console says so; and a report given a
    complete record and a newer partial one of the same identity shows the complete one."""
    serve_runs(monkeypatch, stop_at=None)
    assert invoke(*SERVE, "--out", tmp_path, "--quiet").exit_code == 0
    [whole] = records_in(tmp_path)
    before = Path(whole.source_path).read_text()
    serve_runs(monkeypatch, stop_at=1)
    stopped = invoke(*SERVE, "--out", tmp_path, "--force", "--quiet")
    assert stopped.exit_code == 130 and "interrupted: 0 record(s) written" in stopped.output
    assert "a complete record is not replaced by an interrupted --force run" in stopped.output
    assert Path(whole.source_path).read_text() == before  # untouched

    newer_partial = replace(whole, created_at="2999-01-01T00:00:00+00:00",
                            payload=replace(whole.payload, runs=whole.payload.runs[:1]))
    assert not newer_partial.payload.complete
    kept, notes = merge([row_of(newer_partial), row_of(whole)])
    assert [row.record for row in kept] == [whole]
    assert notes == [f"modernbert-base-tiny / short-variable on cpu: kept the complete record of "
                     f"{whole.created_at} over a newer partial one, 2999-01-01T00:00:00+00:00"]


def test_ctrl_c_in_an_slo_search_keeps_its_steps_claims_no_answer_and_a_rerun_resumes_it(tmp_path, monkeypatch):
    """Ctrl-C in the SLO search's bisection: the rates run and the steps searched are kept, the search says it did
    not finish and claims no answer; the same command replays the steps from the kept runs and runs only the
    next one. 40/s is made to miss (a request unserved), 5/s meets a target of 1000 s: one step, at sqrt(5 x 40)."""
    slo = [*SERVE, "--slo", "p99=1000s", "--search-steps", "1", "--out", tmp_path]
    measured = serve_runs(monkeypatch, stop_at=2, overloaded=40.0)
    stopped = invoke(*slo)
    assert stopped.exit_code == 130 and "(partial: the same command measures the rest)" in stopped.output
    [partial] = records_in(tmp_path)
    search = partial.payload.slo
    assert measured == [5.0, 40.0] and partial.payload.rates == [5.0, 40.0] and not partial.payload.complete
    assert not search.finished and search.best_rate is None and "did not finish" in search.note
    assert [(s.rate, s.met) for s in search.steps] == [(5.0, True), (40.0, False)]
    assert search.steps[1].latency_seconds is None  # unserved: unbounded
    assert summary_row(partial)["slo_rate"] == "unfinished"
    assert "the search did not finish" in slo_items([row_of(partial)])[0]
    assert "the SLO search did not finish" in serving_rows([row_of(partial)])[0][1]

    measured = serve_runs(monkeypatch, stop_at=None, overloaded=40.0)
    again = invoke(*slo)
    assert again.exit_code == 0, again.output
    middle = (5.0 * 40.0) ** 0.5
    assert measured == [middle] and "kept from the interrupted run: rate 5/s, 40/s" in again.output
    [whole] = records_in(tmp_path)
    payload = whole.payload
    assert payload.complete and payload.slo.finished and payload.slo.best_rate == middle
    assert [(s.rate, s.met) for s in payload.slo.steps] == [(5.0, True), (40.0, False), (middle, True)]
    assert payload.rates == [5.0, 40.0, middle] and payload.run(5.0) == partial.payload.run(5.0)
    assert payload.kept == [KeptRates([5.0, 40.0], partial.created_at, partial.payload.setup.load)]
    assert "skip" in invoke(*slo).output and measured == [middle]


def test_percentiles_say_how_many_requests_they_rest_on_and_the_default_gives_p99_one(tmp_path):
    """Issue 34 item 16: p99 of 10 requests is their maximum: the console, the record and the report say so (the
    count beyond each percentile), and by default enough requests run for the percentiles printed."""
    from mbbench.records import samples_beyond
    from mbbench.latency import LatencySettings

    done = invoke(*LATENCY, "--batch-size", "2", "--out", tmp_path)  # 4 requests per batch size, min-seconds 0
    assert done.exit_code == 0, done.output
    [record] = records_in(tmp_path)
    for point in record.payload.points:
        assert point.requests == 4 and point.latency_seconds.beyond == {"p50": 2, "p90": 0, "p95": 0, "p99": 0}
    assert done.output.count("p90, p95, p99 of 4 requests: none beyond them, the largest; 100 put one beyond "
                             "p99") == 3 and "≈max" in done.output
    report = (build_report([str(tmp_path)], tmp_path / "rep", include_smoke=True) / "report.md").read_text()
    [row] = [line for line in report.split("## Latency per request")[1].splitlines() if "| 2 | 4 |" in line]
    assert row.count("≈max") == 2  # p90 and p99 (the report's two tail columns)
    defaults = (LatencySettings().min_requests, ServeSettings(rates=(1.0,)).min_requests)
    assert defaults == (100, 100) and samples_beyond(100, 99) == 1 and samples_beyond(10, 99) == 0


def test_the_cold_call_says_its_documents_and_served_runs_say_the_rate_their_arrivals_drew(tmp_path):
    """Issue 34 item 17: `latency` printed a cold call below the median without saying it drew other documents;
    `serve` printed "achieved 0.14/s" at 0.2/s offered with nothing unserved, which read as overload."""
    done = invoke(*LATENCY, "--out", tmp_path)
    [record] = records_in(tmp_path)
    assert all(point.cold_real_tokens > 0 for point in record.payload.points)
    assert "cold ms (tokens)" in done.output and "on request 0's documents" in done.output
    served = invoke("serve", *TINY, "--docs", "4", "--rate", "0.2", "--duration", "20", "--requests", "3",
                    "--seed", "5", "--warmup", "1", "--clock", "virtual", "--out", tmp_path / "serve")
    assert served.exit_code == 0, served.output
    [serving] = records_in(tmp_path / "serve")
    [run] = serving.payload.runs
    # this seed draws 3 arrivals, the last at 20.19 s: 0.149/s arrived, so about 0.14/s achieved, all served
    assert run.unserved == 0 and run.requests == 3 and round(run.arrived_rate, 3) == 0.149
    assert run.achieved_rate <= run.arrived_rate and "0.149" in served.output
    assert "all served" in served.output and "overloaded" not in served.output
    assert "arrived/s" in served.output and "not overload unless requests went unserved" in served.output


def test_a_figure_tells_apart_records_that_share_a_label():
    """Three serving records of one model and suite (say, other --rate lists) had three identical legend labels:
    a shared label now carries its record's date and time; a label of its own stays as it is."""
    rows = [SimpleNamespace(created_at=t) for t in ("2026-12-08T03:27:19+00:00", "2026-12-08T03:40:26+00:00")]
    assert figure_labels(rows, ["m / s (cpu)", "m / s (cpu)"]) == ["m / s (cpu), 2026-12-08 03:27",
                                                                   "m / s (cpu), 2026-12-08 03:40"]
    assert figure_labels(rows, ["a", "b"]) == ["a", "b"]
