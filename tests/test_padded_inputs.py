"""Padded inputs the reference accepts equal transformers; the ones it cannot compute exactly are refused
(issue 14, parts 2 and 3)."""

import pytest
import torch

from mbbench.errors import UserError
from mbbench.models.modernbert import build, check_padding_mask, unpad
from mbbench.verify import transformers_twin

SEQ = 300


@pytest.fixture
def pair(tiny_cfg):
    ours = build(tiny_cfg, backend="sdpa", seed=5)
    return ours, transformers_twin(ours)


def _ids(cfg, batch=2):
    generator = torch.Generator().manual_seed(11)
    return torch.randint(5, cfg.vocab_size, (batch, SEQ), generator=generator)


def _compare(ours, hf, ids, mask):
    with torch.no_grad():
        got = ours(ids, mask)
        expected = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    return (got[real] - expected[real]).abs().max().item(), got


def test_right_padding_equals_transformers(tiny_cfg, pair):
    ids, mask = _ids(tiny_cfg), torch.zeros(2, SEQ, dtype=torch.int64)
    mask[0, :SEQ], mask[1, :170] = 1, 1
    error, got = _compare(*pair, ids, mask)
    assert error < 1e-5
    assert torch.equal(got[1, 170:], torch.zeros(SEQ - 170, tiny_cfg.hidden_size))


def test_left_padding_equals_transformers(tiny_cfg, pair):
    """transformers gives left-padded tokens positions 130..299, ours 0..169: RoPE sees only differences."""
    ids, mask = _ids(tiny_cfg), torch.zeros(2, SEQ, dtype=torch.int64)
    mask[0, :], mask[1, 130:] = 1, 1
    error, _ = _compare(*pair, ids, mask)
    assert error < 1e-5


def test_mask_with_a_hole_is_refused(tiny_cfg, pair):
    """The reported instance: real tokens 0-59 and 120-299, 60-119 masked (8.2e-3 off transformers before)."""
    ids, mask = _ids(tiny_cfg, 1), torch.ones(1, SEQ, dtype=torch.int64)
    mask[0, 60:120] = 0
    with pytest.raises(UserError, match=r"row 0 has a hole \(masked positions 60-119"):
        pair[0](ids, mask)
    with pytest.raises(UserError, match="hole"):
        unpad(ids, mask)


def test_mask_of_another_shape_is_refused(tiny_cfg):
    with pytest.raises(UserError, match=r"attention_mask shape \(2, 10\) differs from input_ids shape \(2, 12\)"):
        check_padding_mask(torch.ones(2, 12, dtype=torch.int64), torch.ones(2, 10, dtype=torch.int64))


def test_all_padding_batch_returns_zeros(tiny_cfg, pair):
    ours, hf = pair
    ids, mask = _ids(tiny_cfg, 3), torch.zeros(3, SEQ, dtype=torch.int64)
    with torch.no_grad():
        got = ours(ids, mask)
        assert torch.isfinite(hf(input_ids=ids, attention_mask=mask).last_hidden_state).all()
    assert got.shape == (3, SEQ, tiny_cfg.hidden_size) and got.dtype == torch.float32
    assert torch.equal(got, torch.zeros_like(got))
    half = build(tiny_cfg, backend="sdpa", seed=5, dtype=torch.bfloat16)
    with torch.no_grad():
        assert half(ids, mask).dtype == torch.bfloat16
        assert half.forward(ids[:0], mask[:0]).shape == (0, SEQ, tiny_cfg.hidden_size)


def test_some_all_padding_rows(tiny_cfg, pair):
    ids, mask = _ids(tiny_cfg, 4), torch.zeros(4, SEQ, dtype=torch.int64)
    mask[1, :200], mask[3, 250:] = 1, 1  # rows 0 and 2: padding only
    _, cu, longest, _ = unpad(ids, mask)
    assert cu.tolist() == [0, 200, 250] and longest == 200
    error, got = _compare(*pair, ids, mask)
    assert error < 1e-5
    assert torch.equal(got[0], torch.zeros_like(got[0])) and torch.equal(got[2], torch.zeros_like(got[2]))


def test_empty_packed_input_returns_an_empty_output(tiny_cfg):
    model = build(tiny_cfg, backend="sdpa", seed=5)
    with torch.no_grad():
        out = model(torch.zeros(0, dtype=torch.int64), cu_seqlens=torch.tensor([0, 0], dtype=torch.int32))
    assert out.shape == (0, tiny_cfg.hidden_size) and out.dtype == torch.float32


@pytest.mark.parametrize("cu, max_seqlen, total, message", [
    ([0, 30, 80], 40, 80, "max_seqlen 40 is below the longest document (50 tokens)"),  # the reported case
    ([0, 30, 60], 50, 80, "cu_seqlens must run from 0 to the 80 packed tokens"),
    ([0, 50, 30, 80], 50, 80, "without decreasing"),
    ([0, 200], 200, 200, "max_seqlen 200 exceeds max_position_embeddings (128)"),
    ([[0, 30, 80]], 50, 80, "cu_seqlens must be a 1-D integer tensor"),
    ([0.0, 30.0, 80.0], 50, 80, "cu_seqlens must be a 1-D integer tensor"),
    ([0, 30, 80], 50, 0, "cu_seqlens must run from 0 to the 0 packed tokens"),  # empty ids
])
def test_inconsistent_packing_is_refused(cu, max_seqlen, total, message):
    from mbbench.models.config import preset
    from mbbench.models.modernbert import build

    model = build(preset("tiny", max_position_embeddings=128), backend="sdpa")
    ids = torch.randint(5, 100, (total,))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cu_seqlens = torch.tensor(cu) if isinstance(cu[0], float) else torch.tensor(cu, dtype=torch.int32)
        model(ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)


def test_packed_batch_of_one_equals_packed_and_other_2d_packed_inputs_are_refused():
    # the reported case: (1, total) ids with cu_seqlens ignored them and attended across documents
    from mbbench.models.config import preset
    from mbbench.models.modernbert import build

    model = build(preset("tiny"), backend="sdpa")
    ids, cu = torch.randint(5, 100, (80,)), torch.tensor([0, 30, 80], dtype=torch.int32)
    with torch.inference_mode():
        packed = model(ids, cu_seqlens=cu, max_seqlen=50)
        assert torch.equal(model(ids[None], cu_seqlens=cu, max_seqlen=50), packed[None])
    for bad in ({"input_ids": torch.stack([ids, ids])}, {"input_ids": ids[None], "attention_mask": torch.ones(1, 80)}):
        with pytest.raises(UserError, match="cu_seqlens describe packed tokens"):
            model(**bad, cu_seqlens=cu, max_seqlen=50)
