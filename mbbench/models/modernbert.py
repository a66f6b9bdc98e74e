"""The reference ModernBERT: pre-norm, bias-free, RoPE, GeGLU, alternating global/local attention.

The encoder runs on packed tokens end to end: `(total_tokens,)` ids delimited by `cu_seqlens`.
A padded `(batch, seq)` input with an attention mask goes through the same model: it is unpadded
once, before the embeddings, and the output is re-padded once at the end; no layer ever pads.

Parameter names equal Hugging Face's `ModernBertModel` / `ModernBertForMaskedLM`, so their state
dicts load directly (see `weights.py`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mbbench.errors import UserError
from mbbench.models.attention import AttentionBackend, BackendChoice, PackedLayout, get_backend, packed_layout
from mbbench.models.config import ModernBertConfig
from mbbench.models.elementwise import EAGER_OPS
from mbbench.models.gemm import add_linear, linear


class RotaryTables(nn.Module):
    """cos/sin tables for one RoPE theta, indexed by in-document position.

    Angles equal transformers' `position * inv_freq` in fp32 bit for bit; their cos/sin are the correctly
    rounded fp32 values (transformers' fp32 `cos()` agrees to an ulp, see below); a table lookup avoids
    recomputing them in every forward. transformers' tables repeat
    the `head_dim / 2` frequencies twice (`cat(freqs, freqs)`); only one copy is kept here, since
    `elementwise.apply_rotary` works on the two halves of each head separately.
    """

    def __init__(self, head_dim: int, theta: float, max_positions: int):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        angles = torch.arange(max_positions, dtype=torch.float)[:, None] * inv_freq[None, :]  # (positions, dim / 2)
        # cos/sin in float64, rounded once to fp32: torch 2.13's fp32 CPU cos is off by up to 1.5e-4 for some
        # angles in some processes (allocation-alignment dependent; e.g. cos(28.125) in about 1 process of 6),
        # where the float64 route is deterministic and within half an fp32 ulp of the true value.
        self.register_buffer("cos", angles.double().cos().float(), persistent=False)
        self.register_buffer("sin", angles.double().sin().float(), persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens,) positions -> fp32 cos, sin of shape (tokens, 1, 1, head_dim / 2), broadcastable over
        (tokens, 2, heads, head_dim / 2) halves of q and k."""
        # transformers rounds cos/sin to the activation dtype, then multiplies in fp32: keep the rounded values,
        # held in fp32 so that products with half-precision q and k are computed (and kept) in fp32.
        cos, sin = (t[positions].to(dtype).float()[:, None, None, :] for t in (self.cos, self.sin))
        return cos, sin


class Attention(nn.Module):
    def __init__(self, cfg: ModernBertConfig, layer: int):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.window = None if cfg.is_global(layer) else cfg.half_window
        self.Wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=False)
        self.Wo = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.elementwise = EAGER_OPS  # RoPE's kernel (`elementwise.use` sets it)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], backend: AttentionBackend,
                layout: PackedLayout, context, residual: torch.Tensor) -> torch.Tensor:
        """Pre-normed (tokens, hidden) x -> residual + attention output, (tokens, hidden)."""
        qkv = linear(x, self.Wqkv).view(x.shape[0], 3, self.num_heads, self.head_dim)  # (tokens, 3, heads, head_dim)
        q, k = self.elementwise.rotary(qkv[:, :2], *rope).unbind(dim=1)  # q and k rotated in one pass
        out = backend.attend(q, k, qkv[:, 2], layout, context, self.window, self.head_dim ** -0.5)
        return add_linear(residual, out.reshape(x.shape[0], -1), self.Wo)  # (tokens, hidden)


class GeGLU(nn.Module):
    def __init__(self, cfg: ModernBertConfig):
        super().__init__()
        self.Wi = nn.Linear(cfg.hidden_size, cfg.glu_size, bias=False)
        self.Wo = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.elementwise = EAGER_OPS  # the gated activation's kernel (`elementwise.use` sets it)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Pre-normed (tokens, hidden) x -> residual + MLP output, (tokens, hidden)."""
        # (tokens, 2 * intermediate) -> gelu(inputs) * gate, (tokens, intermediate); exact (erf) GELU
        return add_linear(residual, self.elementwise.gelu_gated(linear(x, self.Wi)), self.Wo)


def layer_norm(cfg: ModernBertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps, bias=False)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModernBertConfig, layer: int):
        super().__init__()
        # Layer 0 reads the already-normalised embeddings, so it has no attention pre-norm.
        self.attn_norm = nn.Identity() if layer == 0 else layer_norm(cfg)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = layer_norm(cfg)
        self.mlp = GeGLU(cfg)

    def forward(self, x, rope, backend, layout, context):
        x = self.attn(self.attn_norm(x), rope, backend, layout, context, residual=x)
        return self.mlp(self.mlp_norm(x), residual=x)


class Embeddings(nn.Module):
    def __init__(self, cfg: ModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.norm = layer_norm(cfg)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.tok_embeddings(input_ids))


def _describe_hole(row: torch.Tensor) -> str:
    """'positions 60-119' for the first masked gap between real tokens of one (seq,) bool row."""
    real = row.nonzero().squeeze(1).tolist()
    gap = next(i for i in range(1, len(real)) if real[i] != real[i - 1] + 1)
    return f"positions {real[gap - 1] + 1}-{real[gap] - 1}"


def check_padding_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Validate a padded batch's mask; return (per-row real lengths (batch,) int32, longest length).

    Right padding and left padding are exact: each row's real tokens form one contiguous run, and
    transformers' positions (0..seq-1 over the padded row) differ from ours (0..n-1 over the run) by a
    constant per row, which RoPE does not see and the |i - j| window does not change.
    A row with masked tokens *between* real ones (a hole) is refused: transformers keeps the hole's
    width in RoPE distances and in the window, which a packed document cannot reproduce.
    Raises UserError for a mask of another shape or with a hole. One host sync.
    """
    if attention_mask.shape != input_ids.shape:
        raise UserError(f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                        f"shape {tuple(input_ids.shape)}")
    mask = attention_mask.bool()  # (batch, seq)
    lengths = mask.sum(dim=1, dtype=torch.int32)  # (batch,)
    starts = torch.diff(mask.int(), dim=1, prepend=mask.new_zeros(mask.shape[0], 1).int()) == 1
    runs = starts.sum(dim=1)  # (batch,) contiguous runs of real tokens per row
    if mask.shape[0] == 0 or mask.shape[1] == 0:
        return lengths, 0
    longest, most_runs = torch.stack([lengths.max(), runs.max().to(lengths.dtype)]).tolist()
    if most_runs > 1:
        row = int((runs > 1).nonzero()[0, 0])
        raise UserError(f"attention_mask row {row} has a hole (masked {_describe_hole(mask[row].cpu())} between "
                        "real tokens); the reference ModernBERT takes right- or left-padded rows only, since "
                        "transformers would keep the hole in RoPE distances and the local window")
    return lengths, longest


def check_packing(cu_seqlens: torch.Tensor, max_seqlen: int, total_tokens: int, max_positions: int) -> None:
    """Raise UserError for a packed batch the encoder would mis-handle: `max_seqlen` (a python int) above
    `max_positions`; and, when the (docs + 1,) cu_seqlens are on the CPU (reading them there costs no device
    sync), cu_seqlens that do not run from 0 to `total_tokens` without decreasing, or a `max_seqlen` below the
    longest document. Either would silently give wrong attention in some backends.
    """
    if cu_seqlens.dim() != 1 or cu_seqlens.is_floating_point() or cu_seqlens.is_complex():
        raise UserError(f"cu_seqlens must be a 1-D integer tensor (got {tuple(cu_seqlens.shape)} {cu_seqlens.dtype})")
    if max_seqlen > max_positions:
        raise UserError(f"max_seqlen {max_seqlen} exceeds max_position_embeddings ({max_positions}): no document "
                        "may be longer")
    if cu_seqlens.device.type != "cpu":
        return
    bounds = cu_seqlens.tolist()
    lengths = [b - a for a, b in zip(bounds, bounds[1:])]
    if not bounds or bounds[0] != 0 or bounds[-1] != total_tokens or any(n < 0 for n in lengths):
        shown = ", ".join(map(str, bounds[:4])) + (", ..." if len(bounds) > 4 else "")
        raise UserError(f"cu_seqlens must run from 0 to the {total_tokens} packed tokens without decreasing "
                        f"(got [{shown}] ending at {bounds[-1] if bounds else None})")
    if lengths and max_seqlen < max(lengths):
        raise UserError(f"max_seqlen {max_seqlen} is below the longest document ({max(lengths)} tokens)")


def unpad(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Padded (batch, seq) -> packed ids (total,), cu_seqlens (docs + 1,), max_seqlen, flat indices (total,).

    Takes right- or left-padded rows (see `check_padding_mask`, which raises UserError otherwise).
    Rows with no real token are left out of `cu_seqlens` (they hold no document); their output is zeros.
    """
    lengths, longest = check_padding_mask(input_ids, attention_mask)
    indices = attention_mask.bool().flatten().nonzero().squeeze(1)
    documents = lengths[lengths > 0]
    cu_seqlens = F.pad(torch.cumsum(documents, dim=0, dtype=torch.int32), (1, 0))
    return input_ids.flatten()[indices], cu_seqlens, longest, indices


def repad(packed: torch.Tensor, indices: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
    """Packed (total, hidden) -> (batch, seq, hidden), zeros on padding."""
    out = packed.new_zeros(batch * seq, packed.shape[-1])
    out.index_copy_(0, indices, packed)
    return out.view(batch, seq, packed.shape[-1])


class ModernBert(nn.Module):
    """The encoder. `backend` is an attention backend name, `auto`, or the `BackendChoice` that
    `choose_backend(device, dtype, lengths, needs_window)` returned (its reason is kept in
    `backend_reason`); it is resolved on first use."""

    def __init__(self, cfg: ModernBertConfig, backend: str | BackendChoice = "auto"):
        super().__init__()
        self.config = cfg
        self.set_backend(backend)
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.final_norm = layer_norm(cfg)
        self.rope_global = RotaryTables(cfg.head_dim, cfg.global_rope_theta, cfg.max_position_embeddings)
        self.rope_local = RotaryTables(cfg.head_dim, cfg.local_rope_theta, cfg.max_position_embeddings)

    @property
    def backend(self) -> AttentionBackend:
        """The backend that actually runs (resolved for this model's device and dtype)."""
        if self._backend is None:
            weight = self.embeddings.tok_embeddings.weight
            self._backend = get_backend(self.backend_name, weight.device, weight.dtype,
                                        needs_window=self.config.num_layers > 1)
        return self._backend

    def set_backend(self, name: str | BackendChoice) -> None:
        """Use another backend (a name, `auto`, or a `BackendChoice`) from the next forward on."""
        reason = name.reason if isinstance(name, BackendChoice) else ""
        name = name.name if isinstance(name, BackendChoice) else name
        self.backend_name, self.backend_reason = name, reason
        self._backend: AttentionBackend | None = None

    def _windows(self) -> set[int | None]:
        return {layer.attn.window for layer in self.layers}

    def forward_packed(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
        """(total,) ids -> (total, hidden). `max_seqlen` is a python int so nothing syncs the host.

        Raises UserError for a document longer than max_position_embeddings and, when cu_seqlens is on the
        CPU (checking costs nothing there), for cu_seqlens that do not cover the ids or a max_seqlen below the
        longest document: either would silently give wrong attention in some backends.
        """
        check_packing(cu_seqlens, max_seqlen, input_ids.shape[0], self.config.max_position_embeddings)
        backend = self.backend
        layout = packed_layout(cu_seqlens, max_seqlen, input_ids.shape[0])
        context = backend.prepare(layout, self._windows())
        x = self.embeddings(input_ids)
        ropes = {None: self.rope_global(layout.positions, x.dtype)}
        if any(w is not None for w in self._windows()):
            ropes["local"] = self.rope_local(layout.positions, x.dtype)
        for layer in self.layers:
            rope = ropes[None] if layer.attn.window is None else ropes["local"]
            x = layer(x, rope, backend, layout, context)
        return self.final_norm(x)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None) -> torch.Tensor:
        """Packed (total,) ids with cu_seqlens return (total, hidden); a packed batch of one, (1, total) ids
        with cu_seqlens, returns (1, total, hidden); padded (batch, seq) ids (with attention_mask, or none for
        no padding) return (batch, seq, hidden). Raises UserError for cu_seqlens with padded rows or a mask.
        """
        if cu_seqlens is not None and input_ids.dim() == 2:
            if input_ids.shape[0] != 1 or attention_mask is not None:
                raise UserError(f"cu_seqlens describe packed tokens: pass (total,) or (1, total) input_ids without "
                                f"attention_mask (got input_ids {tuple(input_ids.shape)}"
                                f"{' and an attention_mask' if attention_mask is not None else ''})")
            return self(input_ids[0], cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)[None]  # (1, total, hidden)
        if input_ids.dim() == 1:
            if cu_seqlens is None:
                raise ValueError("packed input_ids need cu_seqlens (and max_seqlen)")
            if max_seqlen is None:
                max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if cu_seqlens.numel() > 1 else 0
            if input_ids.numel() == 0:
                check_packing(cu_seqlens, max_seqlen, 0, self.config.max_position_embeddings)
                return self._empty_output(0)
            return self.forward_packed(input_ids, cu_seqlens, max_seqlen)
        batch, seq = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ids, cu, max_len, indices = unpad(input_ids, attention_mask)
        if ids.numel() == 0:  # every row is padding: no document to encode, the output is all padding
            return self._empty_output(batch * seq).view(batch, seq, self.config.hidden_size)
        return repad(self.forward_packed(ids, cu, max_len), indices, batch, seq)

    def _empty_output(self, rows: int) -> torch.Tensor:
        """(rows, hidden) zeros in the model's dtype and device: what padding positions hold."""
        weight = self.final_norm.weight
        return weight.new_zeros(rows, self.config.hidden_size)


class PredictionHead(nn.Module):
    def __init__(self, cfg: ModernBertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.norm = layer_norm(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(x)))


class ModernBertForMaskedLM(nn.Module):
    """Encoder + MLM head with the decoder tied to the token embeddings (decoder has a bias)."""

    def __init__(self, cfg: ModernBertConfig, backend: str | BackendChoice = "auto"):
        super().__init__()
        self.model = ModernBert(cfg, backend)
        self.head = PredictionHead(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=True)
        self.decoder.weight = self.model.embeddings.tok_embeddings.weight

    def forward(self, input_ids, attention_mask=None, cu_seqlens=None, max_seqlen=None) -> torch.Tensor:
        hidden = self.model(input_ids, attention_mask, cu_seqlens, max_seqlen)
        return self.decoder(self.head(hidden))


def init_weights(module: nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Seeded random weights (normal(0, std) matrices, unit norms, zero biases), reproducible anywhere.

    Values are drawn on the CPU and copied, so the same seed gives the same weights on every device.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("norm.weight"):
                values = torch.ones(param.shape)
            elif name.endswith("bias"):
                values = torch.zeros(param.shape)
            else:
                values = torch.randn(param.shape, generator=generator) * std
            param.copy_(values.to(param.dtype))


def build(cfg: ModernBertConfig, backend: str | BackendChoice = "auto", seed: int = 0, device: str | torch.device = "cpu",
          dtype: torch.dtype = torch.float32, mlm: bool = False) -> nn.Module:
    """A ready-to-run reference model in eval mode with seeded random weights."""
    model = (ModernBertForMaskedLM if mlm else ModernBert)(cfg, backend)
    init_weights(model, seed)
    return model.to(device=device, dtype=dtype).eval()
