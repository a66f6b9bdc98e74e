"""Records of older schemas, brought to the current one on read: one version map, each step a dict -> dict.

    1 -> 2  the loose dicts committed before typed records (about 140 string keys, the request in `config`)
    2 -> 3  typed parts: the build facts as one `BuildInfo`, the machine's load as one `MachineLoad`, a comparison's
            per-side builds, latency and serving's shared `ServiceSetup`, every duration in `_seconds`, and each
            part's fields that older files lack

Every default an old record implies lives here, next to the step that needs it; the typed classes carry none for
them. Files on disk are never rewritten (`Record.from_json` upgrades what it reads). Fields schema 1 did not
record are left None in the identity, so a migrated record never claims more than its file said; resume treats
such a record as a different configuration from a new run.
"""

from __future__ import annotations

from typing import Callable

from mbbench.records.header import portable_suite_path
from mbbench.records.stats import UNSTABLE_IQR

STATS = ("median", "mean", "std", "min", "max", "iqr", "iqr_over_median")
BUILD = ("backend", "backend_reason", "gemm", "gemm_reason", "gemm_source", "elementwise", "elementwise_reason",
         "elementwise_source")


def upgrade(data: dict) -> dict:
    """`data`, a record's JSON of any known schema, as the current schema's dict (the input is not changed).
    Raises ValueError for a schema newer than this mbbench's or not a record's."""
    version = data.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError("not an mbbench record (no schema_version)")
    if version > SCHEMA_VERSION:
        raise ValueError(f"record schema {version} is newer than this mbbench ({SCHEMA_VERSION})")
    while version < SCHEMA_VERSION:
        data = UPGRADES[version](data)
        version = data["schema_version"]
    return data


# ------------------------------------------------------------------------------------------------ 1 -> 2

def _device_1(old: dict) -> dict:
    gpu = old.get("gpu") or {}
    kind = "predicted" if old.get("kind") == "predicted" else (gpu.get("kind") or old.get("device") or "cuda")
    memory_gb = gpu.get("memory_gb")
    return {"kind": kind, "name": gpu.get("name") or old.get("gpu_dir") or "unknown",
            "basket_id": gpu.get("basket_id") or (old.get("gpu_dir") if kind != "cpu" else None), "index": None,
            "sm_count": gpu.get("sm_count"), "compute_capability": gpu.get("compute_capability"),
            "memory_bytes": int(memory_gb * 1e9) if memory_gb else None, "driver": gpu.get("driver"),
            "cuda": gpu.get("cuda"), "uuid": gpu.get("uuid")}


def _identity_1(old: dict, device: dict, measurement: str) -> dict:
    config = old.get("config") or {}
    model = old.get("model", "")
    tiny = bool(config.get("tiny")) or model.endswith("-tiny")
    limits = []
    if measurement == "max_batch":
        limits = sorted({"granularity": old.get("granularity"), "safety_margin": old.get("safety_margin"),
                         "memory_limit_bytes": int(old["memory_limit_gb"] * 1e9) if old.get("memory_limit_gb")
                         else None}.items())
    timed = measurement == "throughput"
    return {"measurement": measurement, "model": model.removesuffix("-tiny") if tiny else model, "tiny": tiny,
            "suite": old.get("suite", ""), "suite_fingerprint": old.get("suite_fingerprint") or "",
            "protocol": old.get("protocol") or "rigorous", "backend": config.get("backend") or "auto",
            "dtype": old.get("dtype") or "", "device": device["name"] if device["kind"] == "cpu" else
            (device["basket_id"] or device["name"]), "device_index": None,
            "weights_sha256": f"path:{config['weights']}" if config.get("weights") else None,  # schema 1: the path
            "batch_size": old.get("batch_size"), "token_budget": old.get("token_budget"),
            "documents": old.get("num_documents") if timed else None, "runs": old.get("runs") if timed else None,
            "warmup_batches": old.get("warmup_batches") if timed else None, "compile": bool(config.get("compile")),
            "time_transfer": bool(config.get("time_transfer")), "placement": config.get("placement"),
            "limits": limits}


def _prediction_1(old: dict) -> dict:
    pred = old.get("prediction") or {}
    return {"model_version": pred.get("model_version", "perfmodel-1"), "tokens_per_second": old["tokens_per_second"],
            "real_tokens": old.get("real_tokens") or 0, "mfu": old.get("mfu") or 0.0,
            "max_batch_size": old.get("max_batch_size"), "efficiency": pred.get("efficiency") or 0.0,
            "efficiency_source": pred.get("efficiency_source", ""), "peak_tflops": pred.get("peak_tflops") or 0.0,
            "shape": pred.get("shape") or {}, "attention": old.get("backend") or "auto"}


def _max_batch_1(old: dict) -> dict:
    mode = old.get("search_mode") or ("tokens" if old.get("max_token_budget") else "batch")
    result = old.get("max_batch_size") if mode == "batch" else old.get("max_token_budget")
    limit, memory = old.get("memory_limit_gb"), old.get("device_memory_gb")
    return {"mode": mode, "sequence_length": old.get("sequence_length") or 0,
            "granularity": old.get("granularity") or 1, "safety_margin": old.get("safety_margin") or 0.0,
            "memory_limit_bytes": int(limit * 1e9) if limit else None, "largest_ok": old.get("largest_ok") or result
            or 0, "result": result or 0, "trials": old.get("trials") or [],
            "search_seconds": old.get("search_seconds") or 0.0,
            "device_memory_bytes": int(memory * 1e9) if memory else None,
            "peak_bytes_at_result": old.get("peak_bytes_at_result"), "note": old.get("note", "")}


def _throughput_1(old: dict) -> dict:
    stats = old.get("tokens_per_second_stats") or {}
    unstable = old["unstable"] if "unstable" in old else (stats.get("iqr_over_median") or 0) > UNSTABLE_IQR
    return {"backend": old.get("backend") or "auto", "num_documents": old.get("num_documents") or 0,
            "subsampled": bool(old.get("subsampled")), "real_tokens": old.get("real_tokens") or 0,
            "padded_tokens": old.get("padded_tokens") or old.get("real_tokens") or 0,
            "num_batches": old.get("num_batches") or 0, "warmup_batches": old.get("warmup_batches") or 0,
            "warmup_seconds": old.get("warmup_seconds") or 0.0,
            "first_call_seconds": old.get("first_call_seconds") or 0.0, "run_seconds": old.get("run_seconds") or [],
            "headline": old.get("headline") or "median", "tokens_per_second": old.get("tokens_per_second") or 0.0,
            "tokens_per_second_stats": stats, "timer": old.get("timer") or "", "unstable": bool(unstable),
            "compile_seconds": old.get("compile_seconds"), "telemetry": old.get("telemetry")}


def _payload_1(old: dict, measurement: str) -> tuple[str, dict]:
    if old.get("status", "ok") != "ok":
        return "failure", {"error_type": old.get("error_type"), "backend": old.get("backend")}
    if measurement == "prediction":
        return "prediction", _prediction_1(old)
    if measurement == "max_batch":
        return "max_batch", _max_batch_1(old)
    return "throughput", _throughput_1(old)


def from_schema_1(old: dict) -> dict:
    """A schema-1 dict as schema 2; raises ValueError when it is not a record."""
    if old.get("kind") not in ("measured", "predicted") or "model" not in old or "suite" not in old:
        raise ValueError("not an mbbench schema 1 record")
    measurement = "prediction" if old["kind"] == "predicted" else old.get("measurement", "throughput")
    device = _device_1(old)
    payload_type, payload = _payload_1(old, measurement)
    return {"schema_version": 2, "kind": old["kind"], "status": old.get("status") or "ok",
            "reason": old.get("reason"), "created_at": old.get("created_at") or "",
            "identity": _identity_1(old, device, measurement), "device": device,
            "model": {"family": old.get("family") or "", "group": old.get("group") or "base",
                      "parameters": old.get("parameters") or 0, "max_length": old.get("model_max_length") or 0,
                      "layout": old.get("layout") or ""},
            "suite": {"path": old.get("suite_path"),
                      "documents": old.get("suite_documents") or old.get("num_documents") or 0,
                      "max_length": old.get("sequence_length") or 0},
            "environment": old.get("environment") or {}, "execution": old.get("execution"),
            "payload_type": payload_type, "payload": payload}


# ------------------------------------------------------------------------------------------------ 2 -> 3

def from_schema_2(data: dict) -> dict:
    """A schema-2 record's dict in schema 3: its payload's typed parts, and a suite path never absolute."""
    suite = data.get("suite")
    if suite:
        suite = {**suite, "path": portable_suite_path(suite.get("path"))}  # records written before it was portable
    payload = PAYLOAD_STEPS.get(data["payload_type"], dict)(data["payload"])
    return {**data, "schema_version": 3, "suite": suite, "payload": payload}


def _without(data: dict, *names: str) -> dict:
    return {k: v for k, v in data.items() if k not in names}


def _build(data: dict) -> dict:
    return {name: data.get(name) for name in BUILD}


def _snapshot(snapshot: dict | None) -> dict | None:
    return _renamed(snapshot, {"time_s": "time_seconds"}) if snapshot else None


def _load(load: dict | None, warning: str | None) -> dict | None:
    """The snapshots and the warning as one `MachineLoad` (None: neither was recorded)."""
    if not load and warning is None:
        return None
    return {"start": _snapshot((load or {}).get("start")), "end": _snapshot((load or {}).get("end")),
            "warning": warning}


def _stats(stats: dict | None) -> dict:
    """Every statistic `Stats` holds; those a file lacks (schema 1 kept some) are None."""
    return {name: (stats or {}).get(name) for name in STATS}


def _interval(interval: dict | None) -> dict | None:
    """An interval of a median ratio: before issue 26 a percentile bootstrap (`resamples`, `seed`), whose stated
    confidence is kept as asked for; after it, order statistics with the exact coverage."""
    if not interval:
        return None
    if "resamples" in interval:
        method = f"percentile bootstrap ({interval['resamples']} resamples, seed {interval.get('seed')})"
        return {"low": interval["low"], "high": interval["high"], "confidence": interval["confidence"],
                "requested": interval["confidence"], "method": method, "order": None}
    return interval


def _agreement(data: dict) -> dict:
    return {"max_abs_error": data.get("max_abs_error"), "max_rel_error": data.get("max_rel_error"),
            "cosine_min": data.get("cosine_min"), "cosine_mean": data.get("cosine_mean"),
            "non_finite": data.get("non_finite") or 0}


def _parity(parity: dict | None) -> dict | None:
    """An accuracy gate. Before issue 36 it judged the side against the torch engine alone: that agreement is
    `vs_torch`, with no fp32 comparison and no cosine bar."""
    if not parity or "vs_float32" in parity:
        return parity
    return {"engine": parity["engine"], "dtype": parity["dtype"], "real_tokens": parity.get("real_tokens") or 0,
            "judged_on": parity.get("judged_on") or "abs", "error": parity.get("error"),
            "tolerance": parity["tolerance"], "cosine_bar": None, "passed": parity["passed"], "vs_float32": None,
            "vs_torch": _agreement(parity), "noise_floor": None}


THROUGHPUT_LATER = {"shape_warmup_batches": None, "compile_seconds": None, "telemetry": None, "flops_per_pass": None,
                    "mfu": None, "mfu_note": None, "peak_memory_bytes": None, "engine_info": None,
                    "cold_start_seconds": None}


def _throughput(payload: dict) -> dict:
    rest = _without(payload, *BUILD, "load", "load_warning")
    return {**THROUGHPUT_LATER, **rest, "build": _build(payload),
            "load": _load(payload.get("load"), payload.get("load_warning")),
            "tokens_per_second_stats": _stats(payload.get("tokens_per_second_stats")),
            "parity": _parity(payload.get("parity"))}


def _max_batch(payload: dict) -> dict:
    trials = [{"peak_bytes": None, "seconds": 0.0, "detail": None, **trial} for trial in payload.get("trials") or []]
    return {"device_memory_bytes": None, "peak_bytes_at_result": None, "capped": False, "bracket": None,
            "seed": None, "note": "", **payload, "trials": trials}


def _prediction(payload: dict) -> dict:
    return {"attention": "auto", "notes": [], "error_band": None, "max_batch_band": None, **payload}


def _side_build(side: str, payload: dict) -> dict:
    """One comparison side's build from the per-side dicts of schema 2 (records before issue 34 kept the
    element-wise kernel inside `gemms`)."""
    gemm = (payload.get("gemms") or {}).get(side) or {}
    elementwise = (payload.get("elementwise") or {}).get(side) or {}
    return {"backend": (payload.get("backends") or {}).get(side), "backend_reason": None, "gemm": gemm.get("kernel"),
            "gemm_reason": gemm.get("reason"), "gemm_source": gemm.get("source"),
            "elementwise": elementwise.get("kernel", gemm.get("elementwise")),
            "elementwise_reason": elementwise.get("reason", gemm.get("elementwise_reason")),
            "elementwise_source": elementwise.get("source")}


def _paired(paired: dict) -> dict:
    models = {side: {"warmup_batches": None, **passes,
                     "tokens_per_second_stats": _stats(passes.get("tokens_per_second_stats"))}
              for side, passes in paired["models"].items()}
    ratios = [{"interval_note": None, **ratio, "interval": _interval(ratio.get("interval"))}
              for ratio in paired["ratios"]]
    return {"baseline": paired["baseline"], "order": paired.get("order") or [], "models": models, "ratios": ratios}


def _comparison(payload: dict) -> dict:
    sides = list(dict.fromkeys([*(payload.get("backends") or {}), *(payload.get("gemms") or {}),
                                *(payload.get("elementwise") or {})]))
    parity = payload.get("parity")
    rest = _without(payload, "backends", "gemms", "elementwise", "paired", "parity")
    return {"engines": None, "excluded": None, "baseline_note": None, "mfu": None, "mfu_note": "", **rest,
            "paired": _paired(payload["paired"]), "builds": {side: _side_build(side, payload) for side in sides},
            "parity": {side: _parity(check) for side, check in parity.items()} if parity else None,
            "load": _load(payload["paired"].get("load"), payload["paired"].get("load_warning"))}


def _setup(payload: dict, timer: str) -> dict:
    """Latency and serving's shared part. `timer`: what a record without one timed with."""
    return {"build": _build(payload), "layout": payload["layout"], "seed": payload["seed"],
            "min_requests": payload["min_requests"], "min_seconds": payload["min_seconds"],
            "timer": payload.get("timer") or timer, "clock": payload.get("clock") or "real",
            "load_seconds": payload.get("load_seconds"), "first_call_seconds": payload.get("first_call_s"),
            "warmed": payload.get("warmed") or "", "load": _load(payload.get("load"), payload.get("load_warning"))}


SETUP = (*BUILD, "layout", "seed", "min_requests", "min_seconds", "timer", "clock", "load_seconds", "first_call_s",
         "warmed", "load", "load_warning")


def _renamed(data: dict, names: dict[str, str]) -> dict:
    return {names.get(key, key): value for key, value in data.items()}


def _latency(payload: dict) -> dict:
    points = [{"cold_real_tokens": None, "shape_warmup_requests": None,
               **_renamed(point, {"cold_s": "cold_seconds", "elapsed_s": "elapsed_seconds",
                                  "latency_s": "latency_seconds"})} for point in payload["points"]]
    return {"warmup_requests": payload.get("warmup_requests", 0), "setup": _setup(payload, "perf_counter"),
            "points": points}


RUN_SECONDS = {"duration_s": "duration_seconds", "queue_s": "queue_seconds", "inference_s": "inference_seconds",
               "total_s": "total_seconds"}


def _slo(slo: dict | None) -> dict | None:
    if not slo:
        return None
    steps = [_renamed(step, {"latency_s": "latency_seconds"}) for step in slo.get("steps") or []]
    return {"best_achieved_rate": None, "best_tokens_per_second": None, "fewest_requests": None,
            "beyond_percentile": None, "requests_needed": None, **_renamed(slo, {"target_s": "target_seconds"}),
            "steps": steps}


def _serving(payload: dict) -> dict:
    runs = [{"arrived_rate": None, "new_shape_batches": None, "new_shape_share": None, **_renamed(run, RUN_SECONDS)}
            for run in payload["runs"]]
    rest = _renamed(_without(payload, *SETUP), {"max_wait_s": "max_wait_seconds",
                                                "drain_limit_s": "drain_limit_seconds"})
    return {"drain_limit_seconds": None, **rest, "setup": _setup(payload, "perf_counter"), "runs": runs,
            "slo": _slo(payload.get("slo"))}


def _measured_sweep(payload: dict) -> dict:
    candidates = [{**c, "interval": _interval(c.get("interval"))} for c in payload["candidates"]]
    return {**_without(payload, "load", "load_warning"), "candidates": candidates,
            "load": _load(payload.get("load"), payload.get("load_warning"))}


def _failure(payload: dict) -> dict:
    return {**payload, "parity": _parity(payload.get("parity"))}


PAYLOAD_STEPS: dict[str, Callable[[dict], dict]] = {
    "throughput": _throughput, "max_batch": _max_batch, "prediction": _prediction, "comparison": _comparison,
    "latency": _latency, "serving": _serving, "measured_sweep": _measured_sweep, "failure": _failure}


UPGRADES: dict[int, Callable[[dict], dict]] = {1: from_schema_1, 2: from_schema_2}
SCHEMA_VERSION = max(UPGRADES) + 1  # what `Record.to_json` writes
