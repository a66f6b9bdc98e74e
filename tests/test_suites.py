import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mbbench.batching import group_by_count, group_by_tokens, pack_documents, pad_documents
from mbbench.errors import UserError
from mbbench.suites import load_suite, make_batches, select_documents

PAPER_TOTALS = {"short-fixed": 4_194_304, "long-fixed": 67_108_864}


@pytest.mark.parametrize("name", ["short-fixed", "long-fixed"])
def test_fixed_suites_match_paper_totals(name):
    stats = load_suite(name).statistics()
    assert stats["total_tokens"] == PAPER_TOTALS[name]
    assert stats["documents"] == 8192 and stats["std"] == 0


@pytest.mark.parametrize("name, total, mean, std, low, high", [
    ("short-variable", 2_096_510, 256, 64, 32, 512), ("long-variable", 33_604_913, 4096, 1024, 32, 8192)])
def test_variable_suites_match_their_statistics(name, total, mean, std, low, high):
    suite = load_suite(name)
    stats = suite.statistics()
    assert abs(stats["total_tokens"] - total) / total < 0.01  # paper's generator differs: close, not equal
    assert abs(stats["mean"] - mean) < 0.01 * mean and abs(stats["std"] - std) < 0.03 * std
    assert low <= stats["min"] and stats["max"] <= high


def test_generation_is_deterministic():
    a, b = load_suite("short-variable"), load_suite("short-variable")
    assert a.lengths == b.lengths and a.fingerprint == b.fingerprint
    assert torch.equal(a.document(7), b.document(7))
    doc = a.document(7)
    assert len(doc) == a.lengths[7] and doc.min() >= 100 and doc.max() < 16000
    # pinned values: any change to the generator changes every published number
    assert a.lengths[:5] == [275, 271, 274, 241, 298]
    assert a.fingerprint == "dec888c66972674e"


def _write(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("body, field", [
    ('documents = 10\n[lengths]\ndistribution = "normal"\nmean = 100\nstd = -1\nmin = 1\nmax = 10', "lengths.std"),
    ('documents = 10\n[lengths]\ndistribution = "normal"\nmean = 100\nstd = 1\nmin = 50\nmax = 10', "lengths.min"),
    ('documents = 10\n[lengths]\ndistribution = "zipf"', "lengths.distribution"),
    ('documents = 0\n[lengths]\ndistribution = "fixed"\nlength = 4', "documents"),
    ('documents = 3\n', "lengths"),
    ('documents = [', "not valid TOML"),
])
def test_malformed_suite_files_name_file_and_field(tmp_path, body, field):
    path = _write(tmp_path, body)
    with pytest.raises(UserError, match=field) as error:
        load_suite(path)
    assert "bad.toml" in str(error.value)


def test_unknown_suite():
    with pytest.raises(UserError, match="unknown suite"):
        load_suite("no-such-suite")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.integers(1, 8), st.integers(0, 60))
def test_batching_loses_and_duplicates_nothing(lengths, batch_size, slack):
    budget = max(lengths) + slack  # a shorter budget is refused (test_suite_inputs.py)
    docs = [torch.arange(n) + 1000 * i for i, n in enumerate(lengths)]
    for groups in (group_by_count(lengths, batch_size), group_by_tokens(lengths, budget)):
        assert [i for g in groups for i in g] == list(range(len(lengths)))
        packed = [pack_documents([docs[i] for i in g]) for g in groups]
        padded = [pad_documents([docs[i] for i in g], pad_token_id=-1) for g in groups]
        all_packed = torch.cat([b.input_ids for b in packed])
        assert torch.equal(all_packed, torch.cat(docs))
        all_padded = torch.cat([b.input_ids[b.attention_mask.bool()] for b in padded])
        assert torch.equal(all_padded, torch.cat(docs))
        assert sum(b.real_tokens for b in padded) == sum(lengths) == sum(b.real_tokens for b in packed)
        assert sum(b.padded_tokens for b in padded) >= sum(lengths)
        for b in packed:
            lens = (b.cu_seqlens[1:] - b.cu_seqlens[:-1]).tolist()
            assert b.max_seqlen == max(lens)
            assert torch.equal(b.position_ids, torch.cat([torch.arange(n) for n in lens]))
    for g in group_by_tokens(lengths, budget):
        assert len(g) == 1 or sum(lengths[i] for i in g) <= budget


def test_suite_batches_and_subsample():
    suite = load_suite("short-variable")
    indices = select_documents(suite, 10)
    assert indices == list(range(10))
    padded = make_batches(suite, indices, "padded", batch_size=4, pad_token_id=0, pad_to=512)
    assert [b.num_documents for b in padded] == [4, 4, 2]
    assert all(b.input_ids.shape[1] == 512 for b in padded)
    assert sum(b.real_tokens for b in padded) == sum(suite.lengths[:10])
    with pytest.raises(UserError):
        select_documents(suite, 0)
