"""GPU-marked tests (`pytest -m gpu` on the GPU machine); their CPU twins live in the other test files."""

import pytest
import torch

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
    from mbbench.bench.timing import timed

    a = torch.randn(4096, 4096, device="cuda")
    one = timed(lambda: a @ a, torch.device("cuda"))
    four = timed(lambda: [a @ a for _ in range(4)], torch.device("cuda"))
    assert 2.5 * one < four < 6 * one


def test_oom_search_on_real_allocator():
    from mbbench import runner

    cfg = runner.RunConfig("bert-base", "short-fixed", device="cuda", dtype="bfloat16")
    record = runner.max_batch(cfg, memory_limit="4GiB", granularity=8)
    assert record["max_batch_size"] > 0 and any(t["status"] == "oom" for t in record["trials"])
    assert record["peak_bytes_at_result"] < 4 * 2**30
