"""Token budgets, batch sizes and vocabularies are checked before a run (issue 14, parts 5 and 6)."""

import pytest

from mbbench.batching import check_budget, check_grouping, group_by_count, group_by_tokens
from mbbench.errors import UserError
from mbbench.suites import check_vocabulary, load_suite, make_batches


def test_budget_groups_never_exceed_the_budget():
    lengths = [300, 200, 500, 100, 100]
    groups = group_by_tokens(lengths, 500)
    assert groups == [[0, 1], [2], [3, 4]]
    assert all(sum(lengths[i] for i in g) <= 500 for g in groups)


def test_document_longer_than_the_budget_is_refused():
    with pytest.raises(UserError, match="document 2 has 600 tokens, more than --token-budget 512; a budget of at "
                                        "least 600 tokens fits every document"):
        group_by_tokens([100, 200, 600, 50], 512)
    with pytest.raises(UserError, match="--token-budget must be a positive integer, got 0"):
        group_by_tokens([1], 0)
    with pytest.raises(UserError, match="--batch-size must be a positive integer, got 0"):
        group_by_count([1], 0)


def test_make_batches_names_the_suite_document(tmp_path):
    suite = load_suite("short-variable")
    indices = list(range(10, 20))
    longest = max(suite.lengths[i] for i in indices)
    doc = indices[[suite.lengths[i] for i in indices].index(longest)]
    with pytest.raises(UserError, match=rf"suite short-variable: document {doc} has {longest} tokens, more than "
                                        r"--token-budget 100"):
        make_batches(suite, indices, "packed", token_budget=100)
    batches = make_batches(suite, indices, "packed", token_budget=longest)
    assert all(b.real_tokens <= longest for b in batches)
    assert sum(b.num_documents for b in batches) == 10


def test_batch_size_and_token_budget_conflict():
    with pytest.raises(UserError, match="--batch-size 8 and --token-budget 4096 both given"):
        check_grouping(8, 4096)
    with pytest.raises(UserError, match="both given"):
        make_batches(load_suite("short-fixed"), [0, 1], "packed", batch_size=8, token_budget=4096)
    check_grouping(8, None), check_grouping(None, 4096), check_grouping(None, None)  # each alone is fine
    check_budget([10, 20], 20)


def test_suite_tokens_outside_a_vocabulary_are_refused(tmp_path):
    suite = load_suite("short-fixed")  # token ids in [100, 16000)
    check_vocabulary(suite, 50368, "modernbert-base")
    check_vocabulary(suite, 16000, "exactly-enough")
    with pytest.raises(UserError, match=r"suite short-fixed draws token ids up to 15999 \(\[tokens\] high = 16000\), "
                                        r"but tiny's vocabulary has 512 ids \(0 to 511\)"):
        check_vocabulary(suite, 512, "tiny")


def test_suite_paths_and_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.toml").write_text('documents = 3\n[lengths]\ndistribution = "fixed"\nlength = 4')
    assert load_suite("mine").statistics()["total_tokens"] == 12
    assert load_suite("suites/mine.toml").name == "mine"
    assert load_suite("short-fixed").path.endswith("suites/short-fixed.toml")
    with pytest.raises(UserError, match="suite file 'nowhere/x.toml' not found"):
        load_suite("nowhere/x.toml")
    with pytest.raises(UserError, match="known: long-fixed, long-variable, mine, short-fixed, short-variable"):
        load_suite("nope")
