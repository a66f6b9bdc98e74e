"""Checkpoints load with their own config (θ, window, global pattern), are checked against a named model's
config, and refuse other sizes with a UserError (issue 14, part 1)."""

import json

import pytest
import torch

from mbbench.batching import pad_documents
from mbbench.errors import UserError
from mbbench.models import weights
from mbbench.models.config import preset
from mbbench.verify import make_documents

# A tiny checkpoint whose attention fields all differ from ModernBERT's defaults.
ODD = dict(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=5, num_attention_heads=4,
           global_rope_theta=50_000.0, local_rope_theta=2_000.0, local_attention=64, global_attn_every_n_layers=2,
           max_position_embeddings=1024, pad_token_id=3, norm_eps=1e-6)


def _hf_checkpoint(tmp_path, **overrides):
    from transformers import ModernBertConfig, ModernBertModel

    torch.manual_seed(7)
    config = ModernBertConfig(**{**ODD, **overrides}, bos_token_id=None, eos_token_id=None, cls_token_id=None,
                              sep_token_id=None, attn_implementation="sdpa")
    hf = ModernBertModel(config).eval()
    with torch.no_grad():  # transformers initialises norms to ones: make them matter
        for name, param in hf.named_parameters():
            if "norm" in name:
                param.add_(torch.randn(param.shape) * 0.1)
    hf.save_pretrained(tmp_path)
    return hf


def test_checkpoint_loads_with_its_own_config_and_matches_transformers(tmp_path):
    hf = _hf_checkpoint(tmp_path)
    ours = weights.from_checkpoint(tmp_path, backend="sdpa")
    cfg = ours.config
    assert (cfg.global_rope_theta, cfg.local_rope_theta, cfg.local_window, cfg.global_every) == (50_000, 2_000, 64, 2)
    assert (cfg.num_layers, cfg.max_position_embeddings, cfg.norm_eps, cfg.pad_token_id) == (5, 1024, 1e-6, 3)
    assert [layer.attn.window for layer in ours.layers] == [None, 32, None, 32, None]
    docs = make_documents(cfg, lengths=(300, 131, 40))
    padded = pad_documents(docs, cfg.pad_token_id)
    mask = padded.attention_mask.bool()
    with torch.no_grad():
        expected = hf(input_ids=padded.input_ids, attention_mask=padded.attention_mask).last_hidden_state[mask]
        got = ours(padded.input_ids, padded.attention_mask)[mask]
        default = weights.load_state(type(ours)(preset("tiny", num_layers=5, max_position_embeddings=1024,
                                                       norm_eps=1e-6)),
                                     dict(hf.state_dict())).eval()(padded.input_ids, padded.attention_mask)[mask]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (default - expected).abs().max() > 1e-3  # the default θ/window/pattern is a different function


def test_legacy_and_v5_config_layouts_read_alike(tmp_path):
    _hf_checkpoint(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    v5 = {k: v for k, v in saved.items() if k != "global_attn_every_n_layers"}  # layer_types + rope_parameters
    legacy = {k: v for k, v in saved.items() if k not in ("layer_types", "rope_parameters")}
    legacy.update(global_rope_theta=50_000.0, local_rope_theta=2_000.0, global_attn_every_n_layers=2)
    expected = weights.config_from_hf(saved)
    assert weights.config_from_hf(v5) == weights.config_from_hf(legacy) == expected
    assert (expected.global_every, expected.local_window, expected.global_rope_theta) == (2, 64, 50_000.0)


def test_check_checkpoint_names_every_differing_field(tmp_path):
    _hf_checkpoint(tmp_path)
    config, _ = weights.read_checkpoint(tmp_path)
    checkpoint = weights.checkpoint_config(config)
    expected = preset("tiny", num_layers=5, max_position_embeddings=1024, norm_eps=1e-6)
    with pytest.raises(UserError) as error:
        weights.check_checkpoint(expected, checkpoint, "modernbert-tiny")
    message = str(error.value)
    assert "modernbert-tiny" in message
    for field in ("global_rope_theta", "local_rope_theta", "local_window", "global_every"):
        assert field in message
    assert "local_window: model 128, checkpoint 64" in message
    assert "hidden_size" not in message and "num_layers" not in message
    weights.check_checkpoint(checkpoint, checkpoint, "same")  # no error
    with pytest.raises(UserError, match="global_every"):
        weights.from_checkpoint(tmp_path, expected=expected.with_shape(global_rope_theta=50_000.0,
                                                                       local_rope_theta=2_000.0, local_window=64))


def test_checkpoint_of_another_size_is_a_user_error(tmp_path):
    hf = _hf_checkpoint(tmp_path)
    model = type(weights.from_checkpoint(tmp_path))(weights.config_from_hf(hf.config).with_shape(intermediate_size=128))
    with pytest.raises(UserError, match=r"layers\.0\.mlp\.Wi\.weight: checkpoint \(192, 64\), model \(256, 64\)"):
        weights.load_state(model, hf.state_dict())


@pytest.mark.parametrize("change, message", [
    (dict(rope_parameters={"rope_type": "default", "rope_theta": 1.0}), "not a valid transformers"),
    (dict(layer_types=["sliding_attention", "full_attention"] * 2 + ["full_attention"]), "layer_types"),
    (dict(layer_types=["full_attention", "sliding_attention"]), "layer.types"),  # transformers refuses it
    (dict(hidden_activation="silu"), "activation"),
    (dict(mlp_bias=True), "biases"),
    (dict(model_type="bert"), "model_type"),
])
def test_configs_the_reference_cannot_express_are_refused(change, message):
    config = {"model_type": "modernbert", **{k: v for k, v in ODD.items()}, **change}
    with pytest.raises(UserError, match=message):
        weights.checkpoint_config(config)


def test_layer_types_longer_than_the_layers_count_by_their_first_entries():
    """transformers reads layer_types[i] for layer i; early 5.x accepted a longer list (num_hidden_layers lowered
    after the config was built), later ones refuse it."""
    from types import SimpleNamespace

    hf_config = SimpleNamespace(**{**ODD, "num_hidden_layers": 2},
                                layer_types=["full_attention", "sliding_attention", "sliding_attention"] * 7)
    assert weights.config_from_hf(hf_config).global_every == 2  # layer 0 global, layer 1 local
    with pytest.raises(UserError, match="must list 30 entries"):
        weights.config_from_hf(SimpleNamespace(**{**ODD, "num_hidden_layers": 30}, layer_types=hf_config.layer_types))
