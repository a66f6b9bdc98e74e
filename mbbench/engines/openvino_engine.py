"""OpenVINO on CPU: the encoder's ONNX export, read and compiled by OpenVINO.

Why through ONNX and not `openvino.convert_model(module)`: transformers' sdpa attention passes a boolean
mask. Padded query rows more than a sliding window (64 tokens) past a row's last real token have every key
masked; PyTorch's SDPA returns 0 for such rows, OpenVINO's translation of aten::scaled_dot_product_attention
returns NaN (softmax over only -inf). The next layer multiplies those NaN values by attention weights of 0,
and 0 * NaN = NaN: real tokens turn NaN once a batch holds enough padding (issue 24's report; reproduced on
a 4-layer ModernBertModel, docs/engines.md). torch.onnx's SDPA export guards that case (IsNaN -> 0), so the
ONNX graph computes what torch computes. `convert_model` on the module stays available as
`OpenVinoEngine(source="torch")` to show the failure; parity catches it either way.

Settings applied and read back: INFERENCE_NUM_THREADS (intra), NUM_STREAMS (inter: one stream = one
inference at a time), PERFORMANCE_HINT LATENCY, and INFERENCE_PRECISION_HINT set to the model's dtype: on
CPUs with bf16 units (AVX512-BF16, AMX) OpenVINO otherwise computes an fp32 model in bf16 (5e-5 off on a
tiny model, more on a deep one). A bf16 or f16 hint is honoured only where the CPU has the units (the plugin's
OPTIMIZATION_CAPABILITIES lists BF16 / FP16); elsewhere it computes f32 and reads back f32, so the engine
refuses such a run before exporting (`precision_refusal`) and the runner checks the precision read back. The IR is saved with `compress_to_fp16=False` (save_model's default
compresses weights to fp16). Sources: docs.openvino.ai "Precision Control", "CPU Device" properties.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from mbbench.batching import PaddedBatch
from mbbench.dtypes import computed_precision
from mbbench.engines.base import EngineInfo, EngineSettings, missing_extra
from mbbench.engines.cache import CacheEntry
from mbbench.engines.export import (ONNX_FILE, HiddenStates, example_batch, export_onnx, exporter_settings,
                                    refuse_reason)
from mbbench.engines.exporting import ExportingEngine
from mbbench.models.encoders import Encoder

IR_FILE = "model.xml"
BOOKKEEPING_LAYERS = {"Const", "Input", "Output"}
PRECISION_HINT = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}
# the CPU plugin's OPTIMIZATION_CAPABILITIES entry that computing in a half dtype needs
HALF_CAPABILITY = {torch.bfloat16: "BF16", torch.float16: "FP16"}


def _openvino():
    try:
        import openvino
    except ImportError:
        raise missing_extra("openvino", "openvino", "openvino") from None
    return openvino


def _fp32(encoder: Encoder) -> Encoder:
    """The encoder with fp32 weights (exact upcast of half weights): OpenVINO takes fp32 graphs and computes in
    the dtype INFERENCE_PRECISION_HINT names."""
    if encoder.dtype == torch.float32:
        return encoder
    upcast = copy.copy(encoder)
    upcast.module = copy.deepcopy(encoder.module).float()
    return upcast


class OpenVinoEngine(ExportingEngine):
    """The encoder's IR compiled for the CPU plugin: `ExportingEngine.prepare`'s steps, OpenVINO's way."""

    name = "openvino"
    extra = "openvino"
    artefact = IR_FILE

    def __init__(self, source: str = "onnx"):
        # "onnx": read the ONNX export (default, see the module docstring); "torch": convert_model(module)
        if source not in ("onnx", "torch"):
            raise ValueError(f"source must be 'onnx' or 'torch', got {source!r}")
        self.source = source

    def version(self) -> str:
        return _openvino().__version__

    def refusal(self, layout: str, device: torch.device, dtype: torch.dtype) -> str | None:
        reason = refuse_reason(layout)
        if reason:
            return reason
        if device.type != "cpu":
            return f"mbbench runs OpenVINO on the CPU only; the model is on {device}"
        return self.precision_refusal(dtype)

    def precision_refusal(self, dtype: torch.dtype) -> str | None:
        """Why OpenVINO's CPU plugin cannot compute in `dtype` here, or None. bf16 needs AVX512-BF16 or AMX and f16
        AVX512-FP16; without them the plugin computes in f32 whatever the hint asks (read back after compile, so
        a bf16 record would time f32). The plugin says which it has in OPTIMIZATION_CAPABILITIES."""
        needed = HALF_CAPABILITY.get(dtype)
        if needed is None:
            return None
        capabilities = list(_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        if needed not in capabilities:
            return (f"OpenVINO's CPU plugin has no {needed} on this CPU (OPTIMIZATION_CAPABILITIES: "
                    f"{', '.join(capabilities)}); it would compute {str(dtype).removeprefix('torch.')} in f32")
        return None

    def exporter(self, opset: int) -> dict:
        if self.source == "torch":
            return {"exporter": "openvino.convert_model(module)", "torch": torch.__version__}
        return {**exporter_settings(opset), "converter": "openvino.Core.read_model(onnx)"}

    def export(self, encoder: Encoder, folder: Path, opset: int) -> None:
        """Write the OpenVINO IR (model.xml + model.bin, fp32 weights) of `encoder` into `folder`."""
        ov = _openvino()
        encoder = _fp32(encoder)
        if self.source == "torch":
            example = example_batch(encoder)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript tracer's warnings, as in export_onnx
                model = ov.convert_model(HiddenStates(encoder.module).eval(), example_input={
                    "input_ids": example.input_ids, "attention_mask": example.attention_mask})
        else:
            export_onnx(encoder, folder / ONNX_FILE, opset)
            model = ov.Core().read_model(str(folder / ONNX_FILE))
        ov.save_model(model, str(folder / IR_FILE), compress_to_fp16=False)
        (folder / ONNX_FILE).unlink(missing_ok=True)  # the IR holds the weights now

    def config(self, encoder: Encoder, settings: EngineSettings) -> dict:
        """The CPU plugin's settings: threads, one stream, the latency hint and the precision of the run's dtype."""
        return {"INFERENCE_NUM_THREADS": settings.threads.intra, "NUM_STREAMS": settings.threads.inter,
                "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": PRECISION_HINT[encoder.dtype]}

    def compile(self, entry: CacheEntry, encoder: Encoder, settings: EngineSettings):
        """The cached IR read and compiled for the CPU with `config`."""
        core = _openvino().Core()
        return core.compile_model(core.read_model(str(entry.path / IR_FILE)), "CPU", self.config(encoder, settings))

    def runner(self, compiled, device: torch.device):
        return _runner(compiled, device)

    def describe(self, compiled, entry: CacheEntry, encoder: Encoder, settings: EngineSettings) -> EngineInfo:
        """Every setting read back from the compiled model, its runtime graph's kernels, the precision it computes
        in (the hint read back)."""
        applied = {key: _text(compiled.get_property(key)) for key in self.config(encoder, settings)}
        return EngineInfo(
            name=self.name, version=_openvino().__version__, device=str(encoder.device), provider="OpenVINO CPU",
            threads_intra=int(compiled.get_property("INFERENCE_NUM_THREADS")),
            threads_inter=int(compiled.get_property("NUM_STREAMS")),
            graph_optimization="OpenVINO CPU plugin transformations (no levels), PERFORMANCE_HINT=LATENCY",
            fused_ops=fused_layer_counts(compiled), precision=computed_precision(applied["INFERENCE_PRECISION_HINT"]),
            settings={**applied, "source": self.source})


def fused_layer_counts(compiled) -> dict[str, int]:
    """Kernel type -> count in the compiled (runtime) graph, bookkeeping nodes (Const, Input, Output) left out.

    The runtime graph is what the CPU plugin runs after its fusions: e.g. MVN (LayerNorm fused), RoPE,
    FullyConnected (MatMul + bias), Eltwise (chains of elementwise ops). Its nodes are all "ExecutionNode";
    the `layerType` runtime attribute names the kernel. Source: docs.openvino.ai "Runtime model" / exec graph.
    """
    runtime = Counter(op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops())
    return dict(sorted((kind, n) for kind, n in runtime.items() if kind not in BOOKKEEPING_LAYERS))


def _text(value) -> str:
    """A property read back as text: ov.Type as its short name ("f32"), enums and numbers as str()."""
    return value.to_string() if hasattr(value, "to_string") else str(value)


def _runner(compiled, device: torch.device):
    """batch -> (batch, seq, hidden) tensor on `device`, through one infer request."""
    request = compiled.create_infer_request()

    def run(batch: PaddedBatch) -> torch.Tensor:
        request.infer({"input_ids": batch.input_ids.cpu().numpy().astype(np.int64),
                       "attention_mask": batch.attention_mask.cpu().numpy().astype(np.int64)})
        return torch.from_numpy(request.get_output_tensor(0).data.copy()).to(device)

    return run
