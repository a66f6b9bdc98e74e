"""GPU-marked tests (`pytest -m gpu` on the GPU machine); their CPU twins live in the other test files."""

import pytest
import torch

import mbbench.plan as plan_module

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("backend", ["varlen", "flex", "sdpa"])
def test_backend_parity_bf16(backend):
    from mbbench.models.config import preset
    from mbbench.verify import verify

    checks = verify(preset("tiny"), device="cuda", dtypes=(torch.bfloat16,), backends=[backend],
                    lengths=(300, 257, 131, 40))
    assert checks[1:] and all(c.passed for c in checks), [c for c in checks if not c.passed]


def test_cuda_event_timing_measures_device_work():
    """After warmup (cuBLAS handle, kernel choice, clocks up), four products time about 4x one."""
    from statistics import median

    from mbbench.bench.timing import timed

    a = torch.randn(4096, 4096, device="cuda")
    one, four = (lambda: a @ a), (lambda: [a @ a for _ in range(4)])
    for _ in range(3):
        one(), four()
    device = torch.device("cuda")
    ratio = median(timed(four, device) for _ in range(5)) / median(timed(one, device) for _ in range(5))
    assert 2.5 < ratio < 6, ratio


def test_oom_search_on_real_allocator():
    """A 2 GiB allocator cap and a memory-model seed: a handful of fresh-process trials (granularity 32)
    reach a bracket verified on both sides by the real allocator (a size that ran, one that ran out)."""
    from mbbench import runner

    limits = plan_module.max_batch_limits(granularity=32, memory_limit="2GiB", max_trials=6)
    plan = plan_module.resolve(plan_module.RunConfig("bert-base", "short-fixed", device="cuda", dtype="bfloat16"),
                               "max_batch", limits=limits)
    payload = runner.max_batch(plan).payload
    largest_ok, smallest_failed = payload.bracket
    assert "memory model" in payload.note and payload.trials[0].size == payload.seed
    assert len(payload.trials) <= 6 and largest_ok > 0 and smallest_failed is not None
    assert any(t.status == "oom" for t in payload.trials)
    assert payload.capped or smallest_failed - largest_ok == 32
    assert payload.max_batch_size == largest_ok and 0 < payload.peak_bytes_at_result < 2 * 2**30
