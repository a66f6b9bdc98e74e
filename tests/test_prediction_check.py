"""The GPU session compares its measurements with predictions committed before it ran (issue 35): the committed
predictions cover every throughput configuration the session measures on a Hopper GPU, equal what the tool predicts
now, and a measured record finds its own."""

import dataclasses
import importlib.util
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mbbench import prediction_check, results
from mbbench.cli import cli
from mbbench.records import BuildInfo, Stats, Throughput

ROOT = Path(__file__).resolve().parent.parent
SESSION_GPUS = ("H100-SXM", "H200-SXM")


def session_runs() -> list[tuple[tuple[str, ...], tuple[str, ...], str]]:
    """(models, suites, docs) of every throughput step of the GPU session (scripts/gpu_run.py)."""
    spec = importlib.util.spec_from_file_location("gpu_run", ROOT / "scripts" / "gpu_run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_run"] = module
    spec.loader.exec_module(module)
    runs = []
    for step in module.STEPS:
        words = shlex.split(step.gpu.line)
        if words[2:4] != ["mbbench.cli", "run"]:
            continue
        values = lambda flag: tuple(words[i + 1] for i, word in enumerate(words) if word == flag)  # noqa: E731
        runs.append((values("--model"), values("--suite"), values("--docs")[0]))
    return runs


def committed(gpu: str) -> list:
    return [r for r in results.read_records([ROOT / "results" / gpu]) if r.kind == "predicted"]


@pytest.mark.slow
def test_every_session_configuration_has_a_committed_prediction_equal_to_the_tools(tmp_path):
    runs = session_runs()
    assert [suites for _, suites, _ in runs] == [("short-fixed", "short-variable"), ("long-fixed", "long-variable")]
    for models, suites, docs in runs:
        args = ["predict", *(a for m in models for a in ("--model", m)), *(a for s in suites for a in ("--suite", s)),
                "--docs", docs, *(a for g in SESSION_GPUS for a in ("--gpu", g)), "--out", str(tmp_path), "--quiet"]
        assert CliRunner().invoke(cli, args).exit_code == 0
    fresh = {prediction_check.comparable(r.identity): r for r in results.read_records([tmp_path])}
    assert len(fresh) == sum(len(m) * len(s) for m, s, _ in runs) * len(SESSION_GPUS)
    kept = {prediction_check.comparable(r.identity): r for gpu in SESSION_GPUS for r in committed(gpu)}
    for key, record in fresh.items():
        assert key in kept, f"no committed prediction of {record.identity.model} / {record.identity.suite} on " \
                            f"{record.identity.device} ({record.identity.documents} docs): bash scripts/predictions.sh"
        assert kept[key].status == record.status
        if record.status == "ok":  # made by the tool with today's model, not by hand or by an older model
            assert kept[key].payload.tokens_per_second == pytest.approx(record.payload.tokens_per_second, rel=1e-9)
            assert kept[key].payload.error_band == record.payload.error_band


def measured_from(prediction, tokens_per_second: float, documents: int | None = None):
    """A measured throughput record of the prediction's configuration (as the GPU session writes it)."""
    ident = dataclasses.replace(prediction.identity, measurement="throughput", runs=5, device_index=0,
                                documents=documents or prediction.identity.documents)
    stats = Stats(tokens_per_second, tokens_per_second, 0.0, tokens_per_second, tokens_per_second, 0.0, 0.0)
    payload = Throughput(build=BuildInfo("varlen"), num_documents=ident.documents, subsampled=True, real_tokens=1,
                         padded_tokens=1, num_batches=2, warmup_batches=1, shape_warmup_batches=0, warmup_seconds=0.1,
                         first_call_seconds=0.1, run_seconds=[1.0] * 5, headline="median",
                         tokens_per_second=tokens_per_second, tokens_per_second_stats=stats, timer="cuda-events",
                         unstable=False, compile_seconds=None, telemetry=None, flops_per_pass=None, mfu=None,
                         mfu_note=None, peak_memory_bytes=None, load=None, engine_info=None, parity=None,
                         cold_start_seconds=None)
    return dataclasses.replace(prediction, kind="measured", identity=ident, payload=payload)


def test_a_measured_record_is_checked_against_the_committed_prediction_of_its_configuration():
    [prediction] = [r for r in committed("H100-SXM") if (r.identity.model, r.identity.suite, r.identity.documents)
                    == ("modernbert-base", "short-fixed", 1024)]
    predicted = prediction.payload.tokens_per_second
    low, high = prediction.payload.tokens_per_second_range
    inside, outside, other = (measured_from(prediction, 0.9 * predicted), measured_from(prediction, 0.5 * low),
                              measured_from(prediction, predicted, documents=2048))
    checks = prediction_check.check([inside, outside, other], committed("H100-SXM"))
    assert [c.predicted for c in checks] == [predicted, predicted, None]
    assert checks[0].error == pytest.approx(1 / 0.9 - 1) and checks[0].inside and not checks[1].inside
    assert "inside" in checks[0].line() and "OUTSIDE" in checks[1].line()
    assert "no committed prediction" in checks[2].line() and checks[2].inside is None
