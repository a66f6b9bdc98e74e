"""Predicted records: the performance and memory models applied to a registry model on a basket GPU.

A predicted record has `kind: "predicted"`, the model version and its inputs (shape, η and where it
came from), and lives next to measured records under results/<gpu-id>/, with "predicted" in its file name.
"""

from __future__ import annotations

from dataclasses import asdict

from mbbench import results
from mbbench.hardware import memory, perfmodel, workload
from mbbench.hardware.gpus import GPU, lookup
from mbbench.hardware.software import PYTORCH, AttentionImpl, Stack
from mbbench.models import registry
from mbbench.runner import PROTOCOLS, default_batch_size
from mbbench.suites import Suite, load_suite

GATED_FAMILIES = {"ModernBERT", "Ettin", "mmBERT", "NeoBERT", "NomicBERT", "GTE-en-MLM", "EuroBERT"}
ROTARY_FAMILIES = {"ModernBERT", "Ettin", "mmBERT", "NeoBERT", "NomicBERT", "GTE-en-MLM", "EuroBERT"}


def shape_of(spec: registry.ModelSpec, tiny: bool = False) -> perfmodel.Shape:
    """The performance-model shape of a registry model (its config's sizes; DeBERTa's disentangled attention)."""
    cfg = registry.model_config(spec, tiny)
    get = lambda *names: next(getattr(cfg, n) for n in names if hasattr(cfg, n))  # noqa: E731
    hidden = get("hidden_size")
    ffn = cfg.swiglu_hidden if spec.kind == "neobert" else get("intermediate_size")
    heads = get("num_heads", "num_attention_heads")
    disentangled = bool(getattr(cfg, "relative_attention", False))
    buckets = getattr(cfg, "position_buckets", -1) if disentangled else 0
    if disentangled and buckets <= 0:  # no log buckets: the span is the relative-position range itself
        buckets = getattr(cfg, "max_relative_positions", -1)
        buckets = buckets if buckets > 0 else getattr(cfg, "max_position_embeddings", 512)
    kv_heads = getattr(cfg, "num_key_value_heads", None)
    return perfmodel.Shape(hidden=hidden, ffn=ffn, gated=spec.family in GATED_FAMILIES, heads=heads,
                           layers=get("num_layers", "num_hidden_layers"), vocab=get("vocab_size"), window=spec.window,
                           global_every=getattr(cfg, "global_every", 1), unpadded=spec.unpadded,
                           attention_kind="disentangled" if disentangled else "standard", position_buckets=buckets,
                           rotary=spec.family in ROTARY_FAMILIES,
                           kv_heads=kv_heads if kv_heads and kv_heads != heads else None)


def suite_time(shape: perfmodel.Shape, suite: Suite, documents: list[int], batch_size: int, gpu: GPU, dtype: str,
               pad_to_suite_max: bool, calibration: perfmodel.Calibration,
               attention: AttentionImpl | None = None, stack: Stack = PYTORCH) -> tuple[float, float]:
    """Predicted seconds and model FLOPs for one pass over `documents` in batches of `batch_size`."""
    lengths = [suite.lengths[i] for i in documents]
    pad_to = suite.definition.max_length if pad_to_suite_max else None
    result = workload.suite_seconds(shape, lengths, batch_size, gpu, dtype, attention, pad_to, calibration, stack)
    return result.seconds, result.flops


def predicted_record(model: str, suite_name: str, gpu_name: str, protocol: str = "rigorous", dtype: str | None = None,
                     batch_size: int | None = None, calibration: perfmodel.Calibration | None = None) -> dict:
    spec, suite, gpu = registry.get_spec(model), load_suite(suite_name), lookup(gpu_name)
    proto = PROTOCOLS[protocol]
    dtype = gpu.effective_dtype(dtype or proto.gpu_dtype)
    batch = batch_size or default_batch_size(suite)
    calibration = calibration or perfmodel.calibrate()
    eta, eta_source = calibration.efficiency(gpu)
    ident = {"model": model, "suite": suite.name, "protocol": protocol, "backend": "auto", "dtype": dtype,
             "batch": f"bs{batch}", "kind": "predicted"}
    record = {
        "schema_version": results.SCHEMA_VERSION, "kind": "predicted", "status": "ok", "reason": None,
        "config_id": results.config_id(ident), "model": model, "family": spec.family, "group": spec.group,
        "parameters": registry.count_parameters(spec), "suite": suite.name, "suite_fingerprint": suite.fingerprint,
        "num_documents": suite.definition.documents, "subsampled": False, "batch_size": batch, "dtype": dtype,
        "protocol": protocol, "backend": "auto", "device": "predicted", "gpu_dir": gpu.id,
        "gpu": {"name": gpu.name, "basket_id": gpu.id, "sm_count": gpu.sm_count,
                "compute_capability": ".".join(map(str, gpu.compute_capability)), "memory_gb": gpu.memory_gb},
        "created_at": results.now(),
        "prediction": {"model_version": perfmodel.MODEL_VERSION, "efficiency": eta, "efficiency_source": eta_source,
                       "shape": asdict(shape_of(spec)), "peak_tflops": gpu.peak_tflops(dtype)},
    }
    if suite.max_length > spec.max_length:
        record.update(status="unsupported", tokens_per_second=None,
                      reason=f"{model} accepts at most {spec.max_length} tokens")
        return record
    shape = shape_of(spec)
    documents = list(range(suite.definition.documents))
    seconds, flops = suite_time(shape, suite, documents, batch, gpu, dtype, proto.pad_to_suite_max, calibration)
    real = sum(suite.lengths)
    bytes_per = 4 if dtype == "float32" else 2
    backend = "varlen" if spec.unpadded else "sdpa"
    record.update(real_tokens=real, tokens_per_second=real / seconds, run_seconds=[],
                  mfu=flops / seconds / (gpu.peak_tflops(dtype) * 1e12),
                  max_batch_size=memory.max_batch(shape, suite.definition.max_length, gpu.memory_gb * 1e9, bytes_per,
                                                  backend))
    return record


def validation_rows(records: list[dict], calibration: perfmodel.Calibration | None = None) -> list[dict]:
    """Predicted vs measured for every measured GPU record of a basket GPU (same configuration)."""
    calibration = calibration or perfmodel.calibrate()
    rows = []
    for record in records:
        if record.get("kind") != "measured" or record.get("status") != "ok" or not record.get("tokens_per_second"):
            continue
        gpu_id = (record.get("gpu") or {}).get("basket_id")
        if not gpu_id or record["model"] not in registry.MODELS:
            continue
        spec, suite = registry.get_spec(record["model"]), load_suite(record["suite"])
        documents = list(range(record["num_documents"]))
        seconds, _ = suite_time(shape_of(spec), suite, documents, record["batch_size"] or 32, lookup(gpu_id),
                                record["dtype"], PROTOCOLS[record["protocol"]].pad_to_suite_max, calibration)
        predicted = record["real_tokens"] / seconds
        rows.append({"gpu": gpu_id, "source": record["config_id"], "measured": record["tokens_per_second"],
                     "predicted": predicted, "error": predicted / record["tokens_per_second"] - 1.0})
    return rows
