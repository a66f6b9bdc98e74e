"""GPU-marked checks of the paired engine and the NVML load reader (`pytest -m gpu` on a GPU machine)."""

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_paired_ratio_of_known_work_on_cuda():
    from mbbench.bench.paired import run_paired

    device = torch.device("cuda")
    weight = torch.randn(2048, 2048, device=device)
    batches = [torch.randn(2048, 2048) for _ in range(4)]
    forwards = {"once": lambda b: b @ weight, "twice": lambda b: (b @ weight) @ weight}
    result = run_paired(forwards, batches, device, rounds=8)
    ratio = result.ratio("twice")  # twice the work per token: half the tokens/s
    assert 0.4 < ratio.median < 0.6
    assert ratio.interval.low <= ratio.median <= ratio.interval.high


def test_nvml_load_reader_sees_this_process():
    from mbbench.environment import busy_warning, load_snapshot, nvml_gpu_reader

    torch.ones(1, device="cuda")  # hold a context
    reader = nvml_gpu_reader(0)
    reading = reader()
    assert reading.own_context and 0 <= reading.utilization_percent <= 100
    snapshot = load_snapshot(reader)
    assert snapshot.other_gpu_processes is not None and snapshot.other_gpu_processes >= 0
    warning = busy_warning(snapshot, load_snapshot(reader), threads_used=1)
    assert warning is None or warning.startswith("machine was busy")
