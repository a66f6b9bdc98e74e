"""The model catalogue: names users type -> rows of data (`spec.ModelSpec`: config keywords, sources, limits).

Each row's `kind` names its builder (`mbbench.models.builders`), which turns the row into a config,
a module, an encoder, a backend list, a weight loader and a shape for the performance model. This
module is the only place that looks a name or a kind up; nothing outside `mbbench/models/` dispatches on kind.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch

from mbbench.errors import UserError
from mbbench.hardware.shape import Shape
from mbbench.models import config as mb_config
from mbbench.models.attention import BackendChoice
from mbbench.models.builders import BUILDERS, BuildOptions, Builder
from mbbench.models.encoders import Encoder
from mbbench.models.neobert import NeoBertConfig
from mbbench.models.spec import ModelSpec
from mbbench.records import ConfigChange

__all__ = ["MODELS", "BuildOptions", "ModelSpec", "get_spec", "builder", "available", "require_available",
           "check_backend", "check_runs", "choose_backend", "owns_gemms", "gated_activation", "rotary_code",
           "model_config", "count_parameters", "backend_choices", "shape_of", "checkpoint_changes", "encoder", "build_encoder"]


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


def _hf(cls_name: str, requires: str = "", **kwargs) -> dict:
    """The catalogue fields of a transformers row."""
    return {"hf_class": cls_name, "config_kwargs": kwargs, "requires": requires}

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
        ModelSpec("bert-base", "BERT", "hf", 110, 512, "transformers BertModel, BertConfig() defaults", **_hf("BertModel")),
        ModelSpec("bert-large", "BERT", "hf", 340, 512, "transformers BertModel, bert-large-uncased shape",
                  **_hf("BertModel", **BERT_LARGE), group="large",
                  notes="published 340M; the exact architecture counts 335.1M"),
        ModelSpec("roberta-base", "RoBERTa", "hf", 125, 512, "transformers RobertaModel, roberta-base config",
                  **_hf("RobertaModel", **ROBERTA)),
        ModelSpec("roberta-large", "RoBERTa", "hf", 355, 512, "transformers RobertaModel, roberta-large config",
                  **_hf("RobertaModel", **ROBERTA, **BERT_LARGE), group="large"),
        ModelSpec("deberta-v3-base", "DeBERTaV3", "hf", 184, 512, "transformers DebertaV2Model, microsoft/deberta-v3-base config",
                  **_hf("DebertaV2Model", **DEBERTA_V3, **BERT_BASE), notes="eager attention only in transformers"),
        ModelSpec("deberta-v3-large", "DeBERTaV3", "hf", 435, 512, "transformers DebertaV2Model, microsoft/deberta-v3-large config",
                  **_hf("DebertaV2Model", **DEBERTA_V3, **BERT_LARGE), group="large",
                  notes="eager attention only in transformers"),
        ModelSpec("nomic-bert", "NomicBERT", "hf", 137, 8192, "transformers NomicBertModel (5.5+), nomic-bert-2048 shape",
                  **_hf("NomicBertModel", "transformers>=5.5"), gated_ffn=True,
                  notes="trained at 2048 tokens; the paper ran it at 8192 (RoPE extrapolation), so mbbench allows 8192. "
                        "RoPE theta of nomic-bert-2048 unconfirmed; transformers default 1000 used"),
        ModelSpec("gte-en-mlm-base", "GTE-en-MLM", "hf", 137, 8192, "transformers GteModel (5.18+), gte-en-mlm-base shape",
                  **_hf("GteModel", "transformers>=5.18", rope_theta=500_000.0, **GTE_EN_MLM), gated_ffn=True),
        ModelSpec("gte-en-mlm-base-unpadded", "GTE-en-MLM", "hf-packed", 137, 8192,
                  "transformers GteModel on packed tokens + memory-efficient attention (the paper's xformers row)",
                  **_hf("GteModel", "transformers>=5.18", rope_theta=500_000.0, **GTE_EN_MLM), gated_ffn=True),
        ModelSpec("gte-en-mlm-large", "GTE-en-MLM", "hf", 435, 8192, "transformers GteModel (5.18+), gte-en-mlm-large shape",
                  **_hf("GteModel", "transformers>=5.18", rope_theta=160_000.0, **GTE_EN_MLM, **BERT_LARGE), gated_ffn=True,
                  group="large"),
        ModelSpec("gte-en-mlm-large-unpadded", "GTE-en-MLM", "hf-packed", 435, 8192,
                  "transformers GteModel on packed tokens + memory-efficient attention (the paper's xformers row)",
                  **_hf("GteModel", "transformers>=5.18", rope_theta=160_000.0, **GTE_EN_MLM, **BERT_LARGE), gated_ffn=True,
                  group="large"),
        ModelSpec("modernbert-base", "ModernBERT", "reference", 149, 8192, f"mbbench reference ModernBERT, {paper_src}",
                  _modernbert("base"), window=64),
        ModelSpec("modernbert-large", "ModernBERT", "reference", 395, 8192, f"mbbench reference ModernBERT, {paper_src}",
                  _modernbert("large"), window=64, group="large"),
        ModelSpec("hf-modernbert-base", "ModernBERT", "hf", 149, 8192, "transformers ModernBertModel (padded, as shipped)",
                  **_hf("ModernBertModel"), gated_ffn=True, window=64),
        ModelSpec("hf-modernbert-large", "ModernBERT", "hf", 395, 8192, "transformers ModernBertModel (padded, as shipped)",
                  **_hf("ModernBertModel", hidden_size=1024, intermediate_size=2624, num_hidden_layers=28,
                      num_attention_heads=16), gated_ffn=True, window=64, group="large"),
        ModelSpec("eurobert-210m", "EuroBERT", "hf", 210, 8192, "transformers EuroBertModel (5.3+), EuroBERT-210m shape",
                  **_hf("EuroBertModel", "transformers>=5.3", rope_theta=250_000.0, tie_word_embeddings=False),
                  gated_ffn=True),
        ModelSpec("eurobert-610m", "EuroBERT", "hf", 610, 8192, "transformers EuroBertModel (5.3+), EuroBERT-610m shape",
                  **_hf("EuroBertModel", "transformers>=5.3", hidden_size=1152, num_hidden_layers=26, num_attention_heads=18,
                      num_key_value_heads=6, intermediate_size=4096, rope_theta=250_000.0, tie_word_embeddings=False), gated_ffn=True,
                  group="large"),
        ModelSpec("mmbert-small", "mmBERT", "reference", 140, 8192, "ModernBERT architecture (mbbench reference), mmBERT config",
                  _mmbert(384, 6), window=64),
        ModelSpec("mmbert-base", "mmBERT", "reference", 307, 8192, "ModernBERT architecture (mbbench reference), mmBERT config",
                  _mmbert(768, 12), window=64),
        ModelSpec("neobert", "NeoBERT", "neobert", 250, 4096,
                  "built by mbbench from NeoBERT's published architecture (no transformers class exists)",
                  NeoBertConfig, notes="README says 250M; the encoder architecture counts about 222M"),
    ]
    return specs + _ettin_specs()


def _ettin_specs() -> list[ModelSpec]:
    """The Ettin encoders: ModernBERT's architecture at six sizes (arXiv 2507.11412)."""
    specs = []
    ettin = [("17m", 17, 256, 384, 7, 4), ("32m", 32, 384, 576, 10, 6), ("68m", 68, 512, 768, 19, 8),
             ("150m", 150, 768, 1152, 22, 12), ("400m", 400, 1024, 2624, 28, 16), ("1b", 1000, 1792, 3840, 28, 28)]
    for suffix, published, hidden, glu_half, layers, heads in ettin:
        specs.append(ModelSpec(f"ettin-encoder-{suffix}", "Ettin", "reference", published, 7999,
                               "ModernBERT architecture (mbbench reference), Ettin config (arXiv 2507.11412)",
                               _ettin(hidden, glu_half, layers, heads), window=64,
                               group="large" if hidden >= 1024 else "base"))
    return specs


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _specs()}


def get_spec(name: str, tiny: bool = False) -> ModelSpec:
    """The catalogue row of a model name, as its family's tiny variant when `tiny` (`ModelSpec.tiny`); UserError
    naming the command that lists them."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; `mbbench list models` shows the {len(MODELS)} names")
    return MODELS[name].tiny_variant(tiny)


def builder(spec: ModelSpec) -> Builder:
    """The builder of a row's kind."""
    return BUILDERS[spec.kind]


def available(spec: ModelSpec) -> str | None:
    """None when the installed software can build this model, else why not (e.g. an older transformers)."""
    return builder(spec).available(spec)


def require_available(spec: ModelSpec) -> None:
    """UserError when the installed software cannot build this model (e.g. an older transformers)."""
    reason = available(spec)
    if reason:
        raise UserError(f"{spec.name} {reason}")


def check_backend(spec: ModelSpec, backend: str) -> None:
    """UserError when `backend` is not one this model can take (availability on a device is `check_runs`)."""
    builder(spec).check_backend(spec, backend)


def check_runs(spec: ModelSpec, backend: str, device: str, dtype: torch.dtype) -> None:
    """UserError (BackendUnavailable) when `backend`, asked for by name, cannot run on `device` in `dtype`."""
    builder(spec).check_runs(spec, backend, device, dtype)


def choose_backend(spec: ModelSpec, backend: str, device: str, dtype: torch.dtype,
                   lengths: Sequence[int]) -> BackendChoice:
    """The backend that will run for `backend` on this workload, and why (`auto` chooses by workload)."""
    return builder(spec).choose(spec, backend, device, dtype, lengths)


def owns_gemms(spec: ModelSpec) -> bool:
    """Whether the model's linears are mbbench's own code (they may run on a faster GEMM kernel); transformers
    models keep transformers' code, since that is what they measure."""
    return builder(spec).owns_gemms


def gated_activation(spec: ModelSpec) -> str:
    """The gated MLP activation of a model whose element-wise code is mbbench's own ("gelu", "silu"), else ""."""
    return builder(spec).gated_activation


def rotary_code(spec: ModelSpec) -> str:
    """Whose RoPE code the model runs (`hardware.software.ROTARY_CODES`), for the performance model."""
    return builder(spec).rotary_code


def model_config(spec: ModelSpec):
    """The model's config object (ours or transformers'); the tiny variant's for a tiny spec."""
    return builder(spec).config(spec)


def count_parameters(spec: ModelSpec) -> int:
    """Parameters of the bare encoder, built on the meta device so nothing is allocated (once per process)."""
    return _parameters(spec.name, spec.tiny)


@lru_cache(maxsize=None)
def _parameters(name: str, tiny: bool) -> int:
    spec = MODELS[name].tiny_variant(tiny)
    return builder(spec).parameters(spec)


def backend_choices(spec: ModelSpec) -> list[str]:
    """Backend names this model can take (one vocabulary for every model; availability is per device)."""
    return builder(spec).backends(spec)


def shape_of(spec: ModelSpec) -> Shape:
    """The performance model's `Shape` of a model (from its builder)."""
    return builder(spec).shape(spec)


def checkpoint_changes(spec: ModelSpec, path: str) -> tuple[ConfigChange, ...]:
    """The config fields in which the checkpoint directory `path` (`--weights`) differs from the row, which the
    built model runs with (empty for our own models, whose checkpoints must match the row field by field).
    Raises UserError for a checkpoint the row cannot be: another architecture, shape, or an unreadable config."""
    return builder(spec).checkpoint_changes(spec, path)


def encoder(spec: ModelSpec, options: BuildOptions) -> Encoder:
    """Build a resolved model (its availability and backend already checked by the plan): the row's config with
    seeded random weights, or a checkpoint's config and weights (`options.weights`, see `checkpoint_changes`),
    on `options.device` in `options.dtype`, eval mode."""
    return builder(spec).encoder(spec, options)


def build_encoder(name: str, options: BuildOptions = BuildOptions(), tiny: bool = False) -> Encoder:
    """Build a model by name, checking that it can be built here and takes `options.backend` (a trial process,
    tests and scripts; a plan's model is built with `encoder`)."""
    spec = get_spec(name, tiny)
    require_available(spec)
    check_backend(spec, options.backend)
    return encoder(spec, options)
