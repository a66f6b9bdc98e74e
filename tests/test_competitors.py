import pytest
import torch
from click.testing import CliRunner

import mbbench.plan as plan_module
from mbbench import runner
from mbbench.batching import pack_documents, pad_documents
from mbbench.cli import cli
from mbbench.models import registry, weights
from mbbench.models.registry import MODELS, BuildOptions, build_encoder, count_parameters

PUBLISHED = {"bert-base": 110, "roberta-base": 125, "deberta-v3-base": 184, "nomic-bert": 137,
             "gte-en-mlm-base": 137, "modernbert-base": 149, "eurobert-210m": 210, "mmbert-base": 307,
             "roberta-large": 355, "deberta-v3-large": 435, "gte-en-mlm-large": 435, "modernbert-large": 395,
             "eurobert-610m": 610, "mmbert-small": 140}
REQUIRED_NAMES = {"bert-base", "bert-large", "roberta-base", "roberta-large", "deberta-v3-base", "deberta-v3-large",
                  "nomic-bert", "gte-en-mlm-base", "gte-en-mlm-large", "modernbert-base", "modernbert-large",
                  "hf-modernbert-base", "hf-modernbert-large", "eurobert-210m", "eurobert-610m", "ettin-encoder-17m",
                  "ettin-encoder-1b", "mmbert-small", "mmbert-base", "neobert"}


def test_every_name_is_registered():
    assert REQUIRED_NAMES <= set(MODELS)
    assert MODELS["gte-en-mlm-base-unpadded"].unpadded and not MODELS["gte-en-mlm-base"].unpadded


@pytest.mark.parametrize("name, published", sorted(PUBLISHED.items()))
def test_parameter_counts_match_published_within_1_percent(name, published):
    assert abs(count_parameters(MODELS[name]) / 1e6 - published) / published < 0.01


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tiny_variant_of_each_family_runs_its_layout(name):
    encoder = build_encoder(name, tiny=True)
    vocab = encoder.module.config.vocab_size
    docs = [torch.randint(5, vocab, (n,), generator=torch.Generator().manual_seed(n)) for n in (37, 12, 25)]
    batch = pack_documents(docs) if encoder.layout == "packed" else pad_documents(docs, 0)
    with torch.no_grad():
        out = encoder(batch)
    hidden = encoder.module.config.hidden_size
    expected = (74, hidden) if encoder.layout == "packed" else (3, 37, hidden)
    assert tuple(out.shape) == expected and torch.isfinite(out).all()
    assert encoder.backend in ("sdpa", "eager")


def test_gte_unpadded_equals_padded_on_real_tokens():
    padded = build_encoder("gte-en-mlm-base", BuildOptions(backend="sdpa", seed=5), tiny=True)
    packed = build_encoder("gte-en-mlm-base-unpadded", BuildOptions(backend="sdpa", seed=5), tiny=True)
    packed.module.load_state_dict(padded.module.state_dict())
    docs = [torch.randint(5, 1000, (n,)) for n in (30, 7, 19)]
    p, q = pad_documents(docs, 0), pack_documents(docs)
    with torch.no_grad():
        torch.testing.assert_close(packed(q), padded(p)[p.attention_mask.bool()], atol=1e-5, rtol=1e-5)


def test_hf_modernbert_and_ours_agree_with_same_weights():
    hf = build_encoder("hf-modernbert-base", BuildOptions(backend="sdpa"), tiny=True)
    ours = weights.from_transformers(hf.module, backend="sdpa")
    docs = [torch.randint(5, 1000, (n,)) for n in (150, 70)]
    p = pad_documents(docs, 0)
    with torch.no_grad():
        expected = hf(p)[p.attention_mask.bool()]
        got = ours(p.input_ids, p.attention_mask)[p.attention_mask.bool()]
    assert (got - expected).abs().max() < 1e-4


def test_unsupported_suite_for_short_models_is_recorded():
    for name in ("bert-base", "roberta-base", "deberta-v3-base"):
        record = runner.run(plan_module.resolve(plan_module.RunConfig(name, "long-fixed", docs=1, passes=1, device="cpu",
                                                            tiny=True)))
        assert record.status == "unsupported" and record.tokens_per_second is None and "512" in record.reason
    nomic = registry.get_spec("nomic-bert")  # the paper ran NomicBERT at 8192 tokens: allowed, and said so
    assert nomic.max_length == 8192 and "8192" in nomic.notes


def test_hf_attention_choice_is_validated():
    with pytest.raises(Exception, match="takes --backend auto, eager"):
        build_encoder("deberta-v3-base", BuildOptions(backend="sdpa"), tiny=True)
    assert build_encoder("bert-base", BuildOptions(backend="eager"), tiny=True).backend == "eager"


def test_list_models_shows_every_name():
    result = CliRunner().invoke(cli, ["list", "models"])
    assert result.exit_code == 0
    for name in REQUIRED_NAMES:
        assert name in result.output
