import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*must be `None` or an integer within the vocabulary.*")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg():
    from mbbench.models.config import preset

    return preset("tiny")
