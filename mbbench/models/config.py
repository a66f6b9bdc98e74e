"""ModernBERT shape and hyper-parameters, with the paper's presets and validation for custom shapes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from mbbench.errors import UserError


@dataclass(frozen=True)
class ModernBertConfig:
    """Everything that defines a ModernBERT encoder's function (and hence its cost).

    `intermediate_size` is one GLU branch; the fused `Wi` projection outputs `2 * intermediate_size`
    (the paper's "GLU expansion": 2304 for base, 5248 for large).
    `local_window` is the *total* window: 128 means each query sees keys with |i - j| <= 64.
    """

    hidden_size: int = 768
    intermediate_size: int = 1152
    num_layers: int = 22
    num_heads: int = 12
    vocab_size: int = 50368
    max_position_embeddings: int = 8192
    local_window: int = 128
    global_every: int = 3
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    norm_eps: float = 1e-5
    pad_token_id: int = 50283

    def __post_init__(self) -> None:
        validate(self)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def glu_size(self) -> int:
        return 2 * self.intermediate_size

    @property
    def half_window(self) -> int:
        return self.local_window // 2

    def is_global(self, layer: int) -> bool:
        return layer % self.global_every == 0

    def to_dict(self) -> dict:
        return asdict(self)

    def with_shape(self, **changes) -> "ModernBertConfig":
        return replace(self, **changes)


def validate(cfg: ModernBertConfig) -> None:
    """Reject shapes that cannot be built, with a message that names the field."""

    def fail(msg: str) -> None:
        raise UserError(f"invalid ModernBERT config: {msg}")

    for name in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "vocab_size",
                 "max_position_embeddings", "local_window", "global_every"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            fail(f"{name} must be a positive integer, got {value!r}")
    if cfg.hidden_size % cfg.num_heads:
        fail(f"hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_heads}")
    if cfg.head_dim % 2:
        fail(f"head dim {cfg.head_dim} (hidden {cfg.hidden_size} / heads {cfg.num_heads}) is odd; RoPE needs it even")
    if cfg.local_window % 2:
        fail(f"local_window {cfg.local_window} must be even (it is the total window, |i-j| <= window/2)")
    if cfg.global_rope_theta <= 0 or cfg.local_rope_theta <= 0:
        fail("rope thetas must be positive")
    if cfg.norm_eps <= 0:
        fail(f"norm_eps must be positive, got {cfg.norm_eps}")
    if not 0 <= cfg.pad_token_id < cfg.vocab_size:
        fail(f"pad_token_id {cfg.pad_token_id} is outside the vocabulary ({cfg.vocab_size})")


PRESETS: dict[str, dict] = {
    "base": dict(hidden_size=768, intermediate_size=1152, num_layers=22, num_heads=12),
    "large": dict(hidden_size=1024, intermediate_size=2624, num_layers=28, num_heads=16),
    # A tiny shape for fast CPU tests and `verify --config tiny`: keeps every structural feature
    # (global/local alternation, window, GLU) while running in milliseconds.
    "tiny": dict(hidden_size=64, intermediate_size=96, num_layers=4, num_heads=4, vocab_size=512,
                 pad_token_id=3),
}


def preset(name: str, **overrides) -> ModernBertConfig:
    if name not in PRESETS:
        raise UserError(f"unknown ModernBERT preset {name!r}; choose from {', '.join(PRESETS)}")
    return ModernBertConfig(**{**PRESETS[name], **overrides})


def from_glu(hidden: int, glu: int, layers: int, head_dim: int = 64, **overrides) -> ModernBertConfig:
    """A custom shape as the sweeps name it: hidden, fused GLU width, layers, head dim."""
    if glu % 2:
        raise UserError(f"GLU width {glu} must be even (it is split into input and gate halves)")
    if hidden % head_dim:
        raise UserError(f"hidden {hidden} is not divisible by head dim {head_dim}")
    return ModernBertConfig(hidden_size=hidden, intermediate_size=glu // 2, num_layers=layers,
                            num_heads=hidden // head_dim, **overrides)
