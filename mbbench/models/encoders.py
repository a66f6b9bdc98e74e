"""Adapters that give every encoder one call: `encoder(batch) -> hidden states`.

- `PackedEncoder`: our own modules (reference ModernBERT and its relatives, NeoBERT) on packed batches.
- `HFPaddedEncoder`: a transformers model as shipped, on padded batches with an attention mask.
- `HFPackedEncoder`: a transformers model on packed batches: one row of concatenated documents,
  per-document position ids, and attention routed through mbbench's backends with cu_seqlens
  (registered with transformers' AttentionInterface). This is the paper's "GTE (xformers)" row:
  unpadded tokens + memory-efficient attention (xformers when installed, else a PyTorch kernel).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from mbbench.batching import Batch, PackedBatch, PaddedBatch
from mbbench.models import fused, gemm
from mbbench.models.attention import BACKEND_CLASSES, AttentionBackend, get_backend, packed_layout
from mbbench.records import BuildInfo

PACKED_ATTENTION = "mbbench_packed"


@dataclass
class Encoder:
    """A built model plus what a record must say about how it ran."""

    module: nn.Module
    layout: str  # "packed" or "padded": which batches it takes
    backend: str  # the attention implementation that actually runs
    gemm: str = "torch"  # the GEMM kernel its linears run on (`models.gemm.KERNELS`)
    gemm_reason: str = ""  # why that kernel (set by whoever chose it: `runner.build`)
    elementwise: str = "eager"  # the kernel of its RoPE and gated activation (`models.fused.KERNELS`)
    elementwise_reason: str = ""  # why (set by `runner.build`)
    gemm_source: str = ""  # where the GEMM choice came from: measured now, cache, pinned or fixed (`bench.kernel_choice`)
    elementwise_source: str = ""  # likewise for the element-wise kernel

    def __call__(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def build_info(self, backend_reason: str | None = None) -> BuildInfo:
        """What a record says this model ran on: its attention backend (and why, which the plan knows), and its
        GEMM and element-wise kernels with why and where each choice came from."""
        return BuildInfo(self.backend, backend_reason, self.gemm, self.gemm_reason, self.gemm_source,
                         self.elementwise, self.elementwise_reason, self.elementwise_source)

    @property
    def vocab_size(self) -> int:
        """Token ids must be below this."""
        return self.module.config.vocab_size

    @property
    def pad_token_id(self) -> int:
        """The id padded batches fill with (0 when the config names none)."""
        return getattr(self.module.config, "pad_token_id", None) or 0

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype


class PackedEncoder(Encoder):
    def __init__(self, module: nn.Module, gemm: str = "torch", elementwise: str = "eager"):
        super().__init__(module, "packed", module.backend.name, gemm, elementwise=elementwise)

    def __call__(self, batch: PackedBatch) -> torch.Tensor:
        return self.module.forward_packed(batch.input_ids, batch.cu_seqlens, batch.max_seqlen)


class HFPaddedEncoder(Encoder):
    def __init__(self, module: nn.Module, backend: str | None = None):
        # `backend`: mbbench's name for the attention that runs (one vocabulary across model families)
        super().__init__(module, "padded", backend or module.config._attn_implementation)

    def __call__(self, batch: PaddedBatch) -> torch.Tensor:
        return self.module(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state


def _packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                      sliding_window=None, mbbench_packed=None, **kwargs):
    """transformers attention function: (1, heads, total, dim) in, (1, total, heads, dim) out."""
    backend, layout, context = mbbench_packed
    # transformers passes sliding windows inclusive (+1, as flash-attn counts them); ours is |i-j| <= w.
    window = None if sliding_window is None else sliding_window - 1
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    out = backend.attend(q, k, v, layout, context, window, scaling if scaling is not None else q.shape[-1] ** -0.5)
    return out[None], None


def register_packed_attention() -> None:
    """Idempotent: makes `attn_implementation="mbbench_packed"` known to transformers."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, _packed_attention)


class HFPackedEncoder(Encoder):
    def __init__(self, module: nn.Module, backend: AttentionBackend, windows: set[int | None]):
        super().__init__(module, "packed", backend.name)
        self.attention = backend
        self.windows = windows

    def __call__(self, batch: PackedBatch) -> torch.Tensor:
        layout = packed_layout(batch.cu_seqlens, batch.max_seqlen, batch.real_tokens)
        context = self.attention.prepare(layout, self.windows)
        out = self.module(input_ids=batch.input_ids[None], position_ids=batch.position_ids[None],
                          mbbench_packed=(self.attention, layout, context))
        return out.last_hidden_state[0]


def packed_attention(backend: str, device: torch.device, dtype: torch.dtype,
                     windows: set[int | None]) -> AttentionBackend:
    """The backend a transformers model built with `attn_implementation=PACKED_ATTENTION` attends through (the
    implementation registered with transformers). Raises BackendUnavailable when `backend` cannot run here."""
    register_packed_attention()
    return get_backend(backend, device, dtype, needs_window=any(w is not None for w in windows))


FLOAT32_BACKEND = "sdpa"  # runs fp32 on every device; the twin's attention when the run's backend cannot


def _runs_float32(backend: str, device: torch.device) -> bool:
    return BACKEND_CLASSES[backend]().availability(device, torch.float32).ok


def float32_twin(encoder: Encoder) -> Encoder:
    """The same function in fp32, the way torch eager runs it: `encoder`'s weights upcast (exactly: every bf16
    and fp16 value is an fp32 value), torch's GEMM kernel, eager element-wise ops, and its attention backend
    when that runs fp32 here (else `FLOAT32_BACKEND`: varlen and flash kernels take half precision only).

    What every engine's output is judged against (`engines.parity`). Returns `encoder` itself when it is already
    that: fp32 on torch's GEMM and eager element-wise kernels. The original is never modified.
    """
    plain = encoder.gemm == gemm.TORCH and encoder.elementwise == fused.EAGER
    if encoder.dtype == torch.float32 and plain:
        return encoder
    twin = copy.copy(encoder)
    twin.module = gemm.unpacked_copy(encoder.module).float()
    twin.gemm, twin.elementwise = gemm.TORCH, fused.EAGER
    if isinstance(encoder, PackedEncoder):
        fused.use(twin.module, fused.EAGER)
        name = encoder.backend if _runs_float32(encoder.backend, encoder.device) else FLOAT32_BACKEND
        twin.module.set_backend(name)  # re-resolved for fp32 on the next forward
        twin.backend = name
    elif isinstance(encoder, HFPackedEncoder):
        name = encoder.backend if _runs_float32(encoder.backend, encoder.device) else FLOAT32_BACKEND
        twin.attention = packed_attention(name, encoder.device, torch.float32, encoder.windows)
        twin.backend = name
    return twin
