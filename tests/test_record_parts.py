"""Typed parts inside records, one version map for old files, and a report that reads types (issue 33).

Every committed record and fixture loads and keeps its key and numbers; a schema-2 file's dicts become typed parts
on read; each part round-trips through JSON; `flatten` loses nothing to a name shared by header and payload; the
records package and the report stay small, and the report reads no record field by name outside its selection.
"""

import ast
import copy
import json
from pathlib import Path

import pytest

from mbbench.records import (SCHEMA_VERSION, BuildInfo, Comparison, Interval, Latency, MachineLoad, ParityCheck,
                             Percentiles, Record, Serving, Stats, Throughput)
from mbbench.records.migrate import upgrade
from mbbench.report.ratios import interval_label, ratio_text

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted([*(ROOT / "results").rglob("*.json"), *(ROOT / "tests" / "fixtures").rglob("*.json")])
PACKAGE = ROOT / "mbbench"


def load(path: Path) -> tuple[dict, Record]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data, Record.from_json(copy.deepcopy(data), str(path))


def first(pattern: str) -> Path:
    return next(p for p in COMMITTED if pattern in p.name)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_committed_record_loads_keeps_its_key_and_numbers_and_round_trips(path):
    data, record = load(path)  # raises on any field a typed part cannot read
    if data["schema_version"] < SCHEMA_VERSION:  # upgraded on read, the file untouched
        assert record.migrated_from == data["schema_version"]
    else:  # written by this schema: nothing to migrate
        assert data["schema_version"] == SCHEMA_VERSION and record.migrated_from is None
    if path.parent.parent.name == "results":  # a stored record's name ends in its key: LATER_FIELDS keep old keys
        assert path.stem.endswith("__" + record.key), (path.name, record.key)
    payload, raw = record.payload, data.get("payload") or data
    if isinstance(payload, (Throughput,)) or data.get("payload_type") == "prediction":
        assert payload.tokens_per_second == raw["tokens_per_second"]
    if isinstance(payload, Comparison):
        assert [r.median for r in payload.paired.ratios] == [r["median"] for r in raw["paired"]["ratios"]]
        assert set(payload.builds) == set(raw["builds"] if "builds" in raw else raw["backends"])  # schema 3 : 2
    written = record.to_json()
    assert written["schema_version"] == SCHEMA_VERSION
    assert Record.from_json(json.loads(json.dumps(written))) == record


def test_the_committed_records_are_all_read():
    from mbbench import results
    assert len(results.read_records([ROOT / "results"])) == len(list((ROOT / "results").rglob("*.json")))
    assert len(COMMITTED) >= 113


def test_a_subsampled_prediction_says_how_many_documents(tmp_path):
    """The provenance flagged predictions over the first N documents 'subsampled (None docs)': a prediction has no
    count of its own, its identity has."""
    from mbbench.report.render import build_report
    md = (build_report([str(ROOT / "results")], tmp_path) / "report.md").read_text(encoding="utf-8")
    assert "None docs" not in md and "subsampled (1024 docs)" in md


def test_a_schema_2_comparison_becomes_typed_parts():
    """Old files carry the element-wise kernel inside `gemms`, a bootstrap interval, parity against torch only and
    the load under `paired`: each becomes its typed part, with the numbers as they were."""
    path = first("hf-modernbert-base-vs-modernbert-base")
    data, record = load(path)
    payload = record.payload
    ratio = payload.paired.ratios[0]
    raw = data["payload"]["paired"]["ratios"][0]["interval"]
    assert "resamples" in raw and ratio.interval.bootstrap and ratio.interval.order is None
    assert (ratio.interval.low, ratio.interval.high) == (raw["low"], raw["high"])
    assert interval_label(ratio.interval) == f"{raw['confidence']:.0%} bootstrap CI"
    assert ratio_text(ratio).endswith("bootstrap CI)")
    assert isinstance(payload.load, MachineLoad) and payload.load.start.cpu_count >= 1
    assert payload.load.start.time_seconds == data["payload"]["paired"]["load"]["start"]["time_s"]

    newer = load(first("modernbert-base-vs-hf-modernbert-base-vs-hf-modern"))[1]
    side = next(s for s, check in (newer.payload.parity or {}).items() if check)
    check = newer.payload.parity[side]
    assert isinstance(check, ParityCheck) and check.vs_float32 is None and check.vs_torch is not None  # before 36
    assert all(isinstance(b, BuildInfo) and b.backend for b in newer.payload.builds.values())


def test_old_gemm_dicts_with_the_elementwise_kernel_inside_become_one_build_per_side():
    old = {"kernel": "onednn", "reason": "measured faster", "elementwise": "inductor", "elementwise_reason": "faster"}
    data = {"schema_version": 2, "payload_type": "comparison", "payload": {
        "baseline": "a", "num_documents": 1, "rounds": 1, "backends": {"a": "sdpa", "b": "sdpa"},
        "gemms": {"a": old, "b": {"kernel": "torch", "reason": "", "source": "fixed"}},
        "paired": {"baseline": "a", "order": [["a", "b"]], "ratios": [], "models": {}}}}
    builds = upgrade(data)["payload"]["builds"]
    assert builds["a"] == {"backend": "sdpa", "backend_reason": None, "gemm": "onednn", "gemm_reason": "measured faster",
                           "gemm_source": None, "elementwise": "inductor", "elementwise_reason": "faster",
                           "elementwise_source": None}
    assert builds["b"]["gemm_source"] == "fixed" and builds["b"]["elementwise"] is None


def _percentiles(count: int = 5) -> dict:
    return {"count": count, "mean": 0.02, "stdev": 0.001, "min": 0.01, "p50": 0.02, "p90": 0.025, "p95": 0.026,
            "p99": 0.03, "max": 0.031, "beyond": {"p50": 2, "p90": 0, "p95": 0, "p99": 0}}


SERVICE_2 = {"backend": "sdpa", "layout": "packed", "seed": 0, "min_requests": 5, "min_seconds": 0.1,
             "timer": "perf_counter", "clock": "real", "load_seconds": 0.5, "first_call_s": 0.125, "gemm": "torch",
             "gemm_reason": "fixed", "elementwise": "eager", "elementwise_reason": "fixed", "warmed": "the first call",
             "load": None, "load_warning": "busy: 3 cores used"}


def _record_2(payload_type: str, measurement: str, payload: dict) -> dict:
    identity = {"measurement": measurement, "model": "modernbert-base", "suite": "fixed-128",
                "suite_fingerprint": "f" * 16, "protocol": measurement, "backend": "auto", "dtype": "float32",
                "device": "cpu"}
    return {"schema_version": 2, "kind": "measured", "status": "ok", "identity": identity,
            "device": {"kind": "cpu", "name": "cpu"}, "model": None, "suite": None, "payload_type": payload_type,
            "payload": payload}


def test_a_schema_2_latency_record_shares_its_setup_and_every_duration_is_in_seconds():
    point = {"batch_size": 1, "requests": 5, "cold_s": 0.2, "elapsed_s": 0.1, "real_tokens": 640,
             "requests_per_second": 50.0, "documents_per_second": 50.0, "tokens_per_second": 6400.0,
             "latency_s": _percentiles()}  # before cold_real_tokens and shape_warmup_requests
    record = Record.from_json(_record_2("latency", "latency", {**SERVICE_2, "points": [point]}))
    payload: Latency = record.payload
    assert payload.setup.first_call_seconds == 0.125 and payload.setup.load.warning == "busy: 3 cores used"
    assert payload.setup.build == BuildInfo("sdpa", None, "torch", "fixed", None, "eager", "fixed", None)
    assert payload.points[0].cold_seconds == 0.2 and payload.points[0].cold_real_tokens is None
    assert isinstance(payload.points[0].latency_seconds, Percentiles) and payload.warmup_requests == 0
    text = json.dumps(record.to_json())
    assert '_s"' not in text and "first_call_seconds" in text  # one unit suffix
    assert Record.from_json(json.loads(text)) == record


def test_a_schema_2_serving_record_keeps_its_runs_and_slo():
    run = {"offered_rate": 10.0, "achieved_rate": 9.5, "tokens_per_second": 900.0, "duration_s": 2.0, "requests": 20,
           "served": 20, "unserved": 0, "batches": 8, "utilization": 0.4, "padding_efficiency": 1.0,
           "queue_s": _percentiles(20), "inference_s": _percentiles(20), "total_s": _percentiles(20),
           "batch_size": _percentiles(8), "batch_tokens": _percentiles(8)}  # before arrived_rate and new shapes
    slo = {"percentile": 99.0, "target_s": 0.05, "low": 10.0, "high": 10.0, "best_rate": 10.0, "bracket": [10.0, None],
           "note": "met", "steps": [{"rate": 10.0, "latency_s": 0.03, "met": True}], "best_achieved_rate": 9.5,
           "best_tokens_per_second": 900.0}
    payload = {**SERVICE_2, "arrival": "poisson", "max_batch_tokens": 4096, "max_batch_requests": None,
               "max_wait_s": 0.002, "sort_by_length": False, "runs": [run], "slo": slo}
    record = Record.from_json(_record_2("serving", "serving", payload))
    serving: Serving = record.payload
    assert serving.max_wait_seconds == 0.002 and serving.drain_limit_seconds is None
    assert serving.runs[0].arrived_rate is None and serving.runs[0].total_seconds.p99 == 0.03
    assert serving.slo.target_seconds == 0.05 and serving.slo.steps[0].latency_seconds == 0.03
    assert serving.slo.fewest_requests is None and serving.best_rate == 10.0
    assert Record.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_typed_statistics_and_the_unstable_threshold():
    stats = Stats(100.0, 100.0, 1.0, 98.0, 102.0, 12.0, 0.12)
    assert stats.unstable and not Stats(100.0, 100.0, 1.0, 98.0, 102.0, 5.0, 0.05).unstable
    assert not Stats(None, None, None, None, None, None, None).unstable  # a non-finite spread is not a verdict
    interval = Interval(1.4, 1.6, 0.875)
    assert not interval.reaches_requested and "short of 95%" in interval_label(interval)
    assert Percentiles(10, 1, 0, 1, 1, 1, 1, 1, 1).beyond == {"p50": 5, "p90": 1, "p95": 0, "p99": 0}


def test_flatten_keeps_a_payload_field_named_like_a_header_column():
    """Serving's `runs` (its rates) and the identity's `runs` (passes) collided: the payload's lost its name."""
    throughput = load(first("float32__t2__bs32__docs32__throughput"))[1]
    comparison = load(first("modernbert-base-vs-hf-modernbert-base-vs-hf-modern"))[1]
    row = comparison.flatten()
    assert row["runs"] == comparison.identity.runs and "builds" in row and "load.warning" in row
    assert row["paired.ratios"][0]["median"] == comparison.payload.paired.ratios[0].median
    flat = throughput.flatten()
    assert flat["payload.warmup_batches"] == throughput.payload.warmup_batches
    assert flat["warmup_batches"] == throughput.identity.warmup_batches and "build.gemm" in flat
    assert flat["tokens_per_second_stats.median"] == throughput.payload.tokens_per_second_stats.median


# ------------------------------------------------------------------------------------- the shape of the code

def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (PACKAGE / folder).rglob("*.py"))


def test_no_file_in_records_or_report_is_over_350_lines():
    long = {str(p.relative_to(ROOT)): n for p in python_files("records", "report")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 350}
    assert not long, long


def test_no_function_in_records_or_report_is_over_60_lines():
    long = [f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for p in python_files("records", "report") for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60]
    assert not long, long


def string_lookups(source: str) -> list[int]:
    """Lines where `source` reads a field by a string: `x["name"]` or `x.get("name", ...)`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value,
                                                                                                   str):
            found.append(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append(node.lineno)
    return found


def test_the_string_lookup_count_can_fail():
    assert len(string_lookups('row["model"]\nrow.get("suite") or ""\nrow.get(name)\nrow[0]\nrow.model')) == 2


def test_the_report_reads_no_record_field_by_string_outside_its_selection():
    """Issue 33: report/render.py read flattened rows by 452 string keys. Now every module of the report reads typed
    rows and records; `selection.py` alone reads what is still untyped (environment, telemetry, CSV columns)."""
    found = {str(p.relative_to(ROOT)): lines for p in python_files("report") if p.name != "selection.py"
             if (lines := string_lookups(p.read_text(encoding="utf-8")))}
    assert not found, found
