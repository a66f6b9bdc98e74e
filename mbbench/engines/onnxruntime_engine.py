"""ONNX Runtime: the ONNX export of the encoder in an InferenceSession (CPU, or CUDA when the build has it).

Settings applied (and read back into EngineInfo): intra/inter-op threads from `Threads`, sequential
execution, graph optimisation ORT_ENABLE_ALL (ORT's default and what deployers run). The optimised graph
is saved through `SessionOptions.optimized_model_filepath` and its operators counted: those in ORT's own
domains (com.microsoft: FusedMatMul, Gelu, SkipLayerNormalization, Attention, ...) are the fusions ORT
made. Source: onnxruntime.ai/docs/performance/model-optimizations/graph-optimizations.html.

On a CUDA device the session gets only the CUDA execution provider, with ORT's CPU fallback disabled
(`session.disable_cpu_ep_fallback`), so a build without CUDA is refused instead of silently timing the CPU.
Batches go through numpy, so on CUDA the host<->device copies are inside each call.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from mbbench.batching import PaddedBatch
from mbbench.dtypes import dtype_name
from mbbench.engines.base import EngineInfo, EngineSettings, EngineUnavailable, missing_extra
from mbbench.engines.cache import CacheEntry
from mbbench.engines.export import ONNX_FILE, export_onnx, exporter_settings, refuse_reason
from mbbench.engines.exporting import ExportingEngine
from mbbench.models.encoders import Encoder

OPTIMIZATION_LEVEL = "ORT_ENABLE_ALL"
OPTIMIZED_FILE = "optimized.onnx"
ORT_DOMAINS = ("com.microsoft", "com.microsoft.nchwc")  # operators that exist only as ORT fusions


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise missing_extra("onnxruntime", "onnxruntime, onnx and onnxscript", "onnx") from None
    return onnxruntime


def _onnx():
    try:
        import onnx
    except ImportError:
        raise missing_extra("onnxruntime", "onnxruntime, onnx and onnxscript", "onnx") from None
    return onnx


def provider_for(device: torch.device) -> str:
    return "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"


def fused_operator_counts(model_path: Path) -> dict[str, int]:
    """Operator type -> count for ORT's fused operators (domains com.microsoft*) in a saved ONNX graph."""
    graph = _onnx().load(str(model_path), load_external_data=False).graph
    return dict(sorted(Counter(node.op_type for node in graph.node if node.domain in ORT_DOMAINS).items()))


class OnnxRuntimeEngine(ExportingEngine):
    """The ONNX export in an InferenceSession: `ExportingEngine.prepare`'s steps, ORT's way."""

    name = "onnxruntime"
    extra = "onnx"
    artefact = ONNX_FILE

    def version(self) -> str:
        _onnx()
        return _onnxruntime().__version__

    def refusal(self, layout: str, device: torch.device, dtype: torch.dtype) -> str | None:
        reason = refuse_reason(layout)
        if reason:
            return reason
        if dtype == torch.bfloat16:
            return ("bfloat16 is not run: ONNX Runtime's CPU provider has no bfloat16 arithmetic (onnxruntime#19937, "
                    "#28768), and numpy, its inputs' and outputs' type, has no bfloat16")
        provider = provider_for(device)
        available = _onnxruntime().get_available_providers()
        if provider not in available:
            return (f"{device.type} needs {provider}, which this onnxruntime build lacks (it has "
                    f"{', '.join(available)}); install onnxruntime-gpu. No CPU fallback: it would time the CPU")
        return None

    def session_options(self, settings: EngineSettings, optimized_path: Path, provider: str):
        """SessionOptions with the threads, sequential execution, ORT_ENABLE_ALL and the graph saved."""
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads.intra
        options.inter_op_num_threads = settings.threads.inter
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVEL)
        options.optimized_model_filepath = str(optimized_path)
        if provider != "CPUExecutionProvider":  # ORT rejects the flag when the CPU EP is the one asked for
            options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        options.log_severity_level = 3  # errors only: ORT warns that the saved optimised graph is hardware-specific
        return options

    def exporter(self, opset: int) -> dict:
        return exporter_settings(opset)

    def export(self, encoder: Encoder, folder: Path, opset: int) -> None:
        export_onnx(encoder, folder / ONNX_FILE, opset)

    def compile(self, entry: CacheEntry, encoder: Encoder, settings: EngineSettings):
        """The session on the encoder's device's provider, its optimised graph saved beside the export. Raises
        EngineUnavailable when the session cannot load the graph or did not take the provider."""
        provider = provider_for(encoder.device)
        options = self.session_options(settings, entry.path / OPTIMIZED_FILE, provider)
        session = self.session(entry.path / ONNX_FILE, options, provider, encoder.dtype)
        if provider not in session.get_providers():
            raise EngineUnavailable(f"engine {self.name}: the session did not take {provider} "
                                    f"(it runs {session.get_providers()})")
        return session

    def runner(self, compiled, device: torch.device):
        return _runner(compiled, device)

    def describe(self, compiled, entry: CacheEntry, encoder: Encoder, settings: EngineSettings) -> EngineInfo:
        """Threads and execution mode read back from the session, ORT's fused operators, the precision."""
        applied = compiled.get_session_options()
        optimized = entry.path / OPTIMIZED_FILE
        return EngineInfo(
            name=self.name, version=_onnxruntime().__version__, device=str(encoder.device),
            provider=provider_for(encoder.device), threads_intra=applied.intra_op_num_threads,
            threads_inter=applied.inter_op_num_threads, graph_optimization=OPTIMIZATION_LEVEL,
            fused_ops=fused_operator_counts(optimized),
            **precision_of(entry.path / ONNX_FILE, optimized, encoder.dtype),
            settings={"execution_mode": str(applied.execution_mode), "opset": str(settings.opset)})

    def session(self, model: Path, options, provider: str, dtype: torch.dtype):
        """The InferenceSession of `model` on `provider`. Raises EngineUnavailable with ORT's first line when it
        cannot load the graph: the CPU provider refuses fp16 exports whose LayerNormalization binds fp32 and fp16
        (ModernBERT, BERT: "Type parameter (T) of Optype (LayerNormalization) bound to different types")."""
        try:
            return _onnxruntime().InferenceSession(str(model), options, providers=[provider])
        except Exception as error:  # noqa: BLE001 - ORT's pybind errors (Fail, InvalidGraph, ...) share no base
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise EngineUnavailable(f"engine {self.name}: {provider} cannot load the {dtype_name(dtype)} export: "
                                    f"{first}") from None


def cast_count(model_path: Path) -> int:
    """Cast nodes in a saved ONNX graph."""
    graph = _onnx().load(str(model_path), load_external_data=False).graph
    return sum(node.op_type == "Cast" for node in graph.node)


def precision_of(exported: Path, optimized: Path, dtype: torch.dtype) -> dict:
    """EngineInfo's `precision`: the run's dtype, or "mixed" when ONNX Runtime inserted casts to run a half
    precision graph on fp32 kernels (its CPU provider lacks fp16 kernels for many operators: DeBERTa-v3's export
    gains 38 casts, 26 -> 64); the count goes into `precision_note`."""
    name = dtype_name(dtype)
    inserted = cast_count(optimized) - cast_count(exported) if dtype != torch.float32 else 0
    if inserted <= 0:
        return {"precision": name}
    return {"precision": "mixed", "precision_note": f"ONNX Runtime inserted {inserted} casts to run {name} "
                                                    "operators on float32 kernels"}


def _runner(session, device: torch.device):
    """batch -> (batch, seq, hidden) tensor on `device`, through the session."""

    def run(batch: PaddedBatch) -> torch.Tensor:
        feeds = {"input_ids": batch.input_ids.cpu().numpy().astype(np.int64),
                 "attention_mask": batch.attention_mask.cpu().numpy().astype(np.int64)}
        return torch.from_numpy(session.run(None, feeds)[0]).to(device)

    return run
