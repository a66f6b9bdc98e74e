import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbbench import runner
from mbbench.bench.maxbatch import Trial, TrialError, search, synthetic_probe


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 100_000), st.sampled_from([1, 2, 4, 8]))
def test_search_finds_exact_boundary_in_logarithmic_trials(limit, granularity):
    result = search(synthetic_probe(limit), granularity=granularity)
    assert result.largest_ok == (limit // granularity) * granularity
    bound = 2 * math.log2(max(limit, 2)) + 3
    assert len(result.trials) <= bound
    assert all(t.status == ("ok" if t.size <= limit else "oom") for t in result.trials)


def test_safety_margin_rounds_down_to_granularity():
    result = search(synthetic_probe(1000), granularity=8)
    assert result.largest_ok == 1000 and result.with_margin(0.05) == 944
    assert result.peak_bytes == 1000


def test_non_oom_error_stops_the_search():
    calls = []

    def probe(size):
        calls.append(size)
        if size >= 8:
            raise TrialError("CUDA error: illegal memory access")
        return Trial(size, "ok")

    with pytest.raises(TrialError, match="illegal memory access"):
        search(probe)
    assert calls == [2, 4, 8]  # sizes are k x granularity (default 2)


def test_subprocess_trials_with_fake_oom_find_the_boundary():
    """Each trial is a fresh process; an injected CUDA OOM (by type) above 6 x 512 tokens."""
    plan = runner.resolve(runner.RunConfig("modernbert-base", "short-fixed", device="cpu", tiny=True), "max_batch",
                          limits=runner.max_batch_limits(granularity=2))
    record = runner.max_batch(plan, fake_limit_tokens=6 * 512 + 100)
    assert record.payload.max_batch_size == 6
    assert [(t["size"], t["status"]) for t in record.payload.trials] == [(2, "ok"), (4, "ok"), (8, "oom"), (6, "ok")]
    assert record.kind == "measured" and record.payload.search_seconds > 0


def test_subprocess_non_oom_error_is_reported():
    plan = runner.resolve(runner.RunConfig("modernbert-base", "short-fixed", device="cpu", tiny=True), "max_batch",
                          limits=runner.max_batch_limits())
    with pytest.raises(TrialError, match="injected non-OOM failure"):
        runner.max_batch(plan, fake_limit_tokens=10**9, fake_error=True)
