"""Predicted records: the performance and memory models applied to a catalogue model on a basket GPU.

A predicted record has `kind: "predicted"`, a `Prediction` payload with the model version and its inputs
(shape, efficiency and where it came from) and the error bands validation gives its GPU and stack
(`bands.error_band`), and lives next to measured records under results/<gpu-id>/. A configuration whose
batch exceeds the predicted maximum batch has status "would-not-fit": its numbers are kept, as predicted.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from mbbench.bands import error_band, max_batch_band
from mbbench.dtypes import canonical_dtype
from mbbench.engines import DEFAULT_ENGINE
from mbbench.errors import UserError
from mbbench.hardware import perfmodel, workload
from mbbench.calibration import PAPER_GPU
from mbbench.hardware.gpus import GPU, lookup
from mbbench.hardware.memory import capacity_bytes
from mbbench.hardware.software import PYTORCH, AttentionImpl, auto_backend, resolve_attention
from mbbench.models import registry
from mbbench.plan import Plan, RunConfig, record, resolve, unsupported_record
from mbbench.records import DeviceInfo, Prediction, Record

# `predict` options that a performance model cannot honour: refused, never silently ignored.
UNMODELLED_OPTIONS = {"time_transfer": "--time-transfer", "weights": "--weights", "token_budget": "--token-budget",
                      "threads": "--threads"}


def attention_of(plan: Plan) -> AttentionImpl:
    """The attention implementation a prediction's plan runs: its --backend, or by default what runs there: the
    family's default in the paper's environment under the paper protocol; otherwise mbbench's own `auto` for its
    packed models (`software.auto_backend`) and transformers 5's default for transformers models. UserError for a
    backend or dtype the plan's GPU lacks."""
    backend = plan.config.backend
    if backend == "auto" and plan.config.protocol != "paper" and plan.spec.unpadded:
        backend = auto_backend(plan.gpu, packed_model=True)
    return resolve_attention(backend, plan.dtype, plan.gpu, family=plan.spec.family, packed_model=plan.spec.unpadded,
                             head_dim=plan.shape.head_dim, rotary=registry.rotary_code(plan.spec),
                             environment="paper" if plan.config.protocol == "paper" else "transformers5")


def predicted_device(gpu: GPU) -> DeviceInfo:
    """The record's device of a prediction: the basket GPU it is for."""
    return DeviceInfo(kind="predicted", name=gpu.name, basket_id=gpu.id, sm_count=gpu.sm_count,
                      compute_capability=".".join(map(str, gpu.compute_capability)),
                      memory_bytes=int(capacity_bytes(gpu)))


def check_options(config: RunConfig) -> None:
    """UserError naming every option of `config` that a prediction cannot model."""
    unmodelled = [flag for name, flag in UNMODELLED_OPTIONS.items() if getattr(config, name)]
    if config.engine != DEFAULT_ENGINE:
        unmodelled.insert(0, f"--engine {config.engine}")
    if unmodelled:
        raise UserError(f"predict cannot model {', '.join(unmodelled)}: the performance model predicts PyTorch's "
                        "uncompiled (eager) forward pass of seeded weights on a GPU, with inputs on the device")


def distinct_gpus(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Basket ids of `names` (ids or aliases), each once in the order first given: `--gpu h100 --gpu h100-sxm` is
    one GPU, predicted once. UserError for an unknown name."""
    return tuple(dict.fromkeys(lookup(name).id for name in names))


def plan_prediction(config: RunConfig, gpu_name: str) -> Plan:
    """Resolve a prediction for a basket GPU. A dtype the GPU lacks is refused when asked for explicitly;
    the protocol's default on such a GPU becomes the GPU's half precision (`plan.resolve`, as for a run), and the
    plan says so.
    """
    check_options(config)
    gpu = lookup(gpu_name)
    notes = []
    if config.dtype is not None and gpu.effective_dtype(canonical_dtype(config.dtype)) != canonical_dtype(config.dtype):
        raise UserError(f"{gpu.name} has no {config.dtype} tensor cores; ask for --dtype float16 (or predict "
                        "another GPU)")
    plan = resolve(replace(config, device="cpu"), "prediction", device=predicted_device(gpu))  # T4: fp16
    attention_of(plan)  # UserError now for a backend this GPU lacks
    if gpu.id == PAPER_GPU and config.protocol != "paper":
        notes.append(f"the paper's own numbers are for the {gpu.name} under --protocol paper (fp32, its batches); "
                     f"this is the {config.protocol} protocol in {plan.dtype}")
    return replace(plan, notes=plan.notes + tuple(notes))


def predict(plan: Plan, calibration: perfmodel.Calibration) -> Record:
    """The predicted record of a plan made by `plan_prediction`, with the efficiencies of `calibration`
    (`mbbench.calibration.default_calibration()` for the fitted ones)."""
    reason = plan.unsupported_reason()
    if reason:
        return unsupported_record(plan, reason)
    gpu, shape = plan.gpu, plan.shape
    lengths = plan.suite.lengths[:plan.documents]
    p = workload.predict_suite(shape, lengths, plan.batch_size, gpu, plan.dtype, attention_of(plan),
                               plan.suite.definition.max_length if plan.protocol.pad_to_suite_max else None,
                               calibration, PYTORCH, plan.suite.definition.max_length)
    payload = Prediction(
        model_version=perfmodel.MODEL_VERSION, tokens_per_second=p.tokens_per_second, real_tokens=sum(lengths),
        mfu=p.mfu, max_batch_size=p.max_batch_size, efficiency=p.efficiency, efficiency_source=p.efficiency_source,
        peak_tflops=perfmodel.peak_flops(gpu, p.compute_dtypes["gemm"]) / 1e12, shape=asdict(shape),
        attention=p.attention.backend, notes=tuple(dict.fromkeys((*plan.notes, p.attention.reason, *p.notes))),
        error_band=error_band(gpu.id, plan.dtype), max_batch_band=max_batch_band())
    if over_max_batch(plan.batch_size, p.max_batch_size):
        return record(plan, payload, "would-not-fit", f"batch {plan.batch_size} exceeds the predicted maximum batch "
                      f"{p.max_batch_size}: this configuration would run out of memory")
    return record(plan, payload)


def over_max_batch(batch_size: int | None, max_batch_size: int | None) -> bool:
    """Whether a batch of `batch_size` documents exceeds the predicted maximum batch (it would run out of memory)."""
    return bool(batch_size and max_batch_size and batch_size > max_batch_size)

