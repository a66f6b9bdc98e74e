"""`--weights` for every catalogue kind: a model runs its checkpoint's own config (eps, activation, ...), loads
what transformers' `save_pretrained` writes (GTE and NomicBERT save under other key names than their modules
use), refuses a checkpoint of another shape in one line, and its record says which config ran (issue 26, item 7).

Round trips: the tiny variant of each row, with a changed eps and activation where its class has them, is saved
by transformers and loaded back through `registry.build_encoder` and through `mbbench run --weights`; the loaded
encoder computes what the saved model computes.
"""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mbbench.batching import pack_documents, pad_documents
from mbbench.cli import cli
from mbbench.errors import UserError
from mbbench.models import registry
from mbbench.models.builders import BuildOptions
from mbbench.records import ConfigChange, ModelInfo, Record, decode
from mbbench.verify import to_hf_config

HF_ROWS = [name for name, spec in registry.MODELS.items() if spec.hf_class]
REFERENCE_ROWS = [name for name, spec in registry.MODELS.items() if spec.kind == "reference"]
EPS_FIELDS = ("layer_norm_eps", "norm_eps", "rms_norm_eps")  # BERT-likes, ModernBERT, EuroBERT
ACTIVATION_FIELDS = ("hidden_act", "hidden_activation")  # most classes, ModernBERT
TOLERANCE = 1e-5  # max abs difference, fp32


def transformers_class(spec):
    import transformers

    return getattr(transformers, spec.hf_class)


def require(spec) -> None:
    reason = registry.available(spec)
    if reason:
        pytest.skip(f"{spec.name} {reason}")


def documents(lengths=(37, 20, 9)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [torch.randint(5, 1000, (n,), generator=generator) for n in lengths]


def changed_config(spec, **fixed):
    """The row's tiny config with eps 1e-3 and another activation (where the class has them), then `fixed`."""
    cfg = registry.model_config(spec.tiny_variant())
    for name in EPS_FIELDS:
        if hasattr(cfg, name):
            setattr(cfg, name, 1e-3)
    for name in ACTIVATION_FIELDS:
        if hasattr(cfg, name):
            setattr(cfg, name, "gelu" if getattr(cfg, name) == "gelu_new" else "gelu_new")
    for name, value in fixed.items():
        setattr(cfg, name, value)
    return cfg


def save_checkpoint(spec, directory: Path, cfg) -> torch.nn.Module:
    """A transformers model of `cfg` with seeded weights, saved to `directory`. Every parameter is perturbed so
    that norms' weights matter and activations reach where GELU's two forms differ (|x| ~ 1)."""
    torch.manual_seed(11)
    model = transformers_class(spec)(cfg).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape) * 0.1)
    model.save_pretrained(directory)
    return model


def hidden_states(model, docs, pad_token_id: int) -> torch.Tensor:
    """A transformers model's last hidden states on the documents' real tokens, in document order."""
    batch = pad_documents(docs, pad_token_id)
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return out[batch.attention_mask.bool()]


def encoder_states(encoder, docs) -> torch.Tensor:
    """An encoder's hidden states on the documents' real tokens, in document order (packed or padded)."""
    with torch.no_grad():
        if encoder.layout == "packed":
            return encoder(pack_documents(docs))
        batch = pad_documents(docs, encoder.pad_token_id)
        return encoder(batch)[batch.attention_mask.bool()]


def expected_changes(spec, cfg) -> tuple[ConfigChange, ...]:
    row = registry.model_config(spec.tiny_variant()).to_dict()
    ran = cfg.to_dict()
    return tuple(ConfigChange(name, row[name], ran[name])
                 for name in sorted(set(EPS_FIELDS + ACTIVATION_FIELDS) & set(ran)) if row[name] != ran[name])


def run_cli(name: str, weights: Path, out: Path, *extra: str):
    return CliRunner().invoke(cli, ["run", "--model", name, "--tiny", "--device", "cpu", "--docs", "2", "--runs", "1",
                                    "--batch-size", "2", "--weights", str(weights), "--out", str(out), *extra])


def records_under(out: Path) -> list[dict]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(out.rglob("*.json"))]


# ------------------------------------------------------------------------------------ the report's reproduction

@pytest.mark.parametrize("field, value, row_value", [("layer_norm_eps", 1e-3, 1e-12), ("hidden_act", "gelu_new", "gelu")])
def test_bert_checkpoint_runs_its_own_eps_and_activation(tmp_path, field, value, row_value):
    """The report: a BERT checkpoint with LayerNorm eps 1e-3 ran with 1e-12, gelu_new ran as gelu."""
    spec = registry.get_spec("bert-base")
    cfg = registry.model_config(spec.tiny_variant())
    assert getattr(cfg, field) == row_value
    setattr(cfg, field, value)
    saved = save_checkpoint(spec, tmp_path, cfg)
    encoder = registry.build_encoder("bert-base", BuildOptions(weights=str(tmp_path)), tiny=True)
    assert getattr(encoder.module.config, field) == value
    docs = documents()
    expected = hidden_states(saved, docs, 0)
    torch.testing.assert_close(encoder_states(encoder, docs), expected, atol=TOLERANCE, rtol=0)
    row_model = transformers_class(spec)(registry.model_config(spec.tiny_variant())).eval()
    row_model.load_state_dict(saved.state_dict())
    assert (hidden_states(row_model, docs, 0) - expected).abs().max() > 1e-4  # the row's config computes otherwise


# ------------------------------------------------------------------------------- every transformers row, round trip

@pytest.mark.parametrize("name", HF_ROWS)
def test_transformers_checkpoint_round_trip(tmp_path, name):
    spec = registry.get_spec(name)
    require(spec)
    cfg = changed_config(spec)
    saved = save_checkpoint(spec, tmp_path, cfg)
    changes = expected_changes(spec, cfg)
    assert changes, f"{spec.hf_class} has neither an eps nor an activation field the test can change"
    assert registry.checkpoint_changes(spec.tiny_variant(), str(tmp_path)) == changes
    encoder = registry.build_encoder(name, BuildOptions(weights=str(tmp_path)), tiny=True)
    for change in changes:
        assert getattr(encoder.module.config, change.field) == change.ran
    docs = documents()
    expected = hidden_states(saved, docs, cfg.pad_token_id or 0)
    got = encoder_states(encoder, docs)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("name", HF_ROWS)
def test_run_weights_records_the_config_that_ran(tmp_path, name):
    spec = registry.get_spec(name)
    require(spec)
    cfg = changed_config(spec)
    save_checkpoint(spec, tmp_path / "checkpoint", cfg)
    result = run_cli(name, tmp_path / "checkpoint", tmp_path / "out")
    assert result.exit_code == 0, result.output
    [record] = records_under(tmp_path / "out")
    assert record["status"] == "ok" and record["identity"]["weights_sha256"]
    ran = {change["field"]: change["ran"] for change in record["model"]["config_changes"]}
    assert ran == {change.field: change.ran for change in expected_changes(spec, cfg)}
    model = Record.from_json(record).model
    assert model.config_changes == expected_changes(spec, cfg)
    assert "runs its own config" in result.output


def test_gte_and_nomic_checkpoints_save_under_other_key_names(tmp_path):
    """Why they did not load before ("checkpoint lacks 32/24 tensors"): transformers renames keys on save."""
    from safetensors.torch import load_file

    for name in ("gte-en-mlm-base", "nomic-bert"):
        spec = registry.get_spec(name)
        require(spec)
        saved = save_checkpoint(spec, tmp_path / name, registry.model_config(spec.tiny_variant()))
        on_disk = set(load_file(str(tmp_path / name / "model.safetensors")))
        assert on_disk != set(saved.state_dict())


def test_a_masked_lm_checkpoint_loads_into_the_bare_encoder(tmp_path):
    import transformers

    spec = registry.get_spec("gte-en-mlm-base-unpadded")
    require(spec)
    cfg = changed_config(spec)
    torch.manual_seed(5)
    mlm = transformers.GteForMaskedLM(cfg).eval()
    mlm.save_pretrained(tmp_path)
    encoder = registry.build_encoder(spec.name, BuildOptions(weights=str(tmp_path)), tiny=True)
    docs = documents()
    expected = hidden_states(mlm.base_model, docs, cfg.pad_token_id or 0)
    assert (encoder_states(encoder, docs) - expected).abs().max().item() <= TOLERANCE


# ------------------------------------------------------------------------------------- what a row cannot be

@pytest.mark.parametrize("name, fixed, message", [
    ("bert-base", dict(num_attention_heads=8), r"num_attention_heads 8 \(the row's is 4\)"),
    ("bert-base", dict(hidden_size=32, intermediate_size=64), "hidden_size 32"),
    ("roberta-base", dict(num_hidden_layers=3), "num_hidden_layers 3"),
    ("gte-en-mlm-base-unpadded", dict(vocab_size=1000), "vocab_size 1000"),
    ("bert-base", dict(type_vocab_size=1), "type_vocab_size 1"),
    ("eurobert-210m", dict(num_key_value_heads=2), "num_key_value_heads 2"),
    ("hf-modernbert-base", dict(mlp_bias=True), r"mlp_bias[^)]*\) gives other tensors, e.g. layers.0.mlp.Wi.bias"),
])
def test_a_checkpoint_of_another_shape_is_refused_naming_the_field(tmp_path, name, fixed, message):
    spec = registry.get_spec(name)
    require(spec)
    save_checkpoint(spec, tmp_path / "checkpoint", changed_config(spec, **fixed))
    with pytest.raises(UserError, match=message):
        registry.build_encoder(name, BuildOptions(weights=str(tmp_path / "checkpoint")), tiny=True)
    result = run_cli(name, tmp_path / "checkpoint", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and f"is not a {name} checkpoint" in result.output
    assert not (tmp_path / "out").exists() or not records_under(tmp_path / "out")


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    roberta = registry.get_spec("roberta-base")
    save_checkpoint(roberta, tmp_path, registry.model_config(roberta.tiny_variant()))
    with pytest.raises(UserError, match="model_type 'roberta' is not bert-base's 'bert'"):
        registry.build_encoder("bert-base", BuildOptions(weights=str(tmp_path)), tiny=True)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").unlink(), "no file named model.safetensors"),
    (lambda d: (d / "model.safetensors").write_bytes(b"not a safetensors file"), "cannot load it as BertModel"),
    (lambda d: (d / "config.json").write_text('{"model_type": "bert", "hidden_act": 3}'), "not a valid BertConfig"),
])
def test_unreadable_checkpoints_are_user_errors(tmp_path, damage, message):
    spec = registry.get_spec("bert-base")
    save_checkpoint(spec, tmp_path, registry.model_config(spec.tiny_variant()))
    damage(tmp_path)
    with pytest.raises(UserError, match=message):
        registry.build_encoder("bert-base", BuildOptions(weights=str(tmp_path)), tiny=True)


def test_a_hub_config_of_the_row_is_accepted(tmp_path):
    """bert-base-uncased's config.json as published (transformers 4.6 era): its extra fields are not shape, and
    the record lists only what differs from the row (never the file's metadata)."""
    hub = {"architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1, "gradient_checkpointing": False,
           "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02,
           "intermediate_size": 3072, "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
           "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0,
           "position_embedding_type": "absolute", "transformers_version": "4.6.0.dev0", "type_vocab_size": 2,
           "use_cache": True, "vocab_size": 30522}
    (tmp_path / "config.json").write_text(json.dumps(hub), encoding="utf-8")
    changes = {c.field for c in registry.checkpoint_changes(registry.get_spec("bert-base"), str(tmp_path))}
    assert not changes & {"architectures", "transformers_version", "hidden_size", "num_hidden_layers", "vocab_size",
                          "layer_norm_eps", "hidden_act", "intermediate_size", "num_attention_heads"}


# --------------------------------------------------------------------------------- our own modules' checkpoints

@pytest.mark.parametrize("name", REFERENCE_ROWS)
def test_modernbert_checkpoint_round_trip_into_our_rows(tmp_path, name):
    """transformers' ModernBertModel.save_pretrained loads into every reference row (the row's own config)."""
    from transformers import ModernBertModel

    spec = registry.get_spec(name)
    ours = registry.model_config(spec.tiny_variant())
    torch.manual_seed(13)
    saved = ModernBertModel(to_hf_config(ours)).eval()
    saved.save_pretrained(tmp_path)
    assert registry.checkpoint_changes(spec.tiny_variant(), str(tmp_path)) == ()
    encoder = registry.build_encoder(name, BuildOptions(weights=str(tmp_path), backend="sdpa"), tiny=True)
    docs = documents()
    assert (encoder_states(encoder, docs) - hidden_states(saved, docs, ours.pad_token_id)).abs().max() <= TOLERANCE


def test_our_rows_still_refuse_a_checkpoint_config_field_by_field(tmp_path):
    from transformers import ModernBertModel

    spec = registry.get_spec("modernbert-base")
    hf_config = to_hf_config(registry.model_config(spec.tiny_variant()))
    hf_config.norm_eps = 1e-3
    ModernBertModel(hf_config).save_pretrained(tmp_path)
    with pytest.raises(UserError, match=r"norm_eps: model 1e-05, checkpoint 0\.001"):
        registry.build_encoder("modernbert-base", BuildOptions(weights=str(tmp_path)), tiny=True)
    with pytest.raises(UserError, match="NeoBERT runs with seeded random weights"):
        registry.checkpoint_changes(registry.get_spec("neobert", tiny=True), str(tmp_path))


# ------------------------------------------------------------------------------------------------- records

def test_model_info_keeps_config_changes_and_reads_records_without_them():
    info = ModelInfo("BERT", "base", 10, 512, "padded", (ConfigChange("layer_norm_eps", 1e-12, 1e-3),))
    assert decode(ModelInfo, json.loads(json.dumps(info.__dict__, default=lambda c: c.__dict__))) == info
    old = {"family": "BERT", "group": "base", "parameters": 10, "max_length": 512, "layout": "padded"}
    assert decode(ModelInfo, old).config_changes == ()
