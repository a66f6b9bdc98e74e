"""Every attention backend behind one call: packed q, k, v + cu_seqlens + optional ±window.

Layout: q, k, v are `(total_tokens, heads, head_dim)`; documents are concatenated and delimited by
`cu_seqlens` (int32, `(num_docs + 1,)`). `window=None` is global attention; `window=w` keeps keys
with |i - j| <= w inside the same document (ModernBERT local layers use w = 64).

Each backend splits its work in two:
- `prepare(...)` runs once per forward, before the layers (masks, block masks, index maps), so no
  layer repeats it;
- `attend(q, k, v, context, window, scale)` runs once per layer.

Backends say whether they can run on a device and dtype (`availability`), and asking for one that
cannot is an error, never a silent fallback. `choose_backend(device, dtype, lengths, needs_window)`
picks one for a workload and says why; `attention_work(backend, layout, window)` counts the scores a
layer computes, so the cost classes (linear local layers, quadratic global ones) are testable.

Memory per forward: `windowed` keeps O(tokens × 192) bools for local layers and a key-padding mask for
global ones; `flex` builds its BlockMask at 128-token block granularity, O((tokens / 128)²) int32;
`sdpa` keeps a (1, 1, L, L) band, or (docs, 1, L, L) when document lengths differ; `eager` (the
numerical reference) materialises (docs, heads, L, L) scores by design.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Sequence

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
    masks: dict  # window -> bool mask broadcastable to (docs, heads, max_len, max_len), or None
    docs: int
    max_len: int


def _padded_masks(layout: PackedLayout, windows: set[int | None]) -> dict:
    """The smallest bool mask per window for padded (docs, max_len) attention.

    Global layers need only a key-padding mask `(docs, 1, 1, max_len)`, and none at all when every
    document has the same length (decided from python ints: no host sync). Local layers need the
    ±window band `(1, 1, max_len, max_len)`, combined with key padding only when lengths differ, so
    `(docs, 1, max_len, max_len)` exists only for ragged batches; `choose_backend` sends long ragged
    documents to the tiled `windowed` backend instead.
    """
    docs = layout.cu_seqlens.numel() - 1
    max_len = layout.max_seqlen
    device = layout.cu_seqlens.device
    ragged = layout.total_tokens != docs * max_len
    pos = torch.arange(max_len, device=device)
    key_valid = None
    if ragged:
        lengths = (layout.cu_seqlens[1:] - layout.cu_seqlens[:-1]).to(torch.int64)
        key_valid = (pos[None, :] < lengths[:, None])[:, None, None, :]  # (docs, 1, 1, max_len)
    masks = {}
    for window in windows:
        if window is None:
            masks[window] = key_valid
            continue
        band = ((pos[:, None] - pos[None, :]).abs() <= window)[None, None]  # (1, 1, max_len, max_len)
        masks[window] = band if key_valid is None else key_valid & band
    return masks


def _padded_context(layout: PackedLayout, windows: set[int | None]) -> _PaddedContext:
    docs = layout.cu_seqlens.numel() - 1
    flat_index = layout.doc_ids * layout.max_seqlen + layout.positions
    return _PaddedContext(flat_index, _padded_masks(layout, windows), docs, layout.max_seqlen)


def _to_padded(x: torch.Tensor, ctx: _PaddedContext) -> torch.Tensor:
    """(total, heads, dim) -> (docs, heads, max_len, dim); a view when every document has max_len."""
    heads, dim = x.shape[1:]
    if x.shape[0] == ctx.docs * ctx.max_len:  # no padding: packed order is already padded order
        return x.view(ctx.docs, ctx.max_len, heads, dim).transpose(1, 2)  # (docs, heads, len, dim)
    out = x.new_zeros(ctx.docs * ctx.max_len, heads, dim)
    out.index_copy_(0, ctx.flat_index, x)
    return out.view(ctx.docs, ctx.max_len, heads, dim).transpose(1, 2)  # (docs, heads, len, dim)


def _padded_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: _PaddedContext) -> tuple[torch.Tensor, ...]:
    """(total, heads, dim) q, k, v -> three (docs, heads, max_len, dim) tensors for SDPA.

    Without padding they are copied, in one pass, into heads-first contiguous memory: CPU SDPA runs
    such inputs measurably faster than strided views of the packed rows (0.79 s vs 0.85 s for one
    8,192-token global layer of the base model, see docs/benchmarking.md), far more than the copy costs.
    """
    if q.shape[0] != ctx.docs * ctx.max_len or q.device.type != "cpu":
        return tuple(_to_padded(t, ctx) for t in (q, k, v))
    heads, dim = q.shape[1:]
    stacked = torch.stack([t.view(ctx.docs, ctx.max_len, heads, dim).transpose(1, 2) for t in (q, k, v)])
    return stacked.unbind(0)  # 3 x (docs, heads, max_len, dim), contiguous


def _from_padded(x: torch.Tensor, ctx: _PaddedContext) -> torch.Tensor:
    """(docs, heads, max_len, dim) -> (total, heads, dim), dropping padding rows."""
    docs, heads, length, dim = x.shape
    rows = x.transpose(1, 2).reshape(docs * length, heads, dim)  # (docs * len, heads, dim)
    return rows if rows.shape[0] == ctx.flat_index.numel() else rows.index_select(0, ctx.flat_index)


class _PaddedBackend(AttentionBackend):
    """Backends that scatter each document into a padded tile inside the call (the reference and CPU paths)."""

    def availability(self, device, dtype):
        return Availability(True)

    def prepare(self, layout, windows):
        return _padded_context(layout, windows)

    def attend(self, q, k, v, layout, context, window, scale):
        qp, kp, vp = _padded_qkv(q, k, v, context)  # (docs, heads, max_len, dim)
        return _from_padded(self.attend_padded(qp, kp, vp, context.masks[window], scale).to(q.dtype), context)

    def attend_padded(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                      scale: float) -> torch.Tensor:
        """(docs, heads, len, dim) in and out; `mask` True where a key is visible (None: all are)."""
        raise NotImplementedError


class EagerAttention(_PaddedBackend):
    name = "eager"
    description = "explicit softmax(QK^T)V on padded documents; the numerical reference"

    def attend_padded(self, q, k, v, mask, scale):
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.matmul(torch.softmax(scores, dim=-1), v.float())


class SdpaAttention(_PaddedBackend):
    name = "sdpa"
    description = "torch scaled_dot_product_attention with a boolean document+window mask (padded per call)"

    def attend_padded(self, q, k, v, mask, scale):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


# --- windowed: local layers in query tiles over the ±window band, global layers padded per document ---

LOCAL_QUERY_BLOCK = 64  # queries per tile; each tile reads 64 + 2*64 = 192 keys (measured: see docs/benchmarking.md)


@dataclass
class BandTiles:
    """Index data for ±window attention over packed tokens in tiles of `block` queries.

    Tile b holds queries `[b*block, (b+1)*block)` and keys `[b*block - window, (b+1)*block + window)`
    of the packed sequence (out-of-range keys are padding). `mask` keeps keys of the same document
    within ±window; padding tokens form their own document, so no query row is fully masked.
    """

    block: int
    window: int
    tiles: int
    total: int
    mask: torch.Tensor  # (tiles, 1, block, block + 2 * window) bool


def band_tiles(layout: PackedLayout, window: int, block: int = LOCAL_QUERY_BLOCK) -> BandTiles:
    """Tile masks for ±`window` attention on `layout`: memory O(tokens × (block + 2·window)) bools.

    Raises ValueError for a negative window or a block < 1.
    """
    if window < 0 or block < 1:
        raise ValueError(f"window must be >= 0 and block >= 1 (got window={window}, block={block})")
    total = layout.total_tokens
    tiles = -(-total // block)
    span = block + 2 * window
    doc = F.pad(layout.doc_ids, (window, tiles * block - total + window), value=-1)  # (tiles*block + 2w,)
    q_doc = doc[window:window + tiles * block].view(tiles, block)  # (tiles, block)
    k_doc = doc.unfold(0, span, block)  # (tiles, span)
    rel = torch.arange(span, device=doc.device)[None, :] - torch.arange(block, device=doc.device)[:, None]
    band = (rel >= 0) & (rel <= 2 * window)  # (block, span): |query - key| <= window
    mask = (q_doc[:, :, None] == k_doc[:, None, :]) & band[None]  # (tiles, block, span)
    return BandTiles(block, window, tiles, total, mask[:, None])  # (tiles, 1, block, span)


def _pad_rows(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Zero rows around (rows, ...) x; zero-fills only the new rows (F.pad fills all, then copies)."""
    if before == after == 0 and x.is_contiguous():
        return x
    out = x.new_empty(before + x.shape[0] + after, *x.shape[1:])
    out[:before].zero_()
    out[before:before + x.shape[0]].copy_(x)
    out[before + x.shape[0]:].zero_()
    return out


def band_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tiles: BandTiles, scale: float) -> torch.Tensor:
    """±window attention of packed (total, heads, dim) q, k, v via one batched SDPA over the tiles.

    Work is tiles × block × (block + 2·window) scores: linear in the number of tokens.
    """
    total, heads, dim = q.shape
    block, window, n = tiles.block, tiles.window, tiles.tiles
    span = block + 2 * window
    qt = _pad_rows(q, 0, n * block - total).view(n, block, heads, dim).transpose(1, 2)  # (n, h, block, d)
    kt, vt = (_pad_rows(t, window, n * block - total + window).unfold(0, span, block).permute(0, 1, 3, 2)
              for t in (k, v))  # (n, h, span, d)
    out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=tiles.mask, scale=scale)  # (n, h, block, d)
    return out.transpose(1, 2).reshape(n * block, heads, dim)[:total]  # (total, heads, dim)


@dataclass
class _WindowedContext:
    padded: _PaddedContext | None  # global layers, padded to the longest document
    tiles: dict  # window -> BandTiles
    spans: list[tuple[int, int]] | None = None  # global layers, one SDPA call per document: (start, end) tokens


# Global layers of ragged batches: padding every document to the longest wastes (max² − len²) scores per
# document (about 40 % at 32 documents ~ N(256, 64)); up to this many documents one unpadded SDPA call each
# costs less than the waste (a few microseconds of dispatch per call on CPU).
PER_DOCUMENT_GLOBAL_LIMIT = 64


class WindowedSdpaAttention(AttentionBackend):
    name = "windowed"
    description = ("SDPA; local layers in 64-query tiles over the ±window band (O(tokens × window)), "
                   "global layers padded per document")

    def availability(self, device, dtype):
        return Availability(True)

    def prepare(self, layout, windows):
        tiles = {w: band_tiles(layout, w) for w in windows if w is not None}
        docs = layout.cu_seqlens.numel() - 1
        if None in windows and 1 < docs <= PER_DOCUMENT_GLOBAL_LIMIT and layout.cu_seqlens.device.type == "cpu":
            bounds = layout.cu_seqlens.tolist()  # on the CPU: no device sync
            if len(set(b - a for a, b in zip(bounds, bounds[1:]))) > 1:  # ragged: per-document calls pay
                return _WindowedContext(None, tiles, list(zip(bounds, bounds[1:])))
        padded = _padded_context(layout, {None} if None in windows else set())
        return _WindowedContext(padded, tiles)

    def attend(self, q, k, v, layout, context, window, scale):
        if window is not None:
            return band_attend(q, k, v, context.tiles[window], scale)
        if context.spans is not None:
            return torch.cat([_attend_one(q[a:b], k[a:b], v[a:b], scale) for a, b in context.spans])
        ctx = context.padded
        qp, kp, vp = _padded_qkv(q, k, v, ctx)  # (docs, heads, max_len, dim)
        out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=ctx.masks[None], scale=scale)
        return _from_padded(out, ctx)


def _attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Global attention within one document: (len, heads, dim) in and out, no mask."""
    qh, kh, vh = torch.stack([t.transpose(0, 1) for t in (q, k, v)])[:, None]  # 3 x (1, heads, len, dim), contiguous
    out = F.scaled_dot_product_attention(qh, kh, vh, scale=scale)  # (1, heads, len, dim)
    return out[0].transpose(0, 1)  # (len, heads, dim)


# --- FlexAttention: one packed sequence, block-sparse document (+ window) mask ---


FLEX_BLOCK = 128  # FlexAttention's default sparse block size

_FLEX_KERNELS: dict = {}  # device type -> compiled flex_attention, shared by every model (compiling costs seconds)

# Inductor's CPU flex template (torch 2.13) generates C++ that does not compile (`cur_qSplitSize8` undeclared)
# once a dynamic-shape kernel meets a second sequence length; static shapes compile correctly, once per total
# length (a few seconds each, paid in the warmup pass), so the CPU kernel is static and may recompile this often.
CPU_FLEX_RECOMPILE_LIMIT = 64


def flex_kernel(device_type: str = "cuda"):
    """`torch.compile(flex_attention)`, compiled on first call and cached per process and device type:
    dynamic shapes on CUDA, static shapes on CPU (see CPU_FLEX_RECOMPILE_LIMIT)."""
    if device_type not in _FLEX_KERNELS:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX_KERNELS[device_type] = torch.compile(flex_attention, dynamic=device_type != "cpu")
    return _FLEX_KERNELS[device_type]


def _block_extent(layout: PackedLayout, block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per `block`-token block: first token, last token, document of each (all (blocks,) int64)."""
    total = layout.total_tokens
    first = torch.arange(0, total, block, device=layout.doc_ids.device)  # (blocks,)
    last = (first + block - 1).clamp(max=total - 1)
    return first, last, layout.doc_ids[first], layout.doc_ids[last]


def _compact(kv: torch.Tensor, keep: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of candidate kv blocks -> (num (1, 1, rows) int32, indices (1, 1, rows, width) int32)."""
    rows = kv.shape[0]
    ordered = torch.where(keep, kv, width).sort(dim=1).values  # kept blocks first, ascending
    indices = torch.zeros(rows, width, dtype=torch.int32, device=kv.device)
    cols = min(width, ordered.shape[1])
    indices[:, :cols] = torch.where(ordered[:, :cols] < width, ordered[:, :cols], 0).to(torch.int32)
    return keep.sum(dim=1).to(torch.int32)[None, None], indices[None, None]  # (1, 1, rows), (1, 1, rows, width)


def block_ranges(layout: PackedLayout, window: int | None, block: int = FLEX_BLOCK):
    """Visited kv blocks per query block for a document (+ ±window) mask, split into full and partial.

    Returns (partial_num, partial_idx, full_num, full_idx) in BlockMask's kv layout:
    num (1, 1, blocks) int32, idx (1, 1, blocks, blocks) int32. Memory O((tokens / block)²) int32.
    Each query block visits one contiguous kv block range: its documents' span, clipped to ±window.
    """
    first, last, doc_first, doc_last = _block_extent(layout, block)
    blocks = first.numel()
    cu = layout.cu_seqlens.to(torch.int64)
    lo_tok, hi_tok = cu[doc_first], cu[doc_last + 1] - 1  # (blocks,) inclusive token range
    if window is not None:
        lo_tok, hi_tok = torch.maximum(lo_tok, first - window), torch.minimum(hi_tok, last + window)
    lo, hi = lo_tok // block, hi_tok // block  # (blocks,) inclusive kv block range
    span = int((hi - lo).max()) + 1  # one host sync per forward, in prepare
    kv = lo[:, None] + torch.arange(span, device=lo.device)[None, :]  # (blocks, span)
    visited = kv <= hi[:, None]
    kv = kv.clamp(max=blocks - 1)
    single = (doc_first == doc_last) & (last - first == block - 1)  # (blocks,) a whole block in one document
    full = visited & single[:, None] & single[kv] & (doc_first[kv] == doc_first[:, None])
    if window is not None:
        reach = torch.maximum(last[:, None] - first[kv], last[kv] - first[:, None])  # (blocks, span) max |q - k|
        full &= reach <= window
    return (*_compact(kv, visited & ~full, blocks), *_compact(kv, full, blocks))


def flex_block_mask(layout: PackedLayout, window: int | None, block: int = FLEX_BLOCK):
    """BlockMask for documents (+ ±window) over the packed sequence, built at block granularity.

    Never materialises a token × token mask: memory is O((tokens / block)²) int32 (4 MiB of indices at
    131,072 tokens) and the mask_mod runs only inside partial blocks.
    """
    from torch.nn.attention.flex_attention import BlockMask

    total = layout.total_tokens
    # (total,): not padded to whole blocks; flex masks keys past seq_lengths itself, and a captured
    # tensor longer than the sequence breaks Inductor's CPU flex template (C++ compile error, torch 2.13).
    doc = layout.doc_ids

    # `doc` as a closure cell and the window as a default argument: other spellings (window in a closure
    # cell, doc as a default argument) make Inductor's CPU flex template fail to compile on recompiles
    # (torch 2.13, "cur_kvSplitSize… was not declared"). A process that changes heads or head_dim after
    # the first flex call can still hit that bug.
    if window is None:
        def mask_mod(b, h, q_idx, kv_idx):
            return doc[q_idx] == doc[kv_idx]
    else:
        def mask_mod(b, h, q_idx, kv_idx, w=window):
            return (doc[q_idx] == doc[kv_idx]) & ((q_idx - kv_idx).abs() <= w)
    num, idx, full_num, full_idx = block_ranges(layout, window, block)
    mask = BlockMask.from_kv_blocks(num, idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=mask_mod,
                                    seq_lengths=(total, total), compute_q_blocks=False)
    # Document and ±window masks are symmetric, so the q-block view (used by backward) is the kv view;
    # this skips from_kv_blocks' dense transpose, which took most of the build time.
    mask.q_num_blocks, mask.q_indices = num, idx
    mask.full_q_num_blocks, mask.full_q_indices = full_num, full_idx
    return mask


class FlexAttention(AttentionBackend):
    name = "flex"
    description = "compiled FlexAttention over the packed sequence with a block-sparse document/window mask"

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

    def prepare(self, layout, windows):
        return {window: flex_block_mask(layout, window) for window in windows}

    def attend(self, q, k, v, layout, context, window, scale):
        qh, kh, vh = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, heads, total, dim)
        static = q.device.type == "cpu"  # one compile per total length (see CPU_FLEX_RECOMPILE_LIMIT)
        with torch._dynamo.config.patch(recompile_limit=CPU_FLEX_RECOMPILE_LIMIT) if static else nullcontext():
            out = flex_kernel(q.device.type)(qh, kh, vh, block_mask=context[window], scale=scale)
        return out.squeeze(0).transpose(0, 1)  # (total, heads, dim)


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


def _exact_pairs(layout: PackedLayout, window: int | None) -> int:
    """Query-key pairs the mask keeps (what an exact varlen kernel computes)."""
    lengths = (layout.cu_seqlens[1:] - layout.cu_seqlens[:-1]).to(torch.int64)
    if window is None:
        return int((lengths * lengths).sum())
    pos = layout.positions
    length = lengths[layout.doc_ids]
    keys = torch.minimum(pos + window, length - 1) - torch.clamp(pos - window, min=0) + 1  # (total,)
    return int(keys.sum())


def attention_work(backend: str, layout: PackedLayout, window: int | None) -> int:
    """Score elements (query × key pairs, per head) one layer of `backend` computes on `layout`.

    Counts what the backend evaluates, including padding and masked-out pairs inside visited tiles or
    blocks: padded backends (eager, sdpa; windowed on global layers of over 64 documents) docs × max_len²
    (windowed global layers of up to 64 documents: Σ len², one call each); windowed local
    layers tiles × 64 × (64 + 2·window); flex visited 128 × 128 blocks × 128²; varlen/flash/xformers
    the kept pairs. Raises UserError for an unknown backend name.
    """
    docs = layout.cu_seqlens.numel() - 1
    padded = docs * layout.max_seqlen ** 2
    if backend == "windowed" and window is None and 1 < docs <= PER_DOCUMENT_GLOBAL_LIMIT:
        return _exact_pairs(layout, None)  # ragged batches: one unpadded call per document (equal: the same)
    if backend in ("eager", "sdpa") or (backend == "windowed" and window is None):
        return padded
    if backend == "windowed":
        tiles = -(-layout.total_tokens // LOCAL_QUERY_BLOCK)
        return tiles * LOCAL_QUERY_BLOCK * (LOCAL_QUERY_BLOCK + 2 * window)
    if backend == "flex":
        num, _, full_num, _ = block_ranges(layout, window)
        return int(num.sum() + full_num.sum()) * FLEX_BLOCK ** 2
    if backend in ("varlen", "flash", "xformers"):
        return _exact_pairs(layout, window)
    raise UserError(f"unknown attention backend {backend!r}")


BACKEND_CLASSES: dict[str, type[AttentionBackend]] = {
    cls.name: cls for cls in (EagerAttention, SdpaAttention, WindowedSdpaAttention, FlexAttention,
                              VarlenAttention, FlashAttn, XformersAttention)
}

# Fastest first; `auto` without document lengths takes the first one that can run. On CPU, sdpa beats
# flex once compile time is counted and needs no compiler, so flex is only chosen there when asked for.
AUTO_ORDER = {
    "cuda": ["flash", "varlen", "flex", "windowed", "sdpa"],
    "cpu": ["sdpa", "eager"],
}

# CPU crossover (fp32, base config, measured with scripts/compare_local_attention.py; see
# docs/benchmarking.md): up to this longest document, padded sdpa's dense band costs no more than the
# tiles; above it the tiled `windowed` backend wins and its lead grows with length.
CPU_WINDOWED_CROSSOVER = 128


@dataclass(frozen=True)
class BackendChoice:
    """The backend `choose_backend` picked and why (record both with a result)."""

    name: str
    reason: str


def _first_available(order: list[str], device: torch.device, dtype: torch.dtype, needs_window: bool) -> str:
    for candidate in order:
        backend = BACKEND_CLASSES[candidate]()
        if backend.availability(device, dtype).ok and (backend.supports_window or not needs_window):
            return candidate
    raise BackendUnavailable(f"no attention backend can run on {device} in {dtype}")


def _choose_cpu(longest: int, needs_window: bool) -> BackendChoice:
    if not needs_window:
        return BackendChoice("sdpa", "cpu, no local layers: padded sdpa (the tiles only help ±window layers)")
    if longest > CPU_WINDOWED_CROSSOVER:
        return BackendChoice("windowed", f"cpu, max document {longest} > crossover {CPU_WINDOWED_CROSSOVER}: "
                                         "windowed sdpa skips key blocks outside ±window on local layers")
    return BackendChoice("sdpa", f"cpu, max document {longest} <= crossover {CPU_WINDOWED_CROSSOVER}: "
                                 "padded sdpa's dense band costs no more than the tiles")


def choose_backend(device: torch.device | str, dtype: torch.dtype, lengths: Sequence[int],
                   needs_window: bool = True) -> BackendChoice:
    """Pick the attention backend for a workload of documents with these `lengths` (tokens).

    CPU: `sdpa` when the longest document is <= `CPU_WINDOWED_CROSSOVER`, else `windowed` (a measured
    crossover, docs/benchmarking.md); flex is never picked on CPU because its one-time compile (~30 s per
    process) outweighs its gain on a benchmark run. CUDA: the first available of `AUTO_ORDER["cuda"]`
    (flash, varlen on sm80+; flex with its block mask elsewhere, e.g. T4; then windowed sdpa).
    Raises ValueError for empty lengths and BackendUnavailable when nothing can run.
    """
    device = torch.device(device)
    if not lengths:
        raise ValueError("choose_backend needs at least one document length")
    longest = max(int(n) for n in lengths)
    if device.type == "cpu":
        return _choose_cpu(longest, needs_window)
    order = AUTO_ORDER.get(device.type, ["windowed", "sdpa", "eager"])
    name = _first_available(order, device, dtype, needs_window)
    skipped = order[:order.index(name)]
    why = f"; {', '.join(skipped)} cannot run here" if skipped else ""
    return BackendChoice(name, f"{device.type}: first available of {' > '.join(order)}{why}")


def backend_names() -> list[str]:
    return list(BACKEND_CLASSES)


def get_backend(name: str, device: torch.device | str, dtype: torch.dtype,
                needs_window: bool = True, lengths: Sequence[int] | None = None) -> AttentionBackend:
    """Build the named backend, or for `auto` the one `choose_backend` picks (given `lengths`) or the
    first available of `AUTO_ORDER` (without); raise BackendUnavailable if it cannot run here."""
    device = torch.device(device)
    if name == "auto":
        if lengths:
            name = choose_backend(device, dtype, lengths, needs_window).name
        else:
            return BACKEND_CLASSES[_first_available(AUTO_ORDER.get(device.type, ["sdpa", "eager"]), device,
                                                    dtype, needs_window)]()
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
