import pytest
import torch

from mbbench.batching import pack_documents, pad_documents
from mbbench.errors import BackendUnavailable, UserError
from mbbench.models import weights
from mbbench.models.attention import get_backend, packed_layout
from mbbench.models.config import ModernBertConfig, from_glu, preset
from mbbench.models.elementwise import apply_rotary
from mbbench.models.modernbert import ModernBert, RotaryTables, build
from mbbench.models.registry import MODELS, count_parameters
from mbbench.verify import make_documents, transformers_twin, verify


def test_presets_are_the_papers_shapes():
    base, large = preset("base"), preset("large")
    assert (base.num_layers, base.hidden_size, base.num_heads, base.glu_size) == (22, 768, 12, 2304)
    assert (large.num_layers, large.hidden_size, large.num_heads, large.glu_size) == (28, 1024, 16, 5248)
    assert base.vocab_size == large.vocab_size == 50368
    assert base.half_window == 64 and base.global_rope_theta == 160_000 and base.local_rope_theta == 10_000


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rotary_is_bit_equal_to_transformers_formula(dtype):
    # transformers: tables over cat(freqs, freqs), rounded to the activation dtype, applied in fp32 with rotate_half
    positions = torch.randint(0, 1024, (300,), generator=torch.Generator().manual_seed(0))
    qkv = torch.randn(300, 3, 12, 64, generator=torch.Generator().manual_seed(1)).to(dtype)
    qk = qkv[:, :2]  # (tokens, 2, heads, head_dim): the strided view the model rotates
    tables = RotaryTables(64, 160_000.0, 1024)
    cos, sin = (torch.cat((t, t), dim=-1)[positions].to(dtype)[:, None, None, :] for t in (tables.cos, tables.sin))
    first, second = qk.float().chunk(2, dim=-1)
    expected = (qk.float() * cos + torch.cat((-second, first), dim=-1) * sin).to(dtype)
    ours = apply_rotary(qk, *tables(positions, dtype))
    assert ours.dtype == dtype and torch.equal(ours, expected)


def test_rotary_tables_are_correctly_rounded():
    # the reported case: fp32 CPU cos(28.125...) was off by 1.5e-4 in some processes; the tables go through float64
    tables = RotaryTables(64, 160_000.0, 8192)
    inv_freq = 1.0 / (160_000.0 ** (torch.arange(0, 64, 2, dtype=torch.float) / 64))
    angles = torch.arange(8192, dtype=torch.float)[:, None] * inv_freq[None, :]  # transformers' fp32 angles
    assert torch.equal(tables.cos, angles.double().cos().float())
    assert (tables.cos.double() - angles.double().cos()).abs().max() <= 2 ** -25  # half an ulp of values <= 1
    assert (tables.sin.double() - angles.double().sin()).abs().max() <= 2 ** -25


@pytest.mark.parametrize("name, expected", [("modernbert-base", 149.0e6), ("modernbert-large", 394.8e6)])
def test_parameter_counts_on_meta_device(name, expected):
    assert abs(count_parameters(MODELS[name]) - expected) / expected < 0.002


def test_layer_zero_global_and_every_third_after():
    model = ModernBert(preset("tiny", num_layers=7))
    windows = [layer.attn.window for layer in model.layers]
    assert windows == [None, 64, 64, None, 64, 64, None]
    assert isinstance(model.layers[0].attn_norm, torch.nn.Identity)
    assert isinstance(model.layers[1].attn_norm, torch.nn.LayerNorm)
    assert all(layer.attn.Wqkv.bias is None and layer.mlp.Wi.bias is None for layer in model.layers)


@pytest.mark.parametrize("bad, field", [
    (dict(hidden_size=65, num_heads=4), "not divisible by num_heads"),
    (dict(hidden_size=12, num_heads=4), "odd"),
    (dict(num_layers=0), "num_layers"),
    (dict(local_window=127), "local_window"),
    (dict(norm_eps=0.0), "norm_eps"),
    (dict(pad_token_id=10**6), "pad_token_id"),
])
def test_bad_configs_raise_clear_errors(bad, field):
    with pytest.raises(UserError, match=field):
        ModernBertConfig(**bad)
    with pytest.raises(UserError, match="GLU width"):
        from_glu(768, 2305, 22)


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_unpadded_equals_padded_on_real_tokens(tiny_cfg, backend):
    model = build(tiny_cfg, backend=backend, seed=1)
    docs = make_documents(tiny_cfg, lengths=(150, 97, 3))
    packed, padded = pack_documents(docs), pad_documents(docs, tiny_cfg.pad_token_id)
    with torch.no_grad():
        out_packed = model(packed.input_ids, cu_seqlens=packed.cu_seqlens, max_seqlen=packed.max_seqlen)
        out_padded = model(padded.input_ids, padded.attention_mask)
    torch.testing.assert_close(out_padded[padded.attention_mask.bool()], out_packed, atol=1e-5, rtol=1e-5)
    # documents do not see each other: changing one leaves the others untouched
    docs[1] = torch.flip(docs[1], [0])
    with torch.no_grad():
        changed = model(pack_documents(docs).input_ids, cu_seqlens=packed.cu_seqlens, max_seqlen=packed.max_seqlen)
    assert torch.equal(changed[:150], out_packed[:150]) or torch.allclose(changed[:150], out_packed[:150], atol=1e-6)
    assert not torch.allclose(changed[150:247], out_packed[150:247])


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_window_is_plus_minus_64(backend):
    """In a local layer, a key 64 positions away changes the output; 65 away does not."""
    attention = get_backend(backend, "cpu", torch.float32)
    total, heads, dim = 200, 2, 8
    layout = packed_layout(torch.tensor([0, total], dtype=torch.int32), total, total)
    context = attention.prepare(layout, {64})
    q, k, v = (torch.randn(total, heads, dim) for _ in range(3))
    base = attention.attend(q, k, v, layout, context, 64, dim ** -0.5)
    query = 10
    for offset, changes in ((64, True), (65, False)):
        v2 = v.clone()
        v2[query + offset] += 10.0
        out = attention.attend(q, k, v2, layout, context, 64, dim ** -0.5)
        assert (not torch.allclose(out[query], base[query])) == changes, offset


def test_transformers_weights_round_trip(tiny_cfg, tmp_path):
    ours = build(tiny_cfg, backend="sdpa", seed=3)
    hf = transformers_twin(ours)
    loaded = weights.from_transformers(hf, backend="sdpa")
    docs = make_documents(tiny_cfg, lengths=(140, 20))
    padded = pad_documents(docs, tiny_cfg.pad_token_id)
    with torch.no_grad():
        expected = hf(input_ids=padded.input_ids, attention_mask=padded.attention_mask).last_hidden_state
        got = loaded(padded.input_ids, padded.attention_mask)
    mask = padded.attention_mask.bool()
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=1e-5)

    hf.save_pretrained(tmp_path)  # config.json + model.safetensors, as a user's checkpoint
    from_disk = weights.from_checkpoint(tmp_path, backend="sdpa")
    with torch.no_grad():
        torch.testing.assert_close(from_disk(padded.input_ids, padded.attention_mask)[mask], expected[mask],
                                   atol=1e-5, rtol=1e-5)


def test_mlm_head_loads_from_transformers(tiny_cfg):
    from transformers import ModernBertForMaskedLM

    from mbbench.verify import to_hf_config

    hf = ModernBertForMaskedLM(to_hf_config(tiny_cfg)).eval()
    ours = weights.from_transformers(hf, backend="eager")
    ids = torch.randint(5, tiny_cfg.vocab_size, (1, 30))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    assert ours.decoder.weight is ours.model.embeddings.tok_embeddings.weight


def test_unavailable_backend_is_an_error_not_a_fallback():
    with pytest.raises(BackendUnavailable, match="varlen"):
        get_backend("varlen", "cpu", torch.float32)
    with pytest.raises(UserError, match="unknown attention backend"):
        get_backend("magic", "cpu", torch.float32)
    assert get_backend("auto", "cpu", torch.float32).name == "sdpa"


def test_verify_passes_on_tiny_config(tiny_cfg):
    from mbbench.models.gemm import onednn_available

    checks = verify(tiny_cfg, backends=["eager", "sdpa"], lengths=(200, 131, 40))
    kernels = 2 if onednn_available() else 1  # the default GEMM kernel, and oneDNN-packed where a CPU run may pick it
    # x 2 element-wise kernels (eager, Inductor): every combination a CPU run may build
    assert len(checks) == 1 + 2 * 2 * 2 * kernels * 2
    assert {(c.gemm, c.elementwise) for c in checks[1:]} == {(g, e) for g in ["torch", "onednn-packed"][:kernels]
                                                             for e in ["eager", "inductor"]}
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    assert max(c.max_abs_error for c in checks) < 1e-5


@pytest.mark.slow
def test_flex_matches_eager(tiny_cfg):
    checks = verify(tiny_cfg, backends=["flex"], lengths=(200, 131, 40))
    assert checks and all(c.passed for c in checks)


def test_onednn_packed_gemms_equal_the_default_kernel():
    """The reference model's linears on oneDNN with prepacked weights (a CPU run's faster kernel) compute the
    same function within fp32 rounding; repacking with the default kernel restores the exact original path."""
    from mbbench.models import gemm

    if not gemm.onednn_available():
        pytest.skip("this torch has no oneDNN linear with prepacked weights")
    model = build(preset("tiny"), backend="sdpa", seed=3)
    ids, cu = torch.randint(0, 512, (300,), generator=torch.Generator().manual_seed(1)), torch.tensor([0, 180, 300])
    with torch.inference_mode():
        before = model(ids, cu_seqlens=cu.int(), max_seqlen=180)
        assert gemm.pack(model, gemm.ONEDNN_PACKED) == 4 * 4  # Wqkv, Wo, Wi, Wo per layer
        assert all(gemm.PACKED in layer.__dict__ for layer in model.modules() if isinstance(layer, torch.nn.Linear))
        packed = model(ids, cu_seqlens=cu.int(), max_seqlen=180)
        gemm.pack(model, gemm.TORCH)
        again = model(ids, cu_seqlens=cu.int(), max_seqlen=180)
    assert (packed - before).abs().max() < 1e-5  # another summation order (bit-equal at this tiny width)
    assert torch.equal(again, before)
    assert not any(gemm.PACKED in layer.__dict__ for layer in model.modules())
    with pytest.raises(ValueError, match="unknown GEMM kernel"):
        gemm.pack(model, "blas")


def test_cpu_gemm_rates_name_every_kernel_and_the_measured_peak():
    from mbbench.bench.matmul import cpu_gemm_rates
    from mbbench.models import gemm

    rates = cpu_gemm_rates(((64, 192), (64, 64)), torch.float32, torch.get_num_threads(), tokens=64, rounds=3)
    kernels = [k for k, _ in rates.rates]
    assert set(kernels) == ({gemm.TORCH, gemm.ONEDNN_PACKED} if gemm.onednn_available() else {gemm.TORCH})
    assert rates.best == kernels[0] and rates.peak_flops == rates.rates[0][1] * 1e9 > 0
    assert [r for _, r in rates.rates] == sorted((r for _, r in rates.rates), reverse=True)
    assert "64x192, 64x64" in rates.describe() and "best of 3 interleaved rounds" in rates.describe()
