"""Schema 1 (loose dict) records -> typed `Record`s, on read. Files on disk are never rewritten.

Schema 1 wrote one flat dict per configuration (about 140 string keys) with the request in `config`.
Fields that schema 1 did not record are left None in the identity, so a migrated record never claims
more than its file said; resume treats such a record as a different configuration from a new run.
"""

from __future__ import annotations

from mbbench.records import (DeviceInfo, Failure, Identity, MaxBatchSearch, ModelInfo, Prediction, Record, SuiteInfo,
                             Throughput, portable_suite_path)


def _device(old: dict) -> DeviceInfo:
    gpu = old.get("gpu") or {}
    kind = "predicted" if old.get("kind") == "predicted" else (gpu.get("kind") or old.get("device") or "cuda")
    memory_gb = gpu.get("memory_gb")
    return DeviceInfo(kind=kind, name=gpu.get("name") or old.get("gpu_dir") or "unknown",
                      basket_id=gpu.get("basket_id") or (old.get("gpu_dir") if kind != "cpu" else None),
                      index=None, sm_count=gpu.get("sm_count"), compute_capability=gpu.get("compute_capability"),
                      memory_bytes=int(memory_gb * 1e9) if memory_gb else None, driver=gpu.get("driver"),
                      cuda=gpu.get("cuda"), uuid=gpu.get("uuid"))


def _identity(old: dict, device: DeviceInfo, measurement: str) -> Identity:
    config = old.get("config") or {}
    model = old.get("model", "")
    tiny = bool(config.get("tiny")) or model.endswith("-tiny")
    limits = ()
    if measurement == "max_batch":
        limits = tuple(sorted({"granularity": old.get("granularity"), "safety_margin": old.get("safety_margin"),
                               "memory_limit_bytes": int(old["memory_limit_gb"] * 1e9) if old.get("memory_limit_gb")
                               else None}.items()))
    return Identity(
        measurement=measurement, model=model.removesuffix("-tiny") if tiny else model, tiny=tiny,
        suite=old.get("suite", ""), suite_fingerprint=old.get("suite_fingerprint") or "",
        protocol=old.get("protocol") or "rigorous", backend=config.get("backend") or "auto",
        dtype=old.get("dtype") or "", device=device.identity_name, device_index=None,
        weights_sha256=f"path:{config['weights']}" if config.get("weights") else None,  # schema 1 kept the path
        batch_size=old.get("batch_size"), token_budget=old.get("token_budget"),
        documents=old.get("num_documents") if measurement == "throughput" else None,
        runs=old.get("runs") if measurement == "throughput" else None,
        warmup_batches=old.get("warmup_batches") if measurement == "throughput" else None,
        compile=bool(config.get("compile")), time_transfer=bool(config.get("time_transfer")),
        placement=config.get("placement"), limits=limits)


def _payload(old: dict, measurement: str):
    if old.get("status", "ok") != "ok":
        return Failure(error_type=old.get("error_type"), backend=old.get("backend"))
    if measurement == "prediction":
        pred = old.get("prediction") or {}
        return Prediction(model_version=pred.get("model_version", "perfmodel-1"),
                          tokens_per_second=old["tokens_per_second"], real_tokens=old.get("real_tokens") or 0,
                          mfu=old.get("mfu") or 0.0, max_batch_size=old.get("max_batch_size"),
                          efficiency=pred.get("efficiency") or 0.0, efficiency_source=pred.get("efficiency_source", ""),
                          peak_tflops=pred.get("peak_tflops") or 0.0, shape=pred.get("shape") or {},
                          attention=old.get("backend") or "auto")
    if measurement == "max_batch":
        mode = old.get("search_mode") or ("tokens" if old.get("max_token_budget") else "batch")
        result = old.get("max_batch_size") if mode == "batch" else old.get("max_token_budget")
        memory_limit = old.get("memory_limit_gb")
        return MaxBatchSearch(mode=mode, sequence_length=old.get("sequence_length") or 0,
                              granularity=old.get("granularity") or 1, safety_margin=old.get("safety_margin") or 0.0,
                              memory_limit_bytes=int(memory_limit * 1e9) if memory_limit else None,
                              largest_ok=old.get("largest_ok") or result or 0, result=result or 0,
                              trials=old.get("trials") or [], search_seconds=old.get("search_seconds") or 0.0,
                              device_memory_bytes=int(old["device_memory_gb"] * 1e9) if old.get("device_memory_gb")
                              else None, peak_bytes_at_result=old.get("peak_bytes_at_result"), note=old.get("note", ""))
    stats = old.get("tokens_per_second_stats") or {}
    run_seconds = old.get("run_seconds") or []
    return Throughput(backend=old.get("backend") or "auto", num_documents=old.get("num_documents") or 0,
                      subsampled=bool(old.get("subsampled")), real_tokens=old.get("real_tokens") or 0,
                      padded_tokens=old.get("padded_tokens") or old.get("real_tokens") or 0,
                      num_batches=old.get("num_batches") or 0, warmup_batches=old.get("warmup_batches") or 0,
                      warmup_seconds=old.get("warmup_seconds") or 0.0,
                      first_call_seconds=old.get("first_call_seconds") or 0.0, run_seconds=run_seconds,
                      headline=old.get("headline") or "median", tokens_per_second=old.get("tokens_per_second") or 0.0,
                      tokens_per_second_stats=stats, timer=old.get("timer") or "",
                      unstable=bool(old.get("unstable")), compile_seconds=old.get("compile_seconds"),
                      telemetry=old.get("telemetry"))


def from_schema_1(old: dict, source_path: str | None = None) -> Record:
    """The typed record a schema 1 dict describes; raises ValueError when it is not a record."""
    if old.get("kind") not in ("measured", "predicted") or "model" not in old or "suite" not in old:
        raise ValueError("not an mbbench schema 1 record")
    measurement = "prediction" if old["kind"] == "predicted" else old.get("measurement", "throughput")
    device = _device(old)
    model = ModelInfo(family=old.get("family") or "", group=old.get("group") or "base",
                      parameters=old.get("parameters") or 0, max_length=old.get("model_max_length") or 0,
                      layout=old.get("layout") or "")
    suite = SuiteInfo(path=portable_suite_path(old.get("suite_path")), documents=old.get("suite_documents") or old.get("num_documents") or 0,
                      max_length=old.get("sequence_length") or 0)
    return Record(kind=old["kind"], status=old.get("status") or "ok", identity=_identity(old, device, measurement),
                  device=device, model=model, suite=suite, payload=_payload(old, measurement),
                  environment=old.get("environment") or {}, reason=old.get("reason"),
                  created_at=old.get("created_at") or "", execution=old.get("execution"),
                  schema_version=2, source_path=source_path, migrated_from=1)
