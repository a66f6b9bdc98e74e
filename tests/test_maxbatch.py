import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mbbench.plan as plan_module
from mbbench import runner
from mbbench.batching import pack_documents, pad_documents
from mbbench.bench.maxbatch import Trial, TrialError, search, synthetic_probe
from mbbench.errors import is_oom
from mbbench.suites import load_suite
from mbbench.bench.trial import FAKE_OOMS, TrialSpec, fixed_length_batch, token_budget_batch
from mbbench.max_batch_trial import run_trial


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 100_000), st.sampled_from([1, 2, 4, 8]))
def test_unseeded_search_finds_exact_boundary_in_logarithmic_trials(limit, granularity):
    result = search(synthetic_probe(limit), granularity=granularity)
    assert result.largest_ok == (limit // granularity) * granularity
    bound = 2 * math.log2(max(limit, 2)) + 3
    assert len(result.trials) <= bound
    assert all(t.status == ("ok" if t.size <= limit else "oom") for t in result.trials)
    assert not result.capped and result.stopped_by is None and result.seed is None


@st.composite
def limit_and_seed_within_2x(draw, low=100, high=999):
    limit = draw(st.integers(low, high))
    return limit, draw(st.integers(math.ceil(limit / 2), 2 * limit))


@settings(max_examples=300, deadline=None)
@given(limit_and_seed_within_2x())
def test_seeded_search_takes_at_most_8_trials_for_sizes_in_the_hundreds(case):
    """The claim: granularity 8, limit in [100, 999], limit/2 <= seed <= 2*limit -> exact result, <= 8 trials."""
    limit, seed = case
    result = search(synthetic_probe(limit), granularity=8, seed=seed)
    assert result.largest_ok == limit // 8 * 8
    assert result.bracket == (limit // 8 * 8, limit // 8 * 8 + 8)
    assert len(result.trials) <= 8 and not result.capped and result.seed == seed


@settings(max_examples=300, deadline=None)
@given(limit_and_seed_within_2x(1, 50_000), st.sampled_from([1, 2, 4, 16, 64]))
def test_seeded_trial_bound_holds_for_any_granularity(case, granularity):
    """The general form: at most 1 + ceil(log2(limit // granularity + 3)) trials."""
    limit, seed = case
    result = search(synthetic_probe(limit), granularity=granularity, seed=seed)
    assert result.largest_ok == limit // granularity * granularity
    assert len(result.trials) <= 1 + math.ceil(math.log2(limit // granularity + 3))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 20_000), st.integers(1, 10**6))
def test_a_seed_off_by_any_factor_still_finds_the_limit(limit, seed):
    result = search(synthetic_probe(limit), granularity=2, seed=seed)
    assert result.largest_ok == limit // 2 * 2 and len(result.trials) <= 4 * math.log2(max(limit, seed, 2)) + 4


def test_first_trial_is_the_seed_and_the_upper_bound_is_never_passed():
    result = search(synthetic_probe(1000), granularity=8, seed=500, upper=600)
    assert [t.size for t in result.trials] == [496, 552, 576, 592, 600]
    assert result.bracket == (600, None)


def test_capped_by_trials_returns_the_verified_bracket():
    result = search(synthetic_probe(1000), granularity=8, seed=3000, max_trials=3)
    assert [(t.size, t.status) for t in result.trials] == [(3000, "oom"), (2240, "oom"), (1864, "oom")]
    assert result.capped and result.stopped_by == "max_trials"
    assert result.bracket == (0, 1864) and result.largest_ok == 0

    grown = search(synthetic_probe(1000), granularity=8, seed=300, max_trials=3)
    assert grown.bracket == (536, None) and grown.capped


def test_capped_by_time_stops_before_a_trial_that_would_not_fit():
    clock = [0.0]

    def slow_probe(size):  # each trial takes 10 s of a fake clock
        clock[0] += 10.0
        return replace(synthetic_probe(1000)(size), seconds=10.0)

    result = search(slow_probe, granularity=8, seed=800, max_seconds=30, clock=lambda: clock[0])
    # before trial 4: 30 s spent + 10 s expected > 30 s: not started
    assert [(t.size, t.status) for t in result.trials] == [(800, "ok"), (1208, "oom"), (1000, "ok")]
    assert result.capped and result.stopped_by == "max_seconds" and result.seconds == 30.0
    assert result.bracket == (1000, 1208)


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


@pytest.mark.parametrize("error, oom", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("CUDA error: out of memory"), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), False),
    (ValueError("out of memory"), False),  # not a runtime error from the device
])
def test_oom_classification(error, oom):
    assert is_oom(error) is oom


@pytest.mark.parametrize("style", sorted(FAKE_OOMS))
def test_trial_reports_every_oom_form_as_oom(style):
    spec = TrialSpec("modernbert-base", "short-fixed", "float32", "auto", "cpu", "batch", tiny=True,
                     fake_limit_tokens=512, fake_oom=style)
    assert run_trial(spec, 1)["status"] == "ok"
    answer = run_trial(spec, 2)
    assert answer["status"] == "oom"
    assert (answer["detail"] is None) == (style == "typed")


def test_fixed_length_batch_matches_the_per_document_builders():
    ids = torch.randint(100, 16000, (3, 5), generator=torch.Generator().manual_seed(0))
    packed, padded = fixed_length_batch(3, 5, "packed"), fixed_length_batch(3, 5, "padded")
    want_packed, want_padded = pack_documents(list(ids)), pad_documents(list(ids), 0)
    for got, want in ((packed.input_ids, want_packed.input_ids), (packed.cu_seqlens, want_packed.cu_seqlens),
                      (packed.position_ids, want_packed.position_ids), (padded.input_ids, want_padded.input_ids),
                      (padded.attention_mask, want_padded.attention_mask)):
        assert torch.equal(got, want)
    assert packed.max_seqlen == 5 and padded.real_tokens == 15


def test_memory_model_seed_is_the_memory_models_batch():
    from mbbench.hardware import memory
    from mbbench.models import registry

    shape = registry.shape_of(registry.get_spec("modernbert-base"))
    batch = memory.max_batch(shape, 512, 24 * 2**30, 2, "varlen", granularity=1)
    assert batch > 1000
    assert memory.seed_size(shape, 512, 24 * 2**30, "bfloat16", "varlen", "batch", 8) == batch // 8 * 8
    assert memory.seed_size(shape, 512, 24 * 2**30, "bfloat16", "varlen", "tokens", 256) == batch * 512
    assert memory.seed_size(shape, 512, 1e8, "bfloat16", "varlen", "batch", 8) is None  # weights alone do not fit
    # the seed follows the attention the trials run: materialised scores fit fewer rows
    assert memory.seed_size(shape, 512, 24 * 2**30, "bfloat16", "eager", "batch", 8) < batch // 8 * 8


def test_subprocess_trials_with_fake_oom_find_the_boundary():
    """Each trial is a fresh process; an injected CUDA OOM (by type) above 6 x 512 tokens."""
    plan = plan_module.resolve(plan_module.RunConfig("modernbert-base", "short-fixed", device="cpu", tiny=True), "max_batch",
                          limits=plan_module.max_batch_limits(granularity=2))
    record = runner.max_batch(plan, fake_limit_tokens=6 * 512 + 100)
    payload = record.payload
    assert payload.max_batch_size == 6
    assert [(t.size, t.status) for t in payload.trials] == [(2, "ok"), (4, "ok"), (8, "oom"), (6, "ok")]
    assert record.kind == "measured" and payload.search_seconds > 0
    assert payload.capped is False and payload.bracket == (6, 8) and payload.seed is None


def test_subprocess_seeded_capped_search_records_its_bracket():
    plan = plan_module.resolve(plan_module.RunConfig("modernbert-base", "short-fixed", device="cpu", tiny=True), "max_batch",
                          limits=plan_module.max_batch_limits(granularity=2, max_trials=2))
    record = runner.max_batch(plan, fake_limit_tokens=6 * 512 + 100, seed=4)
    payload = record.payload
    assert [(t.size, t.status) for t in payload.trials] == [(4, "ok"), (8, "oom")]
    assert payload.capped is True and "max_trials" in payload.note and payload.bracket == (4, 8)
    assert payload.max_batch_size == 4 and payload.seed == 4 and "started from --seed" in payload.note
    assert dict(record.identity.limits)["max_trials"] == 2  # a capped search is its own configuration


def test_subprocess_non_oom_error_is_reported():
    plan = plan_module.resolve(plan_module.RunConfig("modernbert-base", "short-fixed", device="cpu", tiny=True), "max_batch",
                          limits=plan_module.max_batch_limits())
    with pytest.raises(TrialError, match="injected non-OOM failure"):
        runner.max_batch(plan, fake_limit_tokens=10**9, fake_error=True)


def test_a_token_budget_trial_runs_exactly_the_budget_it_reports():
    """Issue 26: a budget-S trial packed whole documents until at least S, up to 15% more on long-variable."""
    suite = load_suite("long-variable")
    for size in (256, 4096, 8192 + 256, 65536):
        batch = token_budget_batch(suite, size)
        assert batch.real_tokens == size == batch.input_ids.numel()
        assert batch.max_seqlen <= suite.max_length and int(batch.cu_seqlens[-1]) == size
