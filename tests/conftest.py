import os
import tempfile
import warnings

import pytest
import torch

# Kernel timings (bench.kernel_store) go to a cache of this test session, never the user's: a test's tiny shapes
# stay out of it, and a developer's cached choices never change what a test sees. Subprocesses inherit it.
os.environ["MBBENCH_KERNEL_CACHE"] = tempfile.mkdtemp(prefix="mbbench-kernels-")

warnings.filterwarnings("ignore", message=".*must be `None` or an integer within the vocabulary.*")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg():
    from mbbench.models.config import preset

    return preset("tiny")
