"""Suite-wide test setup: CPU only, offline, deterministic, quiet."""

import os
import warnings

import pytest
import torch

os.environ.setdefault("LINMIX_BACKEND", "torch")  # never probe CUDA kernels in CPU tests
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
