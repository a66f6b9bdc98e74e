"""What the performance and memory models know of an encoder: its `Shape` (widths, heads, layers, attention kind).

Built from a catalogue row by the model's builder (`mbbench.models.builders`); nothing here knows the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """What the model needs to know about an encoder (ModernBERT or a competitor).

    attention_kind: "standard" (softmax(QKᵀ)V) or "disentangled" (DeBERTa: + content→position and position→content
    scores against 2·position_buckets relative embeddings). kv_heads: key/value heads (GQA), None = heads.
    rotary: RoPE on q/k (element-wise work). unpadded: the model packs documents by default.
    """

    hidden: int
    ffn: int  # per branch; the FFN-in GEMM is 2·ffn wide when gated
    gated: bool
    heads: int
    layers: int
    vocab: int
    window: int | None = None  # local half-window (ModernBERT: 64), None: all layers global
    global_every: int = 1
    unpadded: bool = True
    attention_kind: str = "standard"
    position_buckets: int = 0  # DeBERTa: 256 -> 512 relative positions attended per query
    rotary: bool = False
    kv_heads: int | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return (self.kv_heads or self.heads) * self.head_dim

    @property
    def relative_span(self) -> int:
        """Relative positions each query scores against (DeBERTa: 2 × position_buckets), 0 if none."""
        return 2 * self.position_buckets if self.attention_kind == "disentangled" else 0

    def gemms(self) -> dict[str, tuple[int, int]]:
        """(K, N) of each weight GEMM of one layer."""
        return {"qkv": (self.hidden, self.hidden + 2 * self.kv_dim), "attn_out": (self.hidden, self.hidden),
                "ffn_in": (self.hidden, self.ffn * (2 if self.gated else 1)), "ffn_out": (self.ffn, self.hidden)}

    @property
    def non_embedding_parameters(self) -> int:
        return self.layers * sum(k * n for k, n in self.gemms().values())

    @property
    def parameters(self) -> int:
        return self.non_embedding_parameters + self.vocab * self.hidden + self.relative_span * self.hidden

    def is_global(self, layer: int) -> bool:
        return self.window is None or layer % self.global_every == 0
