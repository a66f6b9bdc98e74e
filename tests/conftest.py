import os
import tempfile
import warnings

import pytest
import torch

# Kernel timings (bench.kernel_store) go to a cache of this test session, never the user's: a test's tiny shapes
# stay out of it, and a developer's cached choices never change what a test sees. Subprocesses inherit it.
os.environ["MBBENCH_KERNEL_CACHE"] = tempfile.mkdtemp(prefix="mbbench-kernels-")
# The matrix's host-wide log of measurement spans, per test process: tests running side by side (pytest -n) or
# another user's matrix on this host would otherwise show up in a test's record as an overlapping measurement.
os.environ["MBBENCH_MEASUREMENT_LOG"] = os.path.join(tempfile.mkdtemp(prefix="mbbench-log-"), "measurements.log")

warnings.filterwarnings("ignore", message=".*must be `None` or an integer within the vocabulary.*")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg():
    from mbbench.models.config import preset

    return preset("tiny")
