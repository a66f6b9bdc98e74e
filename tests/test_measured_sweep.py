"""`mbbench sweep --measure` (issue 32): shapes measured interleaved in blocks with an anchor, resumable per
shape, ranked by one metric with ties inside the interval, Spearman's rho against the prediction, the CPU cost
model's sums. Fakes stand in for the forward and the clock: no test asserts a timing."""

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mbbench import measured_sweep as ms
from mbbench.bench import cpu_cost
from mbbench.bench.kernel_choice import KernelChoice
from mbbench.bench.kernel_store import KernelTimings
from mbbench.hardware.shape import Shape
from mbbench.records import MeasuredSweep, Record
from mbbench.results import Store

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "measured_sweep" / "record.json"
TINY = ms.SweepSettings(hidden=(64, 128), glu=(128, 256), layers=(1,), head_dim=32, tokens=96, rounds=3, block=2,
                        device="cpu", threads=1, gemm="torch", elementwise="eager")


class FakeMachine:
    """A forward that only logs its shape, a clock that returns each shape's seconds (parameters / 1e9, with a
    deterministic wobble per call), a prediction 10% optimistic with one pair of shapes swapped."""

    def __init__(self, interrupt_after: int | None = None):
        self.calls: list[str] = []  # every forward, in order
        self.built: list[str] = []
        self.running: str | None = None
        self.interrupt_after = interrupt_after

    def build(self, plan, shape) -> ms.Built:
        name = ms.label(shape)
        self.built.append(name)

        def forward(batch):
            if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
                raise KeyboardInterrupt
            self.calls.append(name)
            self.running = name

        return ms.Built(forward, KernelChoice("torch", "pinned", "--gemm torch"),
                        KernelChoice("eager", "pinned", "--elementwise eager"))

    def seconds(self, name: str, call: int) -> float:
        hidden, glu, layers = map(int, name.split("/"))
        return (hidden * 3 * hidden + hidden * glu * 1.5) * 1e-7 * (1 + 0.01 * ((call * 7) % 5))

    def timer(self, fn, device) -> float:
        fn()
        return self.seconds(self.running, len(self.calls))

    def predict(self, plan, shape, built) -> ms.Predicted:
        name = ms.label(shape)
        swapped = {"128/128/1": "64/256/1", "64/256/1": "128/128/1"}.get(name, name)
        return ms.Predicted(plan.workload.real_tokens / (self.seconds(swapped, 0) * 0.9), {"gemm": 1.0})

    def hooks(self) -> ms.Hooks:
        return ms.Hooks(self.build, self.predict, lambda plan: (1e12, "a fake peak"), self.timer)


def test_spearman_against_hand_worked_examples():
    # no ties: d = (0, 1, 1, 0), rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert ms.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties share their mean rank: y ranks (1, 2, 3.5, 5, 3.5); sum dx*dy = 8, sum dx^2 = 10, sum dy^2 = 9.5
    assert ms.average_ranks([5, 6, 7, 8, 7]) == [1, 2, 3.5, 5, 3.5]
    assert ms.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / (10 * 9.5) ** 0.5)
    assert ms.spearman([3, 2, 1], [10, 20, 30]) == pytest.approx(-1.0)
    assert ms.spearman([1, 2, 3], [7, 7, 7]) is None and ms.spearman([1], [2]) is None


def test_shapes_run_interleaved_in_blocks_that_all_hold_the_anchor(tmp_path):
    plan = ms.resolve(TINY)
    assert [ms.label(s) for s in plan.shapes] == ["64/128/1", "64/256/1", "128/128/1", "128/256/1"]
    assert ms.label(plan.anchor) == "64/256/1"  # the lower median by parameters
    machine = FakeMachine()
    outcome = ms.measure(plan, Store(tmp_path), machine.hooks())
    assert outcome.measured == 4 and outcome.kept == 0 and outcome.record.payload.complete
    # block 1: the anchor, 64/128, 128/128; block 2: the anchor, 128/256 (block = 2 shapes besides the anchor)
    assert machine.built == ["64/256/1", "64/128/1", "128/128/1", "64/256/1", "128/256/1"]
    assert len(machine.calls) == 12 + 8  # block 1: 3 warmups + 3 rounds x 3; block 2: 2 warmups + 3 rounds x 2
    timed = machine.calls[3:12]  # after each shape's warmup (its first call is the whole one-batch pass)
    rounds = [timed[i:i + 3] for i in range(0, 9, 3)]
    assert rounds == [["64/256/1", "64/128/1", "128/128/1"], ["64/128/1", "128/128/1", "64/256/1"],
                      ["128/128/1", "64/256/1", "64/128/1"]]
    payload = outcome.record.payload
    assert [len(block) for block in payload.anchor_rounds] == [3, 3] and payload.planned == 4
    anchor = next(c for c in payload.candidates if ms.label(c) == "64/256/1")
    assert anchor.anchor_ratios == [1.0, 1.0, 1.0] and anchor.block == 0
    late = next(c for c in payload.candidates if ms.label(c) == "128/256/1")
    assert late.block == 1 and late.interval.confidence == pytest.approx(0.75)  # [min, max] of 3 rounds


def test_an_interrupted_sweep_keeps_the_finished_block_and_a_rerun_measures_only_the_rest(tmp_path):
    plan, store = ms.resolve(TINY), Store(tmp_path)
    first = FakeMachine(interrupt_after=15)  # block 1 makes 12 calls; block 2 dies in its first round
    with pytest.raises(KeyboardInterrupt):
        ms.measure(plan, store, first.hooks())
    [path] = tmp_path.rglob("*.json")
    partial = Record.from_json(json.loads(path.read_text())).payload
    assert not partial.complete and sorted(ms.label(c) for c in partial.candidates) == [
        "128/128/1", "64/128/1", "64/256/1"]
    second = FakeMachine()
    outcome = ms.measure(plan, Store(tmp_path), second.hooks())
    assert second.built == ["64/256/1", "128/256/1"]  # the anchor again, and only the shape not yet measured
    assert (outcome.measured, outcome.kept) == (1, 3) and outcome.record.payload.complete
    kept = {ms.label(c): c for c in outcome.record.payload.candidates}
    assert all(kept[ms.label(c)] == c for c in partial.candidates)  # what was measured is kept as it was
    assert len(outcome.record.payload.anchor_rounds) == 2 and [p.name for p in tmp_path.rglob("*.json")] == [path.name]
    third = FakeMachine()
    again = ms.measure(plan, Store(tmp_path), third.hooks())
    assert third.built == [] and again.measured == 0  # nothing left to measure


def test_ties_with_the_best_are_shown_tied_and_spearman_is_recorded(tmp_path):
    plan = ms.resolve(replace(TINY, ranking="tokens"))
    record = ms.measure(plan, Store(tmp_path), FakeMachine().hooks()).record
    rows = ms.ranked(record.payload)
    assert [ms.label(r.shape) for r in rows] == ["64/128/1", "64/256/1", "128/128/1", "128/256/1"]
    assert [r.rank_text for r in rows] == ["1", "2", "3", "4"]  # the wobble is far smaller than the gaps
    correlation = record.payload.rank_correlation  # one adjacent pair swapped in the prediction
    assert (correlation.ranking, correlation.tokens_per_second, correlation.shapes) == (pytest.approx(0.8),
                                                                                        pytest.approx(0.8), 4)
    assert record.payload.predicted_best_tied is True
    # the best and a shape whose per-round ratio to it straddles 1: tied, shown "1="
    best, other = record.payload.candidates[:2]
    close = replace(record.payload, candidates=[replace(best, anchor_ratios=[1.0, 1.0, 1.0]),
                                                replace(other, anchor_ratios=[1.02, 0.97, 0.99])])
    first, second = ms.ranked(close)
    assert (first.rank_text, second.rank_text) == ("1", "1=") and second.versus_best.low < 1 <= second.versus_best.high
    apart = replace(close, candidates=[close.candidates[0], replace(other, anchor_ratios=[0.9, 0.92, 0.91])])
    assert [r.rank_text for r in ms.ranked(apart)] == ["1", "2"]


def test_the_equal_parameter_ranking_scales_by_parameters(tmp_path):
    record = ms.measure(ms.resolve(TINY), Store(tmp_path), FakeMachine().hooks()).record
    payload = record.payload
    assert payload.ranking == "throughput" and payload.scale_parameters == payload.candidates[1].parameters
    reference = ms.anchor_reference(payload)
    for row in ms.ranked(payload):
        expected = sorted(row.shape.anchor_ratios)[1] * reference * row.shape.parameters / payload.scale_parameters
        assert row.value == pytest.approx(expected)


def test_predicted_over_anchored_reads_the_anchored_speed_not_its_blocks(tmp_path):
    """A block measured 20% slow (the whole machine slower while it ran) leaves every shape's predicted / anchored
    as it was: the anchor ratios cancel the block, a shape's own median in the block does not (issue 32's records)."""
    payload = ms.measure(ms.resolve(TINY), Store(tmp_path), FakeMachine().hooks()).record.payload
    slow = replace(payload, candidates=[replace(c, tokens_per_second=c.tokens_per_second * 0.8)
                                        for c in payload.candidates])
    for row, before in zip(ms.ranked(slow), ms.ranked(payload)):
        assert row.predicted_over_anchored == pytest.approx(before.predicted_over_anchored)
        assert row.predicted_over_anchored == pytest.approx(row.shape.predicted_tokens_per_second / row.anchored)
        if ms.label(row.shape) not in ("128/128/1", "64/256/1"):  # the pair the fake's prediction swaps
            assert row.predicted_over_anchored == pytest.approx(1 / 0.9, rel=0.06)  # its 10% optimism (+wobble)


def test_the_cpu_cost_model_sums_its_parts(monkeypatch):
    """Three layers (global, local, local) over two batches: every part's seconds added as the docstring says."""
    shape = Shape(hidden=64, ffn=96, gated=True, heads=2, layers=3, vocab=512, window=64, global_every=3, rotary=True)
    gemm_seconds = {(64, 192): 4.0, (64, 64): 2.0, (64, 192 // 1): 4.0, (96, 64): 3.0}  # at KERNEL_ROWS rows

    def fake_timings(k, n, dtype, threads, rows, rounds):
        return KernelTimings("gemm", (), (("torch", (gemm_seconds[(k, n)], 99.0)),), "")

    monkeypatch.setattr(cpu_cost, "gemm_timings", fake_timings)
    monkeypatch.setattr(cpu_cost, "attention_seconds",
                        lambda heads, head_dim, lengths, window, backend, dtype: (1.0 if window is None else 0.5)
                        * sum(lengths))
    widths = {"layernorm": 0.1, "rope": 0.2, "gated": 0.4}  # seconds at the largest batch (128 tokens)
    monkeypatch.setattr(cpu_cost, "width_seconds",
                        lambda part, width, head_dim, tokens, kernel, dtype: widths[part] * tokens / 128)
    cost = cpu_cost.predict_pass(shape, [[100, 28], [64]], torch.float32, 1, "torch", "eager", "sdpa")
    rows = cpu_cost.KERNEL_ROWS
    per_layer_gemm = (4.0 + 2.0 + 4.0 + 3.0) / rows  # seconds per token of one layer's four GEMMs
    assert cost.gemm_seconds == pytest.approx(3 * per_layer_gemm * (128 + 64))
    assert cost.attention_seconds == pytest.approx((1 * 1.0 + 2 * 0.5) * (128 + 64))
    per_token = (3 * (0.2 + 0.4) + (2 * 3 + 1) * 0.1) / 128
    assert cost.elementwise_seconds == pytest.approx(per_token * (128 + 64))
    assert cost.tokens == 192 and cost.seconds == pytest.approx(cost.gemm_seconds + cost.attention_seconds +
                                                                cost.elementwise_seconds)


def test_the_measured_sweep_record_fixture_reads_round_trips_and_matches_todays_sweep(tmp_path):
    """The fixture was written by `write_fixture` below (the fake machine, deterministic): a record of this
    format keeps reading, and today's code makes the same numbers from the same fake machine."""
    data = json.loads(FIXTURE.read_text())
    record = Record.from_json(data)
    assert isinstance(record.payload, MeasuredSweep) and record.identity.measurement == "measured_sweep"
    assert dict(record.identity.sweep)["hidden"] == (64, 128) and record.payload.complete
    again = json.loads(json.dumps(record.to_json()))  # schema 3: its candidates as the fixture keeps them
    assert again["payload"]["candidates"] == data["payload"]["candidates"]
    # the identity as the fixture wrote it (fields added since, `LATER_FIELDS`, at the values it implies)
    assert again["identity"] == {**again["identity"], **data["identity"]} and record.key == record.identity.key()
    assert Record.from_json(again) == record and record.payload.load is None is data["payload"]["load"]
    today = write_fixture(tmp_path / "today.json")
    assert today["payload"]["candidates"] == [{**c, "measured_at": t["measured_at"]}
                                              for c, t in zip(data["payload"]["candidates"],
                                                              today["payload"]["candidates"])]
    assert today["payload"]["rank_correlation"] == data["payload"]["rank_correlation"]
    row = record.flatten()
    assert row["measurement"] == "measured_sweep" and row["ranking"] == "throughput"


def write_fixture(path: Path) -> dict:
    """A measured sweep of the fake machine on TINY, as JSON (also how tests/fixtures/measured_sweep was made)."""
    with tempfile.TemporaryDirectory() as store:
        record = ms.measure(ms.resolve(TINY), Store(store), FakeMachine().hooks()).record
    data = record.to_json()
    data["environment"], data["device"]["name"] = {}, "a CPU"
    data["identity"]["device"] = "a CPU"
    data["identity"]["sweep"] = [list(pair) for pair in record.identity.sweep if pair[0] != "isa"]
    data["payload"]["load"] = None
    path.write_text(json.dumps(data, indent=1))
    return json.loads(path.read_text())


if __name__ == "__main__":  # python tests/test_measured_sweep.py: rewrite the fixture
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    write_fixture(FIXTURE)


def test_a_rerun_that_measures_nothing_keeps_the_load_code_and_time_its_shapes_ran_under(tmp_path):
    """The fresh-clone trial: a finished sweep run again measured nothing and wrote that moment's load over the
    load its shapes had been measured under; the same rerun also wrote its own commit and time over theirs."""
    store = Store(tmp_path)
    first = ms.measure(ms.resolve(TINY), store, FakeMachine().hooks()).record
    busy = replace(first.payload.load, warning="machine was busy: while measuring")
    then = {**first.environment, "git_commit": "0123abc"}
    store.write(replace(first, payload=replace(first.payload, load=busy), environment=then,
                        created_at="2026-01-02T03:04:05+00:00"))
    again = ms.measure(ms.resolve(TINY), Store(tmp_path), FakeMachine().hooks())  # a new process reads the disk
    assert again.measured == 0 and again.record.payload.load == busy
    assert again.record.environment["git_commit"] == "0123abc"
    assert again.record.created_at == "2026-01-02T03:04:05+00:00"
    assert Record.from_json(json.loads(again.path.read_text())).environment["git_commit"] == "0123abc"
