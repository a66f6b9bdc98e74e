"""Predicted records: the performance and memory models applied to a catalogue model on a basket GPU.

A predicted record has `kind: "predicted"`, a `Prediction` payload with the model version and its inputs
(shape, efficiency and where it came from), and lives next to measured records under results/<gpu-id>/.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from mbbench.errors import UserError
from mbbench.hardware import memory, perfmodel
from mbbench.hardware.gpus import GPU, lookup
from mbbench.models import registry
from mbbench.plan import PROTOCOLS, Plan, RunConfig, resolve
from mbbench.records import DeviceInfo, Prediction, Record
from mbbench.suites import Suite

# `predict` options that a performance model cannot honour: refused, never silently ignored.
UNMODELLED_OPTIONS = {"compile": "--compile", "time_transfer": "--time-transfer", "weights": "--weights",
                      "token_budget": "--token-budget"}


def shape_of(spec: registry.ModelSpec, tiny: bool = False) -> perfmodel.Shape:
    """The performance model's shape of a catalogue model (from its builder)."""
    return registry.shape_of(spec, tiny)


def suite_time(shape: perfmodel.Shape, suite: Suite, documents: list[int], batch_size: int, gpu: GPU, dtype: str,
               pad_to_suite_max: bool, calibration: perfmodel.Calibration) -> tuple[float, float]:
    """Predicted seconds and FLOPs for one pass over `documents` in batches of `batch_size`."""
    seconds = flops = 0.0
    for start in range(0, len(documents), batch_size):
        lengths = [suite.lengths[i] for i in documents[start:start + batch_size]]
        padded_to = None if shape.unpadded else (suite.definition.max_length if pad_to_suite_max else max(lengths))
        p = perfmodel.predict(shape, lengths, gpu, dtype, padded_to, calibration)
        seconds += p.seconds
        flops += p.flops
    return seconds, flops


def predicted_device(gpu: GPU) -> DeviceInfo:
    """The record's device of a prediction: the basket GPU it is for."""
    return DeviceInfo(kind="predicted", name=gpu.name, basket_id=gpu.id, sm_count=gpu.sm_count,
                      compute_capability=".".join(map(str, gpu.compute_capability)),
                      memory_bytes=int(gpu.memory_gb * 1e9))


def check_options(config: RunConfig) -> None:
    """UserError naming every option of `config` that a prediction cannot model."""
    unmodelled = [flag for name, flag in UNMODELLED_OPTIONS.items() if getattr(config, name)]
    if unmodelled:
        raise UserError(f"predict cannot model {', '.join(unmodelled)}: the performance model predicts the "
                        "uncompiled forward pass of seeded weights with inputs on the device")


def plan_prediction(config: RunConfig, gpu_name: str) -> Plan:
    """Resolve a prediction for a basket GPU. A dtype the GPU lacks is refused when asked for explicitly;
    the protocol's default on such a GPU becomes the GPU's half precision, and the plan says so.
    """
    check_options(config)
    gpu = lookup(gpu_name)
    notes = []
    if config.dtype is not None and gpu.effective_dtype(config.dtype) != config.dtype.replace("bf16", "bfloat16"):
        raise UserError(f"{gpu.name} has no {config.dtype} tensor cores; ask for --dtype float16 (or predict "
                        "another GPU)")
    plan = resolve(replace(config, device="cpu"), "prediction", device=predicted_device(gpu))
    effective = gpu.effective_dtype(plan.dtype)
    if effective != plan.dtype:
        notes.append(f"{gpu.name} has no {plan.dtype} tensor cores: predicted in {effective}")
        plan = replace(plan, dtype=effective, identity=replace(plan.identity, dtype=effective))
    return replace(plan, notes=plan.notes + tuple(notes))


def predict(plan: Plan, calibration: perfmodel.Calibration | None = None) -> Record:
    """The predicted record of a plan made by `plan_prediction`."""
    from mbbench.runner import unsupported_record

    reason = plan.unsupported_reason()
    if reason:
        return unsupported_record(plan, reason, kind="predicted")
    gpu = lookup(plan.device.basket_id)
    calibration = calibration or perfmodel.calibrate()
    eta, eta_source = calibration.efficiency(gpu)
    shape = shape_of(plan.spec, plan.config.tiny)
    documents = list(range(plan.documents))
    seconds, flops = suite_time(shape, plan.suite, documents, plan.batch_size, gpu, plan.dtype,
                                plan.protocol.pad_to_suite_max, calibration)
    real = sum(plan.suite.lengths[i] for i in documents)
    bytes_per = 4 if plan.dtype == "float32" else 2
    backend = "varlen" if shape.unpadded else "sdpa"
    payload = Prediction(
        model_version=perfmodel.MODEL_VERSION, tokens_per_second=real / seconds, real_tokens=real,
        mfu=flops / seconds / (gpu.peak_tflops(plan.dtype) * 1e12),
        max_batch_size=memory.max_batch(shape, plan.suite.definition.max_length, gpu.memory_gb * 1e9, bytes_per,
                                        backend),
        efficiency=eta, efficiency_source=eta_source, peak_tflops=gpu.peak_tflops(plan.dtype), shape=asdict(shape),
        attention=plan.config.backend if plan.config.backend != "auto" else backend, notes=plan.notes)
    return Record(kind="predicted", status="ok", identity=plan.identity, device=plan.device, model=plan.model_info(),
                  suite=plan.suite_info(), payload=payload, environment=_environment())


def _environment() -> dict:
    from mbbench import environment

    return environment.capture()


def validation_rows(records: list[Record], calibration: perfmodel.Calibration | None = None) -> list[dict]:
    """Predicted vs measured for every measured throughput record of a basket GPU (same configuration)."""
    calibration = calibration or perfmodel.calibrate()
    rows = []
    for record in records:
        ident = record.identity
        if (record.kind != "measured" or record.status != "ok" or ident.measurement != "throughput"
                or not record.device.basket_id or ident.model not in registry.MODELS):
            continue
        from mbbench.suites import load_suite

        spec = registry.get_spec(ident.model)
        suite = load_suite(ident.suite)
        documents = list(range(record.payload.num_documents))
        seconds, _ = suite_time(shape_of(spec, ident.tiny), suite, documents, ident.batch_size or 32,
                                lookup(record.device.basket_id), ident.dtype,
                                PROTOCOLS[ident.protocol].pad_to_suite_max, calibration)
        predicted = record.payload.real_tokens / seconds
        measured = record.payload.tokens_per_second
        rows.append({"gpu": record.device.basket_id, "source": record.identity.file_stem(), "measured": measured,
                     "predicted": predicted, "error": predicted / measured - 1.0})
    return rows
