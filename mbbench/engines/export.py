"""Export a padded encoder to ONNX: the module and weights the torch engine times, in its own layout.

Deployers' path (and the one issue 24 measured): `torch.onnx.export` with the TorchScript exporter
(`dynamo=False`), opset 17, inputs `input_ids` and `attention_mask` (batch, seq) int64 and output
`last_hidden_state` (batch, seq, hidden), batch and sequence axes dynamic. Source: torch.onnx.export's
docstring (torch 2.13: `dynamic_axes` applies to the TorchScript exporter).

Only padded encoders are exported. Packed ones (mbbench's reference ModernBERT, NeoBERT, the hf-packed rows)
take `(total,)` ids with cu_seqlens and loop over documents in Python; a trace would freeze one batch's
document boundaries into the graph, so they are refused rather than exported wrong.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn

from mbbench.batching import PaddedBatch
from mbbench.models.encoders import Encoder

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "last_hidden_state"
DYNAMIC_AXES = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                "last_hidden_state": {0: "batch", 1: "sequence"}}
ONNX_FILE = "model.onnx"


class HiddenStates(nn.Module):
    """`(input_ids, attention_mask) -> last_hidden_state`: the transformers call as a plain graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def refuse_reason(layout: str) -> str | None:
    """None when an encoder of `layout` ("packed" or "padded") can be exported, else why not."""
    if layout != "padded":
        return ("this model runs packed (ids of concatenated documents + cu_seqlens, with Python loops over "
                "documents); an exported graph would freeze one batch's document boundaries. Export needs a "
                "padded transformers model (e.g. hf-modernbert-base)")
    return None


def exporter_settings(opset: int) -> dict:
    """What, besides model and weights, decides the exported graph (part of the cache identity)."""
    return {"exporter": "torch.onnx.export (TorchScript, dynamo=False)", "opset": opset, "torch": torch.__version__,
            "inputs": list(INPUT_NAMES), "output": OUTPUT_NAME, "dynamic_axes": "batch, sequence"}


def example_batch(encoder: Encoder) -> PaddedBatch:
    """A small batch to trace on: two rows, the second padded, so the mask path is in the graph.

    The user's batch is not used: it may be large (a trace runs a full forward), and the cache identity
    must not depend on it. transformers keeps the mask while tracing even without padding (masking_utils
    checks `is_tracing`); a padded example makes that independent of the transformers version.
    """
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, encoder.vocab_size - 1), encoder.vocab_size, (2, 8), generator=generator)  # (2, 8)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = encoder.pad_token_id
    return PaddedBatch(ids, mask, int(mask.sum()))


def export_onnx(encoder: Encoder, path: Path, opset: int = 17) -> None:
    """Write `encoder` (padded) as ONNX to `path`, traced on `example_batch` on the encoder's device.

    Graphs over 2 GB (fp32 models above ~500M parameters) are written by torch with external data files
    next to `path`. Raises whatever the exporter raises for an operator it cannot export.
    """
    wrapper = HiddenStates(encoder.module).eval()
    example = example_batch(encoder).to(encoder.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes, expected here
        torch.onnx.export(wrapper, (example.input_ids, example.attention_mask), str(path),
                          input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME], dynamic_axes=DYNAMIC_AXES,
                          opset_version=opset, dynamo=False)

