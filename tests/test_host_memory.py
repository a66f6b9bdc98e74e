"""An exporting engine that would run out of host memory is refused with the reason before it runs (the reported
case: a five-side 1 x 8192 comparison killed by the OOM killer in ONNX Runtime's first call, 24.4 GB RSS)."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mbbench.batching import PaddedBatch
from mbbench.cli import cli
from mbbench.engines import EngineUnavailable, host_memory

BASE_WEIGHTS = 149_000_000 * 4  # ModernBERT-base, fp32 bytes


def padded(rows: int, seq: int) -> PaddedBatch:
    ids = torch.zeros(rows, seq, dtype=torch.long)
    return PaddedBatch(ids, torch.ones_like(ids), rows * seq)


def test_the_estimate_reproduces_the_measurements_it_was_fitted_on():
    gb = 1e9
    for engine, measured in {"onnxruntime": (2.0, 5.7), "openvino": (3.0, 8.5)}.items():
        estimates = [host_memory.peak_bytes(engine, [padded(1, seq)], 12, 4, BASE_WEIGHTS) / gb for seq in (2048, 4096)]
        assert estimates == pytest.approx(measured, abs=0.15)
    # the reported case: one 8,192-token document on ONNX Runtime, about 21 GB (x 1.25: 26 GB > 23 GB available)
    assert host_memory.peak_bytes("onnxruntime", [padded(1, 8192)], 12, 4, BASE_WEIGHTS) / gb == pytest.approx(20.7, abs=0.1)
    assert host_memory.peak_bytes("torch", [padded(1, 8192)], 12, 4, BASE_WEIGHTS) is None  # SDPA: no seq² growth


def test_the_largest_batch_times_seq_squared_decides():
    small, wide, long = padded(8, 512), padded(128, 512), padded(1, 4096)
    one = host_memory.peak_bytes("onnxruntime", [small, long], 12, 4, 0)
    assert one == host_memory.peak_bytes("onnxruntime", [long], 12, 4, 0) == 6.2 * 4096 ** 2 * 12 * 4
    assert host_memory.peak_bytes("onnxruntime", [wide, long], 12, 4, 0) == 6.2 * 128 * 512 ** 2 * 12 * 4


def test_check_fits_refuses_with_the_numbers_and_passes_what_fits():
    with pytest.raises(EngineUnavailable, match=r"onnxruntime would need about 19 GiB .* 1 row x 8192 tokens.* "
                                                r"21 GiB is available"):
        host_memory.check_fits("onnxruntime", [padded(1, 8192)], 12, 4, BASE_WEIGHTS, 21 * 2**30)
    host_memory.check_fits("onnxruntime", [padded(1, 4096)], 12, 4, BASE_WEIGHTS, 21 * 2**30)  # 5.7 GB fits
    host_memory.check_fits("onnxruntime", [padded(1, 8192)], 12, 4, BASE_WEIGHTS, None)  # unknown: not refused
    host_memory.check_fits("torch", [padded(64, 8192)], 12, 4, BASE_WEIGHTS, 1)


def test_available_bytes_reads_memavailable(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683828 kB\nMemFree:        1000 kB\nMemAvailable:   22000000 kB\n")
    assert host_memory.available_bytes(meminfo) == 22_000_000 * 1024
    meminfo.write_text("MemTotal:       24683828 kB\n")
    assert host_memory.available_bytes(meminfo) is None
    meminfo.write_text("MemAvailable: lots\n")
    assert host_memory.available_bytes(meminfo) is None
    assert host_memory.available_bytes(tmp_path / "absent") is None


def test_a_comparison_leaves_out_a_side_that_would_not_fit_and_measures_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("MBBENCH_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(host_memory, "available_bytes", lambda meminfo=None: 1 << 20)  # 1 MiB: nothing exports
    result = CliRunner().invoke(cli, ["compare", "--tiny", "--device", "cpu", "--docs", "2", "--runs", "1",
                                      "--threads", "1", "--model", "hf-modernbert-base", "--model",
                                      "hf-modernbert-base@torch-compile", "--model", "hf-modernbert-base@onnxruntime",
                                      "--baseline", "hf-modernbert-base", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    [path] = Path(tmp_path / "out").rglob("*.json")
    payload = json.loads(path.read_text())["payload"]
    assert list(payload["excluded"]) == ["hf-modernbert-base@onnxruntime"]
    assert payload["excluded"]["hf-modernbert-base@onnxruntime"].startswith(
        "cannot run here: engine onnxruntime would need about 0 GiB")
    assert [r["model"] for r in payload["paired"]["ratios"]] == ["hf-modernbert-base@torch-compile"]
    assert "hf-modernbert-base@onnxruntime-tiny: left out, cannot run here" in result.output
    assert "short-variable: paired passes: 2/2 [" in result.output  # the total counts the sides that ran


def test_a_run_that_would_not_fit_writes_a_failure_record_saying_why(tmp_path, monkeypatch):
    monkeypatch.setenv("MBBENCH_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(host_memory, "available_bytes", lambda meminfo=None: 1 << 20)
    result = CliRunner().invoke(cli, ["run", "--tiny", "--device", "cpu", "--docs", "2", "--runs", "1", "--threads",
                                      "1", "--model", "hf-modernbert-base", "--engine", "openvino",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    [path] = Path(tmp_path / "out").rglob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "failed" and "engine openvino would need about" in record["reason"]
    assert not (tmp_path / "cache").exists()  # refused before anything was exported
