"""Attention backends: windowed tiles and flex block masks equal eager; work and memory grow as intended."""

import pytest
import torch

from mbbench.models.attention import (
    BackendChoice, EagerAttention, FlexAttention, SdpaAttention, WindowedSdpaAttention, attention_work,
    band_tiles, choose_backend, flex_block_mask, get_backend, packed_layout,
)
from mbbench.models.config import preset
from mbbench.models.modernbert import build

# Documents shorter than the window, exactly one tile, one token, and long ones crossing tiles/blocks.
EDGE_LENGTHS = (300, 5, 40, 129, 200, 64, 1, 257)


def layout_of(lengths):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    return packed_layout(cu, max(lengths), int(cu[-1]))


def qkv(total, heads=3, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(total, heads, dim, generator=gen) for _ in range(3)]


def run(backend, layout, q, k, v, window):
    context = backend.prepare(layout, {None, 64})
    return backend.attend(q, k, v, layout, context, window, 0.25)


@pytest.mark.parametrize("window", [None, 64, 3])
@pytest.mark.parametrize("lengths", [EDGE_LENGTHS, (1000,), (7, 7, 7)])
def test_windowed_equals_eager(lengths, window):
    layout = layout_of(lengths)
    q, k, v = qkv(layout.total_tokens)
    eager, windowed = EagerAttention(), WindowedSdpaAttention()
    expected = eager.attend(q, k, v, layout, eager.prepare(layout, {window}), window, 0.25)
    got = windowed.attend(q, k, v, layout, windowed.prepare(layout, {window}), window, 0.25)
    assert got.shape == expected.shape == (layout.total_tokens, 3, 16)
    assert (got - expected).abs().max().item() < 1e-5


def test_windowed_keeps_exactly_the_band_inside_each_document():
    layout = layout_of((100, 3, 200))
    tiles = band_tiles(layout, 64)
    assert tiles.mask.shape == (tiles.tiles, 1, 64, 64 + 2 * 64)
    real_rows = tiles.mask.view(-1, 192)[:layout.total_tokens].sum(dim=1)
    # a token at position p of a document of length n keeps min(p+64, n-1) - max(p-64, 0) + 1 keys
    pos, n = layout.positions, torch.tensor((100, 3, 200))[layout.doc_ids]
    assert torch.equal(real_rows, torch.minimum(pos + 64, n - 1) - torch.clamp(pos - 64, min=0) + 1)
    padding_rows = tiles.mask.view(-1, 192)[layout.total_tokens:]
    assert bool((padding_rows.sum(dim=1) >= 1).all())  # a padding query keeps itself: no all-masked row


def test_padded_masks_are_no_bigger_than_needed():
    one = SdpaAttention().prepare(layout_of((300,)), {None, 64})
    assert one.masks[None] is None  # one document: global layers need no mask
    assert one.masks[64].shape == (1, 1, 300, 300)  # the band only, shared by every document
    ragged = SdpaAttention().prepare(layout_of((300, 20)), {None, 64})
    assert ragged.masks[None].shape == (2, 1, 1, 300)


@pytest.mark.parametrize("window", [None, 64])
@pytest.mark.parametrize("lengths", [EDGE_LENGTHS, (128, 128, 256), (1000,), (513, 2, 77, 700)])
def test_flex_block_mask_equals_create_block_mask(lengths, window):
    from torch.nn.attention.flex_attention import create_block_mask

    layout = layout_of(lengths)
    doc = layout.doc_ids

    def mask_mod(b, h, q_idx, kv_idx):
        same = doc[q_idx] == doc[kv_idx]
        return same if window is None else same & ((q_idx - kv_idx).abs() <= window)

    ours = flex_block_mask(layout, window)
    ref = create_block_mask(mask_mod, None, None, layout.total_tokens, layout.total_tokens, device="cpu")
    assert torch.equal(ours.kv_num_blocks, ref.kv_num_blocks)
    assert torch.equal(ours.full_kv_num_blocks, ref.full_kv_num_blocks)
    assert torch.equal(ours.to_dense(), ref.to_dense())
    assert ours.seq_lengths == (layout.total_tokens, layout.total_tokens)


def test_flex_block_mask_for_131072_tokens_stays_small():
    layout = layout_of((512,) * 256)
    for window in (None, 64):
        mask = flex_block_mask(layout, window)
        size = sum(t.nbytes for t in mask.as_tuple() if isinstance(t, torch.Tensor))
        assert size < 100 * 2**20  # (1024 blocks)² int32 index tables, not 131072² bools
        visited = int(mask.kv_num_blocks.sum() + mask.full_kv_num_blocks.sum())
        assert visited == 256 * (16 if window is None else 10)  # 4 blocks per document; ±64 reaches neighbours


def test_local_work_grows_linearly_and_global_quadratically():
    work = {n: (attention_work("windowed", layout_of((n,)), 64), attention_work("windowed", layout_of((n,)), None))
            for n in (1024, 2048, 4096)}
    for small, big in ((1024, 2048), (2048, 4096)):
        assert work[big][0] == 2 * work[small][0]  # local: 2x tokens -> 2x scores
        assert work[big][1] == 4 * work[small][1]  # global: 2x tokens -> 4x scores
    assert work[4096][0] == 4096 * 192
    assert attention_work("sdpa", layout_of((4096,)), 64) == 4096 ** 2  # the padded band is quadratic
    flex_local = [attention_work("flex", layout_of((n,)), 64) for n in (1024, 2048, 4096)]
    assert flex_local == [(3 * b - 2) * 128 ** 2 for b in (8, 16, 32)]
    assert attention_work("varlen", layout_of((3, 200)), 64) == 9 + sum(
        min(p + 64, 199) - max(p - 64, 0) + 1 for p in range(200))


def test_choose_backend_by_document_length():
    short = choose_backend("cpu", torch.float32, [100, 128])
    long = choose_backend("cpu", torch.float32, [8192])
    assert isinstance(short, BackendChoice) and short.name == "sdpa"
    assert long.name == "windowed" and "max document 8192 > crossover 128" in long.reason
    assert choose_backend("cpu", torch.float32, [8192], needs_window=False).name == "sdpa"
    assert get_backend("auto", "cpu", torch.float32, lengths=[8192]).name == "windowed"
    assert get_backend("auto", "cpu", torch.float32).name == "sdpa"  # callers without lengths
    with pytest.raises(ValueError):
        choose_backend("cpu", torch.float32, [])


def test_model_with_chosen_backend_equals_eager():
    cfg = preset("tiny")
    lengths = (300, 5, 129, 64)
    choice = choose_backend("cpu", torch.float32, lengths)
    ours, ref = build(cfg, backend=choice, seed=2), build(cfg, backend="eager", seed=2)
    assert ours.backend.name == "windowed" and ours.backend_reason == choice.reason
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    ids = torch.randint(5, cfg.vocab_size, (int(cu[-1]),), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(ids, cu_seqlens=cu) - ref(ids, cu_seqlens=cu)).abs().max().item()
    assert diff < 1e-5


@pytest.fixture
def fresh_dynamo():
    """Inductor's CPU flex template (torch 2.13) can fail to compile when one process recompiles flex for
    new head shapes; start and leave this test with empty dynamo caches so other tests are unaffected."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("window", [None, 64])
def test_flex_equals_eager_at_window_and_document_edges(window, fresh_dynamo):
    layout = layout_of(EDGE_LENGTHS)
    q, k, v = qkv(layout.total_tokens, heads=4, dim=16)  # the tiny model's shape: see FlexAttention docstring
    expected = run(EagerAttention(), layout, q, k, v, window)
    got = run(FlexAttention(), layout, q, k, v, window)
    assert (got - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("totals", [(500, 321, 64)])
def test_flex_on_cpu_runs_several_total_lengths_in_one_process(totals, fresh_dynamo):
    """The reported crash: a second total length in one process (500 then 321 tokens) failed to compile in
    Inductor's dynamic CPU flex template; the CPU kernel is static and compiles once per length."""
    for total in totals:
        layout = layout_of((total - total // 3, total // 3))
        q, k, v = qkv(layout.total_tokens, heads=4, dim=16)
        for window in (None, 64):
            expected = run(EagerAttention(), layout, q, k, v, window)
            assert (run(FlexAttention(), layout, q, k, v, window) - expected).abs().max().item() < 1e-5


def test_windowed_global_layers_of_ragged_batches_skip_the_padding():
    """Up to 64 ragged documents: one unpadded SDPA call each, equal to eager; work is the sum of len²."""
    from mbbench.models.attention import PER_DOCUMENT_GLOBAL_LIMIT, packed_layout

    lengths = [300, 257, 190, 131, 64, 5, 1]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    layout = packed_layout(cu, max(lengths), sum(lengths))
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(sum(lengths), 4, 16, generator=generator) for _ in range(3))
    windowed, eager = WindowedSdpaAttention(), EagerAttention()
    context = windowed.prepare(layout, {None, 64})
    assert context.spans is not None and context.padded is None and len(lengths) <= PER_DOCUMENT_GLOBAL_LIMIT
    got = windowed.attend(q, k, v, layout, context, None, 0.25)
    want = eager.attend(q, k, v, layout, eager.prepare(layout, {None}), None, 0.25)
    assert (got - want).abs().max() < 1e-5
    assert attention_work("windowed", layout, None) == sum(n * n for n in lengths) < len(lengths) * 300 ** 2
