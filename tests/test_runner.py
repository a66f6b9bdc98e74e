import sys
import json
import os
import statistics

import pytest
import torch
from click.testing import CliRunner

import mbbench.plan as plan_module
from mbbench import results, runner
from mbbench.batching import pack_documents
from mbbench.bench.throughput import measure_passes, warmup_order
from mbbench.bench.telemetry import Sample, summarize as summarize_telemetry
from mbbench.bench.timing import summarize
from mbbench.cli import cli
from mbbench.device import check_requested_gpu
from mbbench.records import DeviceInfo as LocalDevice
from mbbench.errors import UserError
from mbbench.records import SCHEMA_VERSION, Record


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def records_in(directory):
    return [json.loads(p.read_text()) for p in sorted(directory.rglob("*.json"))]


def test_run_writes_one_complete_record(tmp_path):
    out = tmp_path / "res"
    result = invoke("run", "--suite", "short-variable", "--model", "modernbert-base", "--tiny", "--device", "cpu",
                    "--docs", "16", "--runs", "2", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    [data] = records_in(out)
    assert data["schema_version"] == SCHEMA_VERSION and data["payload_type"] == "throughput"
    record = Record.from_json(data)
    payload = record.payload
    assert record.kind == "measured" and record.status == "ok"
    assert len(payload.run_seconds) == 2
    # the median is the median of per-pass tokens/s, the statistic whose IQR is the spread (issue 27)
    median = statistics.median(payload.real_tokens / s for s in payload.run_seconds)
    assert payload.tokens_per_second == pytest.approx(median) == payload.tokens_per_second_stats.median
    assert payload.real_tokens == sum(__import__("mbbench.suites").suites.load_suite("short-variable").lengths[:16])
    assert payload.subsampled is True and payload.num_documents == 16
    # auto chose by workload and the record says why (documents up to 512 tokens: past the CPU crossover)
    assert payload.build.backend == "windowed" and "crossover 128" in payload.build.backend_reason
    assert record.identity.documents == 16 and record.identity.runs == 2 and record.identity.tiny
    assert record.environment["torch"] and record.device.kind == "cpu"
    # the printed table shows the record's number and where it is
    assert f"{payload.tokens_per_second:,.0f}" in result.output and "cpu/modernbert-base-tiny" in result.output
    # a second run skips (the record exists, with its date), --force re-runs
    again = CliRunner().invoke(cli, ["run", "--suite", "short-variable", "--model", "modernbert-base", "--tiny",
                                     "--device", "cpu", "--docs", "16", "--runs", "2", "--out", str(out)])
    assert f"record of {record.created_at} exists" in again.output
    assert len(records_in(out)) == 1


def test_paper_protocol_uses_mean_and_pads_to_suite_max(tmp_path):
    cfg = plan_module.RunConfig("bert-base", "short-variable", protocol="paper", docs=6, passes=3, device="cpu", tiny=True,
                           batch_size=4)
    record = runner.run(plan_module.resolve(cfg))
    assert record.payload.padded_tokens == 6 * 512
    assert record.tokens_per_second == pytest.approx(record.payload.real_tokens /
                                                     statistics.fmean(record.payload.run_seconds))
    assert record.payload.build.backend == "sdpa" and record.model.layout == "padded"


def test_unsupported_suite_is_recorded_not_measured(tmp_path):
    out = tmp_path / "res"
    result = invoke("run", "--suite", "long-fixed", "--model", "bert-base", "--tiny", "--device", "cpu", "--docs", "2",
                    "--runs", "1", "--out", str(out), "--quiet")
    assert result.exit_code == 0
    [record] = records_in(out)
    assert record["status"] == "unsupported" and record["payload_type"] == "failure"
    assert "512" in record["reason"]
    assert "–" in result.output


@pytest.mark.parametrize("args, message", [
    (["--suite", "nope"], "unknown suite"),
    (["--model", "nope"], "unknown model"),
    (["--runs", "0"], "--runs"),
    (["--docs", "0"], "--docs"),
    (["--gpu", "4090"], "RTX 4090"),
])
def test_bad_inputs_exit_2_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "res"
    result = CliRunner().invoke(cli, ["run", "--device", "cpu", "--tiny", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists() or not list(out.rglob("*.json"))


def test_malformed_suite_and_unwritable_out(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('documents = 4\n[lengths]\ndistribution = "normal"\nmean = 5\nstd = -2\nmin = 1\nmax = 9\n')
    result = CliRunner().invoke(cli, ["run", "--device", "cpu", "--suite", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "lengths.std" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(cli, ["run", "--device", "cpu", "--tiny", "--out", str(blocker / "sub")])
    assert result.exit_code == 2 and "cannot write results" in result.output


def test_gpu_label_must_match_local_device():
    h100 = LocalDevice("cuda", "NVIDIA H100 80GB HBM3", "H100-SXM")
    check_requested_gpu("h100", h100)
    with pytest.raises(UserError, match="NVIDIA H100 80GB HBM3"):
        check_requested_gpu("rtx4090", h100)


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "gpu" / "rec.json"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        results.write_atomic(path, {"a": 1})
    assert not path.exists() and list(path.parent.iterdir()) == []


def test_loader_reads_a_directory_into_a_dataframe(tmp_path):
    for i, model in enumerate(["a", "b"]):
        results.write_atomic(tmp_path / "H100-SXM" / f"{model}.json",
                             {"schema_version": 1, "kind": "measured", "status": "ok", "model": model,
                              "suite": "short-fixed", "tokens_per_second": 100.0 * (i + 1), "gpu_dir": "H100-SXM",
                              "gpu": {"name": "NVIDIA H100", "basket_id": "H100-SXM"}})
    (tmp_path / "notes.json").write_text("[1, 2]")  # not a record: ignored
    frame = results.load(tmp_path)
    assert list(frame["model"]) == ["a", "b"] and list(frame["tokens_per_second"]) == [100.0, 200.0]
    assert set(frame["gpu_id"]) == {"H100-SXM"}


def test_statistics_and_telemetry_summary():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.median == 3.0 and s.min == 1.0 and s.max == 100.0 and s.iqr == 2.0
    samples = [Sample(0.0, 300.0, 1980, 50, 0, 1_000_000.0), Sample(1.0, 310.0, 1900, 60, 0x20, 1_300_000.0),
               Sample(2.0, 320.0, 1950, 55, 0, 1_610_000.0)]
    summary = summarize_telemetry(samples, tokens=6100)
    assert summary["energy_j"] == pytest.approx(610.0) and summary["tokens_per_joule"] == pytest.approx(10.0)
    assert summary["throttled"] is True and summary["throttle_reasons"] == ["sw_thermal_slowdown"]
    assert summary["power_w"] == {"min": 300.0, "mean": 310.0, "max": 320.0}
    no_counter = [Sample(0.0, 100.0, 1, 1, 0x1), Sample(2.0, 300.0, 1, 1, 0)]
    assert summarize_telemetry(no_counter, 10)["energy_j"] == pytest.approx(400.0)
    assert summarize_telemetry(no_counter, 10)["throttled"] is False


def test_nvml_handle_follows_torch_device_by_uuid(monkeypatch):
    """Under CUDA_VISIBLE_DEVICES (as Ray sets it) torch's cuda:0 may be NVML's GPU 3: match by UUID."""
    import types

    import torch

    from mbbench.device import nvml_handle

    class NVMLError(Exception):
        pass

    calls = []
    fake = types.SimpleNamespace(
        NVMLError=NVMLError, nvmlInit=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda uuid: calls.append(("uuid", uuid)) or f"handle-{uuid}",
        nvmlDeviceGetHandleByIndex=lambda index: calls.append(("index", index)) or f"handle-{index}")
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: types.SimpleNamespace(uuid="5c1e0f3a-0000-1111-2222-333344445555"))
    assert nvml_handle(0) == "handle-GPU-5c1e0f3a-0000-1111-2222-333344445555"

    def unknown(uuid):
        raise NVMLError("not found")

    fake.nvmlDeviceGetHandleByUUID = unknown  # e.g. an old driver: fall back to the index
    assert nvml_handle(1) == "handle-1" and calls[-1] == ("index", 1)


def test_every_new_shape_is_warmed_up_before_timing_whatever_the_protocol():
    """Issue 26: flex compiles once per new total length and the paper protocol warmed up on one batch, so a
    timed pass paid the compilations (passes [31.7, 0.23, 0.18] s). A forward that 'compiles' on each new
    shape now never does so inside a timed pass, and the record's counts are what ran."""
    lengths = [[3, 4], [5, 2], [3, 4], [6], [1, 1, 5], [6]]  # four shapes: (total, documents, longest)
    batches = [pack_documents([torch.arange(n) for n in docs]) for docs in lengths]
    compiled, in_timed, timing = set(), [], [False]

    def forward(batch):
        shape = (batch.input_ids.shape, batch.cu_seqlens.shape, batch.max_seqlen)
        if shape not in compiled:
            compiled.add(shape)
            in_timed.append(timing[0])

    def on_pass(index, seconds):
        timing[0] = True  # every pass after the first is timed; the first is checked by the count below

    for asked, ran, for_shapes in ((1, 4, 3), (0, 4, 3), (2, 4, 2), (None, 6, 0)):
        compiled.clear(), in_timed.clear()
        timing[0] = False
        times = measure_passes(forward, batches, torch.device("cpu"), 3, asked, on_pass=on_pass)
        assert len(compiled) == 4 and in_timed == [False] * 4, asked  # all before the timed passes
        assert (times.warmup_batches, times.shape_warmup_batches) == (ran, for_shapes), asked
        assert warmup_order(batches, asked)[0][:1] == [0]


def test_a_paper_protocol_record_says_how_many_warmup_batches_ran(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--model", "modernbert-base", "--tiny", "--device", "cpu", "--protocol",
                                      "paper", "--suite", "short-variable", "--docs", "8", "--batch-size", "2",
                                      "--runs", "1", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    [path] = tmp_path.rglob("*.json")
    data = json.loads(path.read_text())
    shapes = 4  # four batches of two packed documents of different total lengths
    assert data["identity"]["warmup_batches"] == 1  # what was asked (the configuration)
    assert data["payload"]["warmup_batches"] == shapes and data["payload"]["shape_warmup_batches"] == shapes - 1


def test_a_run_says_its_estimate_before_its_first_batch_and_counts_the_time_spent():
    """Issue 34 item 9: `run --suite long-variable` on a CPU said nothing for 11.5 minutes (the estimate waited for
    the first batch), then "61 min", leaving out the time already spent."""
    from mbbench import estimate
    from mbbench.plan import RunConfig, resolve

    plan = resolve(RunConfig("modernbert-base", "long-variable", device="cpu", docs=1, passes=1, tiny=True))
    said = []
    runner.run(plan, said.append)
    first_batch = next(i for i, line in enumerate(said) if "for the first batch" in line)
    [before] = [line for line in said[:first_batch] if line.startswith(("estimated at least", "warning: estimated"))]
    assert said.index(before) < next(i for i, line in enumerate(said) if "warmup, then" in line)  # before the batches
    assert "TFLOP of model FLOPs at the" in before and "GEMM rate measured here" in before
    assert "spent so far" in said[first_batch]
    # the numbers: passes' FLOPs over the peak; and the reported case after its first batch
    assert estimate.at_peak(3e12, 2.0, 1e11, "a 100 GFLOP/s peak").seconds == pytest.approx(60.0)
    assert estimate.timed_passes(batches=16, passes=10, warmup_batches=None) == 11.0
    reported = estimate.Estimate(61 * 60.0, "the first batch's time", False).line(elapsed_s=11.5 * 60)
    assert reported.startswith("warning: estimated 61 min more") and "12 min spent so far" in reported
