"""Every attention backend behind one call: packed q, k, v + cu_seqlens + optional ±window.

Layout: q, k, v are `(total_tokens, heads, head_dim)`; documents are concatenated and delimited by
`cu_seqlens` (int32, `(num_docs + 1,)`). `window=None` is global attention; `window=w` keeps keys
with |i - j| <= w inside the same document (ModernBERT local layers use w = 64).

Each backend splits its work in two:
- `prepare(...)` runs once per forward, before the layers (masks, block masks, index maps), so no
  layer repeats it;
- `attend(q, k, v, context, window, scale)` runs once per layer.

Backends say whether they can run on a device and dtype (`availability`), and asking for one that
cannot is an error, never a silent fallback.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mbbench.errors import BackendUnavailable, UserError


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


@dataclass
class PackedLayout:
    """What every backend may need about a packed batch; derived once per forward."""

    cu_seqlens: torch.Tensor  # int32, (docs + 1,)
    max_seqlen: int  # python int: no device->host sync needed inside the forward
    total_tokens: int
    doc_ids: torch.Tensor  # (total,) int64: which document each token belongs to
    positions: torch.Tensor  # (total,) int64: position inside its document


def packed_layout(cu_seqlens: torch.Tensor, max_seqlen: int, total_tokens: int) -> PackedLayout:
    """Document id and in-document position of every packed token, without host syncs."""
    cu = cu_seqlens.to(torch.int64)
    token = torch.arange(total_tokens, device=cu.device)
    doc_ids = torch.searchsorted(cu[1:], token, right=True)
    positions = token - cu[doc_ids]
    return PackedLayout(cu_seqlens.to(torch.int32), int(max_seqlen), total_tokens, doc_ids, positions)


def _cuda_capability(device: torch.device) -> tuple[int, int] | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)


class AttentionBackend:
    """Base class: subclasses set `name`, `supports_window` and implement the three methods."""

    name: str = ""
    supports_window: bool = True
    description: str = ""

    def availability(self, device: torch.device, dtype: torch.dtype) -> Availability:
        raise NotImplementedError

    def prepare(self, layout: PackedLayout, windows: set[int | None]) -> Any:
        """Per-forward context for every window this model uses (None = global)."""
        return None

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: PackedLayout,
               context: Any, window: int | None, scale: float) -> torch.Tensor:
        raise NotImplementedError

    def compute_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype attention actually runs in (kernels that lack fp32 run in bf16)."""
        return dtype


# --- padded backends (eager, sdpa): scatter the packed tokens into (docs, max_len) once per layer ---


@dataclass
class _PaddedContext:
    flat_index: torch.Tensor  # (total,) index into docs * max_len
    masks: dict  # window -> bool mask broadcastable to (docs, heads, max_len, max_len)
    docs: int
    max_len: int


def _padded_context(layout: PackedLayout, windows: set[int | None]) -> _PaddedContext:
    docs = layout.cu_seqlens.numel() - 1
    max_len = layout.max_seqlen
    device = layout.cu_seqlens.device
    lengths = (layout.cu_seqlens[1:] - layout.cu_seqlens[:-1]).to(torch.int64)
    pos = torch.arange(max_len, device=device)
    key_valid = (pos[None, :] < lengths[:, None])[:, None, None, :]  # (docs, 1, 1, max_len)
    masks = {}
    for window in windows:
        if window is None:
            masks[window] = key_valid
        else:
            band = (pos[:, None] - pos[None, :]).abs() <= window
            masks[window] = key_valid & band[None, None]
    flat_index = layout.doc_ids * max_len + layout.positions
    return _PaddedContext(flat_index, masks, docs, max_len)


def _to_padded(x: torch.Tensor, ctx: _PaddedContext) -> torch.Tensor:
    heads, dim = x.shape[1:]
    out = x.new_zeros(ctx.docs * ctx.max_len, heads, dim)
    out.index_copy_(0, ctx.flat_index, x)
    return out.view(ctx.docs, ctx.max_len, heads, dim).transpose(1, 2)  # (docs, heads, len, dim)


def _from_padded(x: torch.Tensor, ctx: _PaddedContext) -> torch.Tensor:
    docs, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(docs * length, heads, dim).index_select(0, ctx.flat_index)


class EagerAttention(AttentionBackend):
    name = "eager"
    description = "explicit softmax(QK^T)V on padded documents; the numerical reference"

    def availability(self, device, dtype):
        return Availability(True)

    def prepare(self, layout, windows):
        return _padded_context(layout, windows)

    def attend(self, q, k, v, layout, context, window, scale):
        qp, kp, vp = (_to_padded(t, context) for t in (q, k, v))
        scores = torch.matmul(qp.float(), kp.float().transpose(-1, -2)) * scale
        scores = scores.masked_fill(~context.masks[window], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs, vp.float()).to(q.dtype)
        return _from_padded(out, context)


class SdpaAttention(AttentionBackend):
    name = "sdpa"
    description = "torch scaled_dot_product_attention with a boolean document+window mask (padded per call)"

    def availability(self, device, dtype):
        return Availability(True)

    def prepare(self, layout, windows):
        return _padded_context(layout, windows)

    def attend(self, q, k, v, layout, context, window, scale):
        qp, kp, vp = (_to_padded(t, context) for t in (q, k, v))
        out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=context.masks[window], scale=scale)
        return _from_padded(out, context)


# --- FlexAttention: one packed sequence, block-sparse document (+ window) mask ---


class FlexAttention(AttentionBackend):
    name = "flex"
    description = "compiled FlexAttention over the packed sequence with a block-sparse document/window mask"

    def __init__(self) -> None:
        self._compiled = None  # compiled lazily: compiling costs seconds and is only paid when used

    def availability(self, device, dtype):
        try:
            importlib.import_module("torch.nn.attention.flex_attention")
        except ImportError:
            return Availability(False, "this torch has no torch.nn.attention.flex_attention")
        if device.type not in ("cpu", "cuda"):
            return Availability(False, f"flex attention is not supported on {device.type}")
        if device.type == "cpu" and torch.backends.cpu.get_cpu_capability() == "default":
            return Availability(False, "flex attention on CPU needs AVX2")
        return Availability(True)

    def _kernel(self):
        if self._compiled is None:
            from torch.nn.attention.flex_attention import flex_attention

            self._compiled = torch.compile(flex_attention, dynamic=True)
        return self._compiled

    def prepare(self, layout, windows):
        from torch.nn.attention.flex_attention import create_block_mask

        doc = layout.doc_ids
        total = layout.total_tokens
        masks = {}
        for window in windows:
            if window is None:
                def mask_mod(b, h, q_idx, kv_idx, doc=doc):
                    return doc[q_idx] == doc[kv_idx]
            else:
                def mask_mod(b, h, q_idx, kv_idx, doc=doc, w=window):
                    return (doc[q_idx] == doc[kv_idx]) & ((q_idx - kv_idx).abs() <= w)
            masks[window] = create_block_mask(mask_mod, None, None, total, total, device=doc.device)
        return masks

    def attend(self, q, k, v, layout, context, window, scale):
        qh, kh, vh = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, heads, total, dim)
        out = self._kernel()(qh, kh, vh, block_mask=context[window], scale=scale)
        return out.squeeze(0).transpose(0, 1)


# --- kernels that take cu_seqlens directly (CUDA only) ---


def _half_precision(dtype: torch.dtype) -> torch.dtype:
    """FA2-style kernels run fp16/bf16 only; fp32 models attend in bf16, as FlexBERT does."""
    return dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16


class _VarlenKernel(AttentionBackend):
    """Shared shape handling for kernels with a flash-attn style varlen signature."""

    def compute_dtype(self, dtype):
        return _half_precision(dtype)

    def _sm80(self, device) -> Availability:
        capability = _cuda_capability(device)
        if capability is None:
            return Availability(False, f"{self.name} needs a CUDA GPU (device is {device})")
        if capability < (8, 0):
            return Availability(False, f"{self.name} needs compute capability 8.0+, this GPU is {capability}")
        return Availability(True)

    def attend(self, q, k, v, layout, context, window, scale):
        dtype = self.compute_dtype(q.dtype)
        out = self._call(q.to(dtype), k.to(dtype), v.to(dtype), layout, window, scale)
        return out.to(q.dtype)


class VarlenAttention(_VarlenKernel):
    name = "varlen"
    description = "torch.nn.attention.varlen.varlen_attn (PyTorch's FA2) with window_size=(w, w)"

    def availability(self, device, dtype):
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:
            return Availability(False, "this torch has no torch.nn.attention.varlen (needs 2.11+)")
        if "window_size" not in inspect.signature(varlen_attn).parameters:
            return Availability(False, "this torch's varlen_attn has no window_size (needs 2.11+)")
        return self._sm80(device)

    def _call(self, q, k, v, layout, window, scale):
        from torch.nn.attention.varlen import varlen_attn

        size = (-1, -1) if window is None else (window, window)
        cu, max_len = layout.cu_seqlens, layout.max_seqlen
        return varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scale, window_size=size)


class FlashAttn(_VarlenKernel):
    name = "flash"
    description = "flash-attn 2 flash_attn_varlen_func (pip install mbbench[flash])"

    def availability(self, device, dtype):
        if importlib.util.find_spec("flash_attn") is None:
            return Availability(False, "flash-attn is not installed (pip install 'mbbench[flash]')")
        return self._sm80(device)

    def _call(self, q, k, v, layout, window, scale):
        from flash_attn import flash_attn_varlen_func

        size = (-1, -1) if window is None else (window, window)
        cu, max_len = layout.cu_seqlens, layout.max_seqlen
        return flash_attn_varlen_func(q, k, v, cu, cu, max_len, max_len, softmax_scale=scale,
                                      window_size=size)


class XformersAttention(AttentionBackend):
    name = "xformers"
    supports_window = False  # xformers has no bidirectional varlen window on FA2 (see docs/architecture.md)
    description = "xformers memory_efficient_attention with a block-diagonal mask (global attention only)"

    def availability(self, device, dtype):
        if importlib.util.find_spec("xformers") is None:
            return Availability(False, "xformers is not installed (pip install 'mbbench[xformers]')")
        if device.type != "cuda":
            return Availability(False, "xformers memory_efficient_attention has no CPU operator")
        return Availability(True)

    def prepare(self, layout, windows):
        from xformers.ops.fmha.attn_bias import BlockDiagonalMask

        lengths = (layout.cu_seqlens[1:] - layout.cu_seqlens[:-1]).tolist()
        return BlockDiagonalMask.from_seqlens(lengths)

    def attend(self, q, k, v, layout, context, window, scale):
        if window is not None:
            raise BackendUnavailable("xformers cannot run bidirectional sliding-window attention on packed documents")
        from xformers.ops import memory_efficient_attention

        out = memory_efficient_attention(q[None], k[None], v[None], attn_bias=context, scale=scale)
        return out[0]


BACKEND_CLASSES: dict[str, type[AttentionBackend]] = {
    cls.name: cls for cls in (EagerAttention, SdpaAttention, FlexAttention, VarlenAttention, FlashAttn,
                              XformersAttention)
}

# Fastest first; `auto` takes the first one that can run. On CPU, sdpa beats flex once compile time
# is counted and needs no compiler, so flex is only chosen there when asked for.
AUTO_ORDER = {
    "cuda": ["flash", "varlen", "flex", "sdpa"],
    "cpu": ["sdpa", "eager"],
}


def backend_names() -> list[str]:
    return list(BACKEND_CLASSES)


def get_backend(name: str, device: torch.device | str, dtype: torch.dtype,
                needs_window: bool = True) -> AttentionBackend:
    """Build the named backend, or the fastest available for `auto`; raise if it cannot run here."""
    device = torch.device(device)
    if name == "auto":
        for candidate in AUTO_ORDER.get(device.type, ["sdpa", "eager"]):
            backend = BACKEND_CLASSES[candidate]()
            if backend.availability(device, dtype).ok and (backend.supports_window or not needs_window):
                return backend
        raise BackendUnavailable(f"no attention backend can run on {device} in {dtype}")
    if name not in BACKEND_CLASSES:
        raise UserError(f"unknown attention backend {name!r}; choose from auto, {', '.join(BACKEND_CLASSES)}")
    backend = BACKEND_CLASSES[name]()
    available = backend.availability(device, dtype)
    if not available.ok:
        raise BackendUnavailable(f"attention backend {name!r} cannot run here: {available.reason}")
    if needs_window and not backend.supports_window:
        raise BackendUnavailable(f"attention backend {name!r} does not support sliding-window attention, "
                                 "which this model needs")
    return backend


def availability_table(device: torch.device | str, dtype: torch.dtype) -> list[tuple[str, Availability]]:
    device = torch.device(device)
    return [(name, cls().availability(device, dtype)) for name, cls in BACKEND_CLASSES.items()]
