"""Model names users type -> how to build them (exact published configs, seeded random weights) and their limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from mbbench.errors import UserError
from mbbench.models import config as mb_config
from mbbench.models.attention import AUTO_ORDER, backend_names, get_backend
from mbbench.models.competitors import Encoder, HFPackedEncoder, HFPaddedEncoder, PackedEncoder, packed_hf_model
from mbbench.models.modernbert import ModernBert, init_weights
from mbbench.models.neobert import NeoBert, NeoBertConfig

HF_ATTENTION = ("eager", "sdpa", "flex_attention", "flash_attention_2")


@dataclass(frozen=True)
class BuildOptions:
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    backend: str = "auto"
    seed: int = 0
    weights: str | None = None  # a local checkpoint directory


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    kind: str  # "reference" (ours), "neobert" (ours), "hf" (transformers, padded), "hf-packed"
    published_parameters: float  # millions, as published
    max_length: int
    source: str
    make_config: Callable[[], object]
    hf_class: str | None = None  # transformers model class name, for hf kinds
    window: int | None = None  # sliding half-window the attention needs (ModernBERT: 64)
    notes: str = ""
    group: str = "base"  # "base" or "large": the paper's table groups
    backends: tuple[str, ...] = field(default=())

    @property
    def unpadded(self) -> bool:
        return self.kind != "hf"

    @property
    def layout(self) -> str:
        return "packed" if self.unpadded else "padded"


# --- configs (exact published numbers; sources in backends-and-competitors.md part B) ---

def _modernbert(preset: str | None = None, **shape):
    return (lambda: mb_config.preset(preset)) if preset else (lambda: mb_config.ModernBertConfig(**shape))


def _ettin(hidden, glu_half, layers, heads):
    # Ettin: ModernBERT architecture, RoPE 160k on global *and* local layers, decay-phase max_seq_len 7999.
    return _modernbert(hidden_size=hidden, intermediate_size=glu_half, num_layers=layers, num_heads=heads,
                       local_rope_theta=160_000.0, max_position_embeddings=7999)


def _mmbert(hidden, heads):
    return _modernbert(hidden_size=hidden, intermediate_size=1152, num_layers=22, num_heads=heads, vocab_size=256000,
                       local_rope_theta=160_000.0, pad_token_id=0)


def _hf(cls_name: str, **kwargs):
    def make():
        import transformers

        config_cls = getattr(transformers, cls_name.replace("Model", "Config"))
        return config_cls(**kwargs)
    return make


BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
BERT_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
ROBERTA = dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
               bos_token_id=0, eos_token_id=2)
DEBERTA_V3 = dict(vocab_size=128100, max_position_embeddings=512, relative_attention=True, position_buckets=256,
                  max_relative_positions=-1, pos_att_type=["p2c", "c2p"], share_att_key=True,
                  norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7)
GTE_EN_MLM = dict(vocab_size=30528, max_position_embeddings=8192, type_vocab_size=1, layer_norm_eps=1e-12,
                  pad_token_id=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _specs() -> list[ModelSpec]:
    paper_src = "arXiv 2412.13663 (ModernBERT) Table 4"
    specs = [
        ModelSpec("bert-base", "BERT", "hf", 110, 512, "transformers BertModel, BertConfig() defaults", _hf("BertModel"),
                  "BertModel"),
        ModelSpec("bert-large", "BERT", "hf", 340, 512, "transformers BertModel, bert-large-uncased shape",
                  _hf("BertModel", **BERT_LARGE), "BertModel", group="large",
                  notes="published 340M; the exact architecture counts 335.1M"),
        ModelSpec("roberta-base", "RoBERTa", "hf", 125, 512, "transformers RobertaModel, roberta-base config",
                  _hf("RobertaModel", **ROBERTA), "RobertaModel"),
        ModelSpec("roberta-large", "RoBERTa", "hf", 355, 512, "transformers RobertaModel, roberta-large config",
                  _hf("RobertaModel", **ROBERTA, **BERT_LARGE), "RobertaModel", group="large"),
        ModelSpec("deberta-v3-base", "DeBERTaV3", "hf", 184, 512, "transformers DebertaV2Model, microsoft/deberta-v3-base config",
                  _hf("DebertaV2Model", **DEBERTA_V3, **BERT_BASE), "DebertaV2Model", notes="eager attention only in transformers"),
        ModelSpec("deberta-v3-large", "DeBERTaV3", "hf", 435, 512, "transformers DebertaV2Model, microsoft/deberta-v3-large config",
                  _hf("DebertaV2Model", **DEBERTA_V3, **BERT_LARGE), "DebertaV2Model", group="large",
                  notes="eager attention only in transformers"),
        ModelSpec("nomic-bert", "NomicBERT", "hf", 137, 2048, "transformers NomicBertModel (5.5+), nomic-bert-2048 shape",
                  _hf("NomicBertModel"), "NomicBertModel",
                  notes="RoPE theta of nomic-bert-2048 unconfirmed; transformers default 1000 used"),
        ModelSpec("gte-en-mlm-base", "GTE-en-MLM", "hf", 137, 8192, "transformers GteModel (5.18+), gte-en-mlm-base shape",
                  _hf("GteModel", rope_theta=500_000.0, **GTE_EN_MLM), "GteModel"),
        ModelSpec("gte-en-mlm-base-unpadded", "GTE-en-MLM", "hf-packed", 137, 8192,
                  "transformers GteModel on packed tokens + memory-efficient attention (the paper's xformers row)",
                  _hf("GteModel", rope_theta=500_000.0, **GTE_EN_MLM), "GteModel"),
        ModelSpec("gte-en-mlm-large", "GTE-en-MLM", "hf", 435, 8192, "transformers GteModel (5.18+), gte-en-mlm-large shape",
                  _hf("GteModel", rope_theta=160_000.0, **GTE_EN_MLM, **BERT_LARGE), "GteModel", group="large"),
        ModelSpec("gte-en-mlm-large-unpadded", "GTE-en-MLM", "hf-packed", 435, 8192,
                  "transformers GteModel on packed tokens + memory-efficient attention (the paper's xformers row)",
                  _hf("GteModel", rope_theta=160_000.0, **GTE_EN_MLM, **BERT_LARGE), "GteModel", group="large"),
        ModelSpec("modernbert-base", "ModernBERT", "reference", 149, 8192, f"mbbench reference ModernBERT, {paper_src}",
                  _modernbert("base"), window=64),
        ModelSpec("modernbert-large", "ModernBERT", "reference", 395, 8192, f"mbbench reference ModernBERT, {paper_src}",
                  _modernbert("large"), window=64, group="large"),
        ModelSpec("hf-modernbert-base", "ModernBERT", "hf", 149, 8192, "transformers ModernBertModel (padded, as shipped)",
                  _hf("ModernBertModel"), "ModernBertModel"),
        ModelSpec("hf-modernbert-large", "ModernBERT", "hf", 395, 8192, "transformers ModernBertModel (padded, as shipped)",
                  _hf("ModernBertModel", hidden_size=1024, intermediate_size=2624, num_hidden_layers=28,
                      num_attention_heads=16), "ModernBertModel", group="large"),
        ModelSpec("eurobert-210m", "EuroBERT", "hf", 210, 8192, "transformers EuroBertModel (5.3+), EuroBERT-210m shape",
                  _hf("EuroBertModel", rope_theta=250_000.0, tie_word_embeddings=False), "EuroBertModel"),
        ModelSpec("eurobert-610m", "EuroBERT", "hf", 610, 8192, "transformers EuroBertModel (5.3+), EuroBERT-610m shape",
                  _hf("EuroBertModel", hidden_size=1152, num_hidden_layers=26, num_attention_heads=18,
                      num_key_value_heads=6, intermediate_size=4096, rope_theta=250_000.0, tie_word_embeddings=False),
                  "EuroBertModel", group="large"),
        ModelSpec("mmbert-small", "mmBERT", "reference", 140, 8192, "ModernBERT architecture (mbbench reference), mmBERT config",
                  _mmbert(384, 6), window=64),
        ModelSpec("mmbert-base", "mmBERT", "reference", 307, 8192, "ModernBERT architecture (mbbench reference), mmBERT config",
                  _mmbert(768, 12), window=64),
        ModelSpec("neobert", "NeoBERT", "neobert", 250, 4096,
                  "built by mbbench from NeoBERT's published architecture (no transformers class exists)",
                  NeoBertConfig, notes="README says 250M; the encoder architecture counts about 222M"),
    ]
    ettin = [("17m", 17, 256, 384, 7, 4), ("32m", 32, 384, 576, 10, 6), ("68m", 68, 512, 768, 19, 8),
             ("150m", 150, 768, 1152, 22, 12), ("400m", 400, 1024, 2624, 28, 16), ("1b", 1000, 1792, 3840, 28, 28)]
    for suffix, published, hidden, glu_half, layers, heads in ettin:
        specs.append(ModelSpec(f"ettin-encoder-{suffix}", "Ettin", "reference", published, 7999,
                               "ModernBERT architecture (mbbench reference), Ettin config (arXiv 2507.11412)",
                               _ettin(hidden, glu_half, layers, heads), window=64,
                               group="large" if hidden >= 1024 else "base"))
    return specs


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _specs()}

# Tiny variants of each family (same code path, few parameters) for tests and `--config tiny`.
TINY_OVERRIDES = {
    "hf": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
    "reference": dict(hidden_size=64, intermediate_size=96, num_layers=4, num_heads=4),
    "neobert": dict(hidden_size=64, num_layers=2, num_heads=4, ffn_size=192),
}


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; `mbbench list models` shows the {len(MODELS)} names")
    return MODELS[name]


def model_config(spec: ModelSpec, tiny: bool = False):
    cfg = spec.make_config()
    if not tiny:
        return cfg
    overrides = TINY_OVERRIDES["hf" if spec.kind.startswith("hf") else spec.kind]
    if spec.kind.startswith("hf"):
        for key, value in overrides.items():
            setattr(cfg, key, value)
        if hasattr(cfg, "num_key_value_heads"):
            cfg.num_key_value_heads = cfg.num_attention_heads
        cfg.vocab_size = min(cfg.vocab_size, 1024)
        cfg.pad_token_id = min(cfg.pad_token_id or 0, 3)
        for key in ("bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"):
            if getattr(cfg, key, None) is not None:
                setattr(cfg, key, 2)
        return cfg
    from dataclasses import replace

    return replace(cfg, **overrides, vocab_size=min(cfg.vocab_size, 1024), pad_token_id=0)


def _hf_class(spec: ModelSpec):
    import transformers

    if not hasattr(transformers, spec.hf_class):
        raise UserError(f"{spec.name} needs transformers' {spec.hf_class}, which transformers "
                        f"{transformers.__version__} lacks (GteModel needs 5.18+)")
    return getattr(transformers, spec.hf_class)


def _bare_module(spec: ModelSpec, cfg, backend: str) -> nn.Module:
    """The nn.Module for a spec, with default-initialised weights (possibly on the meta device)."""
    if spec.kind == "reference":
        return ModernBert(cfg, backend)
    if spec.kind == "neobert":
        return NeoBert(cfg, backend)
    return _hf_class(spec)(cfg)


def count_parameters(spec: ModelSpec, tiny: bool = False) -> int:
    """Parameters of the bare encoder, built on the meta device so nothing is allocated."""
    cfg = model_config(spec, tiny)
    if spec.kind.startswith("hf"):
        cfg._attn_implementation = "eager"
    with torch.device("meta"):
        module = _bare_module(spec, cfg, "eager")
    return sum(p.numel() for p in module.parameters())


def hf_attention(spec: ModelSpec, backend: str) -> str:
    """Resolve a transformers attn_implementation for a padded HF model."""
    supported = [impl for impl in HF_ATTENTION if _supports(spec, impl)]
    if backend == "auto":
        return "sdpa" if "sdpa" in supported else "eager"
    if backend not in HF_ATTENTION:
        raise UserError(f"{spec.name} takes transformers attention implementations: {', '.join(supported)}")
    if backend not in supported:
        raise UserError(f"{spec.name} does not support attention {backend!r}; it supports {', '.join(supported)}")
    return backend


def _supports(spec: ModelSpec, impl: str) -> bool:
    cls = _hf_class(spec)
    flag = {"eager": None, "sdpa": "_supports_sdpa", "flex_attention": "_supports_flex_attn",
            "flash_attention_2": "_supports_flash_attn"}[impl]
    return flag is None or bool(getattr(cls, flag, False))


def backend_choices(spec: ModelSpec) -> list[str]:
    if spec.kind == "hf":
        return [impl for impl in HF_ATTENTION if _supports(spec, impl)]
    names = backend_names()
    if spec.window is not None:
        names = [n for n in names if n != "xformers"]
    return names


def _seeded_module(spec: ModelSpec, cfg, backend: str, seed: int) -> nn.Module:
    if spec.kind in ("reference", "neobert"):
        module = _bare_module(spec, cfg, backend)
        init_weights(module, seed)
        return module
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # transformers initialises from the global generator
        return _bare_module(spec, cfg, backend)


def _load_weights(spec: ModelSpec, module: nn.Module, path: str) -> nn.Module:
    from mbbench.models import weights

    config, state = weights.read_checkpoint(path)
    if spec.kind == "reference":
        return weights.load_state(module, state)
    missing, unexpected = module.load_state_dict(
        {k.removeprefix(module.base_model_prefix + "."): v for k, v in state.items()}
        if hasattr(module, "base_model_prefix") else state, strict=False)
    if missing:
        raise UserError(f"{path}: checkpoint lacks {len(missing)} tensors of {spec.name}, e.g. {missing[:3]}")
    return module


def build_encoder(name: str, options: BuildOptions = BuildOptions(), tiny: bool = False) -> Encoder:
    """Build a model ready to run: exact config, seeded random weights (or --weights), eval mode."""
    spec = get_spec(name)
    cfg = model_config(spec, tiny)
    device, dtype = torch.device(options.device), options.dtype
    if spec.kind == "hf":
        cfg._attn_implementation = hf_attention(spec, options.backend)
    if spec.kind == "hf-packed":
        backend = options.backend
        if backend == "auto":  # the paper's row ran xformers; fall back to the fastest packed kernel
            backend = next((b for b in ["xformers"] + AUTO_ORDER.get(device.type, ["sdpa"])
                            if get_backend_ok(b, device, dtype)), "sdpa")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            module, attention = packed_hf_model(_hf_class(spec), cfg, backend, device, dtype, {None})
    else:
        module = _seeded_module(spec, cfg, options.backend, options.seed)
    if options.weights:
        module = _load_weights(spec, module, options.weights)
    module = module.to(device=device, dtype=dtype).eval()
    if spec.kind == "hf":
        return HFPaddedEncoder(module)
    if spec.kind == "hf-packed":
        return HFPackedEncoder(module, attention, {None})
    return PackedEncoder(module)


def get_backend_ok(name: str, device: torch.device, dtype: torch.dtype) -> bool:
    try:
        get_backend(name, device, dtype, needs_window=False)
        return True
    except Exception:
        return False
