"""NeoBERT (chandar-lab, 2025), built from its published architecture: transformers has no class for it.

28 x 768, 12 heads, pre-RMSNorm (eps 1e-5), RoPE theta 10 000, no biases, SwiGLU with hidden
int(2 * 3072 / 3) rounded up to a multiple of 8 = 2048, vocab 30522, context 4096
(chandar-lab/NeoBERT `src/neobert/model/model.py`, `conf/model/neobert.yaml`).
It runs on packed tokens through mbbench's attention backends (global attention in every layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from mbbench.models.attention import AttentionBackend, get_backend, packed_layout
from mbbench.models.gemm import add_linear, linear
from mbbench.models.elementwise import EAGER_OPS
from mbbench.models.modernbert import RotaryTables, check_packing


@dataclass(frozen=True)
class NeoBertConfig:
    hidden_size: int = 768
    num_layers: int = 28
    num_heads: int = 12
    ffn_size: int = 3072  # as configured; the SwiGLU hidden width is derived below
    vocab_size: int = 30522
    max_position_embeddings: int = 4096
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-5
    pad_token_id: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def swiglu_hidden(self) -> int:
        width = int(2 * self.ffn_size / 3)
        return 8 * ((width + 7) // 8)


class SwiGLU(nn.Module):
    def __init__(self, cfg: NeoBertConfig):
        super().__init__()
        self.w12 = nn.Linear(cfg.hidden_size, 2 * cfg.swiglu_hidden, bias=False)
        self.w3 = nn.Linear(cfg.swiglu_hidden, cfg.hidden_size, bias=False)
        self.elementwise = EAGER_OPS  # the gated activation's kernel (`elementwise.use` sets it)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Pre-normed (tokens, hidden) x -> residual + SwiGLU output, (tokens, hidden)."""
        # (tokens, 2 * swiglu_hidden) -> silu(gate) * value, (tokens, swiglu_hidden)
        return add_linear(residual, self.elementwise.silu_gated(linear(x, self.w12)), self.w3)


class NeoBertLayer(nn.Module):
    def __init__(self, cfg: NeoBertConfig):
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.attention_norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=False)
        self.wo = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.ffn_norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.ffn = SwiGLU(cfg)
        self.elementwise = EAGER_OPS  # RoPE's kernel (`elementwise.use` sets it)

    def forward(self, x, rope, backend: AttentionBackend, layout, context):
        qkv = linear(self.attention_norm(x), self.qkv).view(x.shape[0], 3, self.num_heads, self.head_dim)  # (tokens, 3, heads, dim)
        q, k = self.elementwise.rotary(qkv[:, :2], *rope).unbind(1)  # q and k rotated in one pass
        attn = backend.attend(q, k, qkv[:, 2], layout, context, None, self.head_dim ** -0.5)
        x = add_linear(x, attn.reshape(x.shape[0], -1), self.wo)  # residual + output projection, one GEMM
        return self.ffn(self.ffn_norm(x), residual=x)


class NeoBert(nn.Module):
    def __init__(self, cfg: NeoBertConfig, backend: str = "auto"):
        super().__init__()
        self.config = cfg
        self.backend_name = backend
        self._backend: AttentionBackend | None = None
        self.encoder = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.transformer_encoder = nn.ModuleList(NeoBertLayer(cfg) for _ in range(cfg.num_layers))
        self.layer_norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.rope = RotaryTables(cfg.head_dim, cfg.rope_theta, cfg.max_position_embeddings)

    @property
    def backend(self) -> AttentionBackend:
        if self._backend is None:
            weight = self.encoder.weight
            self._backend = get_backend(self.backend_name, weight.device, weight.dtype, needs_window=False)
        return self._backend

    def set_backend(self, name: str) -> None:
        """Use another backend (a name or `auto`) from the next forward on."""
        self.backend_name, self._backend = name, None

    def forward_packed(self, input_ids, cu_seqlens, max_seqlen: int) -> torch.Tensor:
        """(total,) ids -> (total, hidden); UserError for inconsistent packing (modernbert.check_packing)."""
        check_packing(cu_seqlens, max_seqlen, input_ids.shape[0], self.config.max_position_embeddings)
        layout = packed_layout(cu_seqlens, max_seqlen, input_ids.shape[0])
        context = self.backend.prepare(layout, {None})
        x = self.encoder(input_ids)
        rope = self.rope(layout.positions, x.dtype)
        for layer in self.transformer_encoder:
            x = layer(x, rope, self.backend, layout, context)
        return self.layer_norm(x)
